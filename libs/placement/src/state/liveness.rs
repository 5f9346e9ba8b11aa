//! Worker liveness: registration, heartbeats (with thermal hysteresis and the
//! throttling cool-down), and supervision: silent or offline workers lose
//! their attempts, and so do assignments their worker never reported running.

use hwsched_proto::v1::{TaskState, WorkerCapabilities, WorkerHeartbeat, WorkerState};

use crate::{
    filter::critically_overloaded,
    state::{
        worker::{HOT_C, HOT_HYSTERESIS_C},
        Completion, State,
    },
    view::shape_of,
};

impl State {
    /// Records a worker's capabilities.
    pub fn register(&mut self, caps: WorkerCapabilities, now_ms: i64) -> bool {
        self.changed = true;
        let w = self.workers.entry(caps.worker_id.clone()).or_default();
        let new = w.caps.is_none();
        w.shape = shape_of(&caps);
        w.caps = Some(caps.into());
        w.last_seen_ms = now_ms;
        if w.state == WorkerState::Unspecified || w.state == WorkerState::Offline {
            w.state = WorkerState::Active;
        }
        new
    }

    /// Records a heartbeat. Returns true when the worker's capabilities are
    /// unknown or outdated (the caller asks the monitor for them).
    pub fn heartbeat(&mut self, hb: WorkerHeartbeat, now_ms: i64) -> bool {
        for id in &hb.running_task_ids {
            let Some(h) = self.tasks.get(id) else { continue };
            if *h.worker_id == hb.worker_id {
                self.seen_running.insert(id.clone(), now_ms);
            } else if h.hedge.as_ref().is_some_and(|(w, ..)| **w == hb.worker_id) {
                self.seen_hedge.insert(id.clone(), now_ms);
            }
        }
        let cooldown = self.cooldown_ms;
        let w = self.workers.entry(hb.worker_id.clone()).or_default();
        let before = usability(&w.heartbeat, w.hot, w.state);
        w.last_seen_ms = now_ms;
        w.state = hb.state();
        if hb.max_temp_c >= HOT_C {
            w.hot = true;
        } else if hb.max_temp_c < HOT_C - HOT_HYSTERESIS_C {
            w.hot = false;
        }
        if hb.throttling {
            w.throttled_until_ms = now_ms + cooldown;
        }
        let stale = w.caps.as_ref().is_none_or(|c| c.revision != hb.capabilities_revision);
        w.heartbeat = hb;
        self.changed |= before != usability(&w.heartbeat, w.hot, w.state);
        stale
    }

    /// Marks workers silent for longer than their timeout (at least `timeout_ms`,
    /// and three of their heartbeat periods), or that said they went offline,
    /// as offline; and finds assignments their worker has not reported running
    /// in heartbeats sent over `grace_ms` since it was assigned or last listed
    /// them. Their tasks are queued again, or fail once lost
    /// [`crate::state::MAX_LOSSES`] times. Returns each affected record with the
    /// reason, in a defined order: the lost workers' tasks (workers by id, each
    /// one's tasks by task id), then the forgotten assignments by task id.
    pub fn supervise(&mut self, now_ms: i64, timeout_ms: i64, grace_ms: i64) -> Vec<Completion> {
        let mut lost = Vec::new();
        for (id, w) in self.workers.iter_mut() {
            let timeout = timeout_ms.max(3 * i64::from(w.heartbeat.interval_ms));
            let silent = now_ms - w.last_seen_ms > timeout;
            if (silent || w.state == WorkerState::Offline) && (w.state != WorkerState::Offline || w.reserved.slots > 0)
            {
                self.changed |= w.state != WorkerState::Offline;
                w.state = WorkerState::Offline;
                lost.push(id.clone());
            }
        }
        let mut out = Vec::new();
        for id in lost {
            for task_id in self.assigned_to(&id) {
                out.extend(self.lose(&task_id, &id, now_ms, format!("worker {id} lost")));
            }
        }
        for (task_id, worker) in self.forgotten(now_ms, grace_ms) {
            let why = format!("not running on {worker} {} s after assignment", grace_ms / 1000);
            out.extend(self.lose(&task_id, &worker, now_ms, why));
        }
        out
    }

    /// Assignments (hedged copies included) that never started (or vanished)
    /// on a live worker: not reported running in heartbeats it sent over
    /// `grace_ms`. As (task, worker), in task id order.
    fn forgotten(&self, now_ms: i64, grace_ms: i64) -> Vec<(String, String)> {
        // observe-only workers do not list what their external executor runs; a worker
        // silent since (a cut link, a frozen monitor) has said nothing either way: its
        // timeout, not this, decides whether it is lost
        let last_heard = |worker: &str| {
            self.workers
                .get(worker)
                .filter(|w| w.state != WorkerState::Offline && !w.heartbeat.observe_only)
                .map(|w| w.last_seen_ms)
        };
        let mut out = Vec::new();
        for (id, h) in self.tasks.iter().filter(|(_, h)| h.state == TaskState::Assigned) {
            let copies = std::iter::once((&h.worker_id, h.assigned_at_ms, &self.seen_running))
                .chain(h.hedge.as_ref().map(|(w, _, at)| (w, *at, &self.seen_hedge)));
            for (worker, assigned_at_ms, seen) in copies {
                let seen = seen.get(id).copied().unwrap_or(0).max(assigned_at_ms);
                if last_heard(worker).is_some_and(|heard| heard.min(now_ms) - seen > grace_ms) {
                    out.push((id.clone(), worker.to_string()));
                }
            }
        }
        out
    }

    /// The tasks with an attempt (or a hedged copy) on a worker, in task id order.
    fn assigned_to(&self, worker_id: &str) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, h)| {
                h.state == TaskState::Assigned
                    && (&*h.worker_id == worker_id || h.hedge.as_ref().is_some_and(|(w, ..)| &**w == worker_id))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// What of a heartbeat decides whether a pass may use the worker: hot,
/// throttling, critically overloaded (CPU or memory), its state.
fn usability(hb: &WorkerHeartbeat, hot: bool, state: WorkerState) -> (bool, bool, bool, WorkerState) {
    let critical =
        critically_overloaded((hb.cpu_util_pct, hb.tasks_cpu_util_pct), (hb.memory_used_pct, hb.tasks_memory_used_pct));
    (hot, hb.throttling, critical, state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{
        testutil::{assigned, caps, hb, queued},
        MAX_LOSSES,
    };

    #[test]
    fn lost_worker_tasks_are_requeued_and_placed_elsewhere() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.insert(queued("t", 3, 0), 0);
        assert_eq!(assigned(&s.plan(1, true))[0].1, "a");
        s.register(caps("b", 8, 1), 5_000);
        s.heartbeat(
            WorkerHeartbeat { worker_id: "b".into(), state: 1, capabilities_revision: 7, ..Default::default() },
            11_000,
        );
        let lost = s.supervise(12_000, 10_000, 60_000);
        assert!(
            matches!(lost.as_slice(), [Completion::Retry(r)] if r.reason.starts_with("worker a lost") && r.losses == 1),
            "{lost:?}"
        );
        assert_eq!(assigned(&s.plan(12_001, true))[0].1, "b");
    }

    #[test]
    fn a_task_that_keeps_losing_its_worker_fails_without_using_its_failure_budget() {
        let mut s = State::default();
        let mut t = 0;
        s.insert(queued("killer", 3, 0), 0);
        for round in 1..=MAX_LOSSES + 1 {
            let w = format!("w{round}");
            s.register(caps(&w, 8, 1), t);
            assert_eq!(assigned(&s.plan(t + 1, true))[0].1, w);
            t += 20_000; // silent for longer than the timeout
            let out = s.supervise(t, 10_000, 60_000);
            match (round <= MAX_LOSSES, out.as_slice()) {
                (true, [Completion::Retry(r)]) => assert_eq!((r.losses, r.failures), (round, 0)),
                (false, [Completion::Done(r)]) => {
                    assert_eq!(r.state(), TaskState::Failed);
                    assert!(r.reason.contains("giving up"), "{}", r.reason);
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
    }

    #[test]
    fn assignment_never_reported_running_is_placed_again() {
        let mut s = State::default();
        s.register(caps("a", 8, 2), 0);
        s.insert(queued("ghost", 3, 0), 0);
        s.insert(queued("real", 3, 1), 0);
        assert_eq!(assigned(&s.plan(1_000, true)).len(), 2);
        // the worker stays alive and reports only "real"
        for now in (2_000..=40_000).step_by(1_000) {
            let hb = WorkerHeartbeat {
                worker_id: "a".into(),
                state: 1,
                capabilities_revision: 7,
                running_task_ids: vec!["real".into()],
                ..Default::default()
            };
            s.heartbeat(hb, now);
        }
        let out = s.supervise(40_000, 10_000, 30_000);
        assert!(
            matches!(out.as_slice(), [Completion::Retry(r)] if r.task.as_ref().map(|t| t.task_id.as_str()) == Some("ghost")),
            "{out:?}"
        );
        assert_eq!(s.record("real").expect("real").state(), TaskState::Assigned);
    }

    #[test]
    fn a_silent_worker_has_forgotten_nothing_until_it_speaks_again() {
        let mut s = State::default();
        s.register(caps("a", 8, 1), 0);
        s.insert(queued("t", 3, 0), 0);
        assert_eq!(assigned(&s.plan(1_000, true)).len(), 1);
        // its link is cut before a heartbeat lists the attempt: 60 s of silence,
        // within its timeout (120 s), is no evidence that it forgot
        assert!(s.supervise(61_000, 120_000, 30_000).is_empty());
        assert_eq!(s.record("t").expect("t").state(), TaskState::Assigned);
        // heard again: it is judged on what it says from then on
        let quiet = WorkerHeartbeat { worker_id: "a".into(), state: 1, capabilities_revision: 7, ..Default::default() };
        s.heartbeat(quiet, 62_000);
        assert_eq!(s.supervise(62_000, 120_000, 30_000).len(), 1, "heard 61 s after the assignment, not listing it");
    }

    #[test]
    fn a_throttling_worker_gets_nothing_until_it_has_cooled_down() {
        let mut s = State::with_aging(0);
        s.cooldown_ms = 60_000;
        s.register(caps("hot", 8, 4), 0);
        s.heartbeat(hb("hot", 92.0, true), 1_000);
        s.heartbeat(hb("hot", 70.0, false), 2_000); // stopped throttling, still cooling down
        s.insert(queued("t", 3, 2_000), 2_000);
        assert!(s.plan(30_000, true).is_empty());
        assert!(s.record("t").expect("t").reason.contains("throttling"), "{}", s.record("t").expect("t").reason);
        s.heartbeat(hb("hot", 70.0, false), 61_500);
        assert_eq!(assigned(&s.plan(61_500, true)).len(), 1, "cooled down for 60 s");
    }

    #[test]
    fn hot_has_hysteresis_and_steers_placement_away() {
        let mut s = State::with_aging(0);
        s.register(caps("a", 8, 4), 0);
        s.register(caps("b", 8, 4), 0);
        s.heartbeat(hb("a", 87.0, false), 1);
        assert!(s.workers["a"].hot);
        s.heartbeat(hb("a", 82.0, false), 2);
        assert!(s.workers["a"].hot, "82 °C is not cool enough yet");
        s.insert(queued("t", 3, 0), 0);
        assert_eq!(assigned(&s.plan(3, true))[0].1, "b", "a is hot");
        s.heartbeat(hb("a", 79.0, false), 4);
        assert!(!s.workers["a"].hot);
    }

    #[test]
    fn heartbeat_asks_for_capabilities_when_revision_changes() {
        let mut s = State::default();
        assert!(
            s.heartbeat(WorkerHeartbeat { worker_id: "a".into(), capabilities_revision: 7, ..Default::default() }, 0)
        );
        s.register(caps("a", 2, 1), 0);
        assert!(!s.heartbeat(
            WorkerHeartbeat { worker_id: "a".into(), capabilities_revision: 7, state: 1, ..Default::default() },
            1
        ));
        assert!(s.heartbeat(
            WorkerHeartbeat { worker_id: "a".into(), capabilities_revision: 8, state: 1, ..Default::default() },
            2
        ));
    }

    /// Builds a state with tasks on two workers, in an insertion order that
    /// differs from the task ids' order, and lets both workers go silent.
    fn all_lost(ids: &[&str]) -> Vec<String> {
        let mut s = State::default();
        s.register(caps("w-b", 8, 64), 0);
        s.register(caps("w-a", 8, 64), 0);
        for id in ids {
            s.insert(queued(id, 3, 0), 0);
        }
        assert_eq!(assigned(&s.plan(1, true)).len(), ids.len());
        s.supervise(60_000, 10_000, 600_000)
            .into_iter()
            .map(|c| match c {
                Completion::Retry(r) => format!("{} {}", r.task.map(|t| t.task_id).unwrap_or_default(), r.reason),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn tasks_lost_at_once_come_back_by_worker_then_task_id() {
        let ids = ["t7", "t3", "t9", "t1", "t5", "t2", "t8", "t0", "t6", "t4", "t11", "t10"];
        let lost = all_lost(&ids);
        let mut workers: Vec<&str> = lost.iter().map(|l| l.split_once(' ').map_or("", |(_, w)| w)).collect();
        let before = workers.clone();
        workers.sort();
        assert_eq!(workers, before, "workers in id order: {lost:?}");
        for w in ["worker w-a lost", "worker w-b lost"] {
            let tasks: Vec<&str> =
                lost.iter().filter(|l| l.ends_with(w)).map(|l| &l[..l.find(' ').unwrap_or(0)]).collect();
            let mut sorted = tasks.clone();
            sorted.sort();
            assert_eq!(tasks, sorted, "{w}: tasks in id order");
        }
        assert_eq!(lost.len(), ids.len());
        // the same calls, the same order (a hash map's order would differ between instances)
        assert_eq!(all_lost(&ids), lost);
    }

    #[test]
    fn a_worker_saturated_by_its_own_attempts_is_busy_not_overloaded() {
        let mut s = State::with_aging(0);
        s.register(caps("w", 8, 4), 0);
        // 99% CPU, 90 points of it the tests hwsched placed there
        let ours = WorkerHeartbeat { cpu_util_pct: 99.0, tasks_cpu_util_pct: 90.0, ..hb("w", 50.0, false) };
        s.heartbeat(ours.clone(), 0);
        s.insert(queued("t1", 3, 0), 0);
        assert_eq!(assigned(&s.plan(1, true)).len(), 1, "{}", s.record("t1").expect("t1").reason);
        // the same total from another tenant: nothing new
        s.heartbeat(WorkerHeartbeat { tasks_cpu_util_pct: 2.0, ..ours.clone() }, 2);
        s.insert(queued("t2", 3, 0), 2);
        assert!(assigned(&s.plan(3, true)).is_empty());
        assert!(s.record("t2").expect("t2").reason.contains("critically overloaded"));
        // memory held by others counts the same way
        s.heartbeat(WorkerHeartbeat { memory_used_pct: 97.0, tasks_memory_used_pct: 1.0, ..ours }, 4);
        assert!(assigned(&s.plan(5, true)).is_empty());
    }
}
