//! `soak`: long GPU soak training (300-1500 s) on a GPU fleet where most GPUs
//! throttle when kept busy, with regular short traffic alongside.

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
    within,
};
use crate::{
    kinds::{KINDS, SOAK},
    rng::Rng,
    trace::Trace,
};

/// The parameters of `soak` (ranges are inclusive and drawn per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Soak {
    /// Soak runs (priority 3), arriving in small batches through the run.
    pub soaks: (usize, usize),
    /// GPU hosts of each kind (T4, A100, H100), each drawn in this range.
    pub gpus_per_kind: (usize, usize),
    /// CPU servers.
    pub cpus: (usize, usize),
    /// Pull-request suites' sizes (priority 2) and gaps, s.
    pub pr_sizes: (usize, usize),
    /// Gap between pull-request suites, s (uniform).
    pub pr_gap_s: (f64, f64),
    /// Length of the traffic, s.
    pub traffic_s: f64,
    /// Cooling: most GPUs are poorly cooled, with varying severity.
    pub heat: Heat,
    /// How tests and runs vary.
    pub mixture: Mixture,
}

impl Default for Soak {
    fn default() -> Self {
        Self {
            soaks: (30, 60),
            gpus_per_kind: (3, 6),
            cpus: (3, 6),
            pr_sizes: (6, 20),
            pr_gap_s: (60.0, 120.0),
            traffic_s: 3_600.0,
            heat: Heat { poorly_cooled: 0.8, heat_c: (52.0, 80.0), tau_s: (15.0, 120.0), shared_cpu: 0.15 },
            mixture: Mixture::default(),
        }
    }
}

impl Soak {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0x50a4);
        let mix = Mix {
            cpu: within(&mut rng, self.cpus),
            t4: within(&mut rng, self.gpus_per_kind),
            a100: within(&mut rng, self.gpus_per_kind),
            h100: within(&mut rng, self.gpus_per_kind),
            tpu: 1,
            browser: 1,
            phone: 1,
            b200: 0,
        };
        // `build` keeps the first host of each kind cool: here only that one
        let workers = fleet::build(&mut rng, &mix, &self.heat, self.traffic_s);
        let soaks = within(&mut rng, self.soaks);
        let (long_rng, short_rng) = (Rng::new(rng.next_u64()), Rng::new(rng.next_u64()));
        let mut long =
            Traffic::new(std::slice::from_ref(&SOAK), Mixture { test_sigma: 0.25, ..self.mixture.clone() }, long_rng);
        let mut left = soaks;
        let mut n = 0;
        while left > 0 {
            n += 1;
            let size = (1 + long.rng().below(3)).min(left);
            let at = (long.rng().f64() * self.traffic_s * 0.9).round();
            long.suite(at, 0.0, &format!("soak{n}"), 3, size);
            left -= size;
        }
        let mut short = Traffic::new(KINDS, self.mixture.clone(), short_rng);
        short.pull_requests("pr", (0.0, self.traffic_s), self.pr_gap_s, self.pr_sizes, 2);
        let mut tasks = long.into_tasks();
        tasks.extend(short.into_tasks());
        tasks.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        Trace { workers, tasks }
    }
}
