//! Read-only views of the task records, for the scheduler's queries (`hwsched
//! queue`, `explain`, listings): waiting, assigned and split tasks alike.

use hwsched_proto::v1::{TaskRecord, TaskState};

use crate::state::{records::Held, State};

impl State {
    /// The record of a task that is not finished: waiting, assigned or split.
    pub fn record(&self, task_id: &str) -> Option<TaskRecord> {
        match self.waiting.get(task_id) {
            Some(w) => Some(w.unpack()),
            None => self.tasks.get(task_id).map(Held::unpack),
        }
    }

    /// The records of the assigned or split tasks in `state`, in task id order.
    pub fn records_in(&self, state: TaskState) -> Vec<TaskRecord> {
        self.tasks.values().filter(|h| h.state == state).map(Held::unpack).collect()
    }

    /// The worker an assigned task is on.
    pub fn worker_of(&self, task_id: &str) -> Option<&str> {
        self.tasks.get(task_id).filter(|h| h.state == TaskState::Assigned).map(|h| &*h.worker_id)
    }

    /// Whether a task is here (not finished).
    pub fn knows(&self, task_id: &str) -> bool {
        self.waiting.contains_key(task_id) || self.tasks.contains_key(task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::testutil::{caps, queued};

    #[test]
    fn records_answer_for_waiting_and_assigned_tasks_in_task_id_order() {
        let mut s = State::default();
        s.register(caps("w", 64, 64), 0);
        for id in ["t3", "t1", "t4", "t0", "t2"] {
            s.insert(queued(id, 3, 0), 0);
        }
        s.plan(1, true);
        s.insert(queued("waits", 3, 2), 2);
        let ids: Vec<String> =
            s.records_in(TaskState::Assigned).into_iter().filter_map(|r| r.task.map(|t| t.task_id)).collect();
        assert_eq!(ids, ["t0", "t1", "t2", "t3", "t4"]);
        assert!(s.records_in(TaskState::Split).is_empty());
        assert_eq!(s.worker_of("t3"), Some("w"));
        assert_eq!(s.worker_of("waits"), None, "not assigned");
        assert_eq!(s.record("waits").map(|r| r.state()), Some(TaskState::Queued));
        assert!(s.knows("t0") && s.knows("waits") && !s.knows("gone"));
        assert!(s.record("gone").is_none());
    }
}
