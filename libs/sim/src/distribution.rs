//! The distribution of what each run variant achieved over many seeds of a
//! scenario: median and worst seed of each measure, and the base variant's
//! (hwsched's) per-seed gain over each other one. Field names are documented
//! in docs/SIMULATOR.md and read by other tools: keep them.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use crate::{report::Report, runner::SeedRuns};

/// The median and the worst seed of one measure.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Spread {
    /// The median over the seeds (the mean of the middle two for an even count).
    pub median: f64,
    /// The worst seed's value (the largest, or for a gain the smallest).
    pub worst: f64,
}

impl Spread {
    /// Over `xs`; `higher_is_worse` says which end is the worst. None when empty.
    fn of(mut xs: Vec<f64>, higher_is_worse: bool) -> Option<Self> {
        if xs.is_empty() {
            return None;
        }
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        let median = if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 };
        let worst = if higher_is_worse { xs[n - 1] } else { xs[0] };
        Some(Self { median: round(median), worst: round(worst) })
    }
}

/// One variant over every seed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VariantSpread {
    /// The variant's label (policy name or ablation).
    pub policy: String,
    /// `mean_completion_s` over the seeds.
    pub mean_completion_s: Spread,
    /// `p95_completion_s` over the seeds.
    pub p95_completion_s: Spread,
    /// `makespan_s / makespan_lower_bound_s` over the seeds.
    pub makespan_over_bound: Spread,
    /// `throttled_placements` over the seeds.
    pub throttled_placements: Spread,
    /// `prediction_mape_by_age["unseen"]` over the seeds that had such
    /// predictions (null: none did).
    pub unseen_prediction_mape: Option<Spread>,
    /// Seeds with tasks unfinished at the horizon (0 expected).
    pub seeds_unfinished: usize,
    /// `failed` (tasks) over the seeds.
    pub failed: Spread,
    /// `failed_not_own` over the seeds.
    pub failed_not_own: Spread,
    /// `wasted_machine_s` over the seeds.
    pub wasted_machine_s: Spread,
    /// `quarantines` over the seeds.
    pub quarantines: Spread,
    /// `flaky_tests_found` over the seeds.
    pub flaky_tests_found: Spread,
    /// Only for the base variant: per seed, `1 - base/other` of
    /// `mean_completion_s`, by the other variant (positive: the base is faster).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub gain_vs: BTreeMap<String, Spread>,
}

/// Every variant over every seed of a scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Distribution {
    /// The scenario's name.
    pub scenario: String,
    /// The seeds run.
    pub seeds: Vec<u64>,
    /// The variant the gains are of (hwsched when run, else the last).
    pub base: String,
    /// One entry per variant, in the order run.
    pub policies: Vec<VariantSpread>,
}

/// The distribution of `runs` (each seed's reports in the same variant order).
pub fn summarize(scenario: &str, runs: &[SeedRuns]) -> Distribution {
    let labels: Vec<String> =
        runs.first().map(|r| r.reports.iter().map(|r| r.policy.clone()).collect()).unwrap_or_default();
    let base = labels.iter().rposition(|l| l == "hwsched").or(labels.len().checked_sub(1));
    let column = |i: usize, f: &dyn Fn(&Report) -> Option<f64>| -> Vec<f64> {
        runs.iter().filter_map(|r| r.reports.get(i)).filter_map(f).collect()
    };
    let zero = Spread { median: 0.0, worst: 0.0 };
    let policies = labels
        .iter()
        .enumerate()
        .map(|(i, label)| {
            let mut gain_vs = BTreeMap::new();
            if Some(i) == base {
                for (j, other) in labels.iter().enumerate().filter(|(j, _)| *j != i) {
                    let gains = runs
                        .iter()
                        .filter_map(|r| Some((r.reports.get(i)?, r.reports.get(j)?)))
                        .filter(|(_, theirs)| theirs.mean_completion_s > 0.0)
                        .map(|(ours, theirs)| 1.0 - ours.mean_completion_s / theirs.mean_completion_s)
                        .collect();
                    if let Some(s) = Spread::of(gains, false) {
                        gain_vs.insert(other.clone(), s);
                    }
                }
            }
            VariantSpread {
                policy: label.clone(),
                mean_completion_s: Spread::of(column(i, &|r| Some(r.mean_completion_s)), true).unwrap_or(zero),
                p95_completion_s: Spread::of(column(i, &|r| Some(r.p95_completion_s)), true).unwrap_or(zero),
                makespan_over_bound: Spread::of(
                    column(i, &|r| (r.makespan_lower_bound_s > 0.0).then(|| r.makespan_s / r.makespan_lower_bound_s)),
                    true,
                )
                .unwrap_or(zero),
                throttled_placements: Spread::of(column(i, &|r| Some(r.throttled_placements as f64)), true)
                    .unwrap_or(zero),
                unseen_prediction_mape: Spread::of(
                    column(i, &|r| r.prediction_mape_by_age.get("unseen").copied()),
                    true,
                ),
                seeds_unfinished: column(i, &|r| Some(r.unfinished as f64)).iter().filter(|u| **u > 0.0).count(),
                failed: Spread::of(column(i, &|r| Some(r.failed as f64)), true).unwrap_or(zero),
                failed_not_own: Spread::of(column(i, &|r| Some(r.failed_not_own as f64)), true).unwrap_or(zero),
                wasted_machine_s: Spread::of(column(i, &|r| Some(r.wasted_machine_s)), true).unwrap_or(zero),
                quarantines: Spread::of(column(i, &|r| Some(r.quarantines as f64)), true).unwrap_or(zero),
                flaky_tests_found: Spread::of(column(i, &|r| Some(r.flaky_tests_found as f64)), true).unwrap_or(zero),
                gain_vs,
            }
        })
        .collect();
    Distribution {
        scenario: scenario.to_string(),
        seeds: runs.iter().map(|r| r.seed).collect(),
        base: base.and_then(|b| labels.get(b)).cloned().unwrap_or_default(),
        policies,
    }
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn pair(s: &Spread, f: &dyn Fn(f64) -> String) -> String {
    format!("{} [{}]", f(s.median), f(s.worst))
}

/// The distribution as a table: median [worst seed] of each measure.
pub fn table(d: &Distribution) -> String {
    let mut out = String::new();
    let seeds = match (d.seeds.first(), d.seeds.last()) {
        (Some(a), Some(b)) => format!("{} seeds, {a}..{b}", d.seeds.len()),
        _ => "no seeds".to_string(),
    };
    let _ = writeln!(out, "scenario {}, {seeds}: median [worst seed]\n", d.scenario);
    let _ = writeln!(
        out,
        "{:<21} {:>20} {:>20} {:>16} {:>12} {:>16}",
        "policy", "mean_done", "p95_done", "makespan/bound", "throttled", "unseen_mape"
    );
    let secs = |x: f64| format!("{x:.1}s");
    for v in &d.policies {
        let unseen = v.unseen_prediction_mape.map_or("-".to_string(), |s| pair(&s, &|x| format!("{:.0}%", 100.0 * x)));
        let _ = writeln!(
            out,
            "{:<21} {:>20} {:>20} {:>16} {:>12} {:>16}{}",
            v.policy,
            pair(&v.mean_completion_s, &secs),
            pair(&v.p95_completion_s, &secs),
            pair(&v.makespan_over_bound, &|x| format!("{x:.2}")),
            pair(&v.throttled_placements, &|x| format!("{x:.0}")),
            unseen,
            if v.seeds_unfinished > 0 { format!("  ({} seeds unfinished)", v.seeds_unfinished) } else { String::new() },
        );
    }
    let _ = writeln!(
        out,
        "\n{:<21} {:>12} {:>12} {:>18} {:>12} {:>12}",
        "policy", "failed", "not_own", "wasted", "quarantines", "flaky_found"
    );
    let count = |x: f64| format!("{x:.0}");
    for v in &d.policies {
        let _ = writeln!(
            out,
            "{:<21} {:>12} {:>12} {:>18} {:>12} {:>12}",
            v.policy,
            pair(&v.failed, &count),
            pair(&v.failed_not_own, &count),
            pair(&v.wasted_machine_s, &|x| format!("{x:.0}s")),
            pair(&v.quarantines, &count),
            pair(&v.flaky_tests_found, &count),
        );
    }
    if let Some(b) = d.policies.iter().find(|v| v.policy == d.base && !v.gain_vs.is_empty()) {
        let _ = writeln!(out, "\n{} gain on mean completion (1 - ours/theirs), median [worst seed]:", d.base);
        for (other, g) in &b.gain_vs {
            let _ = writeln!(out, "  vs {other:<17} {}", pair(g, &|x| format!("{:+.1}%", 100.0 * x)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_worst_ends() {
        let s = Spread::of(vec![3.0, 1.0, 2.0, 10.0], true).expect("some");
        assert_eq!(s, Spread { median: 2.5, worst: 10.0 });
        let g = Spread::of(vec![0.2, -0.1, 0.5], false).expect("some");
        assert_eq!(g, Spread { median: 0.2, worst: -0.1 });
        assert_eq!(Spread::of(vec![], true), None);
    }
}
