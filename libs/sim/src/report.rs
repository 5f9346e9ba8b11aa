//! What a run achieved: the [`Report`] of one policy on a trace, summed up
//! from the engine's tallies (failures and quarantines in `faults`), the
//! makespan's [`lower_bound`], and the human-readable comparison of policies
//! ([`table`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use serde::Serialize;

use crate::trace::Trace;

mod bound;
mod faults;
pub use bound::lower_bound;
pub(crate) use faults::FaultTally;

/// What one policy achieved on a trace. Field names are read by other tools:
/// keep them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Policy name.
    pub policy: String,
    /// Tasks in the trace.
    pub tasks: usize,
    /// Tasks that succeeded.
    pub succeeded: usize,
    /// Tasks that failed after their attempts.
    pub failed: usize,
    /// Tasks that fit no worker.
    pub rejected: usize,
    /// Tasks still open at the horizon.
    pub unfinished: usize,
    /// Attempts started.
    pub placements: usize,
    /// Attempts retried after a failure.
    pub retries: usize,
    /// Time from the first arrival to the last task's end, s.
    pub makespan_s: f64,
    /// A lower bound on any policy's makespan on this trace, s.
    pub makespan_lower_bound_s: f64,
    /// Mean of (end - arrival) over finished tasks, s.
    pub mean_completion_s: f64,
    /// 95th percentile of (end - arrival), s.
    pub p95_completion_s: f64,
    /// Mean of (end - arrival) by the tasks' test type, s.
    pub mean_completion_by_test_type_s: BTreeMap<String, f64>,
    /// Mean time from arrival to the first start, by priority (1..5), s.
    pub mean_wait_by_priority_s: BTreeMap<String, f64>,
    /// Busy share of each hardware class's slots over the makespan.
    pub utilization_by_class: BTreeMap<String, f64>,
    /// Attempts placed on a worker that was throttling at that moment.
    pub throttled_placements: usize,
    /// Attempts placed on a worker whose CPU others (background load) held at
    /// 95 % or more.
    pub overloaded_placements: usize,
    /// Mean absolute percentage error of the model's runtime prediction for
    /// the chosen worker, over successful attempts that had one (null: none).
    pub prediction_mape: Option<f64>,
    /// The same, per tenth of the makespan (null where no attempt ended).
    pub prediction_mape_over_time: Vec<Option<f64>>,
    /// Share of attempts that had a model prediction when placed.
    pub predicted_share: f64,
    /// Placements that explored (went to hardware the model had few runs of
    /// for the workload instead of the best candidate).
    pub explored_placements: usize,
    /// `prediction_mape` by how many successful runs the pair had when the
    /// attempt was placed: "unseen" (the factor model's estimate, other tests
    /// of its type ran on the class), "unseen-type" (none did), "1-4",
    /// "5-19", "20+".
    pub prediction_mape_by_age: BTreeMap<String, f64>,
    /// Slot time of attempts that ended failed (probes excluded), s.
    pub wasted_machine_s: f64,
    /// Slot time of probes of quarantined workers, s.
    pub probe_machine_s: f64,
    /// Tasks that ended failed with at least one attempt failed by its worker
    /// (a fault window): failed for reasons not their own.
    pub failed_not_own: usize,
    /// Failed attempts by failure category ("test_failed", "out_of_memory", ...).
    pub failed_attempts_by_category: BTreeMap<String, usize>,
    /// Tests (workloads) the learner's model holds flaky at the end: passed
    /// and failed on their own account (TEST_FAILED, SIGNALED, TIMEOUT) at one
    /// revision, failures blamed on quarantined workers left out.
    pub flaky_tests_found: usize,
    /// Of those, tests the trace gives no failure rate: every failure was a
    /// failing worker's.
    pub flaky_tests_found_wrongly: usize,
    /// Workers quarantined (`HealthEvent::Quarantined`).
    pub quarantines: usize,
    /// Workers restored by passing probes.
    pub restores: usize,
    /// Probes run on quarantined workers.
    pub probes: usize,
}

/// What a run left behind, as the engine tallied it: what [`Report::new`]
/// sums up.
#[derive(Debug)]
pub(crate) struct Outcome<'a> {
    /// The trace run.
    pub trace: &'a Trace,
    /// The policy's name in the report.
    pub policy: String,
    /// Simulated time at the end, ms.
    pub now_ms: i64,
    /// When each task first started, ms.
    pub first_start_ms: &'a BTreeMap<usize, i64>,
    /// When each task ended, ms, and whether it succeeded.
    pub ended_ms: &'a BTreeMap<usize, (i64, bool)>,
    /// Slots of each hardware class.
    pub slots_by_class: BTreeMap<String, f64>,
    /// Busy slot time of each hardware class, ms.
    pub busy_slot_ms: &'a BTreeMap<String, f64>,
    /// (ended at, absolute percentage error, the pair's runs when placed).
    pub errors: &'a [(i64, f64, &'static str)],
    /// Tasks that fit no worker.
    pub rejected: usize,
    /// Tasks still open.
    pub open: usize,
    /// Attempts started.
    pub placements: usize,
    /// Attempts retried.
    pub retries: usize,
    /// Attempts placed on a throttling worker.
    pub throttled: usize,
    /// Attempts placed on an overloaded worker.
    pub overloaded: usize,
    /// Attempts placed with a model prediction.
    pub predicted: usize,
    /// Placements that explored.
    pub explored: usize,
    /// Failures, probes and quarantines.
    pub faults: &'a FaultTally,
    /// The tests the learner's model holds flaky at the end (workload keys).
    pub flaky: BTreeSet<String>,
}

impl Report {
    /// The report of a finished run.
    pub(crate) fn new(o: &Outcome<'_>) -> Self {
        let tasks = &o.trace.tasks;
        let first = tasks.iter().map(|t| t.arrival_s).fold(f64::INFINITY, f64::min);
        let first = if first.is_finite() { first } else { 0.0 };
        let last = o.ended_ms.values().map(|(t, _)| *t).max().unwrap_or(o.now_ms);
        let makespan_s = (last as f64 / 1000.0 - first).max(0.0);
        let mut completions: Vec<f64> =
            o.ended_ms.iter().map(|(i, (end, _))| *end as f64 / 1000.0 - tasks[*i].arrival_s).collect();
        completions.sort_by(f64::total_cmp);
        let mean = |xs: &[f64]| if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 };
        let p95 = completions
            .get(((completions.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(0.0);
        let mut by_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (i, (end, _)) in o.ended_ms {
            let t = &tasks[*i];
            by_type.entry(t.request.test_type.clone()).or_default().push(*end as f64 / 1000.0 - t.arrival_s);
        }
        let mut waits: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (i, start) in o.first_start_ms {
            let p = match tasks[*i].request.priority {
                0 => 3,
                p => p,
            };
            waits.entry(p.to_string()).or_default().push(*start as f64 / 1000.0 - tasks[*i].arrival_s);
        }
        let slots = &o.slots_by_class;
        let span = makespan_s.max(1e-9);
        let utilization_by_class = o
            .busy_slot_ms
            .iter()
            .map(|(c, busy)| (c.clone(), round(busy / (slots.get(c).copied().unwrap_or(1.0) * span), 4)))
            .collect();
        let window = (last as f64 / 10.0).max(1.0);
        let mut buckets: Vec<Vec<f64>> = vec![Vec::new(); 10];
        let mut by_age: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (at, e, age) in o.errors {
            buckets[((*at as f64 / window) as usize).min(9)].push(*e);
            by_age.entry((*age).into()).or_default().push(*e);
        }
        let errors: Vec<f64> = o.errors.iter().map(|(_, e, _)| *e).collect();
        let f = o.faults;
        let failed_not_own = o.ended_ms.iter().filter(|(i, (_, ok))| !ok && f.worker_faulted.contains(i)).count();
        let (flaky_tests_found, flaky_tests_found_wrongly) = faults::flaky_found(o.trace, &o.flaky);
        Report {
            policy: o.policy.clone(),
            tasks: tasks.len(),
            succeeded: o.ended_ms.values().filter(|(_, ok)| *ok).count(),
            failed: o.ended_ms.len() - o.ended_ms.values().filter(|(_, ok)| *ok).count() - o.rejected,
            rejected: o.rejected,
            unfinished: o.open,
            placements: o.placements,
            retries: o.retries,
            makespan_s: round(makespan_s, 3),
            makespan_lower_bound_s: round(lower_bound(o.trace), 3),
            mean_completion_s: round(mean(&completions), 3),
            p95_completion_s: round(p95, 3),
            mean_completion_by_test_type_s: by_type.into_iter().map(|(k, v)| (k, round(mean(&v), 3))).collect(),
            mean_wait_by_priority_s: waits.into_iter().map(|(p, w)| (p, round(mean(&w), 3))).collect(),
            utilization_by_class,
            throttled_placements: o.throttled,
            overloaded_placements: o.overloaded,
            prediction_mape: (!errors.is_empty()).then(|| round(mean(&errors), 4)),
            prediction_mape_over_time: buckets.iter().map(|b| (!b.is_empty()).then(|| round(mean(b), 4))).collect(),
            predicted_share: round(o.predicted as f64 / o.placements.max(1) as f64, 4),
            explored_placements: o.explored,
            prediction_mape_by_age: by_age.into_iter().map(|(k, v)| (k, round(mean(&v), 4))).collect(),
            wasted_machine_s: round(f.wasted_ms as f64 / 1000.0, 3),
            probe_machine_s: round(f.probe_ms as f64 / 1000.0, 3),
            failed_not_own,
            failed_attempts_by_category: f.failed_attempts.clone(),
            flaky_tests_found,
            flaky_tests_found_wrongly,
            quarantines: f.quarantines,
            restores: f.restores,
            probes: f.probes,
        }
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn pct_lower(base: f64, x: f64) -> String {
    if base > 0.0 {
        format!("{:+.0}%", 100.0 * (x - base) / base)
    } else {
        "-".into()
    }
}

/// A table with one row per policy, the last policy compared with each other.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<21} {:>9} {:>9} {:>10} {:>10} {:>9} {:>9} {:>6} {:>6} {:>7}",
        "policy", "makespan", "bound", "mean_done", "p95_done", "throttled", "overload", "retry", "failed", "mape"
    );
    for r in reports {
        let mape = r.prediction_mape.map_or("-".to_string(), |m| format!("{:.1}%", 100.0 * m));
        let _ = writeln!(
            out,
            "{:<21} {:>8.0}s {:>8.0}s {:>9.1}s {:>9.1}s {:>9} {:>9} {:>6} {:>6} {:>7}",
            r.policy,
            r.makespan_s,
            r.makespan_lower_bound_s,
            r.mean_completion_s,
            r.p95_completion_s,
            r.throttled_placements,
            r.overloaded_placements,
            r.retries,
            r.failed,
            mape
        );
    }
    if let Some(last) = reports.last() {
        let _ = writeln!(out);
        for r in &reports[..reports.len() - 1] {
            let _ = writeln!(
                out,
                "{} vs {}: mean completion {}, p95 {}, makespan {}",
                last.policy,
                r.policy,
                pct_lower(r.mean_completion_s, last.mean_completion_s),
                pct_lower(r.p95_completion_s, last.p95_completion_s),
                pct_lower(r.makespan_s, last.makespan_s),
            );
        }
        let _ = writeln!(
            out,
            "{}: makespan {:.1}% above the lower bound",
            last.policy,
            100.0 * (last.makespan_s / last.makespan_lower_bound_s.max(1e-9) - 1.0)
        );
        let _ = writeln!(out);
        failures(&mut out, reports);
        let _ = writeln!(out);
        for r in reports {
            let waits: Vec<String> = r.mean_wait_by_priority_s.iter().map(|(p, w)| format!("p{p} {w:.1}s")).collect();
            let util: Vec<String> =
                r.utilization_by_class.iter().map(|(c, u)| format!("{c} {:.0}%", 100.0 * u)).collect();
            let _ = writeln!(out, "{:<21} wait: {}", r.policy, waits.join(", "));
            let _ = writeln!(out, "{:<21} utilization: {}", "", util.join(", "));
            let over_time: Vec<String> = r
                .prediction_mape_over_time
                .iter()
                .map(|m| m.map_or("-".to_string(), |m| format!("{:.0}%", 100.0 * m)))
                .collect();
            let _ = writeln!(out, "{:<21} prediction error by tenth of the run: {}", "", over_time.join(" "));
            let by_category: Vec<String> =
                r.failed_attempts_by_category.iter().map(|(c, n)| format!("{c} {n}")).collect();
            if !by_category.is_empty() {
                let _ = writeln!(out, "{:<21} failed attempts: {}", "", by_category.join(", "));
            }
            if !r.prediction_mape_by_age.is_empty() {
                let by_age: Vec<String> =
                    r.prediction_mape_by_age.iter().map(|(a, m)| format!("{a} {:.0}%", 100.0 * m)).collect();
                let _ = writeln!(out, "{:<21} prediction error by the pair's runs: {}", "", by_age.join(", "));
            }
        }
    }
    out
}

/// What failures cost each policy: failed tasks (in all, and for reasons not
/// their own), machine time wasted on failed attempts, probes, quarantines
/// and flaky tests found (in brackets: wrongly).
fn failures(out: &mut String, reports: &[Report]) {
    let _ = writeln!(
        out,
        "{:<21} {:>6} {:>7} {:>10} {:>8} {:>7} {:>11} {:>9}",
        "policy", "failed", "not_own", "wasted", "probes", "quarant", "probe_time", "flaky"
    );
    for r in reports {
        let _ = writeln!(
            out,
            "{:<21} {:>6} {:>7} {:>9.0}s {:>8} {:>7} {:>10.0}s {:>9}",
            r.policy,
            r.failed,
            r.failed_not_own,
            r.wasted_machine_s,
            r.probes,
            r.quarantines,
            r.probe_machine_s,
            format!("{} ({})", r.flaky_tests_found, r.flaky_tests_found_wrongly),
        );
    }
}
