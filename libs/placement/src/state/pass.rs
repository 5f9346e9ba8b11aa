//! The placement pass ([`State::plan`]): walks the queue in placement order
//! and places each task on the best worker, lets it wait for a busy one,
//! explains why it waits, or rejects it when no registered worker could ever
//! run it. Step by step: the workers' views (`Pass`), one decision per
//! task (`State::decide`), and what the decision does (`State::apply`).

use std::{collections::HashMap, sync::Arc};

use hwsched_model::Model;
use hwsched_proto::v1::{CandidateScore, TaskRecord, TaskState, WorkerState};

use crate::{
    filter::{static_fit, unusable, Demand, Need},
    fit::{place, Outcome, Ranked},
    score::DEFAULT_RUNTIME_S,
    state::{
        batch::{Windowed, BATCH_WINDOW},
        queue::Order,
        records::{concurrency_key, next_attempt, QueueEntry, Waiting, NO_TASK},
        worker::reserve,
        Action, State, AFFINITY_MEMORY, REPLAN_MS,
    },
    view::WorkerView,
};

/// What a pass knows of the workers, updated as it places tasks.
struct Pass {
    /// The live workers' views, in worker id order (built from the BTreeMap).
    views: Vec<WorkerView>,
    /// How many of them have a free slot (at none, nothing more can be placed this pass).
    with_room: usize,
    /// Workers away right now: they still count for "could this task ever run here?".
    away: Vec<WorkerView>,
    /// By requirements hash: whether a usable worker with room now fits them
    /// (valid while `with_room` is `fit_rooms`).
    fits_room: HashMap<u64, bool>,
    fit_rooms: usize,
}

impl Pass {
    fn new(s: &State, now_ms: i64) -> Self {
        // a quarantined worker is away: no new tasks, but it still counts for "could this ever run?"
        let away_now =
            |(id, w): &(&String, &crate::state::Worker)| w.state == WorkerState::Offline || s.is_quarantined(id);
        let views: Vec<WorkerView> =
            s.workers.iter().filter(|e| !away_now(e)).filter_map(|(_, w)| w.view(now_ms)).collect();
        let with_room = views.iter().filter(|v| v.has_room()).count();
        let away: Vec<WorkerView> = s.workers.iter().filter(away_now).filter_map(|(_, w)| w.view(now_ms)).collect();
        Self { views, with_room, away, fits_room: HashMap::new(), fit_rooms: with_room }
    }

    fn view_mut(&mut self, worker_id: &str) -> Option<&mut WorkerView> {
        let at = self.views.binary_search_by(|v| v.caps.worker_id.as_str().cmp(worker_id));
        at.ok().map(|i| &mut self.views[i])
    }

    /// Later tasks of this pass see `rec`, just assigned, on its worker: its
    /// reservation, its expected end and its model family.
    fn took(&mut self, rec: &TaskRecord, ranked: &[Ranked], family: &str) {
        let Some(v) = self.view_mut(&rec.worker_id) else { return };
        let had_room = v.has_room();
        reserve(&mut v.reserved, rec);
        let filled = had_room && !v.has_room();
        // later tasks of this pass may wait for it
        let ends_in = ranked.first().map_or(DEFAULT_RUNTIME_S, |r| r.completion_s);
        v.free_in_s = Some(v.free_in_s.map_or(ends_in, |f| f.min(ends_in)));
        if !family.is_empty() && !v.recent_families.iter().any(|f| f == family) {
            Arc::make_mut(&mut v.recent_families).push(family.to_string());
        }
        if filled {
            self.with_room -= 1;
        }
    }

    /// Later tasks see a task waiting for `worker_id`: they queue behind it,
    /// and only what ends before it starts may use room there now.
    fn held(&mut self, worker_id: &str, wait_s: f64, runtime_s: f64) {
        if let Some(v) = self.view_mut(worker_id) {
            v.hold_s = Some(v.hold_s.map_or(wait_s, |h| h.min(wait_s)));
            v.free_in_s = Some(wait_s + runtime_s / f64::from(v.caps.slots.max(1)));
        }
    }
}

impl State {
    /// One placement pass over the queue, in priority then arrival order.
    /// `may_reject`: whether a task that fits no registered worker is rejected
    /// (false during the start-up grace period, when workers are still joining).
    ///
    /// A pass that could not decide anything new is skipped: when nothing it
    /// reads changed since the last pass (no task queued or released, no
    /// worker registered, lost or changed in usability, the same model) and
    /// that pass was less than [`REPLAN_MS`] ago. Probes of quarantined
    /// workers come first; hedged copies of stragglers last, on what the
    /// queue left free (`hedging.rs`).
    pub fn plan(&mut self, now_ms: i64, may_reject: bool) -> Vec<Action> {
        let probes: Vec<Action> = self.probes(now_ms).into_iter().map(Action::Assign).collect();
        let mut actions = self.plan_queue(now_ms, may_reject);
        actions.splice(0..0, probes);
        // what the queue left free may run copies of stragglers
        actions.extend(self.hedges(now_ms).into_iter().map(Action::Hedge));
        actions
    }

    /// [`State::plan`] of the queue.
    fn plan_queue(&mut self, now_ms: i64, may_reject: bool) -> Vec<Action> {
        if self.queue.is_empty() {
            return Vec::new();
        }
        let model_version = self.model.as_ref().map(Model::version);
        let recent =
            self.last_pass.is_some_and(|(v, r, at)| v == model_version && r == may_reject && now_ms - at < REPLAN_MS);
        if recent && !self.changed {
            return Vec::new();
        }
        self.changed = false;
        self.last_pass = Some((model_version, may_reject, now_ms));
        let unexplained = std::mem::take(&mut self.unexplained);
        // Every live worker full: nothing can be placed. Say so to the tasks
        // queued since the last pass, without building anything.
        if let Some(n) = self.live_and_all_full() {
            self.explain_full(&unexplained, n);
            return Vec::new();
        }
        let mut pass = Pass::new(self, now_ms);
        let mut actions = Vec::new();
        // In placement order; without fair share taken lazily (a pass that fills
        // the fleet stops there, however long the queue).
        let mut order = Order::of(self, now_ms);
        let model = self.model.take();
        // the head of the queue, considered together when it outnumbers the room
        let mut window = self.batch_window(&mut order, &pass.views, model.as_ref(), now_ms).into_iter();
        let mut walked = 0usize;
        loop {
            let next = window.next().map(|w| (w, true));
            let Some((Windowed { entry, now }, in_window)) =
                next.or_else(|| order.next(self, now_ms).map(|entry| (Windowed { entry, now: true }, false)))
            else {
                break;
            };
            if !pass.views.is_empty() && pass.with_room == 0 {
                // Nothing more can be placed this pass.
                self.explain_full(&unexplained, pass.views.len());
                break;
            }
            walked += 1;
            // A task already told why it waits is decided again only when it
            // could start now: the window's schedule starts it now, or (past
            // the window) some worker with room now could run it.
            let explained = self.waiting.get(&*entry.task_id).is_some_and(|w| !w.reason.is_empty());
            if explained && in_window && !now {
                continue;
            }
            if walked > BATCH_WINDOW && self.cannot_start(&entry, &mut pass) {
                continue;
            }
            let Some(rec) = self.waiting.get(&*entry.task_id).map(Waiting::unpack) else {
                self.queue.remove(&entry);
                continue;
            };
            if concurrency_key(&rec).is_some_and(|k| self.running_keys.get(&k).copied().unwrap_or(0) > 0) {
                self.wait_because(&entry, "waiting: another task with the same concurrency_key is running".into());
                continue;
            }
            let outcome = self.decide(&rec, &pass.views, model.as_ref());
            let rejectable = may_reject && !pass.views.is_empty();
            actions.extend(self.apply(&entry, rec, outcome, &mut pass, now_ms, rejectable));
        }
        self.model = model;
        // what the pass itself changed (its placements) it has seen
        self.changed = false;
        actions
    }

    /// Whether a waiting task that was decided before (it has a reason) fits
    /// no usable worker with room now (cached per requirements in the pass).
    fn cannot_start(&self, entry: &QueueEntry, pass: &mut Pass) -> bool {
        let Some(w) = self.waiting.get(&*entry.task_id).filter(|w| !w.reason.is_empty()) else { return false };
        if pass.fit_rooms != pass.with_room {
            pass.fits_room.clear();
            pass.fit_rooms = pass.with_room;
        }
        if let Some(fits) = pass.fits_room.get(&w.needs) {
            return !fits;
        }
        let rec = w.unpack();
        let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
        let (need, demand) = (Need::of(task), Demand::of(task));
        let fits = pass
            .views
            .iter()
            .any(|v| v.has_room() && unusable(v, self.policy).is_none() && static_fit(&need, &demand, &v.caps).is_ok());
        pass.fits_room.insert(w.needs, fits);
        !fits
    }

    /// How many live (registered, not offline) workers there are, when there
    /// are some and every one of them is full.
    fn live_and_all_full(&self) -> Option<usize> {
        let live = self.workers.values().filter(|w| w.state != WorkerState::Offline && w.caps.is_some());
        let (mut n, mut full) = (0usize, true);
        for w in live {
            n += 1;
            full &= w.caps.as_ref().is_some_and(|c| w.reserved.slots >= c.slots.max(1));
        }
        (n > 0 && full).then_some(n)
    }

    /// Carries out a decision on the queued task `entry` (record `rec`):
    /// assign it, let it wait (saying why), or reject it when `rejectable`.
    fn apply(
        &mut self,
        entry: &QueueEntry,
        rec: TaskRecord,
        outcome: Outcome,
        pass: &mut Pass,
        now_ms: i64,
        rejectable: bool,
    ) -> Option<Action> {
        match outcome {
            Outcome::Place { worker_id, gpus, score, candidates, components, predicted_runtime_s, ranked } => {
                self.queue.remove(entry);
                self.waiting.remove(&*entry.task_id);
                let mut rec = rec;
                self.placements += 1;
                rec.state = TaskState::Assigned as i32;
                rec.attempt = next_attempt(&rec);
                rec.worker_id = worker_id;
                rec.gpu_indices = gpus;
                rec.assigned_at_ms = now_ms;
                rec.updated_at_ms = now_ms;
                let parts: Vec<String> = components.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
                rec.reason =
                    format!("{}: cost {score:.3} of {candidates} candidate(s): {}", self.policy, parts.join(", "));
                rec.predicted_runtime_s = predicted_runtime_s.unwrap_or(0.0);
                rec.policy = self.policy.name().into();
                rec.candidates_total = u32::try_from(candidates).unwrap_or(u32::MAX);
                rec.candidates = ranked.iter().map(candidate_score).collect();
                let family = rec.task.as_ref().map_or("", |t| t.model_family.as_str()).to_string();
                pass.took(&rec, &ranked, &family);
                self.remember_family(&rec.worker_id, family);
                self.insert(rec.clone(), now_ms);
                Some(Action::Assign(rec))
            }
            Outcome::Queue { worker_id, wait_s, runtime_s, reason, ranked } => {
                pass.held(&worker_id, wait_s, runtime_s);
                if let Some(r) = self.waiting.get_mut(&*entry.task_id) {
                    r.reason = format!("waiting {reason}").into();
                    r.decision =
                        Some(Box::new((self.policy.name().into(), ranked.iter().map(candidate_score).collect())));
                }
                None
            }
            Outcome::Wait { reason } => {
                self.wait_because(entry, format!("waiting: {reason}"));
                None
            }
            Outcome::NeverFits { reason } => self.never_fits(entry, rec, reason, &pass.away, now_ms, rejectable),
        }
    }

    /// A task no live worker could ever run: it waits when an offline worker
    /// could, is rejected when `rejectable`, else waits saying why.
    fn never_fits(
        &mut self,
        entry: &QueueEntry,
        rec: TaskRecord,
        reason: String,
        away: &[WorkerView],
        now_ms: i64,
        rejectable: bool,
    ) -> Option<Action> {
        let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
        if !away.is_empty() && !matches!(place(task, away), Outcome::NeverFits { .. }) {
            self.wait_because(entry, "waiting: the workers that can run it are offline".into());
            return None;
        }
        if !rejectable {
            self.wait_because(entry, format!("waiting: {reason}"));
            return None;
        }
        self.queue.remove(entry);
        self.waiting.remove(&*entry.task_id)?;
        let mut rec = rec;
        rec.state = TaskState::Rejected as i32;
        rec.reason = format!("fits no registered worker: {reason}");
        rec.updated_at_ms = now_ms;
        self.settle_part(&rec, None, now_ms);
        Some(Action::Reject(rec))
    }

    /// Says why a queued task waits.
    fn wait_because(&mut self, entry: &QueueEntry, reason: String) {
        if let Some(r) = self.waiting.get_mut(&*entry.task_id) {
            r.reason = reason.into();
        }
    }

    /// Remembers that a worker was given a task of model `family` (newest
    /// last, at most [`AFFINITY_MEMORY`]).
    fn remember_family(&mut self, worker_id: &str, family: String) {
        let Some(w) = self.workers.get_mut(worker_id) else { return };
        if family.is_empty() {
            return;
        }
        let recent = Arc::make_mut(&mut w.recent_families);
        recent.retain(|f| *f != family);
        recent.push(family);
        if recent.len() > AFFINITY_MEMORY {
            recent.remove(0);
        }
    }

    /// The next number (53 bits) of the state's generator (xorshift64*, fixed
    /// seed: runs repeat).
    pub(super) fn random(&mut self) -> u64 {
        let mut x = self.rng.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11
    }

    /// Tells the waiting tasks among `ids` not told anything else yet that all
    /// `workers` live workers are full.
    fn explain_full(&mut self, ids: &[String], workers: usize) {
        let reason: Arc<str> = format!("waiting: {workers} worker(s), all with no free slot").into();
        for id in ids {
            if let Some(r) = self.waiting.get_mut(id.as_str()).filter(|r| r.reason.is_empty()) {
                r.reason = reason.clone();
            }
        }
    }
}

/// A candidate as a task record keeps it.
fn candidate_score(r: &Ranked) -> CandidateScore {
    CandidateScore {
        worker_id: r.worker_id.clone(),
        hardware_class: r.hardware_class.clone(),
        cost: r.cost,
        wait_s: r.wait_s,
        completion_s: r.completion_s,
        predicted_runtime_s: r.predicted_runtime_s.unwrap_or(0.0),
        components: r.components.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::{ExecutionResult, Requirements, TaskStatus, WorkerHeartbeat};

    use crate::state::testutil::{assigned, caps, hb, named, queued, result, trained, with_class};

    #[test]
    fn a_task_for_an_offline_worker_waits_instead_of_being_rejected() {
        let mut s = State::default();
        let mut gpu_box = caps("gpu", 8, 1);
        gpu_box.gpus =
            vec![hwsched_proto::v1::GpuInfo { vendor: "nvidia".into(), model: "H100".into(), ..Default::default() }];
        s.register(gpu_box, 0);
        s.register(caps("cpu", 8, 1), 0);
        s.heartbeat(
            WorkerHeartbeat { worker_id: "cpu".into(), state: 1, capabilities_revision: 7, ..Default::default() },
            19_000,
        );
        s.supervise(20_000, 10_000, 30_000); // the GPU box went silent
        let mut t = queued("needs-gpu", 3, 0);
        if let Some(task) = t.task.as_mut() {
            task.requirements = Some(Requirements {
                gpus: Some(hwsched_proto::v1::GpuRequirement { count: 1, ..Default::default() }),
                ..Default::default()
            });
        }
        s.insert(t, 20_000);
        assert!(s.plan(20_001, true).is_empty());
        assert!(
            s.record("needs-gpu").expect("needs-gpu").reason.contains("offline"),
            "{}",
            s.record("needs-gpu").expect("needs-gpu").reason
        );
    }

    #[test]
    fn concurrency_key_serialises_tasks() {
        let mut s = State::default();
        s.register(caps("a", 8, 4), 0);
        for (i, id) in ["k1", "k2"].iter().enumerate() {
            let mut r = queued(id, 3, i as i64);
            if let Some(t) = r.task.as_mut() {
                t.concurrency_key = "db".into();
            }
            s.insert(r, 0);
        }
        assert_eq!(assigned(&s.plan(1, true)).len(), 1);
        assert!(s.record("k2").expect("k2").reason.contains("concurrency_key"));
        let rec = s.record("k1").expect("k1");
        s.complete(&result(&rec, TaskStatus::Succeeded), 2);
        assert_eq!(assigned(&s.plan(3, true)), vec![("k2".into(), "a".into())]);
    }

    #[test]
    fn task_that_fits_nothing_is_rejected_only_after_grace() {
        let mut s = State::default();
        s.register(caps("a", 2, 1), 0);
        let mut r = queued("huge", 3, 0);
        if let Some(t) = r.task.as_mut() {
            t.requirements = Some(Requirements { cpu_cores: 64.0, ..Default::default() });
        }
        s.insert(r, 0);
        assert!(s.plan(1, false).is_empty());
        assert!(
            s.record("huge").expect("huge").reason.contains("too few cpu cores"),
            "{}",
            s.record("huge").expect("huge").reason
        );
        assert!(
            matches!(s.plan(2, true).as_slice(), [Action::Reject(r)] if r.reason.contains("fits no registered worker"))
        );
    }

    #[test]
    fn the_learned_model_is_read_by_placement() {
        let mut s = State::with_aging(0);
        let mut slow = caps("slow", 8, 4);
        slow.hardware_class = "cpu:old".into();
        let mut fast = caps("fast", 8, 4);
        fast.hardware_class = "gpu:h100".into();
        s.register(slow, 0);
        s.register(fast, 0);
        let mut m = hwsched_model::Model::default();
        for (hw, secs) in [("cpu:old", 300.0), ("gpu:h100", 3.0)] {
            m.observe(&ExecutionResult {
                name: "train".into(),
                test_type: "training".into(),
                hardware_class: hw.into(),
                duration_s: secs,
                status: TaskStatus::Succeeded as i32,
                ..Default::default()
            });
        }
        s.model = Some(m);
        let mut t = queued("train-1", 3, 0);
        if let Some(task) = t.task.as_mut() {
            task.name = "train".into();
            task.test_type = "training".into();
        }
        s.insert(t, 0);
        let acts = s.plan(1, true);
        let Action::Assign(rec) = &acts[0] else { panic!("{acts:?}") };
        assert_eq!(rec.worker_id, "fast");
        assert!((rec.predicted_runtime_s - 3.0).abs() < 1e-6, "{}", rec.predicted_runtime_s);
        assert!(rec.reason.contains("completion 0.00"), "{}", rec.reason);
        assert_eq!(rec.candidates.len(), 2);
        assert_eq!(rec.candidates[0].worker_id, "fast");
        assert!(rec.candidates[1].completion_s > rec.candidates[0].completion_s);
    }

    #[test]
    fn a_task_waits_for_a_busy_worker_that_finishes_it_sooner() {
        let mut s = State::with_aging(0);
        s.register(with_class("cpu", "cpu:old", 1), 0);
        s.register(with_class("gpu", "gpu:h100", 1), 0);
        s.model = Some(trained(&[("vision", "cpu:old", 300.0), ("vision", "gpu:h100", 10.0)]));
        s.insert(named("first", "vision", 0), 0);
        assert_eq!(assigned(&s.plan(0, true)), vec![("first".into(), "gpu".into())]);
        // the gpu is busy for ~10 s more; 300 s on the idle cpu is worse
        s.insert(named("second", "vision", 0), 0);
        assert!(assigned(&s.plan(0, true)).is_empty(), "waits instead of taking the slow cpu");
        let r = &s.record("second").expect("second");
        assert!(r.reason.starts_with("waiting for gpu"), "{}", r.reason);
        assert_eq!(r.candidates[0].worker_id, "gpu");
        assert!(r.candidates[0].wait_s > 0.0);
        // the gpu finishes: the waiting task gets it
        let first = s.record("first").expect("first");
        s.complete(&result(&first, TaskStatus::Succeeded), 10_000);
        assert_eq!(assigned(&s.plan(10_000, true)), vec![("second".into(), "gpu".into())]);
        // a task the gpu barely speeds up does not wait for it
        s.model = Some(trained(&[("lint", "cpu:old", 20.0), ("lint", "gpu:h100", 15.0)]));
        s.insert(named("third", "lint", 10_000), 10_000);
        assert_eq!(assigned(&s.plan(10_000, true)), vec![("third".into(), "cpu".into())]);
    }

    #[test]
    fn short_tasks_backfill_without_delaying_a_waiting_task() {
        let mut s = State::with_aging(0);
        // one 2-slot gpu worker, busy with a long task in one slot
        s.register(with_class("gpu", "gpu:h100", 2), 0);
        s.register(with_class("cpu", "cpu:old", 1), 0);
        s.model = Some(trained(&[
            ("long", "gpu:h100", 100.0),
            ("long", "cpu:old", 10_000.0),
            ("big", "gpu:h100", 50.0),
            ("big", "cpu:old", 5000.0),
            ("short", "gpu:h100", 5.0),
            ("short", "cpu:old", 500.0),
            ("medium", "gpu:h100", 300.0),
            ("medium", "cpu:old", 30_000.0),
        ]));
        let mut long = named("long", "long", 0);
        if let Some(t) = long.task.as_mut() {
            t.requirements = Some(hwsched_proto::v1::Requirements { cpu_cores: 4.0, ..Default::default() });
        }
        s.insert(long, 0);
        assert_eq!(assigned(&s.plan(0, true)).len(), 1);
        // "big" needs all 8 cores: it waits for the long task to end (~100 s)
        let mut big = named("big", "big", 1);
        if let Some(t) = big.task.as_mut() {
            t.priority = 1;
            t.requirements = Some(hwsched_proto::v1::Requirements { cpu_cores: 8.0, ..Default::default() });
        }
        s.insert(big, 1);
        s.insert(named("medium", "medium", 2), 2);
        s.insert(named("short", "short", 3), 3);
        let placed = assigned(&s.plan(1_000, true));
        assert_eq!(placed, vec![("short".into(), "gpu".into())], "only the short task fits before big starts");
        assert!(
            s.record("big").expect("big").reason.starts_with("waiting for gpu"),
            "{}",
            s.record("big").expect("big").reason
        );
        assert_eq!(
            s.record("medium").expect("medium").state(),
            TaskState::Queued,
            "{}",
            s.record("medium").expect("medium").reason
        );
    }

    #[test]
    fn a_retry_prefers_other_hardware() {
        let mut s = State::with_aging(0);
        s.register(with_class("a1", "gpu:a100", 1), 0);
        s.register(with_class("a2", "gpu:a100", 1), 0);
        s.register(with_class("h1", "gpu:h100", 1), 0);
        s.insert(queued("t", 3, 0), 0);
        let first = assigned(&s.plan(0, true));
        assert_eq!(first[0].1, "a1");
        let r = s.record("t").expect("t");
        s.complete(&result(&r, TaskStatus::Failed), 1);
        assert_eq!(assigned(&s.plan(2, true))[0].1, "h1", "not the other a100");
    }

    #[test]
    fn critically_overloaded_workers_get_nothing() {
        let mut s = State::with_aging(0);
        s.register(caps("w", 8, 4), 0);
        s.heartbeat(WorkerHeartbeat { cpu_util_pct: 99.0, ..hb("w", 50.0, false) }, 0);
        s.insert(queued("t", 3, 0), 0);
        assert!(assigned(&s.plan(1, true)).is_empty());
        assert!(
            s.record("t").expect("t").reason.contains("critically overloaded"),
            "{}",
            s.record("t").expect("t").reason
        );
        s.heartbeat(WorkerHeartbeat { cpu_util_pct: 40.0, ..hb("w", 50.0, false) }, 2);
        assert_eq!(assigned(&s.plan(3, true)).len(), 1);
    }
}
