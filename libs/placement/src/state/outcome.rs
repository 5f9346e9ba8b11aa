//! What ends or undoes an attempt: its result (success, failure with a retry
//! or without), its loss with the worker, an assignment that could not be
//! sent. Each frees the attempt's reservation.

use hwsched_proto::v1::{AttemptRecord, ExecutionResult, FailureCategory, TaskRecord, TaskState, TaskStatus};

use crate::{
    retry::{self, Decision, Ended, Spent},
    state::{
        health::is_probe,
        records::{concurrency_key, max_attempts},
        Completion, State,
    },
};

/// Attempts kept in a record's history (the oldest are dropped beyond it).
const HISTORY: usize = 16;

/// The memory the record's task asks for, MB.
fn memory_mb(rec: &TaskRecord) -> i64 {
    rec.task.as_ref().and_then(|t| t.requirements.as_ref()).map_or(0, |r| r.memory_mb)
}

/// The history entry of `rec`'s current attempt, ended as `category` (with
/// `res` when it reported), and what the scheduler did next.
pub(super) fn attempt_entry(
    rec: &TaskRecord,
    res: Option<&ExecutionResult>,
    category: FailureCategory,
    now_ms: i64,
    decision: &str,
) -> AttemptRecord {
    let mut entry = AttemptRecord {
        attempt: rec.attempt,
        worker_id: rec.worker_id.clone(),
        category: category as i32,
        memory_mb: memory_mb(rec),
        decision: decision.to_string(),
        ended_at_ms: now_ms,
        ..Default::default()
    };
    if let Some(r) = res {
        entry.hardware_class = r.hardware_class.clone();
        entry.status = r.status;
        entry.exit_code = r.exit_code;
        entry.duration_s = r.duration_s;
        entry.memory_peak_mb = r.resources.as_ref().map_or(0, |u| u.memory_peak_mb);
    }
    entry
}

/// Adds an ended attempt to the record's history (the oldest beyond [`HISTORY`] go).
pub(super) fn push_entry(rec: &mut TaskRecord, entry: AttemptRecord) {
    if rec.history.len() >= HISTORY {
        rec.history.remove(0);
    }
    rec.history.push(entry);
}

/// Adds the attempt that just ended to the record's history.
fn push_history(
    rec: &mut TaskRecord,
    res: Option<&ExecutionResult>,
    category: FailureCategory,
    now_ms: i64,
    decision: &str,
) {
    let entry = attempt_entry(rec, res, category, now_ms, decision);
    push_entry(rec, entry);
}

impl State {
    /// Undoes an assignment whose message could not be sent: back to the queue.
    pub fn unassign(&mut self, task_id: &str, now_ms: i64) {
        if let Some(mut rec) = self.release(task_id) {
            rec.attempt = rec.attempt.saturating_sub(1);
            rec.state = TaskState::Queued as i32;
            rec.worker_id.clear();
            rec.gpu_indices.clear();
            self.insert(rec, now_ms);
        }
    }

    /// Applies a result.
    pub fn complete(&mut self, res: &ExecutionResult, now_ms: i64) -> Completion {
        let Some(held) = self.tasks.get(&res.task_id).filter(|h| h.state == TaskState::Assigned) else {
            return Completion::Stale;
        };
        let hedge = held.is_hedge(res.attempt, &res.worker_id);
        let current = held.attempt == res.attempt && *held.worker_id == res.worker_id;
        if !(current || hedge) {
            return Completion::Stale;
        }
        let Some(mut rec) = self.release(&res.task_id) else {
            return Completion::Stale;
        };
        if hedge {
            // the copy that ended is the current attempt from here on
            crate::hedge::swap_copies(&mut rec);
        }
        rec.updated_at_ms = now_ms;
        if is_probe(&rec) {
            return self.probe_done(rec, Some(res), now_ms);
        }
        if let Some(task) = rec.task.as_ref() {
            self.declarations.observe(task, res);
        }
        let status = res.status();
        let category = retry::category(res);
        if !res.bad_input {
            self.observe_health(&rec, category, now_ms);
        }
        let mut decision = "succeeded";
        if rec.hedge.is_some() {
            if status != TaskStatus::Succeeded && !res.bad_input {
                let why = format!("attempt {} on {} ended {}", res.attempt, res.worker_id, status.as_str_name());
                return self.copy_failed(rec, Some(res), category, now_ms, why);
            }
            decision = "succeeded first; its hedged twin was cancelled";
            self.cancel_twin(&mut rec, now_ms);
        }
        if status == TaskStatus::Succeeded {
            rec.state = TaskState::Succeeded as i32;
            rec.reason = String::new();
            push_history(&mut rec, Some(res), category, now_ms, decision);
            self.settle_part(&rec, Some(res), now_ms);
            return Completion::Done(rec);
        }
        let mut why = format!("attempt {} on {} ended {}", res.attempt, res.worker_id, status.as_str_name());
        if category != FailureCategory::Unspecified {
            why = format!("{why} ({})", retry::category_name(category));
        }
        if res.bad_input || (category == FailureCategory::Refused && !res.error.is_empty()) {
            why = format!("{why}: {}", res.error);
        }
        let ended = Ended {
            category,
            bad_input: res.bad_input,
            memory_mb: memory_mb(&rec),
            memory_peak_mb: res.resources.as_ref().map_or(0, |r| r.memory_peak_mb),
        };
        self.decide_retry(rec, ended, Some(res), now_ms, why)
    }

    /// The attempt of `task_id` on `worker_id` lost without a result: a
    /// hedged task goes on with its other copy; else the task is queued again,
    /// or fails after too many losses.
    pub(super) fn lose(&mut self, task_id: &str, worker_id: &str, now_ms: i64, why: String) -> Option<Completion> {
        let hedge = self.tasks.get(task_id)?.hedge.as_ref().map(|(w, ..)| &**w == worker_id);
        let mut rec = self.release(task_id)?;
        if let Some(lost_is_hedge) = hedge {
            if lost_is_hedge {
                crate::hedge::swap_copies(&mut rec);
            }
            return Some(self.copy_failed(rec, None, FailureCategory::WorkerLost, now_ms, why));
        }
        if is_probe(&rec) {
            rec.reason = why;
            return Some(self.probe_done(rec, None, now_ms));
        }
        let ended = Ended {
            category: FailureCategory::WorkerLost,
            bad_input: false,
            memory_mb: memory_mb(&rec),
            memory_peak_mb: 0,
        };
        Some(self.decide_retry(rec, ended, None, now_ms, why))
    }

    /// A probe ended: it counts for its worker's quarantine, and is never retried.
    fn probe_done(&mut self, mut rec: TaskRecord, res: Option<&ExecutionResult>, now_ms: i64) -> Completion {
        let passed = res.is_some_and(|r| r.status() == TaskStatus::Succeeded);
        self.probe_ended(&rec, passed, now_ms);
        rec.state = if passed { TaskState::Succeeded } else { TaskState::Failed } as i32;
        rec.updated_at_ms = now_ms;
        let category = res.map_or(FailureCategory::WorkerLost, retry::category);
        push_history(&mut rec, res, category, now_ms, "probe");
        Completion::Done(rec)
    }

    /// Applies the retry policy to a released record whose attempt ended as `ended`.
    fn decide_retry(
        &mut self,
        mut rec: TaskRecord,
        ended: Ended,
        res: Option<&ExecutionResult>,
        now_ms: i64,
        why: String,
    ) -> Completion {
        rec.updated_at_ms = now_ms;
        let spent = Spent { failures: rec.failures, losses: rec.losses, timeouts: rec.timeouts };
        let policy = self.retry.with(rec.task.as_ref().and_then(|t| t.retry.as_ref()));
        let largest =
            self.workers.values().filter_map(|w| w.caps.as_ref()).map(|c| c.memory_mb as i64).max().unwrap_or(0);
        match retry::decide(ended, spent, policy, max_attempts(&rec), largest) {
            Decision::GiveUp { spent, why: cause } => {
                (rec.failures, rec.losses, rec.timeouts) = (spent.failures, spent.losses, spent.timeouts);
                rec.state = TaskState::Failed as i32;
                rec.reason = format!("{why}; {cause}");
                push_history(&mut rec, res, ended.category, now_ms, &format!("gave up: {cause}"));
                self.settle_part(&rec, res, now_ms);
                Completion::Done(rec)
            }
            Decision::Retry { spent, memory_mb, exclude_worker, note } => {
                (rec.failures, rec.losses, rec.timeouts) = (spent.failures, spent.losses, spent.timeouts);
                push_history(&mut rec, res, ended.category, now_ms, &note);
                if let Some(mb) = memory_mb {
                    let task = rec.task.get_or_insert_with(Default::default);
                    task.requirements.get_or_insert_with(Default::default).memory_mb = mb;
                }
                if exclude_worker && !rec.refused_by.contains(&rec.worker_id) {
                    rec.refused_by.push(rec.worker_id.clone());
                }
                Completion::Retry(self.requeue(rec, now_ms, format!("{why}; {note}")))
            }
        }
    }

    /// Queues a released record again (its worker joins those it tried).
    fn requeue(&mut self, mut rec: TaskRecord, now_ms: i64, why: String) -> TaskRecord {
        if !rec.tried_workers.contains(&rec.worker_id) {
            rec.tried_workers.push(rec.worker_id.clone());
        }
        rec.state = TaskState::Queued as i32;
        rec.worker_id.clear();
        rec.gpu_indices.clear();
        rec.reason = why;
        rec.updated_at_ms = now_ms;
        self.insert(rec.clone(), now_ms);
        rec
    }

    /// Removes an assigned task's record and frees its reservation.
    pub(super) fn release(&mut self, task_id: &str) -> Option<TaskRecord> {
        self.changed = true;
        let rec = self.tasks.remove(task_id)?.unpack();
        self.seen_running.remove(task_id);
        self.seen_hedge.remove(task_id);
        if rec.state() == TaskState::Assigned {
            self.vacate(&rec);
            if let Some(copy) = crate::hedge::copy_view(&rec) {
                self.vacate(&copy);
            }
            if let Some(k) = concurrency_key(&rec) {
                if let Some(n) = self.running_keys.get_mut(&k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.running_keys.remove(&k);
                    }
                }
            }
        }
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use hwsched_proto::v1::WorkerCapabilities;

    use crate::state::testutil::{assigned, caps, queued, result};

    #[test]
    fn failure_retries_on_another_worker_until_attempts_run_out() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.register(caps("b", 8, 1), 0);
        let mut rec = queued("t", 3, 0);
        if let Some(t) = rec.task.as_mut() {
            t.max_attempts = 2;
        }
        s.insert(rec, 0);
        let first = assigned(&s.plan(1, true));
        assert_eq!(first[0].1, "a");
        let r1 = s.record("t").expect("t");
        assert!(matches!(s.complete(&result(&r1, TaskStatus::Failed), 2), Completion::Retry(_)));
        let second = assigned(&s.plan(3, true));
        assert_eq!(second[0].1, "b", "retry goes elsewhere");
        let r2 = s.record("t").expect("t");
        assert_eq!(r2.attempt, 2);
        match s.complete(&result(&r2, TaskStatus::Failed), 4) {
            Completion::Done(r) => assert_eq!(r.state(), TaskState::Failed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_input_ends_the_task_without_a_retry() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.register(caps("b", 8, 1), 0);
        s.insert(queued("t", 3, 0), 0);
        s.plan(1, true);
        let rec = s.record("t").expect("t");
        let mut r = result(&rec, TaskStatus::Error);
        r.bad_input = true;
        r.error = "bundle sha256:00 not found".into();
        match s.complete(&r, 2) {
            Completion::Done(done) => {
                assert_eq!(done.state(), TaskState::Failed);
                assert!(done.reason.contains("not found"), "{}", done.reason);
            }
            other => panic!("retried bad input: {other:?}"),
        }
        r.bad_input = false;
        let mut s2 = State::default();
        s2.register(caps("a", 8, 1), 0);
        s2.register(caps("b", 8, 1), 0);
        s2.insert(queued("t", 3, 0), 0);
        s2.plan(1, true);
        let rec2 = s2.record("t").expect("t");
        assert!(
            matches!(s2.complete(&result(&rec2, TaskStatus::Error), 2), Completion::Retry(_)),
            "an ordinary error is retried"
        );
    }

    #[test]
    fn stale_and_duplicate_results_are_ignored() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.insert(queued("t", 3, 0), 0);
        s.plan(1, true);
        let rec = s.record("t").expect("t");
        let mut old = result(&rec, TaskStatus::Succeeded);
        old.attempt = 0;
        assert_eq!(s.complete(&old, 2), Completion::Stale);
        assert!(matches!(s.complete(&result(&rec, TaskStatus::Succeeded), 3), Completion::Done(_)));
        assert_eq!(s.complete(&result(&rec, TaskStatus::Succeeded), 4), Completion::Stale);
    }

    #[test]
    fn an_unsent_assignment_goes_back_to_the_queue_as_it_was() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.insert(queued("t", 3, 0), 0);
        assert_eq!(assigned(&s.plan(1, true)).len(), 1);
        s.unassign("t", 2);
        let r = s.record("t").expect("t");
        assert_eq!((r.state(), r.attempt, r.worker_id.as_str()), (TaskState::Queued, 0, ""));
        assert_eq!(s.workers["a"].reserved.slots, 0, "slot freed");
        assert_eq!(assigned(&s.plan(3, true)), [("t".to_string(), "a".to_string())]);
    }

    fn failed_with(rec: &TaskRecord, category: FailureCategory, peak_mb: u64) -> ExecutionResult {
        ExecutionResult {
            category: category as i32,
            resources: Some(hwsched_proto::v1::ResourceUsage { memory_peak_mb: peak_mb, ..Default::default() }),
            ..result(rec, TaskStatus::Failed)
        }
    }

    #[test]
    fn out_of_memory_retries_with_more_memory_on_a_worker_that_has_it() {
        let mut s = State::default();
        s.register(WorkerCapabilities { memory_mb: 1000, ..caps("small", 8, 1) }, 0);
        s.register(WorkerCapabilities { memory_mb: 1000, ..caps("small2", 8, 1) }, 0);
        s.register(caps("big", 8, 1), 0);
        let mut rec = queued("t", 3, 0);
        rec.task.as_mut().expect("task").requirements =
            Some(hwsched_proto::v1::Requirements { memory_mb: 800, ..Default::default() });
        s.insert(rec, 0);
        s.plan(1, true);
        let r1 = s.record("t").expect("t");
        let Completion::Retry(q) = s.complete(&failed_with(&r1, FailureCategory::OutOfMemory, 800), 2) else {
            panic!("not retried");
        };
        assert_eq!(q.task.as_ref().and_then(|t| t.requirements.as_ref()).map(|r| r.memory_mb), Some(1200));
        assert!(q.reason.contains("out_of_memory") && q.reason.contains("1200 MB"), "{}", q.reason);
        assert_eq!(q.history.len(), 1);
        assert_eq!((q.history[0].category(), q.history[0].memory_mb), (FailureCategory::OutOfMemory, 800));
        assert_eq!(assigned(&s.plan(3, true)), [("t".to_string(), "big".to_string())], "only big has 1200 MB");
    }

    #[test]
    fn a_refusing_worker_never_gets_the_task_again_and_losses_spend_no_attempts() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.register(caps("b", 8, 1), 0);
        let mut rec = queued("t", 3, 0);
        rec.task.as_mut().expect("task").max_attempts = 1;
        s.insert(rec, 0);
        s.plan(1, true);
        let r1 = s.record("t").expect("t");
        let refuser = r1.worker_id.clone();
        let refused = ExecutionResult { category: FailureCategory::Refused as i32, ..result(&r1, TaskStatus::Error) };
        let Completion::Retry(q) = s.complete(&refused, 2) else { panic!("a refusal spends no attempt") };
        assert_eq!((q.failures, q.losses, q.refused_by.clone()), (0, 1, vec![refuser.clone()]));
        let other = if refuser == "a" { "b" } else { "a" };
        assert_eq!(assigned(&s.plan(3, true)), [("t".to_string(), other.to_string())]);
        // lost there too: both workers tried now, and still never the one that refused
        let r2 = s.record("t").expect("t");
        let lost =
            ExecutionResult { category: FailureCategory::Infrastructure as i32, ..result(&r2, TaskStatus::Error) };
        assert!(matches!(s.complete(&lost, 4), Completion::Retry(_)), "max_attempts 1 is not spent by it");
        assert_eq!(assigned(&s.plan(5, true)), [("t".to_string(), other.to_string())]);
        assert_eq!(s.record("t").map(|r| (r.failures, r.losses, r.history.len())), Some((0, 2, 2)));
    }

    #[test]
    fn a_timeout_is_retried_on_hardware_the_model_knows_to_be_faster() {
        use crate::state::testutil::{named, trained, with_class};
        let model = trained(&[
            ("suite", "old", 100.0),
            ("suite", "mid", 150.0),
            ("suite", "new", 60.0),
            ("blocker", "new", 100.0),
        ]);
        let mut s = State { model: Some(model), ..Default::default() };
        for (id, hw) in [("w-old", "old"), ("w-mid", "mid"), ("w-new", "new")] {
            s.register(with_class(id, hw, 1), 0);
        }
        let mut blocker = named("b", "blocker", 0);
        (blocker.state, blocker.worker_id, blocker.attempt) = (TaskState::Assigned as i32, "w-new".into(), 1);
        blocker.predicted_runtime_s = 100.0;
        s.insert(blocker, 0);
        s.insert(named("t", "suite", 0), 0);
        assert_eq!(assigned(&s.plan(1, true)), [("t".to_string(), "w-old".to_string())]);
        let r1 = s.record("t").expect("t");
        let timed_out = ExecutionResult {
            category: FailureCategory::Timeout as i32,
            hardware_class: "old".into(),
            ..result(&r1, TaskStatus::TimedOut)
        };
        assert!(matches!(s.complete(&timed_out, 2), Completion::Retry(_)));
        // w-mid is free but predicted slower than what timed out: the retry waits for w-new
        assert!(assigned(&s.plan(3, true)).is_empty(), "{:?}", s.record("t").map(|r| r.reason));
        let waiting = s.record("t").expect("t");
        assert!(waiting.reason.contains("w-new"), "{}", waiting.reason);
        let b = s.record("b").expect("b");
        assert!(matches!(s.complete(&result(&b, TaskStatus::Succeeded), 4), Completion::Done(_)));
        assert_eq!(assigned(&s.plan(5, true)), [("t".to_string(), "w-new".to_string())]);
    }
}
