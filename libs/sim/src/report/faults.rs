//! What failures cost a run: the engine's tally of failed attempts, probes
//! and quarantines ([`FaultTally`]), and the measures the report draws from
//! it (wasted machine time, tasks failed for reasons not their own, flaky
//! tests found).

use std::collections::{BTreeMap, BTreeSet};

use hwsched_proto::v1::FailureCategory;

use crate::trace::Trace;

/// Failures, probes and quarantines, as the engine counts them.
#[derive(Debug, Default)]
pub(crate) struct FaultTally {
    /// Slot time of attempts that ended failed (probes excluded), ms.
    pub wasted_ms: i64,
    /// Slot time of probes, ms.
    pub probe_ms: i64,
    /// Probes started.
    pub probes: usize,
    /// Workers quarantined (`HealthEvent::Quarantined`).
    pub quarantines: usize,
    /// Workers restored.
    pub restores: usize,
    /// When each quarantine and each restore happened, ms.
    pub health_ms: Vec<(i64, bool)>,
    /// Times the breaker opened.
    pub breaker_opened: usize,
    /// Failed attempts by category name.
    pub failed_attempts: BTreeMap<String, usize>,
    /// Tasks (trace index) with at least one attempt failed by its worker.
    pub worker_faulted: BTreeSet<usize>,
}

impl FaultTally {
    /// An attempt of `task` ended after `duration_ms`, failed with `failure`
    /// (`None`: it succeeded); `worker_fault`: its worker caused it.
    pub fn attempt(&mut self, task: usize, failure: Option<FailureCategory>, worker_fault: bool, duration_ms: i64) {
        if let Some(c) = failure {
            self.wasted_ms += duration_ms;
            *self.failed_attempts.entry(hwsched_placement::retry::category_name(c).to_string()).or_default() += 1;
            if worker_fault {
                self.worker_faulted.insert(task);
            }
        }
    }
}

/// Of the tests the learner's model `found` flaky (workload keys), how many,
/// and how many of those the trace gives no failure rate (their failures
/// were their workers').
pub fn flaky_found(trace: &Trace, found: &BTreeSet<String>) -> (usize, usize) {
    let flaky_in_trace: BTreeSet<String> = trace
        .tasks
        .iter()
        .filter(|t| t.failure_rate.values().any(|p| *p > 0.0))
        .map(|t| hwsched_model::task_workload_key(&t.request))
        .collect();
    let wrong = found.iter().filter(|w| !flaky_in_trace.contains(*w)).count();
    (found.len(), wrong)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::TaskRequest;

    fn req(name: &str, revision: &str) -> TaskRequest {
        TaskRequest { name: name.into(), revision: revision.into(), ..Default::default() }
    }

    #[test]
    fn failed_attempts_are_tallied_by_category_and_waste() {
        let mut t = FaultTally::default();
        t.attempt(0, None, false, 1_000);
        t.attempt(1, Some(FailureCategory::TestFailed), false, 500);
        t.attempt(2, Some(FailureCategory::OutOfMemory), false, 300);
        t.attempt(3, Some(FailureCategory::TestFailed), true, 200);
        t.attempt(4, Some(FailureCategory::TestFailed), false, 100);
        assert_eq!(t.wasted_ms, 500 + 300 + 200 + 100);
        assert_eq!(t.worker_faulted, BTreeSet::from([3]));
        assert_eq!(t.failed_attempts.get("out_of_memory"), Some(&1));
        assert_eq!(t.failed_attempts.get("test_failed"), Some(&3));
    }

    #[test]
    fn tests_found_flaky_without_a_failure_rate_in_the_trace_were_found_wrongly() {
        let line = |name: &str, rate: f64| crate::trace::TaskLine {
            arrival_s: 0.0,
            request: req(name, "r1"),
            runtime_s: [("cpu".to_string(), 1.0)].into(),
            failure_rate: [("cpu".to_string(), rate)].into(),
            needs_memory_mb: None,
            straggler: None,
        };
        let trace = Trace { tasks: vec![line("a", 0.1), line("c", 0.0)], ..Default::default() };
        let key = |n: &str| hwsched_model::task_workload_key(&req(n, ""));
        assert_eq!(flaky_found(&trace, &BTreeSet::from([key("a"), key("c")])), (2, 1));
        assert_eq!(flaky_found(&trace, &BTreeSet::new()), (0, 0));
    }
}
