//! `flood`: a large priority-5 regression dumped at once while priority-1
//! pull-request suites keep arriving; heavy-tailed test sizes, and a third of
//! the producers declare durations 3-10× wrong.

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
    within,
};
use crate::{kinds::KINDS, rng::Rng, trace::Trace};

/// The parameters of `flood` (ranges are inclusive and drawn per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Flood {
    /// Tests of the regression (priority 5), submitted at once.
    pub regression: usize,
    /// When it is submitted, s (± 5 s).
    pub regression_at_s: f64,
    /// Tests in each pull-request suite (priority 1, each its own producer).
    pub pr_sizes: (usize, usize),
    /// Gap between pull-request suites, s (uniform).
    pub pr_gap_s: (f64, f64),
    /// How long pull requests keep coming, s.
    pub traffic_s: f64,
    /// Workers in the fleet.
    pub workers: (usize, usize),
    /// Cooling and shared CPUs.
    pub heat: Heat,
    /// How tests and runs vary: heavy-tailed and with lying producers.
    pub mixture: Mixture,
}

impl Default for Flood {
    fn default() -> Self {
        Self {
            regression: 800,
            regression_at_s: 60.0,
            pr_sizes: (8, 30),
            pr_gap_s: (60.0, 90.0),
            traffic_s: 3_600.0,
            workers: (20, 40),
            heat: Heat::default(),
            mixture: Mixture { test_sigma: 1.0, variants: 3, lying_producers: 1.0 / 3.0, ..Mixture::default() },
        }
    }
}

impl Flood {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0xf100d);
        let total = within(&mut rng, self.workers);
        let (browsers, phones) = (within(&mut rng, (1, 3)), within(&mut rng, (1, 3)));
        let mix = Mix::draw(&mut rng, total, browsers, phones);
        let workers = fleet::build(&mut rng, &mix, &self.heat, self.traffic_s);
        let mut traffic = Traffic::new(KINDS, self.mixture.clone(), rng);
        let at = self.regression_at_s - 5.0 + (10.0 * traffic.rng().f64()).round();
        traffic.suite(at, 0.0, "regression", 5, self.regression);
        traffic.pull_requests("pr", (0.0, self.traffic_s), self.pr_gap_s, self.pr_sizes, 1);
        Trace { workers, tasks: traffic.into_tasks() }
    }
}
