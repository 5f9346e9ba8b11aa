//! `burst`: a nightly of about a thousand tests arriving within one minute on
//! a mixed fleet with scarce browsers and phones and some poorly cooled GPUs.

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
    within,
};
use crate::{kinds::KINDS, rng::Rng, trace::Trace};

/// The parameters of `burst` (ranges are inclusive and drawn per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    /// Tests in the nightly.
    pub tests: (usize, usize),
    /// Workers in the fleet.
    pub workers: (usize, usize),
    /// Browsers, and phones (each drawn in this range).
    pub scarce: (usize, usize),
    /// The nightly's teams: each submits its share at its own moment.
    pub teams: usize,
    /// Window in which all of it arrives, s.
    pub window_s: f64,
    /// Cooling and shared CPUs.
    pub heat: Heat,
    /// How tests and runs vary.
    pub mixture: Mixture,
}

impl Default for Burst {
    fn default() -> Self {
        Self {
            tests: (600, 1_400),
            workers: (20, 40),
            scarce: (1, 2),
            teams: 6,
            window_s: 60.0,
            heat: Heat { poorly_cooled: 0.3, ..Heat::default() },
            mixture: Mixture::default(),
        }
    }
}

impl Burst {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0xb0b5);
        let total = within(&mut rng, self.workers);
        let (browsers, phones) = (within(&mut rng, self.scarce), within(&mut rng, self.scarce));
        let mix = Mix::draw(&mut rng, total, browsers, phones);
        let workers = fleet::build(&mut rng, &mix, &self.heat, 3_600.0);
        let tests = within(&mut rng, self.tests);
        let mut traffic = Traffic::new(KINDS, self.mixture.clone(), rng);
        let teams = self.teams.max(1);
        for team in 0..teams {
            let size = tests / teams + usize::from(team < tests % teams);
            let at = (traffic.rng().f64() * self.window_s * 0.8).round();
            traffic.suite(at, self.window_s * 0.2, &format!("nightly-team{}", team + 1), 4, size);
        }
        Trace { workers, tasks: traffic.into_tasks() }
    }
}
