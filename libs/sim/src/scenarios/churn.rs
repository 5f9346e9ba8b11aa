//! `churn`: workers leave for maintenance (and come back as a fresh
//! registration), retire for good, and new ones join, during steady traffic.

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
    within,
};
use crate::{
    kinds::KINDS,
    rng::Rng,
    trace::{Trace, WorkerLine},
};

/// The parameters of `churn` (ranges are inclusive and drawn per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Churn {
    /// Workers at the start.
    pub workers: (usize, usize),
    /// Share of workers taken down once (never the first of a class, so every
    /// class keeps a worker).
    pub maintenance: f64,
    /// Share of those that never come back.
    pub retire: f64,
    /// How long a maintenance window lasts, s (uniform); the worker returns
    /// as `{id}-m`.
    pub window_s: (f64, f64),
    /// Workers that join during the run (copies of existing ones, `{id}-n`).
    pub newcomers: (usize, usize),
    /// Pull-request suites' sizes (priority 2).
    pub pr_sizes: (usize, usize),
    /// Gap between pull-request suites, s (uniform).
    pub pr_gap_s: (f64, f64),
    /// Tests in the nightly (priority 4) at 10 minutes.
    pub nightly: (usize, usize),
    /// Length of the traffic, s.
    pub traffic_s: f64,
    /// Cooling and shared CPUs.
    pub heat: Heat,
    /// How tests and runs vary.
    pub mixture: Mixture,
}

impl Default for Churn {
    fn default() -> Self {
        Self {
            workers: (20, 60),
            maintenance: 0.3,
            retire: 0.25,
            window_s: (300.0, 900.0),
            newcomers: (2, 6),
            pr_sizes: (8, 30),
            pr_gap_s: (40.0, 80.0),
            nightly: (150, 300),
            traffic_s: 3_600.0,
            heat: Heat::default(),
            mixture: Mixture::default(),
        }
    }
}

impl Churn {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0xc4012);
        let total = within(&mut rng, self.workers);
        let (browsers, phones) = (within(&mut rng, (1, 3)), within(&mut rng, (1, 3)));
        let mix = Mix::draw(&mut rng, total, browsers, phones);
        let base = fleet::build(&mut rng, &mix, &self.heat, self.traffic_s);
        let workers = self.churn(&mut rng, base);
        let nightly = within(&mut rng, self.nightly);
        let mut traffic = Traffic::new(KINDS, self.mixture.clone(), rng);
        traffic.pull_requests("pr", (0.0, self.traffic_s), self.pr_gap_s, self.pr_sizes, 2);
        traffic.suite(600.0, 0.0, "nightly", 4, nightly);
        Trace { workers, tasks: traffic.into_tasks() }
    }

    /// Maintenance windows, retirements and newcomers.
    fn churn(&self, rng: &mut Rng, base: Vec<WorkerLine>) -> Vec<WorkerLine> {
        let mut out = Vec::new();
        let mut back = Vec::new();
        for mut w in base.iter().cloned() {
            let first = w.capabilities.worker_id.ends_with("-01");
            if !first && rng.f64() < self.maintenance {
                let leave = (300.0 + rng.f64() * (self.traffic_s * 0.8 - 300.0)).round();
                w.leave_s = Some(leave);
                if rng.f64() >= self.retire {
                    let window = self.window_s.0 + (self.window_s.1 - self.window_s.0) * rng.f64();
                    back.push(renamed(&w, "m", Some((leave + window).round())));
                }
            }
            out.push(w);
        }
        out.extend(back);
        for _ in 0..within(rng, self.newcomers) {
            let model = &base[rng.below(base.len())];
            let join = (600.0 + rng.f64() * (self.traffic_s * 0.7 - 600.0)).round();
            let id = format!("{}-n", model.capabilities.worker_id);
            if out.iter().all(|w| w.capabilities.worker_id != id) {
                out.push(renamed(model, "n", Some(join)));
            }
        }
        out
    }
}

/// A copy of `w` registering as `{id}-{suffix}` at `join_s`, never leaving.
fn renamed(w: &WorkerLine, suffix: &str, join_s: Option<f64>) -> WorkerLine {
    let mut w = w.clone();
    let c = &mut w.capabilities;
    c.worker_id = format!("{}-{suffix}", c.worker_id);
    c.hostname.clone_from(&c.worker_id);
    for g in &mut c.gpus {
        g.uuid = format!("{}-{suffix}", g.uuid);
    }
    w.join_s = join_s;
    w.leave_s = None;
    w
}
