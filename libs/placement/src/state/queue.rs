//! The queue's placement order: effective priority (aging raises a waiting
//! task one level per `aging_ms`), then arrival; with fair share, producers
//! interleaved within a priority. A pass walks it lazily (`Order`).

use std::collections::HashMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use hwsched_proto::v1::{TaskRecord, TaskState};

use crate::state::{records::QueueEntry, State};

impl State {
    /// Tasks waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many tasks wait, and how long ago the oldest of them was submitted
    /// (ms; 0 with an empty queue). A retried task counts from its submission.
    pub fn queue_age(&self, now_ms: i64) -> (usize, i64) {
        let oldest = self.queue.iter().map(|e| e.queued_at_ms).min();
        (self.queue.len(), oldest.map_or(0, |at| (now_ms - at).max(0)))
    }

    /// The waiting tasks in placement order (effective priority, then arrival).
    pub fn queue_view(&self, now_ms: i64) -> Vec<TaskRecord> {
        self.order(now_ms).into_iter().filter_map(|e| self.record(&e.task_id)).collect()
    }

    /// The effective priority of a queued task: raised one level per `aging_ms` waited.
    pub(super) fn effective(&self, e: &QueueEntry, now_ms: i64) -> u32 {
        if self.aging_ms <= 0 {
            return e.priority;
        }
        let raised = u32::try_from((now_ms - e.queued_at_ms).max(0) / self.aging_ms).unwrap_or(u32::MAX);
        e.priority.saturating_sub(raised).max(1)
    }

    /// The queue in placement order: effective priority (raised one level per
    /// `aging_ms` waited, so nothing starves), then arrival.
    ///
    /// With `fair_share`, tasks of the same effective priority are interleaved
    /// by producer: a producer's k-th waiting task ranks as if it had k more
    /// tasks assigned, so a producer with fewer tasks running goes first and one
    /// large suite cannot hold back everyone else's.
    pub(super) fn order(&self, now_ms: i64) -> Vec<QueueEntry> {
        let mut order: Vec<QueueEntry> = self.queue.iter().cloned().collect();
        let effective = |e: &QueueEntry| self.effective(e, now_ms);
        if self.aging_ms > 0 || self.fair_share {
            order.sort_by_key(|e| (effective(e), e.queued_at_ms, e.seq));
        }
        if !self.fair_share {
            return order;
        }
        let producer = |id: &str| self.waiting.get(id).map_or("", |w| &*w.producer);
        // counts, looked up only: their order never shows
        let mut share: HashMap<&str, u64> = HashMap::new();
        for h in self.tasks.values().filter(|h| h.state == TaskState::Assigned) {
            *share.entry(&*h.producer).or_default() += 1;
        }
        let mut rank: HashMap<(u32, &str), u64> = HashMap::new();
        let mut keyed: Vec<((u32, u64, i64, u64), QueueEntry)> = order
            .into_iter()
            .map(|e| {
                let (prio, p) = (effective(&e), producer(&e.task_id));
                let k = rank.entry((prio, p)).or_insert_with(|| share.get(p).copied().unwrap_or(0));
                let key = (prio, *k, e.queued_at_ms, e.seq);
                *k += 1;
                (key, e)
            })
            .collect();
        keyed.sort_by_key(|k| k.0);
        keyed.into_iter().map(|(_, e)| e).collect()
    }
}

/// The queue in placement order, as a pass walks it.
pub(super) enum Order {
    /// Computed in full (fair share interleaves producers).
    Sorted(std::vec::IntoIter<QueueEntry>),
    /// Merged on the fly from the queue's base-priority runs. Within one base
    /// priority the queue is ordered by arrival, and the older a task the more
    /// it is raised, so each run is already in (effective priority, arrival)
    /// order: the next task is the least of the runs' heads. Each run's cursor
    /// is the last entry taken from it (entries placed meanwhile are gone, those
    /// that wait stay behind the cursor).
    Lazy(Vec<(u32, Option<QueueEntry>)>),
}

impl Order {
    /// The order a pass over `s` walks: sorted in full with fair share, else lazy.
    pub(super) fn of(s: &State, now_ms: i64) -> Self {
        if s.fair_share {
            Order::Sorted(s.order(now_ms).into_iter())
        } else {
            Order::lazy()
        }
    }

    fn lazy() -> Self {
        Order::Lazy(Vec::new())
    }

    /// The next entry still in the queue of `s`, in placement order.
    pub(super) fn next(&mut self, s: &State, now_ms: i64) -> Option<QueueEntry> {
        let cursors = match self {
            Order::Sorted(it) => return it.next(),
            Order::Lazy(c) => c,
        };
        if cursors.is_empty() {
            // the base priorities present, each a run of the queue
            let mut p = s.queue.first().map(|e| e.priority);
            while let Some(base) = p {
                cursors.push((base, None));
                let Some(after) = base.checked_add(1) else { break };
                p = s.queue.range((Included(QueueEntry::first_of(after)), Unbounded)).next().map(|e| e.priority);
            }
        }
        let mut best: Option<(usize, (u32, i64, u64), QueueEntry)> = None;
        for (i, (base, cursor)) in cursors.iter().enumerate() {
            let lower = match cursor {
                Some(c) => Excluded(c.clone()),
                None => Included(QueueEntry::first_of(*base)),
            };
            let Some(head) = s.queue.range((lower, Unbounded)).next().filter(|e| e.priority == *base) else {
                continue;
            };
            let key = (s.effective(head, now_ms), head.queued_at_ms, head.seq);
            if best.as_ref().is_none_or(|(_, k, _)| key < *k) {
                best = Some((i, key, head.clone()));
            }
        }
        let (i, _, entry) = best?;
        cursors[i].1 = Some(entry.clone());
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::TaskStatus;

    use crate::state::{
        testutil::{assigned, caps, queued, result},
        Completion,
    };

    #[test]
    fn queue_age_is_the_oldest_submission_whatever_its_priority() {
        let mut s = State::default();
        assert_eq!(s.queue_age(10_000), (0, 0));
        s.insert(queued("urgent-new", 0, 9_000), 9_000);
        s.insert(queued("lazy-old", 9, 4_000), 9_000);
        assert_eq!(s.queue_age(10_000), (2, 6_000));
        s.register(caps("w", 8, 1), 10_000);
        let placed = assigned(&s.plan(10_000, true));
        assert_eq!(placed, [("urgent-new".to_string(), "w".to_string())]);
        assert_eq!(s.queue_age(11_000), (1, 7_000));
    }

    #[test]
    fn priority_then_fifo_and_slots_respected() {
        let mut s = State::default();
        s.register(caps("w", 8, 2), 0);
        s.insert(queued("low", 5, 1), 0);
        s.insert(queued("first", 3, 2), 0);
        s.insert(queued("second", 3, 3), 0);
        s.insert(queued("urgent", 1, 4), 0);
        let got = assigned(&s.plan(10, true));
        assert_eq!(got, vec![("urgent".into(), "w".into()), ("first".into(), "w".into())]);
        assert_eq!(s.queued(), 2);
        // a finished task frees its slot for the next in order
        let rec = s.record("urgent").expect("urgent");
        assert!(matches!(s.complete(&result(&rec, TaskStatus::Succeeded), 20), Completion::Done(_)));
        assert_eq!(assigned(&s.plan(30, true)), vec![("second".into(), "w".into())]);
    }

    #[test]
    fn the_lazy_order_is_the_sorted_order() {
        let mut s = State::with_aging(10_000);
        // priorities 1..=5 arriving over 100 s, in a scrambled order
        for i in 0..500i64 {
            let prio = (i * 7 % 5 + 1) as u32;
            let at = (i * 7919) % 100_000;
            s.insert(queued(&format!("t{i}"), prio, at), at);
        }
        for now in [0, 35_000, 100_000, 1_000_000] {
            let sorted: Vec<QueueEntry> = s.order(now);
            let mut lazy = Order::lazy();
            let mut merged = Vec::new();
            while let Some(e) = lazy.next(&s, now) {
                merged.push(e);
            }
            assert_eq!(merged, sorted, "at {now} ms");
        }
    }

    #[test]
    fn aging_bounds_the_wait_of_a_low_priority_task() {
        // One slot, a new urgent task arriving every second forever, one priority-5 task waiting.
        let mut s = State::with_aging(10_000);
        s.register(caps("w", 8, 1), 0);
        s.insert(queued("low", 5, 0), 0);
        let mut placed_low_at = None;
        for sec in 0..120i64 {
            let now = sec * 1000;
            s.insert(queued(&format!("urgent-{sec}"), 1, now), now);
            for (id, _) in assigned(&s.plan(now, true)) {
                if id == "low" {
                    placed_low_at = Some(now);
                }
            }
            // whatever runs finishes within the second
            let running: Vec<TaskRecord> = s.records_in(TaskState::Assigned);
            for r in running {
                s.complete(&result(&r, TaskStatus::Succeeded), now + 999);
            }
            if placed_low_at.is_some() {
                break;
            }
        }
        // raised to priority 1 after 4 x 10 s; then it is the oldest priority-1 task
        let at = placed_low_at.expect("low-priority task starved");
        assert!(at <= 41_000, "placed after {at} ms");
        // without aging it would starve
        let mut s = State::default();
        s.register(caps("w", 8, 1), 0);
        s.insert(queued("low", 5, 0), 0);
        for sec in 0..60i64 {
            let now = sec * 1000;
            s.insert(queued(&format!("urgent-{sec}"), 1, now), now);
            assert!(assigned(&s.plan(now, true)).iter().all(|(id, _)| id != "low"));
            let running: Vec<TaskRecord> = s.records_in(TaskState::Assigned);
            for r in running {
                s.complete(&result(&r, TaskStatus::Succeeded), now + 999);
            }
        }
    }

    #[test]
    fn fair_share_interleaves_producers() {
        let mut s = State::with_aging(0);
        s.fair_share = true;
        s.register(caps("w", 64, 1), 0);
        for i in 0..3 {
            let mut r = queued(&format!("big-{i}"), 3, i);
            if let Some(t) = r.task.as_mut() {
                t.producer = "nightly".into();
            }
            s.insert(r, i);
        }
        let mut r = queued("small-0", 3, 10);
        if let Some(t) = r.task.as_mut() {
            t.producer = "pr-42".into();
        }
        s.insert(r, 10);
        let order: Vec<String> = s.order(20).into_iter().map(|e| e.task_id.to_string()).collect();
        assert_eq!(order, vec!["big-0", "small-0", "big-1", "big-2"]);
        s.fair_share = false;
        let order: Vec<String> = s.order(20).into_iter().map(|e| e.task_id.to_string()).collect();
        assert_eq!(order, vec!["big-0", "big-1", "big-2", "small-0"]);
    }
}
