//! The factor model for pairs never observed:
//! `ln(runtime) = mean + a[workload] + b[hardware] + c[test type, hardware] + u[test type] * v[hardware]`,
//! fitted by weighted alternating least squares (block coordinate descent)
//! over the observed pairs' learned log-runtimes. `a` and `b` carry how long a
//! workload is and how fast a class is; `c` how much a test type gains on a
//! class (a CPU-bound type gains nothing from a GPU), so a test seen on one
//! class borrows the speed-up pattern of its type; the rank-one term how much
//! a type gains from fast hardware in general, which carries over to classes
//! the type has few runs on. `c` and the rank-one term are shrunk towards zero
//! (ridge), so with little evidence the model stays additive.

use std::collections::{BTreeMap, HashMap};

use hwsched_proto::v1::{FactorModel, HardwareFactor, TypeHardwareEffect, WorkloadFactor};

/// Ridge penalty on the (test type, hardware) effects and the factors (in
/// units of observed pairs' weight): they depart from zero only with evidence.
const LAMBDA: f64 = 1.0;
/// Ridge penalty on the main effects: only enough to tie the additive offsets
/// down; a workload seen on one class keeps its own scale.
const LAMBDA_EFFECT: f64 = 0.01;
/// A pair's weight in the fit: its successful runs, capped.
const MAX_WEIGHT: f64 = 10.0;
/// Sweeps per fit.
const SWEEPS: usize = 30;
/// The residual variance is never taken below this (ln units: about 10 %).
const MIN_RESIDUAL_VAR: f64 = 0.01;

/// One observed pair: (workload, hardware, ln runtime, successful runs).
pub(crate) struct Cell<'a> {
    pub workload: &'a str,
    pub hardware: &'a str,
    pub log_runtime: f64,
    pub runs: u64,
}

/// A fitted factor model with look-ups by key.
#[derive(Debug, Clone, Default)]
pub(crate) struct Factors {
    pub fit: FactorModel,
    workloads: HashMap<String, usize>,
    hardware: HashMap<String, usize>,
    type_hardware: HashMap<(String, String), usize>,
}

/// The test type of a workload key (`type/model/name`).
fn test_type(workload: &str) -> &str {
    workload.split('/').next().unwrap_or("")
}

/// Numbers the distinct keys in sorted order.
fn index<'a>(keys: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut m: BTreeMap<&str, usize> = keys.map(|k| (k, 0)).collect();
    for (i, v) in m.values_mut().enumerate() {
        *v = i;
    }
    m
}

/// One ridge-penalised block update: each parameter is the weighted mean of
/// its cells' residuals (`num / den`).
fn solve(num: &[f64], den: &[f64]) -> Vec<f64> {
    num.iter().zip(den).map(|(n, d)| n / d).collect()
}

/// One observed pair as the fit sees it: (workload, hardware, type x hardware,
/// ln runtime, weight), the first three as indexes into the parameters.
type Obs = (usize, usize, usize, f64, f64);

/// The distinct workloads, hardware classes and test types of the cells,
/// each numbered in sorted order.
struct Keys<'a> {
    workloads: BTreeMap<&'a str, usize>,
    hardware: BTreeMap<&'a str, usize>,
    types: BTreeMap<&'a str, usize>,
}

impl<'a> Keys<'a> {
    fn of(cells: &[Cell<'a>]) -> Self {
        Self {
            workloads: index(cells.iter().map(|c| c.workload)),
            hardware: index(cells.iter().map(|c| c.hardware)),
            types: index(cells.iter().map(|c| test_type(c.workload))),
        }
    }

    /// The cells as indexes and weights.
    fn observations(&self, cells: &[Cell<'_>]) -> Vec<Obs> {
        let nh = self.hardware.len();
        cells
            .iter()
            .map(|c| {
                let (w, h) = (self.workloads[c.workload], self.hardware[c.hardware]);
                (w, h, self.types[test_type(c.workload)] * nh + h, c.log_runtime, (c.runs as f64).min(MAX_WEIGHT))
            })
            .collect()
    }

    /// The fitted parameters as a [`FactorModel`], with how many cells each rests on.
    fn model(&self, p: &Params, obs: &[Obs], mean: f64, residual_var: f64) -> FactorModel {
        let (nw, nh, nt) = (self.workloads.len(), self.hardware.len(), self.types.len());
        let (mut w_cells, mut h_cells, mut th_cells) = (vec![0u32; nw], vec![0u32; nh], vec![0u32; nt * nh]);
        for &(w, h, th, _, _) in obs {
            w_cells[w] += 1;
            h_cells[h] += 1;
            th_cells[th] += 1;
        }
        let (a, b, c, u, v) = (&p.a, &p.b, &p.c, &p.u, &p.v);
        let hardware_keys: Vec<&str> = self.hardware.keys().copied().collect();
        let groups: Vec<f64> = (0..nt * nh).filter(|&g| th_cells[g] > 0).map(|g| c[g] * c[g]).collect();
        let type_hardware_var = groups.iter().sum::<f64>() / groups.len().max(1) as f64;
        FactorModel {
            type_hardware_var,
            mean,
            residual_var,
            workloads: self
                .workloads
                .keys()
                .enumerate()
                .map(|(i, k)| WorkloadFactor {
                    workload_key: k.to_string(),
                    effect: a[i],
                    factor: u[self.types[test_type(k)]],
                    cells: w_cells[i],
                })
                .collect(),
            hardware: hardware_keys
                .iter()
                .enumerate()
                .map(|(i, k)| HardwareFactor {
                    hardware_key: k.to_string(),
                    effect: b[i],
                    factor: v[i],
                    cells: h_cells[i],
                })
                .collect(),
            type_hardware: self
                .types
                .keys()
                .enumerate()
                .flat_map(|(t, ty)| {
                    let (th_cells, hardware_keys) = (&th_cells, &hardware_keys);
                    (0..nh).filter(move |h| th_cells[t * nh + h] > 0).map(move |h| TypeHardwareEffect {
                        test_type: ty.to_string(),
                        hardware_key: hardware_keys[h].to_string(),
                        effect: c[t * nh + h],
                        cells: th_cells[t * nh + h],
                    })
                })
                .collect(),
        }
    }
}

/// The parameters being fitted: workload effects `a`, hardware effects `b`,
/// (test type, hardware) effects `c` (indexed `type * classes + hardware`),
/// type factors `u` and hardware factors `v`.
struct Params {
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
    u: Vec<f64>,
    v: Vec<f64>,
}

impl Params {
    fn zero(nw: usize, nh: usize, nt: usize) -> Self {
        Self { a: vec![0.0; nw], b: vec![0.0; nh], c: vec![0.0; nt * nh], u: vec![0.0; nt], v: vec![0.0; nh] }
    }

    /// One sweep: each block in turn, the others held, fitted to the residual
    /// without the block's own term. The `first` sweep starts the hardware
    /// factor on the speed axis (the standardised hardware effects).
    fn sweep(&mut self, obs: &[Obs], mean: f64, nh: usize, first: bool) {
        let (nw, nt) = (self.a.len(), self.u.len());
        let (mut num, mut den) = (vec![0.0; nw], vec![LAMBDA_EFFECT; nw]);
        for &(w, h, th, x, k) in obs {
            num[w] += k * (x - mean - self.b[h] - self.c[th] - self.u[th / nh] * self.v[h]);
            den[w] += k;
        }
        self.a = solve(&num, &den);
        let (mut num, mut den) = (vec![0.0; nh], vec![LAMBDA_EFFECT; nh]);
        for &(w, h, th, x, k) in obs {
            num[h] += k * (x - mean - self.a[w] - self.c[th] - self.u[th / nh] * self.v[h]);
            den[h] += k;
        }
        self.b = solve(&num, &den);
        let (mut num, mut den) = (vec![0.0; nt * nh], vec![LAMBDA; nt * nh]);
        for &(w, h, th, x, k) in obs {
            num[th] += k * (x - mean - self.a[w] - self.b[h] - self.u[th / nh] * self.v[h]);
            den[th] += k;
        }
        self.c = solve(&num, &den);
        if first {
            let b = &self.b;
            let m = b.iter().sum::<f64>() / nh as f64;
            let sd = (b.iter().map(|x| (x - m).powi(2)).sum::<f64>() / nh as f64).sqrt();
            if sd > 1e-9 {
                self.v = b.iter().map(|x| (x - m) / sd).collect();
            }
        }
        let (mut num, mut den) = (vec![0.0; nt], vec![LAMBDA; nt]);
        for &(w, h, th, x, k) in obs {
            num[th / nh] += k * (x - mean - self.a[w] - self.b[h] - self.c[th]) * self.v[h];
            den[th / nh] += k * self.v[h] * self.v[h];
        }
        self.u = solve(&num, &den);
        let (mut num, mut den) = (vec![0.0; nh], vec![LAMBDA; nh]);
        for &(w, h, th, x, k) in obs {
            num[h] += k * (x - mean - self.a[w] - self.b[h] - self.c[th]) * self.u[th / nh];
            den[h] += k * self.u[th / nh] * self.u[th / nh];
        }
        self.v = solve(&num, &den);
    }

    /// The weighted sum of squared residuals of the fit.
    fn sse(&self, obs: &[Obs], mean: f64, nh: usize) -> f64 {
        let (a, b, c, u, v) = (&self.a, &self.b, &self.c, &self.u, &self.v);
        obs.iter().map(|&(w, h, th, x, k)| k * (x - (mean + a[w] + b[h] + c[th] + u[th / nh] * v[h])).powi(2)).sum()
    }
}

impl Factors {
    /// Indexes a fitted (or restored) model.
    pub fn from_fit(fit: FactorModel) -> Self {
        let workloads = fit.workloads.iter().enumerate().map(|(i, w)| (w.workload_key.clone(), i)).collect();
        let hardware = fit.hardware.iter().enumerate().map(|(i, h)| (h.hardware_key.clone(), i)).collect();
        let type_hardware = fit
            .type_hardware
            .iter()
            .enumerate()
            .map(|(i, t)| ((t.test_type.clone(), t.hardware_key.clone()), i))
            .collect();
        Self { fit, workloads, hardware, type_hardware }
    }

    /// Fits the model to `cells`. Deterministic.
    pub fn fit(cells: &[Cell<'_>]) -> Self {
        if cells.is_empty() {
            return Self::default();
        }
        let keys = Keys::of(cells);
        let (nw, nh, nt) = (keys.workloads.len(), keys.hardware.len(), keys.types.len());
        let obs = keys.observations(cells);
        let total: f64 = obs.iter().map(|o| o.4).sum();
        let mean = obs.iter().map(|o| o.3 * o.4).sum::<f64>() / total;
        let mut p = Params::zero(nw, nh, nt);
        for sweep in 0..SWEEPS {
            p.sweep(&obs, mean, nh, sweep == 0);
        }
        let sse = p.sse(&obs, mean, nh);
        Self::from_fit(keys.model(&p, &obs, mean, (sse / total).max(MIN_RESIDUAL_VAR)))
    }

    /// ln(runtime) of a pair and its variance; `None` when the workload or the
    /// hardware was never observed at all. The variance is the fit's residual
    /// variance, widened when the workload, or its type on this class, rests
    /// on few pairs, and by the spread of the type effects when its type never
    /// ran on this class.
    pub fn predict(&self, workload: &str, hardware: &str) -> Option<(f64, f64, u32)> {
        let w = &self.fit.workloads[*self.workloads.get(workload)?];
        let h = &self.fit.hardware[*self.hardware.get(hardware)?];
        let th = self
            .type_hardware
            .get(&(test_type(workload).to_string(), hardware.to_string()))
            .map(|&i| &self.fit.type_hardware[i]);
        let x = self.fit.mean + w.effect + h.effect + th.map_or(0.0, |t| t.effect) + w.factor * h.factor;
        let r = self.fit.residual_var;
        let group_cells = th.map_or(0, |t| t.cells);
        let mut var = r * (1.0 + 1.0 / f64::from(w.cells.max(1)) + 2.0 / f64::from(group_cells + 1));
        if group_cells == 0 {
            // the type never ran here: it may differ from the class's average as much as types do
            var += self.fit.type_hardware_var;
        }
        Some((x, var, group_cells))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known runtime matrix: 12 workloads of two kinds (GPU-friendly and
    /// CPU-bound) on 4 classes, ln runtime = base + class speed x kind's gain.
    fn truth(w: usize, h: usize) -> f64 {
        let base = 1.0 + 0.3 * w as f64;
        let speed = [0.0, -1.0, -1.5, -2.0][h];
        let gain = if w.is_multiple_of(2) { 1.0 } else { 0.1 };
        base + speed * gain
    }

    fn key(w: usize) -> String {
        format!("{}/m/t{w}", if w.is_multiple_of(2) { "train" } else { "io" })
    }

    #[test]
    fn recovers_a_known_matrix_with_cells_held_out() {
        let hw = ["cpu", "gpu:a", "gpu:b", "gpu:c"];
        let keys: Vec<String> = (0..12).map(key).collect();
        // hold out one cell per workload (a different class each time)
        let held = |w: usize, h: usize| h == w % 4;
        let cells: Vec<Cell<'_>> = (0..12)
            .flat_map(|w| (0..4).map(move |h| (w, h)))
            .filter(|&(w, h)| !held(w, h))
            .map(|(w, h)| Cell { workload: &keys[w], hardware: hw[h], log_runtime: truth(w, h), runs: 20 })
            .collect();
        let f = Factors::fit(&cells);
        let mut errors = Vec::new();
        for (w, k) in keys.iter().enumerate() {
            for h in (0..4).filter(|&h| held(w, h)) {
                let (x, var, _) = f.predict(k, hw[h]).expect("both observed");
                let ape = ((x.exp() - truth(w, h).exp()) / truth(w, h).exp()).abs();
                errors.push(ape);
                assert!(var > 0.0);
            }
        }
        let mape = errors.iter().sum::<f64>() / errors.len() as f64;
        assert!(mape < 0.10, "held-out MAPE {mape:.3}: {errors:?}");
        // the two kinds gain differently from the GPUs: an additive model could not hold both
        assert!(f.fit.type_hardware.iter().any(|t| t.effect.abs() > 0.3), "{:?}", f.fit.type_hardware);
    }

    #[test]
    fn a_workload_seen_on_one_class_borrows_its_kinds_speedup() {
        let hw = ["cpu", "gpu:a", "gpu:b", "gpu:c"];
        let keys: Vec<String> = (0..12).map(key).collect();
        let mut cells: Vec<Cell<'_>> = (0..10)
            .flat_map(|w| (0..4).map(move |h| (w, h)))
            .map(|(w, h)| Cell { workload: &keys[w], hardware: hw[h], log_runtime: truth(w, h), runs: 20 })
            .collect();
        // workload 10 (GPU-friendly) seen only on gpu:a; 11 (CPU-bound) only on the cpu
        cells.push(Cell { workload: &keys[10], hardware: "gpu:a", log_runtime: truth(10, 1), runs: 20 });
        cells.push(Cell { workload: &keys[11], hardware: "cpu", log_runtime: truth(11, 0), runs: 20 });
        let f = Factors::fit(&cells);
        for (w, h) in [(10, 0), (10, 3), (11, 2), (11, 3)] {
            let (x, _, _) = f.predict(&keys[w], hw[h]).expect("observed keys");
            let ape = ((x.exp() - truth(w, h).exp()) / truth(w, h).exp()).abs();
            assert!(ape < 0.3, "workload {w} on {}: {ape:.3}", hw[h]);
        }
        assert_eq!(f.predict("new/-/x", "cpu"), None);
        assert_eq!(f.predict(&keys[0], "tpu"), None);
    }
}
