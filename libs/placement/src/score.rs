//! Scoring of the workers that passed the filters. Each policy is a small named
//! component: hwsched's own (predicted completion time adjusted by load,
//! temperature and affinity) and the baselines the simulator compares it with
//! (random, round-robin, least-loaded, and the seed's static hardware-aware
//! score, whose formulas are in `baseline.rs`). The decision keeps each candidate's components so `explain` can say
//! why the winner won.

use std::{fmt, str::FromStr};

use hwsched_model::{Model, Source};
use hwsched_proto::v1::TaskRequest;

use crate::{
    baseline::{seed_load, seed_score},
    declared::Declarations,
    view::{load, WorkerView},
};

/// Runtime assumed for a task that declares no `expected_duration_s` and that
/// the model does not know, s.
pub const DEFAULT_RUNTIME_S: f64 = 60.0;

/// An unseen hardware class is assumed this many times slower than the
/// workload's fastest observed one (see [`Scoring::runtime_estimate`]).
pub const UNKNOWN_HARDWARE_FACTOR: f64 = 2.0;

/// How the winner among the candidates is chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Predicted completion time (queue ahead + learned runtime), load,
    /// temperature and affinity; may wait for a busy worker that finishes sooner.
    #[default]
    Hwsched,
    /// The fewest slots in use and lowest CPU utilisation.
    LeastLoaded,
    /// The next candidate in worker-id order, turn by turn.
    RoundRobin,
    /// Any candidate, uniformly (the caller supplies the random turn).
    Random,
    /// The replaced Python framework's static hardware-aware composite
    /// (docs/SIMULATOR.md lists its formulas).
    Seed,
}

impl Policy {
    /// Every policy, baselines first.
    pub const ALL: [Policy; 5] =
        [Policy::Random, Policy::RoundRobin, Policy::LeastLoaded, Policy::Seed, Policy::Hwsched];

    /// Name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Hwsched => "hwsched",
            Policy::LeastLoaded => "least-loaded",
            Policy::RoundRobin => "round-robin",
            Policy::Random => "random",
            Policy::Seed => "seed",
        }
    }

    /// Whether the policy reads thermal state and critical overload (only
    /// hwsched excludes throttling workers; the seed excludes overloaded ones
    /// by its own thresholds).
    pub fn reads_thermal(self) -> bool {
        self == Policy::Hwsched
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
            format!("unknown policy {s:?} (one of: {})", names.join(", "))
        })
    }
}

/// Weights of hwsched's score components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Predicted completion time (time until the worker is free + predicted
    /// runtime on its hardware), relative to the soonest candidate.
    pub completion: f64,
    /// Slots in use and CPU utilisation.
    pub load: f64,
    /// Temperature; a worker marked hot costs the most.
    pub thermal: f64,
    /// Not having run the same model family recently (caches, weights on disk).
    pub affinity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { completion: 0.6, load: 0.15, thermal: 0.15, affinity: 0.1 }
    }
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self;
        write!(f, "completion={},load={},thermal={},affinity={}", w.completion, w.load, w.thermal, w.affinity)
    }
}

impl FromStr for Weights {
    type Err = String;

    /// Parses "completion=0.6,load=0.15,thermal=0.15,affinity=0.1" (components
    /// not named keep their defaults).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut w = Weights::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} must be name=weight"))?;
            let v: f64 = v.trim().parse().map_err(|_| format!("{part:?}: weight must be a number"))?;
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("{part:?}: weight must be between 0 and 100"));
            }
            match k.trim() {
                "completion" => w.completion = v,
                "load" => w.load = v,
                "thermal" => w.thermal = v,
                "affinity" => w.affinity = v,
                other => return Err(format!("unknown component {other:?}: completion, load, thermal or affinity")),
            }
        }
        Ok(w)
    }
}

/// How candidates are scored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scoring<'a> {
    /// Component weights (hwsched policy).
    pub weights: Weights,
    /// The learner's model, when one was published.
    pub model: Option<&'a Model>,
    /// What each producer's declared durations turned out to be (used where
    /// the model knows nothing of the workload).
    pub declarations: Option<&'a Declarations>,
    /// Prefer busy workers (bin packing) instead of idle ones (spreading).
    pub pack: bool,
    /// How the winner is chosen.
    pub policy: Policy,
    /// For round-robin: the placement count; for random: a random number.
    pub turn: u64,
    /// This placement may explore (hwsched): go to a worker free now whose
    /// hardware the model knows little about for this workload, if it is
    /// expected to finish within [`EXPLORE_SLACK`] of the best.
    pub explore: bool,
}

/// The share of first placements that may explore, unless configured.
pub const DEFAULT_EXPLORE_SHARE: f64 = 0.05;
/// An exploring placement accepts a completion up to this many times the best's.
pub const EXPLORE_SLACK: f64 = 2.0;
/// Below this many successful runs a pair is worth exploring.
pub const EXPLORE_BELOW_RUNS: u64 = 3;

/// A worker that could take the task: now (`wait_s` = 0) or once its running
/// work ends (hwsched only).
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'w> {
    /// The worker.
    pub view: &'w WorkerView,
    /// Expected seconds until it has room for the task.
    pub wait_s: f64,
}

/// The score of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Weighted cost (lower wins).
    pub cost: f64,
    /// Each component's value, by name.
    pub components: Vec<(&'static str, f64)>,
    /// Predicted runtime on this worker, when the model knows the pair.
    pub predicted_runtime_s: Option<f64>,
    /// Expected completion: wait + runtime estimate, s.
    pub completion_s: f64,
}

/// A candidate's component values, without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Parts {
    names: &'static [&'static str],
    values: [f64; 4],
}

impl Parts {
    pub(crate) fn to_vec(self) -> Vec<(&'static str, f64)> {
        self.names.iter().copied().zip(self.values).collect()
    }
}

const HWSCHED_PARTS: &[&str] = &["completion", "load", "thermal", "affinity"];

/// A runtime estimate and the model's prediction behind it, when any.
type Estimate = (f64, Option<f64>);

/// Everything the placement needs of one candidate's score.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Eval {
    pub(crate) cost: f64,
    pub(crate) completion_s: f64,
    pub(crate) predicted_runtime_s: Option<f64>,
    pub(crate) parts: Parts,
}

impl Scoring<'_> {
    /// The runtime estimate of `task` on `hardware_class`, and the model's
    /// prediction when it has one. In order: the model's prediction (the
    /// pair's learned runtime, or for a pair never observed the factor model's
    /// estimate from the workload's runs elsewhere and the class's runs of
    /// other workloads of its test type, [`Model::predict`]); for hardware
    /// where the model knows nothing of the workload or its type, no faster than twice the workload's best observed runtime
    /// (so a task is not sent to unknown, possibly far slower hardware while
    /// known hardware is free; it is explored when the known hardware is
    /// busy); else the declared `expected_duration_s` (corrected by what the
    /// producer's declarations turned out to be, `declared.rs`), else [`DEFAULT_RUNTIME_S`].
    pub fn runtime_estimate(&self, workload: &str, task: &TaskRequest, hardware_class: &str) -> (f64, Option<f64>) {
        let declared = self
            .declarations
            .and_then(|d| d.corrected(task, hardware_class))
            .or((task.expected_duration_s > 0.0).then_some(task.expected_duration_s))
            .unwrap_or(DEFAULT_RUNTIME_S);
        let Some(m) = self.model else { return (declared, None) };
        // A pair never run whose test type never ran on this class either has
        // only the class's average speed-up behind it: treated as unknown.
        let p = m.predict(workload, hardware_class).filter(|p| p.source == Source::Observed || p.type_seen);
        if let Some(p) = p.map(|p| p.runtime_s) {
            return (p, Some(p));
        }
        match m.best_observed_s(workload) {
            Some(best) => (declared.max(UNKNOWN_HARDWARE_FACTOR * best), None),
            None => (declared, None),
        }
    }

    /// Scores every candidate of `task` (lower cost wins). Baseline policies
    /// that pick by turn give the chosen candidate cost 0 and the others 1.
    pub fn score(&self, task: &TaskRequest, candidates: &[Candidate<'_>]) -> Vec<Scored> {
        self.evaluate(task, candidates)
            .into_iter()
            .map(|e| Scored {
                cost: e.cost,
                components: e.parts.to_vec(),
                predicted_runtime_s: e.predicted_runtime_s,
                completion_s: e.completion_s,
            })
            .collect()
    }

    /// [`Scoring::score`] without per-candidate allocation.
    pub(crate) fn evaluate(&self, task: &TaskRequest, candidates: &[Candidate<'_>]) -> Vec<Eval> {
        let workload = hwsched_model::task_workload_key(task);
        // few hardware classes, many workers: one model look-up per class
        // (and workers of one shape share their class: compared by number first)
        let mut by_class: Vec<(u64, &str, Estimate)> = Vec::new();
        let mut out: Vec<Eval> = candidates
            .iter()
            .map(|c| {
                let (shape, hw) = (c.view.shape, c.view.caps.hardware_class.as_str());
                let known = by_class.iter().find(|(s, h, _)| if shape != 0 { *s == shape } else { *h == hw });
                let (mut estimate, mut predicted) = match known {
                    Some((_, _, e)) => *e,
                    None => {
                        let e = self.runtime_estimate(&workload, task, hw);
                        by_class.push((shape, hw, e));
                        e
                    }
                };
                // a worker the learner found slower than its peers runs slower
                if let Some(m) = self.model.filter(|m| m.has_degraded()) {
                    let slow = m.slowdown(&c.view.caps.worker_id);
                    estimate *= slow;
                    predicted = predicted.map(|p| p * slow);
                }
                Eval {
                    cost: 0.0,
                    completion_s: c.wait_s + estimate,
                    predicted_runtime_s: predicted,
                    parts: Parts { names: &[], values: [0.0; 4] },
                }
            })
            .collect();
        match self.policy {
            Policy::Hwsched => {
                let soonest = out.iter().map(|e| e.completion_s).fold(f64::INFINITY, f64::min);
                let family = task.model_family.as_str();
                let w = self.weights;
                for (c, e) in candidates.iter().zip(out.iter_mut()) {
                    let v = c.view;
                    let completion =
                        if e.completion_s > 0.0 && soonest.is_finite() { 1.0 - soonest / e.completion_s } else { 0.0 };
                    let thermal = if v.hot { 1.0 } else { ((v.max_temp_c - 60.0) / 30.0).clamp(0.0, 1.0) };
                    let affinity =
                        if family.is_empty() || v.recent_families.iter().any(|f| f == family) { 0.0 } else { 1.0 };
                    let values = [completion, load(v, self.pack), thermal, affinity];
                    e.cost =
                        w.completion * values[0] + w.load * values[1] + w.thermal * values[2] + w.affinity * values[3];
                    e.parts = Parts { names: HWSCHED_PARTS, values };
                }
            }
            Policy::LeastLoaded => {
                for (c, e) in candidates.iter().zip(out.iter_mut()) {
                    e.cost = load(c.view, false);
                    e.parts = Parts { names: &["load"], values: [e.cost, 0.0, 0.0, 0.0] };
                }
            }
            Policy::RoundRobin | Policy::Random => {
                // candidates come in worker order (the scheduler's is by id)
                let pick = Some((self.turn % candidates.len().max(1) as u64) as usize);
                for (i, e) in out.iter_mut().enumerate() {
                    e.cost = if Some(i) == pick { 0.0 } else { 1.0 };
                    e.parts = Parts { names: &["turn"], values: [e.cost, 0.0, 0.0, 0.0] };
                }
            }
            Policy::Seed => {
                let mean_load =
                    candidates.iter().map(|c| seed_load(c.view)).sum::<f64>() / candidates.len().max(1) as f64;
                for (c, e) in candidates.iter().zip(out.iter_mut()) {
                    let (hw, adaptive, composite) = seed_score(task, c.view, self.model, &workload, mean_load);
                    e.cost = -composite;
                    e.parts = Parts {
                        names: &["seed", "hardware_aware", "adaptive"],
                        values: [-composite, hw, adaptive, 0.0],
                    };
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{learned_vision as learned, view};

    fn task() -> TaskRequest {
        TaskRequest {
            name: "t".into(),
            test_type: "vision".into(),
            model_family: "resnet".into(),
            ..Default::default()
        }
    }

    fn cost(s: &Scoring<'_>, t: &TaskRequest, ws: &[WorkerView]) -> Vec<f64> {
        let cands: Vec<Candidate<'_>> = ws.iter().map(|view| Candidate { view, wait_s: 0.0 }).collect();
        s.score(t, &cands).into_iter().map(|x| x.cost).collect()
    }

    #[test]
    fn learned_runtime_makes_the_fast_hardware_win() {
        let m = learned(&[("gpu:h100", 10.0), ("cpu:x86", 200.0)]);
        let ws = [view("cpu", "cpu:x86"), view("gpu", "gpu:h100")];
        let with = Scoring { model: Some(&m), ..Default::default() };
        let c = cost(&with, &task(), &ws);
        assert!(c[1] < c[0], "{c:?}");
        // without a model the two are equal
        let c = cost(&Scoring::default(), &task(), &ws);
        assert_eq!(c[0], c[1]);
    }

    #[test]
    fn completion_counts_the_wait_for_a_busy_worker() {
        let m = learned(&[("gpu:h100", 10.0), ("cpu:x86", 200.0)]);
        let (cpu, gpu) = (view("cpu", "cpu:x86"), view("gpu", "gpu:h100"));
        let s = Scoring { model: Some(&m), ..Default::default() };
        let score = |wait_s: f64| {
            let c = [Candidate { view: &cpu, wait_s: 0.0 }, Candidate { view: &gpu, wait_s }];
            s.score(&task(), &c)
        };
        let soon = score(30.0);
        assert!(soon[1].cost < soon[0].cost, "waiting 30 s for a 10 s run beats 200 s now: {soon:?}");
        assert!((soon[1].completion_s - 40.0).abs() < 1e-6);
        let late = score(500.0);
        assert!(late[0].cost < late[1].cost, "waiting 500 s does not: {late:?}");
    }

    #[test]
    fn hot_busy_and_unfamiliar_workers_cost_more() {
        let t = task();
        let base = view("a", "cpu");
        let mut hot = view("b", "cpu");
        hot.hot = true;
        let mut busy = view("c", "cpu");
        busy.reserved.slots = 3;
        busy.cpu_util_pct = 90.0;
        let mut familiar = view("d", "cpu");
        familiar.recent_families = vec!["resnet".to_string()].into();
        let c = cost(&Scoring::default(), &t, &[base, hot, busy, familiar]);
        assert!(c[1] > c[0] && c[2] > c[0], "{c:?}");
        assert!(c[3] < c[0], "affinity: {c:?}");
    }

    #[test]
    fn packing_prefers_the_busier_worker() {
        let idle = view("idle", "cpu");
        let mut half = view("half", "cpu");
        half.reserved.slots = 2;
        let c = cost(&Scoring { pack: true, ..Default::default() }, &task(), &[idle.clone(), half.clone()]);
        assert!(c[1] < c[0]);
        let c = cost(&Scoring::default(), &task(), &[idle, half]);
        assert!(c[0] < c[1]);
    }

    #[test]
    fn baselines_pick_as_named() {
        let ws = [view("a", "cpu"), view("b", "cpu"), view("c", "cpu")];
        let winner = |s: &Scoring<'_>| {
            let c = cost(s, &task(), &ws);
            (0..3).min_by(|i, j| c[*i].total_cmp(&c[*j])).unwrap_or(0)
        };
        let rr: Vec<usize> =
            (0..4).map(|turn| winner(&Scoring { policy: Policy::RoundRobin, turn, ..Default::default() })).collect();
        assert_eq!(rr, vec![0, 1, 2, 0]);
        let mut busy = ws.clone();
        busy[0].cpu_util_pct = 80.0;
        busy[1].reserved.slots = 1;
        let c = cost(&Scoring { policy: Policy::LeastLoaded, ..Default::default() }, &task(), &busy);
        assert!(c[2] < c[1] && c[1] < c[0], "{c:?}");
    }

    #[test]
    fn seed_prefers_the_specialised_cool_hardware() {
        let mut gpu = view("gpu", "gpu:h100");
        std::sync::Arc::make_mut(&mut gpu.caps).gpus =
            vec![hwsched_proto::v1::GpuInfo { compute_capability: "9.0".into(), ..Default::default() }];
        let cpu = view("cpu", "cpu:x86");
        let mut t = task();
        t.labels.insert("preferred_backend".into(), "cuda".into());
        let s = Scoring { policy: Policy::Seed, ..Default::default() };
        let c = cost(&s, &t, &[cpu.clone(), gpu.clone()]);
        assert!(c[1] < c[0], "{c:?}");
        let mut hot = gpu.clone();
        hot.max_temp_c = 95.0;
        hot.cpu_util_pct = 90.0;
        let c = cost(&s, &t, &[gpu, hot]);
        assert!(c[0] < c[1], "{c:?}");
        let mut full = cpu;
        full.cpu_util_pct = 96.0;
        assert!(crate::baseline::seed_excludes(&full));
    }

    #[test]
    fn weights_parse_by_name() {
        let w: Weights = "load=0.5, affinity=0".parse().unwrap_or_default();
        assert_eq!(w, Weights { load: 0.5, affinity: 0.0, ..Weights::default() });
        assert_eq!(Weights::default().to_string().parse::<Weights>(), Ok(Weights::default()));
        assert!("speed=1".parse::<Weights>().is_err());
        assert!("load=-1".parse::<Weights>().is_err());
        assert!("load".parse::<Weights>().is_err());
    }

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert!("fastest".parse::<Policy>().is_err());
    }
}
