//! Tasks drawn from a seed: suites of tests of the shared kinds, each test
//! with its own speed factor, each run with its own noise, producers whose
//! declared durations may be consistently wrong.

use std::collections::BTreeMap;

use crate::{
    kinds::{self, Kind, TaskSpec},
    rng::Rng,
    trace::TaskLine,
};

/// How the tasks of a scenario are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixture {
    /// Spread of the per-test speed factor (log-normal sigma, median 1): 0.3
    /// as in the built-in trace; 1.0 is heavy-tailed.
    pub test_sigma: f64,
    /// Variants of each named test (`resnet50-accuracy-v2`, ...), each its own
    /// workload with its own speed factor.
    pub variants: usize,
    /// Per-run noise on the runtime (log-normal sigma).
    pub run_noise: f64,
    /// Probability that an attempt fails, on every class.
    pub flaky: f64,
    /// Share of producers whose declared `expected_duration_s` is wrong.
    pub lying_producers: f64,
    /// Range of how wrong a lying producer is (a factor, too long or too
    /// short with even odds, the same for all its tasks).
    pub lie_factor: (f64, f64),
}

impl Default for Mixture {
    fn default() -> Self {
        Self {
            test_sigma: 0.3,
            variants: 1,
            run_noise: 0.08,
            flaky: kinds::FLAKY,
            lying_producers: 0.0,
            lie_factor: (3.0, 10.0),
        }
    }
}

/// Draws tasks.
#[derive(Debug)]
pub struct Traffic<'k> {
    kinds: &'k [Kind],
    mixture: Mixture,
    rng: Rng,
    factor: BTreeMap<String, f64>,
    lie: BTreeMap<String, f64>,
    /// The tasks drawn so far.
    pub tasks: Vec<TaskLine>,
}

impl<'k> Traffic<'k> {
    /// Tests of `kinds` (by their weights), drawn with `rng`.
    pub fn new(kinds: &'k [Kind], mixture: Mixture, mut rng: Rng) -> Self {
        let mut factor = BTreeMap::new();
        for k in kinds {
            for (t, _) in k.tests {
                for v in 0..mixture.variants.max(1) {
                    factor.insert(variant(t, v, mixture.variants), rng.lognormal(mixture.test_sigma));
                }
            }
        }
        Self { kinds, mixture, rng, factor, lie: BTreeMap::new(), tasks: Vec::new() }
    }

    /// The factor on `producer`'s declared durations (drawn on first use).
    fn lie(&mut self, producer: &str) -> f64 {
        if let Some(f) = self.lie.get(producer) {
            return *f;
        }
        let m = &self.mixture;
        let f = if self.rng.f64() < m.lying_producers {
            let (lo, hi) = m.lie_factor;
            let f = lo * (hi / lo.max(1e-9)).powf(self.rng.f64());
            if self.rng.f64() < 0.5 {
                f
            } else {
                1.0 / f
            }
        } else {
            1.0
        };
        self.lie.insert(producer.to_string(), f);
        f
    }

    /// A suite of `size` tests from `producer` arriving from `at` over `spread_s`.
    pub fn suite(&mut self, at: f64, spread_s: f64, producer: &str, priority: u32, size: usize) {
        let lie = self.lie(producer);
        for n in 0..size {
            let kind = kinds::pick(self.kinds, self.rng.f64());
            let (test, family) = kind.tests[self.rng.below(kind.tests.len())];
            let name = variant(test, self.rng.below(self.mixture.variants.max(1)), self.mixture.variants);
            let factor = self.rng.lognormal(self.mixture.run_noise) * self.factor.get(&name).copied().unwrap_or(1.0);
            let arrival = at + spread_s * self.rng.f64();
            let spec = TaskSpec {
                name: &name,
                family,
                id: format!("{producer}-{}-{n:03}", (at * 10.0).round() as u64),
                at: arrival,
                producer,
                priority,
                factor,
                declared_s: (kind.declared_s * lie * 10.0).round() / 10.0,
                flaky: self.mixture.flaky,
            };
            self.tasks.push(kinds::task(kind, &spec));
        }
    }

    /// Pull-request suites of `sizes` tests (inclusive range) from `from_s`
    /// until `to_s`, each from its own producer `{prefix}{n}`, the gaps
    /// between them uniform in `gap_s`.
    pub fn pull_requests(
        &mut self,
        prefix: &str,
        (from_s, to_s): (f64, f64),
        gap_s: (f64, f64),
        sizes: (usize, usize),
        priority: u32,
    ) {
        let mut at = from_s;
        let mut n = 0;
        while at < to_s {
            n += 1;
            let size = sizes.0 + self.rng.below(sizes.1.saturating_sub(sizes.0) + 1);
            self.suite(at, 0.0, &format!("{prefix}{n}"), priority, size);
            at += gap_s.0 + (gap_s.1 - gap_s.0) * self.rng.f64();
        }
    }

    /// The random stream, for the caller's own draws.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The tasks by arrival.
    pub fn into_tasks(mut self) -> Vec<TaskLine> {
        self.tasks.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        self.tasks
    }
}

fn variant(test: &str, v: usize, variants: usize) -> String {
    if variants > 1 {
        format!("{test}-v{v}")
    } else {
        test.to_string()
    }
}
