//! What failures cost a run: the engine's tally of failed attempts, probes
//! and quarantines ([`FaultTally`]), and the measures the report draws from
//! it (wasted machine time, tasks failed for reasons not their own, flaky
//! tests found).

use std::collections::{BTreeMap, BTreeSet};

use hwsched_proto::v1::{FailureCategory, TaskRequest};

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
    /// Per (workload, revision): whether an attempt passed, and whether one
    /// failed on the test's own account (as far as one can tell: a failing
    /// worker's TEST_FAILED looks the same).
    pub outcomes: BTreeMap<(String, String), (bool, bool)>,
}

impl FaultTally {
    /// An attempt of `task` ended after `duration_ms`, failed with `failure`
    /// (`None`: it succeeded); `worker_fault`: its worker caused it.
    pub fn attempt(
        &mut self,
        task: usize,
        req: &TaskRequest,
        failure: Option<FailureCategory>,
        worker_fault: bool,
        duration_ms: i64,
    ) {
        if let Some(c) = failure {
            self.wasted_ms += duration_ms;
            *self.failed_attempts.entry(hwsched_placement::retry::category_name(c).to_string()).or_default() += 1;
            if worker_fault {
                self.worker_faulted.insert(task);
            }
        }
        let own =
            matches!(failure, Some(FailureCategory::TestFailed | FailureCategory::Signaled | FailureCategory::Timeout));
        if req.revision.is_empty() || !(failure.is_none() || own) {
            return;
        }
        let o = self.outcomes.entry((hwsched_model::task_workload_key(req), req.revision.clone())).or_default();
        if own {
            o.1 = true;
        } else {
            o.0 = true;
        }
    }

    /// Workloads that both passed and failed at one revision, and how many of
    /// those the trace gives no failure rate (their failures were their
    /// workers').
    pub fn flaky_found(&self, trace: &Trace) -> (usize, usize) {
        let found: BTreeSet<&str> =
            self.outcomes.iter().filter(|(_, (p, f))| *p && *f).map(|((w, _), _)| w.as_str()).collect();
        let flaky_in_trace: BTreeSet<String> = trace
            .tasks
            .iter()
            .filter(|t| t.failure_rate.values().any(|p| *p > 0.0))
            .map(|t| hwsched_model::task_workload_key(&t.request))
            .collect();
        let wrong = found.iter().filter(|w| !flaky_in_trace.contains(**w)).count();
        (found.len(), wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str, revision: &str) -> TaskRequest {
        TaskRequest { name: name.into(), revision: revision.into(), ..Default::default() }
    }

    #[test]
    fn a_test_is_found_flaky_only_when_it_passed_and_failed_itself_at_one_revision() {
        let mut t = FaultTally::default();
        // passed at r1, failed at r2: maybe broken by r2, not flaky
        t.attempt(0, &req("a", "r1"), None, false, 1_000);
        t.attempt(1, &req("a", "r2"), Some(FailureCategory::TestFailed), false, 500);
        // out of memory then passed: the limit, not the test
        t.attempt(2, &req("b", "r1"), Some(FailureCategory::OutOfMemory), false, 300);
        t.attempt(2, &req("b", "r1"), None, false, 1_000);
        // failed on a bad worker, passed elsewhere: looks flaky
        t.attempt(3, &req("c", "r1"), Some(FailureCategory::TestFailed), true, 200);
        t.attempt(3, &req("c", "r1"), None, false, 1_000);
        // no revision: nothing to compare
        t.attempt(4, &req("d", ""), Some(FailureCategory::TestFailed), false, 100);
        t.attempt(4, &req("d", ""), None, false, 1_000);
        let trace = Trace::default();
        assert_eq!(t.flaky_found(&trace), (1, 1), "only c, and the trace gives it no failure rate");
        assert_eq!(t.wasted_ms, 500 + 300 + 200 + 100);
        assert_eq!(t.worker_faulted, BTreeSet::from([3]));
        assert_eq!(t.failed_attempts.get("out_of_memory"), Some(&1));
        assert_eq!(t.failed_attempts.get("test_failed"), Some(&3));
    }
}
