//! `new-hardware`: a new GPU generation (B200) enters service half-way through
//! steady pull-request traffic and a nightly: every (test, B200) pair is
//! unseen when it arrives, and it is faster than the H100 by a factor that
//! depends on the kind of test.

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
    within,
};
use crate::{
    kinds::{B200, H100, KINDS},
    rng::Rng,
    trace::{TaskLine, Trace},
};

/// The parameters of `new-hardware` (ranges are inclusive and drawn per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct NewHardware {
    /// Workers of the fleet before the new hardware.
    pub workers: (usize, usize),
    /// B200 hosts; all join at `join_share` of the traffic.
    pub new_hosts: (usize, usize),
    /// When they join, as a share of `traffic_s`.
    pub join_share: f64,
    /// B200 runtime as a share of the H100's, by test type (unlisted: 1.0,
    /// CPU-bound); each drawn again per seed within ±15 %.
    pub speedup: &'static [(&'static str, f64)],
    /// Tests in the nightly (priority 4), submitted after the new hardware joined.
    pub nightly: (usize, usize),
    /// Pull-request suites' sizes (priority 2).
    pub pr_sizes: (usize, usize),
    /// Gap between pull-request suites, s (uniform).
    pub pr_gap_s: (f64, f64),
    /// Length of the traffic, s.
    pub traffic_s: f64,
    /// Cooling and shared CPUs.
    pub heat: Heat,
    /// How tests and runs vary.
    pub mixture: Mixture,
}

impl Default for NewHardware {
    fn default() -> Self {
        Self {
            workers: (20, 36),
            new_hosts: (3, 6),
            join_share: 0.5,
            speedup: &[
                ("vision-inference", 0.55),
                ("nlp-inference", 0.45),
                ("audio-inference", 0.7),
                ("training", 0.4),
                ("kernels", 0.35),
            ],
            nightly: (200, 400),
            pr_sizes: (8, 30),
            pr_gap_s: (50.0, 100.0),
            traffic_s: 3_600.0,
            heat: Heat::default(),
            mixture: Mixture::default(),
        }
    }
}

impl NewHardware {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0xb200);
        let total = within(&mut rng, self.workers);
        let (browsers, phones) = (within(&mut rng, (1, 2)), within(&mut rng, (1, 2)));
        let mut mix = Mix::draw(&mut rng, total, browsers, phones);
        mix.b200 = within(&mut rng, self.new_hosts);
        let mut workers = fleet::build(&mut rng, &mix, &self.heat, self.traffic_s);
        let join_s = (self.traffic_s * self.join_share).round();
        for w in workers.iter_mut().filter(|w| w.capabilities.hardware_class == B200) {
            w.join_s = Some(join_s);
        }
        let speedup: Vec<(&str, f64)> = self.speedup.iter().map(|(t, f)| (*t, f * (0.85 + 0.3 * rng.f64()))).collect();
        let nightly = within(&mut rng, self.nightly);
        let nightly_at = (join_s + (self.traffic_s - join_s) * 0.4 * rng.f64()).round();
        let mut traffic = Traffic::new(KINDS, self.mixture.clone(), rng);
        traffic.pull_requests("pr", (0.0, self.traffic_s), self.pr_gap_s, self.pr_sizes, 2);
        traffic.suite(nightly_at, 0.0, "nightly", 4, nightly);
        let mut tasks = traffic.into_tasks();
        for t in &mut tasks {
            add_new_class(t, &speedup);
        }
        Trace { workers, tasks }
    }
}

/// The B200 runtime of a task that runs on H100s (every task a B200 fits does).
fn add_new_class(t: &mut TaskLine, speedup: &[(&str, f64)]) {
    let Some(h100) = t.runtime_s.get(H100).copied() else { return };
    let f = speedup.iter().find(|(k, _)| *k == t.request.test_type).map_or(1.0, |(_, f)| *f);
    t.runtime_s.insert(B200.to_string(), (h100 * f * 10.0).round() / 10.0);
    if let Some(p) = t.failure_rate.get(H100).copied() {
        t.failure_rate.insert(B200.to_string(), p);
    }
}
