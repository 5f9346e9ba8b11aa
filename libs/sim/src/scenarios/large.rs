//! `large`: 2,400 tests on 56 workers, the size of the simulator's speed
//! target (one replay of every policy within 10 s).

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
};
use crate::{kinds::KINDS, rng::Rng, trace::Trace};

/// The parameters of `large`.
#[derive(Debug, Clone, PartialEq)]
pub struct Large {
    /// Tests in all: a nightly of a quarter of them, pull requests the rest.
    pub tests: usize,
    /// Workers (the mix drawn per seed; 2 browsers, 2 phones).
    pub workers: usize,
    /// Pull-request suites' sizes (priority 2).
    pub pr_sizes: (usize, usize),
    /// Length of the traffic, s: the gaps between suites are drawn so that
    /// the pull requests fill about this long.
    pub traffic_s: f64,
    /// Cooling and shared CPUs.
    pub heat: Heat,
    /// How tests and runs vary.
    pub mixture: Mixture,
}

impl Default for Large {
    fn default() -> Self {
        Self {
            tests: 2_400,
            workers: 56,
            pr_sizes: (8, 30),
            traffic_s: 3_600.0,
            heat: Heat::default(),
            mixture: Mixture::default(),
        }
    }
}

impl Large {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0x1a46e);
        let mix = Mix::draw(&mut rng, self.workers, 2, 2);
        let workers = fleet::build(&mut rng, &mix, &self.heat, self.traffic_s);
        let mut traffic = Traffic::new(KINDS, self.mixture.clone(), rng);
        let nightly = self.tests / 4;
        traffic.suite(600.0, 0.0, "nightly", 4, nightly);
        let pr_tests = self.tests - nightly;
        let mean_size = (self.pr_sizes.0 + self.pr_sizes.1) as f64 / 2.0;
        let mean_gap = self.traffic_s * mean_size / pr_tests.max(1) as f64;
        let (mut at, mut n, mut left) = (0.0, 0, pr_tests);
        while left > 0 {
            n += 1;
            let spread = self.pr_sizes.1.saturating_sub(self.pr_sizes.0) + 1;
            let size = (self.pr_sizes.0 + traffic.rng().below(spread)).min(left);
            traffic.suite(at, 0.0, &format!("pr{n}"), 2, size);
            left -= size;
            at += traffic.rng().exp(mean_gap);
        }
        Trace { workers, tasks: traffic.into_tasks() }
    }
}
