//! What ends or undoes an attempt: its result (success, failure with a retry
//! or without), its loss with the worker, an assignment that could not be
//! sent. Each frees the attempt's reservation.

use hwsched_proto::v1::{ExecutionResult, TaskRecord, TaskState, TaskStatus};

use crate::state::{
    records::{concurrency_key, max_attempts, runtime_estimate},
    worker::unreserve,
    Completion, State, MAX_LOSSES,
};

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
        let current = self.tasks.get(&res.task_id).is_some_and(|h| {
            h.state == TaskState::Assigned && h.attempt == res.attempt && *h.worker_id == res.worker_id
        });
        if !current {
            return Completion::Stale;
        }
        let Some(mut rec) = self.release(&res.task_id) else {
            return Completion::Stale;
        };
        rec.updated_at_ms = now_ms;
        if let Some(task) = rec.task.as_ref() {
            self.declarations.observe(task, res);
        }
        let status = res.status();
        if status == TaskStatus::Succeeded {
            rec.state = TaskState::Succeeded as i32;
            rec.reason = String::new();
            self.settle_part(&rec, Some(res), now_ms);
            return Completion::Done(rec);
        }
        let mut why = format!("attempt {} on {} ended {}", res.attempt, res.worker_id, status.as_str_name());
        if res.bad_input {
            // no other worker would do better with the same input
            why = format!("{why}: {}", res.error);
        }
        rec.failures += 1;
        if rec.failures >= max_attempts(&rec) || status == TaskStatus::Cancelled || res.bad_input {
            rec.state = TaskState::Failed as i32;
            rec.reason = why;
            self.settle_part(&rec, Some(res), now_ms);
            return Completion::Done(rec);
        }
        Completion::Retry(self.requeue(rec, now_ms, why))
    }

    /// An attempt lost without a result: queue again, or fail after too many losses.
    pub(super) fn lose(&mut self, task_id: &str, now_ms: i64, why: String) -> Option<Completion> {
        let mut rec = self.release(task_id)?;
        rec.losses += 1;
        if rec.losses > MAX_LOSSES {
            rec.state = TaskState::Failed as i32;
            rec.reason = format!("{why}; lost {} times, giving up", rec.losses);
            rec.updated_at_ms = now_ms;
            self.settle_part(&rec, None, now_ms);
            return Some(Completion::Done(rec));
        }
        Some(Completion::Retry(self.requeue(rec, now_ms, why)))
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
        if rec.state() == TaskState::Assigned {
            if let Some(w) = self.workers.get_mut(&rec.worker_id) {
                unreserve(&mut w.reserved, &rec);
                let end = (rec.assigned_at_ms, runtime_estimate(&rec));
                if let Some(i) = w.ends.iter().position(|e| *e == end) {
                    w.ends.swap_remove(i);
                }
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
}
