//! Runs labelled variants of the simulation (a policy, or an ablation of
//! hwsched) on the traces of many seeds, the seeds in parallel, with results
//! in seed order whatever the number of threads.

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use hwsched_placement::Policy;

use crate::{engine::Config, report::Report, trace::Trace};

/// One way to run the simulation: a label (the report's `policy` in the
/// output) and its settings. The seed of the failure draws is set per run.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Its name in the output.
    pub label: String,
    /// Its settings.
    pub config: Config,
}

/// An ablation: its label and what it changes in hwsched's settings.
pub type Ablation = (&'static str, fn(&mut Config));

/// The ablations of hwsched `--ablation` adds (before hwsched, in this order):
/// a label and what it changes in hwsched's settings.
pub const ABLATIONS: &[Ablation] = &[
    // nothing learned: no model and no trust in declarations
    ("hwsched-no-learner", |c| {
        c.learn = false;
        c.trust = false;
    }),
    ("hwsched-no-batch", |c| c.batch = None),
    ("hwsched-no-trust", |c| c.trust = false),
    // the baselines' failure handling: no quarantine, out-of-memory retries with the same memory
    ("hwsched-failure-blind", |c| c.failure_handling = false),
];

/// One variant per policy on the `base` settings, and with `ablation` the
/// [`ABLATIONS`] of hwsched inserted before the last hwsched.
pub fn variants(policies: &[Policy], base: &Config, ablation: bool) -> Vec<Variant> {
    let mut out: Vec<Variant> = policies
        .iter()
        .map(|p| Variant { label: p.name().to_string(), config: Config { policy: *p, ..base.clone() } })
        .collect();
    if ablation {
        let at = out.iter().rposition(|v| v.config.policy == Policy::Hwsched).unwrap_or(out.len());
        for (i, (label, change)) in ABLATIONS.iter().enumerate() {
            let mut config = Config { policy: Policy::Hwsched, ..base.clone() };
            change(&mut config);
            out.insert(at + i, Variant { label: (*label).to_string(), config });
        }
    }
    out
}

/// Runs every variant on `trace`, the failure draws seeded with `seed`.
pub fn run_variants(trace: &Trace, variants: &[Variant], seed: u64) -> Vec<Report> {
    variants
        .iter()
        .map(|v| {
            let mut r = crate::engine::run(trace, &Config { seed, ..v.config.clone() });
            r.policy.clone_from(&v.label);
            r
        })
        .collect()
}

/// What the variants did on one seed's trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRuns {
    /// The seed (of the trace and of the failure draws).
    pub seed: u64,
    /// Workers in its trace.
    pub workers: usize,
    /// Tasks in its trace.
    pub tasks: usize,
    /// One report per variant, in the variants' order.
    pub reports: Vec<Report>,
}

/// Runs every variant on the trace `generate` makes for each seed, up to
/// `threads` seeds at a time; the result is in the order of `seeds`.
pub fn run_seeds(generate: fn(u64) -> Trace, seeds: &[u64], variants: &[Variant], threads: usize) -> Vec<SeedRuns> {
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<SeedRuns>>> = Mutex::new(vec![None; seeds.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, seeds.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let trace = generate(seed);
                let runs = SeedRuns {
                    seed,
                    workers: trace.workers.len(),
                    tasks: trace.tasks.len(),
                    reports: run_variants(&trace, variants, seed),
                };
                if let Ok(mut d) = done.lock() {
                    d[i] = Some(runs);
                }
            });
        }
    });
    done.into_inner().unwrap_or_default().into_iter().flatten().collect()
}

/// Why a seed list does not parse.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("seeds {0:?}: expected N, A..B or A-B (inclusive), or a comma-separated list of those")]
pub struct SeedsError(String);

/// The most seeds one list may select.
pub const MAX_SEEDS: usize = 10_000;

/// Parses `1..20`, `1-20` (both inclusive), `7` and comma-separated lists of
/// those (`1..3,9`): the seeds in ascending order, each once.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>, SeedsError> {
    let bad = || SeedsError(spec.to_string());
    let mut out = BTreeSet::new();
    for part in spec.split(',').map(str::trim) {
        let (a, b) = match part.split_once("..").or_else(|| part.split_once('-')) {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u64 = a.parse().map_err(|_| bad())?;
        let b: u64 = b.parse().map_err(|_| bad())?;
        if b < a || b - a >= MAX_SEEDS as u64 {
            return Err(bad());
        }
        out.extend(a..=b);
        if out.len() > MAX_SEEDS {
            return Err(bad());
        }
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::burst::Burst;

    #[test]
    fn seed_lists_parse() {
        assert_eq!(parse_seeds("1..5"), Ok(vec![1, 2, 3, 4, 5]));
        assert_eq!(parse_seeds("1-5"), Ok(vec![1, 2, 3, 4, 5]));
        assert_eq!(parse_seeds("7"), Ok(vec![7]));
        assert_eq!(parse_seeds("9, 1..3,2"), Ok(vec![1, 2, 3, 9]));
        assert_eq!(parse_seeds("3..3"), Ok(vec![3]));
        for bad in ["", "a", "5..1", "1..", "-3", "1..2..3", "0..99999999"] {
            assert!(parse_seeds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn variants_follow_the_policies_and_ablations_go_before_hwsched() {
        let v = variants(&[Policy::Seed, Policy::Hwsched], &Config::default(), true);
        let labels: Vec<&str> = v.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(
            labels,
            ["seed", "hwsched-no-learner", "hwsched-no-batch", "hwsched-no-trust", "hwsched-failure-blind", "hwsched"]
        );
        assert!(!v[1].config.learn && !v[1].config.trust && v[5].config.learn);
        assert!(v[2].config.batch.is_none() && v[5].config.batch.is_some());
        assert!(!v[3].config.trust && v[5].config.trust);
        assert!(!v[4].config.handles_failures() && v[5].config.handles_failures());
        assert!(!v[0].config.handles_failures(), "the baselines never handle failures by category");
    }

    fn tiny(seed: u64) -> Trace {
        Burst { tests: (30, 50), workers: (8, 10), ..Burst::default() }.generate(seed)
    }

    #[test]
    fn seeds_in_parallel_give_what_one_thread_gives() {
        let v = variants(&[Policy::LeastLoaded, Policy::Hwsched], &Config::default(), true);
        let one = run_seeds(tiny, &[1, 2, 3], &v, 1);
        let three = run_seeds(tiny, &[1, 2, 3], &v, 3);
        assert_eq!(one, three);
        assert_eq!(one.iter().map(|r| r.seed).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(one[0].reports[1].policy, "hwsched-no-learner");
    }
}
