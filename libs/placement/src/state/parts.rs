//! Split tasks (shards, replicas): each part's end is settled in its parent,
//! which ends with its last part; cancelling a task (a split one with its
//! unfinished parts).

use hwsched_proto::v1::{ExecutionResult, TaskRecord, TaskRequest, TaskState};

use crate::{
    group::settle,
    state::{records::Held, State},
};

impl State {
    /// Cancels a non-terminal task: out of the queue, or its reservation freed
    /// (its monitor kills the running attempt). A split task's unfinished parts
    /// are cancelled with it. Returns the cancelled records (for a split task,
    /// its parts; the parent follows in [`State::take_parent_updates`]); empty
    /// when the task is unknown or finished.
    pub fn cancel(&mut self, task_id: &str, now_ms: i64, reason: &str) -> Vec<TaskRecord> {
        let why = if reason.is_empty() { "cancelled".to_string() } else { format!("cancelled: {reason}") };
        if let Some(w) = self.waiting.remove(task_id) {
            self.queue.retain(|e| &*e.task_id != task_id);
            let mut rec = w.unpack();
            rec.state = TaskState::Cancelled as i32;
            rec.reason = why;
            rec.updated_at_ms = now_ms;
            self.settle_part(&rec, None, now_ms);
            return vec![rec];
        }
        let Some(state) = self.tasks.get(task_id).map(|h| h.state) else { return Vec::new() };
        if state == TaskState::Split {
            let parts: Vec<String> = self.tasks[task_id]
                .unpack()
                .parts
                .iter()
                .filter(|p| p.state() == TaskState::Unspecified)
                .map(|p| p.task_id.clone())
                .collect();
            let out: Vec<TaskRecord> = parts.iter().flat_map(|id| self.cancel(id, now_ms, reason)).collect();
            // parts not known here (never recorded) end with it too
            if let Some(parent) = self.tasks.get(task_id).map(Held::unpack) {
                for p in parent.parts.iter().filter(|p| p.state() == TaskState::Unspecified) {
                    let task = TaskRequest { task_id: p.task_id.clone(), ..Default::default() };
                    let gone = TaskRecord {
                        task: Some(task),
                        state: TaskState::Cancelled as i32,
                        reason: why.clone(),
                        parent_id: task_id.to_string(),
                        ..Default::default()
                    };
                    self.settle_part(&gone, None, now_ms);
                }
            }
            return out;
        }
        let Some(mut rec) = self.release(task_id) else { return Vec::new() };
        rec.state = TaskState::Cancelled as i32;
        rec.reason = why;
        rec.updated_at_ms = now_ms;
        self.settle_part(&rec, None, now_ms);
        vec![rec]
    }

    /// Records in its parent how a part ended (nothing for a task that is not a
    /// part). The parent, changed, is kept for [`State::take_parent_updates`];
    /// once its last part ended it is terminal and leaves the state.
    pub fn settle_part(&mut self, part: &TaskRecord, res: Option<&ExecutionResult>, now_ms: i64) {
        if part.parent_id.is_empty() {
            return;
        }
        let Some(held) = self.tasks.get_mut(&part.parent_id).filter(|h| h.state == TaskState::Split) else {
            return;
        };
        let mut parent = held.unpack();
        let done = settle(&mut parent, part, res, now_ms);
        if done {
            self.tasks.remove(&part.parent_id);
        } else {
            *held = Held::pack(&parent);
        }
        // one entry per parent: the latest
        self.parent_updates.retain(|p| p.task.as_ref().map(|t| &t.task_id) != parent.task.as_ref().map(|t| &t.task_id));
        self.parent_updates.push(parent);
    }

    /// Split tasks changed since the last call (to be saved; the terminal ones
    /// announced as finished), in the order their parts ended.
    pub fn take_parent_updates(&mut self) -> Vec<TaskRecord> {
        std::mem::take(&mut self.parent_updates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::TaskStatus;

    use crate::state::{
        testutil::{assigned, caps, insert_split, queued, result},
        Action, Completion,
    };

    #[test]
    fn cancel_removes_queued_and_frees_assigned() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.insert(queued("run", 3, 0), 0);
        s.insert(queued("wait", 3, 1), 0);
        assert_eq!(assigned(&s.plan(1, true)).len(), 1);
        let r = s.cancel("wait", 2, "no longer needed").pop().expect("queued");
        assert_eq!(r.state(), TaskState::Cancelled);
        assert_eq!(s.queued(), 0);
        let r = s.cancel("run", 3, "").pop().expect("assigned");
        assert_eq!((r.state(), r.worker_id.as_str()), (TaskState::Cancelled, "a"));
        assert_eq!(s.workers["a"].reserved.slots, 0, "slot freed");
        assert!(s.cancel("run", 4, "").is_empty(), "already finished");
    }

    #[test]
    fn shards_run_side_by_side_and_settle_their_parent() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.register(caps("b", 8, 1), 0);
        insert_split(
            &mut s,
            "suite",
            hwsched_proto::v1::Placement { strategy: "sharded".into(), shards: 2, ..Default::default() },
        );
        assert_eq!(s.queued(), 2, "the parts queue, the parent does not");
        let actions = s.plan(1, true);
        let mut placed = assigned(&actions);
        placed.sort();
        assert_eq!(placed, [("suite--s0".into(), "a".into()), ("suite--s1".into(), "b".into())]);
        let recs: Vec<TaskRecord> =
            actions.into_iter().filter_map(|a| if let Action::Assign(r) = a { Some(r) } else { None }).collect();
        assert_eq!(recs.iter().map(|r| (r.shard_index, r.shard_total)).collect::<Vec<_>>(), [(0, 2), (1, 2)]);

        assert!(matches!(s.complete(&result(&recs[0], TaskStatus::Succeeded), 2), Completion::Done(_)));
        let updates = s.take_parent_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(
            (updates[0].state(), updates[0].reason.as_str()),
            (TaskState::Split, "1 of 2 shards ended, 1 succeeded")
        );
        assert!(s.knows("suite"));
        assert!(matches!(s.complete(&result(&recs[1], TaskStatus::Succeeded), 3), Completion::Done(_)));
        let updates = s.take_parent_updates();
        assert_eq!(updates[0].state(), TaskState::Succeeded);
        assert_eq!(updates[0].parts.iter().map(|p| p.worker_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(!s.knows("suite"), "a finished parent leaves the state");
        assert!(s.take_parent_updates().is_empty());
    }

    #[test]
    fn cancelling_a_split_task_cancels_its_parts() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        insert_split(
            &mut s,
            "suite",
            hwsched_proto::v1::Placement { strategy: "sharded".into(), shards: 3, ..Default::default() },
        );
        assert_eq!(assigned(&s.plan(1, true)).len(), 1, "one slot");
        let cancelled = s.cancel("suite", 2, "stop");
        assert_eq!(cancelled.len(), 3);
        assert!(cancelled.iter().all(|r| r.state() == TaskState::Cancelled));
        assert_eq!(s.workers["a"].reserved.slots, 0, "the running shard's slot is freed");
        assert_eq!(s.queued(), 0);
        let updates = s.take_parent_updates();
        assert_eq!(updates.last().map(|p| p.state()), Some(TaskState::Cancelled));
        assert!(s.tasks.is_empty());
    }

    #[test]
    fn a_replica_no_worker_can_run_fails_its_parent() {
        let mut s = State::default();
        let mut cpu = caps("cpu-1", 8, 2);
        cpu.hardware_class = "cpu:x86_64-epyc".into();
        s.register(cpu, 0);
        insert_split(
            &mut s,
            "everywhere",
            hwsched_proto::v1::Placement {
                strategy: "replicated".into(),
                hardware_classes: vec!["cpu".into(), "accel:tpu".into()],
                ..Default::default()
            },
        );
        let actions = s.plan(1, true);
        assert_eq!(assigned(&actions), [("everywhere--r0".to_string(), "cpu-1".to_string())]);
        assert!(actions.iter().any(|a| matches!(a, Action::Reject(r) if r.reason.contains("another hardware class"))));
        let run = match &actions[..] {
            [.., Action::Assign(r)] | [Action::Assign(r), ..] => r.clone(),
            _ => unreachable!(),
        };
        s.complete(&result(&run, TaskStatus::Succeeded), 2);
        let parent = s.take_parent_updates().pop().expect("parent");
        assert_eq!(parent.state(), TaskState::Failed);
        assert!(
            parent.reason.starts_with("1 of 2 replicas succeeded; everywhere--r1: fits no registered worker"),
            "{}",
            parent.reason
        );
    }
}
