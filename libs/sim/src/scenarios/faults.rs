//! `faults`: an hour of CI traffic on a mixed fleet while things go wrong
//! the way they do in a CI farm. The mix was chosen from what farms report,
//! before any policy was run on it, and is not tuned to any result:
//!
//! - Flaky tests: one test in ten is flaky, failing 5-30 % of its runs
//!   on any hardware, and the rest are deterministic; that is 1-2 % of all
//!   runs failing by flakiness, the order Google reports for its CI (about
//!   1.5 % of test runs flaky, one test in six flaky at some point). The
//!   bf16 kernels still fail 70 % of the time on T4 (`kinds`).
//! - Tests that outgrew their memory request: 4 % of tests need 1.1-2x the
//!   memory they ask for (a model or a data set grew, the request did not),
//!   so an attempt granted only the request is OOM-killed part-way.
//! - Workers going bad: 1-3 workers (never the first of a class) go bad once
//!   for 15-40 minutes (a full disk, a broken driver, a bad NIC), failing
//!   30-80 % of the attempts started on them as test failures do.
//! - A GPU fault burst: one GPU host (never the first of its class) has GPU
//!   faults (Xid errors, a GPU off the bus) for 5-15 minutes, ending 50-100 %
//!   of its attempts GPU_FAULT.
//! - Stragglers: every attempt has a 2 % chance to run 2-4x longer (a noisy
//!   neighbour, a cold cache), the factor drawn per task.
//!
//! Traffic is the `churn` family's (PR suites every 40-80 s, a nightly at
//! 10 minutes), each suite at its own revision (`rev-{producer}`), so a test
//! that fails and then passes on a retry is seen flaky at that revision.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    fleet::{self, Heat, Mix},
    traffic::{Mixture, Traffic},
    within,
};
use crate::{
    kinds::KINDS,
    rng::Rng,
    trace::{FaultKind, Straggler, TaskLine, Trace, WorkerFault, WorkerLine},
};

/// The parameters of `faults` (ranges are inclusive and drawn per seed).
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Workers in the fleet.
    pub workers: (usize, usize),
    /// Workers that go bad once.
    pub bad_workers: (usize, usize),
    /// How long a worker stays bad, s (uniform).
    pub bad_window_s: (f64, f64),
    /// Share of its attempts a bad worker fails (uniform, per worker).
    pub bad_p: (f64, f64),
    /// GPU hosts with a GPU fault burst.
    pub gpu_bursts: (usize, usize),
    /// How long a burst lasts, s (uniform).
    pub burst_window_s: (f64, f64),
    /// Share of attempts a burst ends GPU_FAULT (uniform, per burst).
    pub burst_p: (f64, f64),
    /// Share of tests (by name) that are flaky (rounded, at least one).
    pub flaky_tests: f64,
    /// A flaky test's failure rate (uniform, per test).
    pub flaky_p: (f64, f64),
    /// Share of the tests that ask for memory that need more than they ask
    /// for (rounded, at least one).
    pub oom_tests: f64,
    /// What such a test needs, as a multiple of its request (uniform, per test).
    pub oom_need: (f64, f64),
    /// Probability that an attempt straggles.
    pub straggler_p: f64,
    /// How much longer a straggling attempt runs (uniform, per task).
    pub straggler_factor: (f64, f64),
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
    /// How tests and runs vary (flakiness is the flaky tests' alone).
    pub mixture: Mixture,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            workers: (24, 40),
            bad_workers: (1, 3),
            bad_window_s: (900.0, 2_400.0),
            bad_p: (0.3, 0.8),
            gpu_bursts: (1, 1),
            burst_window_s: (300.0, 900.0),
            burst_p: (0.5, 1.0),
            flaky_tests: 0.1,
            flaky_p: (0.05, 0.3),
            oom_tests: 0.04,
            oom_need: (1.1, 2.0),
            straggler_p: 0.02,
            straggler_factor: (2.0, 4.0),
            pr_sizes: (8, 30),
            pr_gap_s: (40.0, 80.0),
            nightly: (150, 300),
            traffic_s: 3_600.0,
            heat: Heat::default(),
            mixture: Mixture { flaky: 0.0, variants: 3, ..Mixture::default() },
        }
    }
}

fn between(rng: &mut Rng, (lo, hi): (f64, f64)) -> f64 {
    lo + (hi - lo) * rng.f64()
}

impl Faults {
    /// The trace for `seed`.
    pub fn generate(&self, seed: u64) -> Trace {
        let mut rng = Rng::new(seed ^ 0xfa17);
        let total = within(&mut rng, self.workers);
        let (browsers, phones) = (within(&mut rng, (1, 2)), within(&mut rng, (1, 2)));
        let mix = Mix::draw(&mut rng, total, browsers, phones);
        let mut workers = fleet::build(&mut rng, &mix, &self.heat, self.traffic_s);
        self.break_workers(&mut rng, &mut workers);
        let nightly = within(&mut rng, self.nightly);
        let mut traffic = Traffic::new(KINDS, self.mixture.clone(), rng);
        traffic.pull_requests("pr", (0.0, self.traffic_s), self.pr_gap_s, self.pr_sizes, 2);
        traffic.suite(600.0, 0.0, "nightly", 4, nightly);
        let mut rng = traffic.rng().clone();
        let mut tasks = traffic.into_tasks();
        self.break_tests(&mut rng, &mut tasks);
        Trace { workers, tasks }
    }

    /// Bad-worker windows and GPU fault bursts, never on the first worker of
    /// a class (so every class keeps a healthy worker).
    fn break_workers(&self, rng: &mut Rng, workers: &mut [WorkerLine]) {
        let spares: Vec<usize> =
            (0..workers.len()).filter(|i| !workers[*i].capabilities.worker_id.ends_with("-01")).collect();
        let mut taken = BTreeSet::new();
        let window = |rng: &mut Rng, len: (f64, f64)| {
            let from_s = (300.0 + rng.f64() * (self.traffic_s * 0.6 - 300.0)).round();
            (from_s, (from_s + between(rng, len)).round())
        };
        let gpus: Vec<usize> = spares.iter().copied().filter(|i| !workers[*i].capabilities.gpus.is_empty()).collect();
        for _ in 0..within(rng, self.gpu_bursts).min(gpus.len()) {
            let w = gpus[rng.below(gpus.len())];
            if taken.insert(w) {
                let (from_s, to_s) = window(rng, self.burst_window_s);
                let p = (between(rng, self.burst_p) * 100.0).round() / 100.0;
                workers[w].faults.push(WorkerFault { kind: FaultKind::GpuFault, from_s, to_s, p });
            }
        }
        for _ in 0..within(rng, self.bad_workers).min(spares.len()) {
            let w = spares[rng.below(spares.len())];
            if taken.insert(w) {
                let (from_s, to_s) = window(rng, self.bad_window_s);
                let p = (between(rng, self.bad_p) * 100.0).round() / 100.0;
                workers[w].faults.push(WorkerFault { kind: FaultKind::Failing, from_s, to_s, p });
            }
        }
    }

    /// Flaky tests, tests that outgrew their memory request (both per test),
    /// stragglers and revisions (per task).
    fn break_tests(&self, rng: &mut Rng, tasks: &mut [TaskLine]) {
        let asks = |t: &TaskLine| t.request.requirements.as_ref().is_some_and(|r| r.memory_mb > 0);
        let names: Vec<String> =
            tasks.iter().map(|t| t.request.name.clone()).collect::<BTreeSet<_>>().into_iter().collect();
        let asking: Vec<String> = tasks
            .iter()
            .filter(|t| asks(t))
            .map(|t| t.request.name.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut flaky: BTreeMap<&str, f64> = BTreeMap::new();
        for n in choose(rng, &names, self.flaky_tests) {
            flaky.insert(n, (between(rng, self.flaky_p) * 100.0).round() / 100.0);
        }
        let mut need: BTreeMap<&str, f64> = BTreeMap::new();
        for n in choose(rng, &asking, self.oom_tests) {
            need.insert(n, between(rng, self.oom_need));
        }
        for t in tasks.iter_mut() {
            let name = t.request.name.as_str();
            if let Some(p) = flaky.get(name) {
                for rate in t.failure_rate.values_mut() {
                    *rate = rate.max(*p);
                }
                for class in t.runtime_s.keys() {
                    t.failure_rate.entry(class.clone()).or_insert(*p);
                }
            }
            let asked = t.request.requirements.as_ref().map_or(0, |r| r.memory_mb);
            if let Some(f) = need.get(name).filter(|_| asked > 0) {
                t.needs_memory_mb = Some((asked as f64 * f).round() as i64);
            }
            let factor = (between(rng, self.straggler_factor) * 10.0).round() / 10.0;
            t.straggler = Some(Straggler { p: self.straggler_p, factor });
            t.request.revision = format!("rev-{}", t.request.producer);
        }
    }
}

/// `share` of `names` (rounded, at least one when the share is positive), drawn without repetition.
fn choose<'a>(rng: &mut Rng, names: &'a [String], share: f64) -> Vec<&'a str> {
    let want = if share > 0.0 { ((share * names.len() as f64).round() as usize).max(1) } else { 0 };
    let mut left: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    while out.len() < want && !left.is_empty() {
        out.push(left.swap_remove(rng.below(left.len())));
    }
    out
}

#[cfg(test)]
mod tests {
    use hwsched_placement::Policy;

    use super::*;
    use crate::engine::{run, Config};

    fn small(seed: u64) -> Trace {
        Faults { workers: (10, 12), traffic_s: 900.0, pr_sizes: (3, 8), nightly: (20, 30), ..Faults::default() }
            .generate(seed)
    }

    #[test]
    fn the_trace_has_every_fault_it_promises() {
        let t = Faults::default().generate(3);
        t.check().expect("valid");
        let kinds = |k: FaultKind| t.workers.iter().filter(|w| w.faults.iter().any(|f| f.kind == k)).count();
        assert_eq!(kinds(FaultKind::GpuFault), 1);
        assert!((1..=3).contains(&kinds(FaultKind::Failing)), "{}", kinds(FaultKind::Failing));
        assert!(t.workers.iter().filter(|w| !w.faults.is_empty()).all(|w| !w.capabilities.worker_id.ends_with("-01")));
        let flaky: BTreeSet<&str> = t
            .tasks
            .iter()
            .filter(|t| !t.request.name.contains("bf16") && t.failure_rate.values().any(|p| *p > 0.0))
            .map(|t| t.request.name.as_str())
            .collect();
        let names: BTreeSet<&str> = t.tasks.iter().map(|t| t.request.name.as_str()).collect();
        assert!(!flaky.is_empty() && 4 * flaky.len() < names.len(), "{} of {}", flaky.len(), names.len());
        assert!(t.tasks.iter().any(|t| t.needs_memory_mb.is_some()));
        assert!(t.tasks.iter().all(|t| t.straggler.is_some() && t.request.revision.starts_with("rev-")));
    }

    #[test]
    fn the_scenario_is_deterministic_per_seed() {
        let (a, b) = (small(4), small(4));
        assert_eq!(a, b);
        assert_ne!(a, small(5));
        for p in [Policy::LeastLoaded, Policy::Hwsched] {
            let cfg = Config { policy: p, seed: 4, ..Config::default() };
            let (ra, rb) = (run(&a, &cfg), run(&b, &cfg));
            assert_eq!(ra, rb, "{p}");
            assert_eq!(ra.unfinished, 0, "{p}");
        }
    }
}
