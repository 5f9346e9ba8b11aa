//! The batch window of a placement pass: when more tasks wait than the fleet
//! has free slots, the first [`BATCH_WINDOW`] tasks in placement order are
//! considered together. Within each effective priority (aging included, so
//! nothing jumps a higher priority) they are ordered by a virtual schedule of
//! the whole window on every usable worker's slots (`crate::batch`): the
//! pass then decides them one by one in that order, as it would in queue
//! order, so every filter, hold and explanation applies unchanged.

use std::{
    collections::{BTreeMap, HashMap},
    rc::Rc,
};

use hwsched_model::Model;
use hwsched_proto::v1::TaskRecord;

use crate::{
    batch::{schedule, Group},
    filter::{static_fit, unusable, Demand, Need},
    score::{Policy, Scoring},
    state::{
        queue::Order,
        records::{QueueEntry, NO_TASK},
        State,
    },
    view::WorkerView,
};

/// The most waiting tasks a pass considers together (the virtual schedule is
/// quadratic in them).
pub const BATCH_WINDOW: usize = 256;

/// A task of the window, in the order the pass decides it.
pub(super) struct Windowed {
    pub(super) entry: QueueEntry,
    /// Whether the virtual schedule starts it now (else it would wait for a
    /// slot another task of the window takes first).
    pub(super) now: bool,
}

/// The workers' slots grouped by shape for the virtual schedule.
struct Groups {
    /// One representative view per group (its capabilities and class).
    reps: Vec<usize>,
    groups: Vec<Group>,
}

impl State {
    /// Takes the head of `order` (at most [`BATCH_WINDOW`] tasks) and returns
    /// it in the order the pass should decide it: as it came when the fleet
    /// has room for all of it or batching is off, else reordered within each
    /// effective priority by the batch heuristic.
    pub(super) fn batch_window(
        &self,
        order: &mut Order,
        views: &[WorkerView],
        model: Option<&Model>,
        now_ms: i64,
    ) -> Vec<Windowed> {
        let Some(heuristic) = self.batch.filter(|_| self.policy == Policy::Hwsched && !self.fair_share) else {
            return Vec::new();
        };
        let free: usize = views.iter().map(|v| v.caps.slots.max(1).saturating_sub(v.reserved.slots) as usize).sum();
        let mut window = Vec::new();
        while window.len() < BATCH_WINDOW {
            match order.next(self, now_ms) {
                Some(e) => window.push(e),
                None => break,
            }
        }
        if window.len() <= free {
            return window.into_iter().map(|entry| Windowed { entry, now: true }).collect();
        }
        let groups = self.groups(views, now_ms);
        let scoring = Scoring {
            model,
            declarations: self.trust_declarations.then_some(&self.declarations),
            policy: self.policy,
            ..Scoring::default()
        };
        // Tasks with the same estimate inputs (a suite's runs of one test) have
        // the same estimates: one record decoded and estimated per kind.
        let mut rows: HashMap<u64, Rc<[Option<f64>]>> = HashMap::new();
        let unknown: Rc<[Option<f64>]> = vec![None; groups.reps.len()].into();
        let etc: Vec<Rc<[Option<f64>]>> = window
            .iter()
            .map(|e| {
                let Some(w) = self.waiting.get(&*e.task_id) else { return unknown.clone() };
                rows.entry(w.estimates)
                    .or_insert_with(|| estimates(&w.unpack(), views, &groups, &scoring).into())
                    .clone()
            })
            .collect();
        let mut groups = groups;
        let mut out = Vec::with_capacity(window.len());
        let mut tier_start = 0;
        while tier_start < window.len() {
            let tier = self.effective(&window[tier_start], now_ms);
            let len = window[tier_start..].iter().take_while(|e| self.effective(e, now_ms) == tier).count();
            let tier_of = tier_start..tier_start + len;
            let planned = schedule(&etc[tier_of], &mut groups.groups, heuristic);
            let mut taken = vec![false; len];
            for a in &planned {
                taken[a.task] = true;
            }
            // what no usable worker can run keeps its place at the tier's end
            let rest = (0..len).filter(|i| !taken[*i]).map(|i| (i, true));
            for (i, now) in planned.iter().map(|a| (a.task, a.start_s <= 0.0)).chain(rest) {
                let at = tier_start + i;
                out.push(Windowed { entry: window[at].clone(), now });
            }
            tier_start += len;
        }
        out
    }

    /// The usable workers' slots, one group per shape (a worker of unknown
    /// shape is a group of its own), in worker id order of first appearance.
    fn groups(&self, views: &[WorkerView], now_ms: i64) -> Groups {
        let mut index: BTreeMap<u64, usize> = BTreeMap::new();
        let mut ready: Vec<Vec<f64>> = Vec::new();
        let mut reps = Vec::new();
        for (i, v) in views.iter().enumerate() {
            if unusable(v, self.policy).is_some() {
                continue;
            }
            let Some(w) = self.workers.get(&v.caps.worker_id) else { continue };
            let key = if v.shape != 0 { v.shape } else { u64::MAX - i as u64 };
            let g = *index.entry(key).or_insert_with(|| {
                reps.push(i);
                ready.push(Vec::new());
                ready.len() - 1
            });
            ready[g].extend(w.slots_free_in_s(now_ms));
        }
        Groups { reps, groups: ready.into_iter().map(Group::new).collect() }
    }
}

/// A waiting task's runtime estimate on each group (`None` where it could
/// never run).
fn estimates(rec: &TaskRecord, views: &[WorkerView], g: &Groups, scoring: &Scoring<'_>) -> Vec<Option<f64>> {
    let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
    let (need, demand) = (Need::of(task), Demand::of(task));
    let workload = hwsched_model::task_workload_key(task);
    g.reps
        .iter()
        .map(|&i| {
            let caps = &views[i].caps;
            static_fit(&need, &demand, caps).ok()?;
            Some(scoring.runtime_estimate(&workload, task, &caps.hardware_class).0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::{
        batch::Heuristic,
        state::{
            testutil::{assigned, named, result, trained, with_class},
            State, REPLAN_MS,
        },
    };
    use hwsched_proto::v1::TaskStatus;

    /// One worker, three waiting tasks: a long one queued first.
    fn queue_of_three(batch: Option<Heuristic>) -> State {
        let mut s = State::with_aging(0);
        s.batch = batch;
        s.register(with_class("gpu", "gpu:h100", 1), 0);
        s.model = Some(trained(&[("long", "gpu:h100", 300.0), ("short", "gpu:h100", 5.0), ("mid", "gpu:h100", 50.0)]));
        s.insert(named("long-1", "long", 0), 0);
        s.insert(named("mid-1", "mid", 1), 1);
        s.insert(named("short-1", "short", 2), 2);
        s
    }

    #[test]
    fn min_min_starts_the_shortest_waiting_task_first_and_queue_order_does_not() {
        let mut s = queue_of_three(Some(Heuristic::MinMin));
        assert_eq!(assigned(&s.plan(10, true)), vec![("short-1".into(), "gpu".into())]);
        let mut fifo = queue_of_three(None);
        assert_eq!(assigned(&fifo.plan(10, true)), vec![("long-1".into(), "gpu".into())]);
        // max-min starts the longest
        let mut lpt = queue_of_three(Some(Heuristic::MaxMin));
        assert_eq!(assigned(&lpt.plan(10, true)), vec![("long-1".into(), "gpu".into())]);
    }

    #[test]
    fn batching_never_lets_a_lower_priority_jump_a_higher_one() {
        let mut s = queue_of_three(Some(Heuristic::MinMin));
        // the long task is urgent: priority 1 beats the short task's default 3
        let mut urgent = named("long-urgent", "long", 3);
        if let Some(t) = urgent.task.as_mut() {
            t.priority = 1;
        }
        s.insert(urgent, 3);
        assert_eq!(assigned(&s.plan(10, true)), vec![("long-urgent".into(), "gpu".into())]);
    }

    #[test]
    fn a_pass_with_nothing_new_is_skipped_until_the_replan_period() {
        let mut s = queue_of_three(Some(Heuristic::MinMin));
        let first = assigned(&s.plan(10, true));
        assert_eq!(first.len(), 1);
        // the worker is full: nothing to do, and nothing changed
        assert!(s.plan(20, true).is_empty());
        let rec = s.record("short-1").expect("short-1");
        s.complete(&result(&rec, TaskStatus::Succeeded), 30);
        // a result frees the slot: the next pass runs at once
        assert_eq!(assigned(&s.plan(31, true)), vec![("mid-1".into(), "gpu".into())]);
        // the state changed under a pass it did not see: skipped while recent...
        assert!(s.plan(32, true).is_empty());
        assert_eq!(s.last_pass.map(|p| p.2), Some(31), "skipped");
        // ...and the periodic pass runs after REPLAN_MS (still full: nothing placed, but it ran)
        assert!(s.plan(32 + REPLAN_MS, true).is_empty());
        assert_eq!(s.last_pass.map(|p| p.2), Some(32 + REPLAN_MS));
    }
}
