//! The scheduler's state machine: workers, reservations, the queue and task
//! records. Pure (time is passed in), so every transition is unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::{
    place, place_with, score::DEFAULT_RUNTIME_S, Demand, Outcome, Policy, Ranked, Reserved, Scoring, WorkerView,
};
use hwsched_proto::v1::{
    CandidateScore, ExecutionResult, TaskRecord, TaskRequest, TaskState, TaskStatus, WorkerCapabilities,
    WorkerHeartbeat, WorkerState,
};
use hwsched_proto::Message as _;

/// One known worker.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    /// Capabilities; `None` until registered (the worker is then never chosen).
    pub caps: Option<std::sync::Arc<WorkerCapabilities>>,
    /// Last heartbeat.
    pub heartbeat: WorkerHeartbeat,
    /// When it was last heard from.
    pub last_seen_ms: i64,
    /// Declared or inferred state.
    pub state: WorkerState,
    /// Reservations of tasks assigned to it.
    pub reserved: Reserved,
    /// Above [`HOT_C`] until it cools below [`HOT_C`] - [`HOT_HYSTERESIS_C`].
    pub hot: bool,
    /// Throttled recently: excluded until then.
    pub throttled_until_ms: i64,
    /// Model families assigned to it lately, newest last.
    pub recent_families: std::sync::Arc<Vec<String>>,
    /// `view::shape_of` its capabilities.
    pub shape: u64,
    /// (assigned at ms, runtime estimate s) of each attempt assigned to it.
    ends: Vec<(i64, f64)>,
}

impl Worker {
    /// Expected seconds until it has room: the soonest end of its attempts, by
    /// their runtime estimate. An attempt past its estimate is expected to need
    /// another quarter of the time it has run. `None` when nothing runs there.
    fn free_in_s(&self, now_ms: i64) -> Option<f64> {
        self.ends
            .iter()
            .map(|(at, estimate)| {
                let ran = (now_ms - at).max(0) as f64 / 1000.0;
                (estimate - ran).max(0.25 * ran)
            })
            .reduce(f64::min)
    }

    /// What the placement core sees of this worker; `None` before it registered.
    fn view(&self, now_ms: i64) -> Option<WorkerView> {
        let caps = self.caps.clone()?;
        let free_in_s = self.free_in_s(now_ms);
        let gpu_util_pct =
            if caps.gpus.is_empty() { 0.0 } else { 100.0 * self.reserved.gpus.len() as f64 / caps.gpus.len() as f64 };
        Some(WorkerView {
            caps,
            state: self.state,
            reserved: self.reserved.clone(),
            cpu_util_pct: self.heartbeat.cpu_util_pct,
            mem_util_pct: self.heartbeat.memory_used_pct,
            gpu_util_pct,
            max_temp_c: self.heartbeat.max_temp_c,
            throttling: self.heartbeat.throttling || now_ms < self.throttled_until_ms,
            hot: self.hot,
            recent_families: self.recent_families.clone(),
            free_in_s,
            hold_s: None,
            shape: self.shape,
        })
    }
}

/// Hottest-sensor temperature that marks a worker hot (penalised), °C.
pub const HOT_C: f64 = 85.0;
/// A hot worker is cool again below `HOT_C` minus this.
pub const HOT_HYSTERESIS_C: f64 = 5.0;
/// How many recent model families are remembered per worker.
const AFFINITY_MEMORY: usize = 8;

/// What the IO layer must do after a placement pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Persist the record and send the assignment.
    Assign(TaskRecord),
    /// Tell the producer the task can never run here.
    Reject(TaskRecord),
}

/// What a result did to its task.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Terminal: succeeded, or failed with no attempts left.
    Done(TaskRecord),
    /// Failed with attempts left: queued again.
    Retry(TaskRecord),
    /// Not for the current attempt (duplicate or late): ignored.
    Stale,
}

/// Workers, queue and records.
#[derive(Debug, Default)]
pub struct State {
    /// Workers by id.
    pub workers: BTreeMap<String, Worker>,
    /// Assigned and split tasks by id, held encoded. Waiting tasks are held
    /// in `waiting` ([`State::record`] answers for both).
    tasks: HashMap<String, Held>,
    /// Waiting tasks by id, in `queue`'s order of arrival.
    waiting: HashMap<std::sync::Arc<str>, Waiting>,
    queue: BTreeSet<QueueEntry>,
    running_keys: HashMap<String, u32>,
    /// When each assigned task was last reported running by its worker.
    seen_running: HashMap<String, i64>,
    seq: u64,
    /// Waiting this long raises a task one priority level (0 = no aging).
    pub aging_ms: i64,
    /// A throttling worker gets nothing until it has not throttled for this long.
    pub cooldown_ms: i64,
    /// The learner's latest model.
    pub model: Option<hwsched_model::Model>,
    /// Score weights and packing.
    pub weights: crate::Weights,
    /// Prefer busy workers (pack) over idle ones (spread).
    pub pack: bool,
    /// How the winner among candidates is chosen.
    pub policy: Policy,
    /// Within a priority, interleave producers by how many tasks each has
    /// assigned, instead of first come first served.
    pub fair_share: bool,
    /// Share of first placements that may explore (hwsched policy): go to a
    /// worker free now whose hardware the model has few runs of for the
    /// workload, when it is expected to finish within 2x of the best
    /// (`score::EXPLORE_SLACK`). 0 never explores.
    pub explore_share: f64,
    /// Placements made (round-robin turn).
    placements: u64,
    /// State of the random policy's generator (xorshift; fixed seed, so runs repeat).
    rng: u64,
    /// Tasks queued since the last placement pass (they have no reason yet).
    unexplained: Vec<String>,
    /// Split tasks whose parts ended since [`State::take_parent_updates`].
    parent_updates: Vec<TaskRecord>,
}

/// A queued task: (priority, queued at, sequence, task id).
/// The id is shared: a pass copies the queue in its order.
type QueueEntry = (u32, i64, u64, std::sync::Arc<str>);

/// A waiting task, held encoded: it costs its encoded size (a small task's
/// record is about 150 bytes) instead of the whole record struct (about 1 KB
/// before its strings). What a placement pass changes is kept beside it.
#[derive(Debug)]
struct Waiting {
    /// The record as queued, protobuf, without the fields below.
    packed: Box<[u8]>,
    /// Why it waits (one text shared by all the tasks a pass found waiting for the same reason).
    reason: std::sync::Arc<str>,
    /// The policy and best candidates of the last decision that made it wait for a worker.
    decision: Option<Box<(String, Vec<CandidateScore>)>>,
    /// Its producer (fair share orders by it).
    producer: Box<str>,
}

impl Waiting {
    fn pack(mut rec: TaskRecord) -> Self {
        let reason = std::mem::take(&mut rec.reason).into();
        let policy = std::mem::take(&mut rec.policy);
        let candidates = std::mem::take(&mut rec.candidates);
        let decision = (!policy.is_empty() || !candidates.is_empty()).then(|| Box::new((policy, candidates)));
        let producer = rec.task.as_ref().map_or("", |t| t.producer.as_str()).into();
        Self { packed: rec.encode_to_vec().into_boxed_slice(), reason, decision, producer }
    }

    fn unpack(&self) -> TaskRecord {
        // encoded here from a valid record: decoding cannot fail
        let mut rec = TaskRecord::decode(&self.packed[..]).unwrap_or_default();
        rec.reason = self.reason.to_string();
        if let Some((policy, candidates)) = self.decision.as_deref() {
            rec.policy = policy.clone();
            rec.candidates = candidates.clone();
        }
        rec
    }
}

/// An assigned or split task, held encoded: as a struct, a record with its
/// five best candidates and their score components costs about 4.5 KB; encoded,
/// about 1 KB. What the frequent paths (heartbeats, results, supervision, fair
/// share) read is kept beside it.
#[derive(Debug)]
struct Held {
    packed: Box<[u8]>,
    state: TaskState,
    worker_id: Box<str>,
    attempt: u32,
    assigned_at_ms: i64,
    producer: Box<str>,
}

impl Held {
    fn pack(rec: &TaskRecord) -> Self {
        Self {
            packed: rec.encode_to_vec().into_boxed_slice(),
            state: rec.state(),
            worker_id: rec.worker_id.as_str().into(),
            attempt: rec.attempt,
            assigned_at_ms: rec.assigned_at_ms,
            producer: rec.task.as_ref().map_or("", |t| t.producer.as_str()).into(),
        }
    }

    fn unpack(&self) -> TaskRecord {
        // encoded here from a valid record: decoding cannot fail
        TaskRecord::decode(&self.packed[..]).unwrap_or_default()
    }
}

/// Attempts a task may lose with its worker before it fails.
pub const MAX_LOSSES: u32 = 3;

static NO_TASK: std::sync::LazyLock<hwsched_proto::v1::TaskRequest> = std::sync::LazyLock::new(Default::default);

fn priority(r: &TaskRecord) -> u32 {
    match r.task.as_ref().map_or(0, |t| t.priority) {
        0 => crate::validate::DEFAULT_PRIORITY,
        p => p,
    }
}

fn max_attempts(r: &TaskRecord) -> u32 {
    match r.task.as_ref().map_or(0, |t| t.max_attempts) {
        0 => crate::validate::DEFAULT_MAX_ATTEMPTS,
        n => n,
    }
}

/// Seconds an assigned attempt is expected to run: the model's prediction for
/// its worker, else the producer's expected duration, else the default.
fn runtime_estimate(r: &TaskRecord) -> f64 {
    let t = r.task.as_ref().unwrap_or(&*NO_TASK);
    if r.predicted_runtime_s > 0.0 {
        r.predicted_runtime_s
    } else if t.expected_duration_s > 0.0 {
        t.expected_duration_s
    } else {
        DEFAULT_RUNTIME_S
    }
}

fn concurrency_key(r: &TaskRecord) -> Option<String> {
    r.task.as_ref().map(|t| t.concurrency_key.clone()).filter(|k| !k.is_empty())
}

impl State {
    /// An empty state whose queue raises a task one priority level per `aging_ms` waited.
    pub fn with_aging(aging_ms: i64) -> Self {
        Self { aging_ms, cooldown_ms: 60_000, rng: 0x9e37_79b9_7f4a_7c15, ..Default::default() }
    }

    /// Tasks waiting for a worker.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// How many tasks wait, and how long ago the oldest of them was submitted
    /// (ms; 0 with an empty queue). A retried task counts from its submission.
    pub fn queue_age(&self, now_ms: i64) -> (usize, i64) {
        let oldest = self.queue.iter().map(|e| e.1).min();
        (self.queue.len(), oldest.map_or(0, |at| (now_ms - at).max(0)))
    }

    /// The waiting tasks in placement order (effective priority, then arrival).
    pub fn queue_view(&self, now_ms: i64) -> Vec<TaskRecord> {
        self.order(now_ms).into_iter().filter_map(|e| self.record(&e.3)).collect()
    }

    /// The record of a task that is not finished: waiting, assigned or split.
    pub fn record(&self, task_id: &str) -> Option<TaskRecord> {
        match self.waiting.get(task_id) {
            Some(w) => Some(w.unpack()),
            None => self.tasks.get(task_id).map(Held::unpack),
        }
    }

    /// The records of the assigned or split tasks in `state`, in no particular order.
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

    /// Adds a record: queued ones join the queue, assigned ones reserve on their worker.
    pub fn insert(&mut self, rec: TaskRecord, now_ms: i64) {
        let id = rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
        match rec.state() {
            TaskState::Queued => {
                self.seq += 1;
                if rec.reason.is_empty() {
                    self.unexplained.push(id.clone());
                }
                let key: std::sync::Arc<str> = id.as_str().into();
                self.queue.insert((priority(&rec), rec.queued_at_ms, self.seq, key.clone()));
                self.waiting.insert(key, Waiting::pack(rec));
                return;
            }
            // waits for its parts; never placed itself
            TaskState::Split => {}
            TaskState::Assigned => {
                let w = self.workers.entry(rec.worker_id.clone()).or_insert_with(|| Worker {
                    last_seen_ms: now_ms,
                    state: WorkerState::Active,
                    ..Default::default()
                });
                reserve(&mut w.reserved, &rec);
                w.ends.push((rec.assigned_at_ms, runtime_estimate(&rec)));
                if let Some(k) = concurrency_key(&rec) {
                    *self.running_keys.entry(k).or_default() += 1;
                }
            }
            _ => return,
        }
        self.tasks.insert(id, Held::pack(&rec));
    }

    /// Records a worker's capabilities.
    pub fn register(&mut self, caps: WorkerCapabilities, now_ms: i64) -> bool {
        let w = self.workers.entry(caps.worker_id.clone()).or_default();
        let new = w.caps.is_none();
        w.shape = crate::view::shape_of(&caps);
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
            if self.tasks.get(id).is_some_and(|h| *h.worker_id == hb.worker_id) {
                self.seen_running.insert(id.clone(), now_ms);
            }
        }
        let cooldown = self.cooldown_ms;
        let w = self.workers.entry(hb.worker_id.clone()).or_default();
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
        stale
    }

    /// Marks workers silent for longer than their timeout (at least `timeout_ms`,
    /// and three of their heartbeat periods), or that said they went offline,
    /// as offline; and finds assignments their worker has not reported running
    /// for `grace_ms`. Their tasks are queued again, or fail once lost
    /// [`MAX_LOSSES`] times. Returns each affected record with the reason.
    pub fn supervise(&mut self, now_ms: i64, timeout_ms: i64, grace_ms: i64) -> Vec<Completion> {
        let mut lost = Vec::new();
        for (id, w) in self.workers.iter_mut() {
            let timeout = timeout_ms.max(3 * i64::from(w.heartbeat.interval_ms));
            let silent = now_ms - w.last_seen_ms > timeout;
            if (silent || w.state == WorkerState::Offline) && (w.state != WorkerState::Offline || w.reserved.slots > 0)
            {
                w.state = WorkerState::Offline;
                lost.push(id.clone());
            }
        }
        let mut out = Vec::new();
        for id in lost {
            for task_id in self.assigned_to(&id) {
                out.extend(self.lose(&task_id, now_ms, format!("worker {id} lost")));
            }
        }
        // Assignments that never started (or vanished) on a live worker.
        let forgotten: Vec<String> = self
            .tasks
            .iter()
            .filter(|(_, h)| h.state == TaskState::Assigned)
            .filter(|(_, h)| {
                // observe-only workers do not list what their external executor runs
                self.workers
                    .get(&*h.worker_id)
                    .is_some_and(|w| w.state != WorkerState::Offline && !w.heartbeat.observe_only)
            })
            .filter(|(id, h)| {
                let seen = self.seen_running.get(*id).copied().unwrap_or(0).max(h.assigned_at_ms);
                now_ms - seen > grace_ms
            })
            .map(|(id, _)| id.clone())
            .collect();
        for task_id in forgotten {
            let worker = self.worker_of(&task_id).unwrap_or_default().to_string();
            out.extend(self.lose(
                &task_id,
                now_ms,
                format!("not running on {worker} {} s after assignment", grace_ms / 1000),
            ));
        }
        out
    }

    fn assigned_to(&self, worker_id: &str) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|(_, h)| h.state == TaskState::Assigned && &*h.worker_id == worker_id)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// An attempt lost without a result: queue again, or fail after too many losses.
    fn lose(&mut self, task_id: &str, now_ms: i64, why: String) -> Option<Completion> {
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

    /// One placement pass over the queue, in priority then arrival order.
    /// `may_reject`: whether a task that fits no registered worker is rejected
    /// (false during the start-up grace period, when workers are still joining).
    pub fn plan(&mut self, now_ms: i64, may_reject: bool) -> Vec<Action> {
        if self.queue.is_empty() {
            return Vec::new();
        }
        // Every live worker full: nothing can be placed. Say so to the tasks
        // queued since the last pass, without building anything.
        let live = self.workers.values().filter(|w| w.state != WorkerState::Offline && w.caps.is_some());
        let (mut n, mut full) = (0usize, true);
        for w in live {
            n += 1;
            full &= w.caps.as_ref().is_some_and(|c| w.reserved.slots >= c.slots.max(1));
        }
        if n > 0 && full {
            let unexplained = std::mem::take(&mut self.unexplained);
            self.explain_full(&unexplained, n);
            return Vec::new();
        }
        let unexplained = std::mem::take(&mut self.unexplained);
        let mut views: Vec<WorkerView> =
            self.workers.values().filter(|w| w.state != WorkerState::Offline).filter_map(|w| w.view(now_ms)).collect();
        // workers with a free slot (when none is left, nothing more can be placed this pass)
        let has_room = |v: &WorkerView| v.reserved.slots < v.caps.slots.max(1);
        let mut with_room = views.iter().filter(|v| has_room(v)).count();
        // Workers away right now still count for "could this task ever run here?".
        let away: Vec<WorkerView> =
            self.workers.values().filter(|w| w.state == WorkerState::Offline).filter_map(|w| w.view(now_ms)).collect();
        let mut actions = Vec::new();
        // In placement order; without fair share taken lazily (a pass that fills
        // the fleet stops there, however long the queue).
        let mut order = if self.fair_share { Order::Sorted(self.order(now_ms).into_iter()) } else { Order::lazy() };
        let model = self.model.take();
        while let Some(entry) = order.next(self, now_ms) {
            if !views.is_empty() && with_room == 0 {
                // Nothing more can be placed this pass.
                self.explain_full(&unexplained, views.len());
                break;
            }
            let Some(rec) = self.waiting.get(&*entry.3).map(Waiting::unpack) else {
                self.queue.remove(&entry);
                continue;
            };
            if concurrency_key(&rec).is_some_and(|k| self.running_keys.get(&k).copied().unwrap_or(0) > 0) {
                if let Some(r) = self.waiting.get_mut(&*entry.3) {
                    r.reason = "waiting: another task with the same concurrency_key is running".into();
                }
                continue;
            }
            let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
            let task_family = task.model_family.clone();
            let turn = match self.policy {
                Policy::Random => self.random(),
                _ => self.placements,
            };
            // a bounded share of first attempts may explore what the model is unsure of
            let explore = self.explore_share > 0.0
                && self.policy == Policy::Hwsched
                && rec.tried_workers.is_empty()
                && (self.random() as f64 / (1u64 << 53) as f64) < self.explore_share;
            let scoring = Scoring {
                weights: self.weights,
                model: model.as_ref(),
                pack: self.pack,
                policy: self.policy,
                turn,
                explore,
            };
            // Retries prefer hardware not tried yet, then workers not tried yet, then any.
            let mut outcome = None;
            if !rec.tried_workers.is_empty() {
                let tried_classes: Vec<&str> = rec
                    .tried_workers
                    .iter()
                    .filter_map(|w| self.workers.get(w)?.caps.as_ref().map(|c| c.hardware_class.as_str()))
                    .collect();
                let other_hardware: Vec<WorkerView> = views
                    .iter()
                    .filter(|v| !tried_classes.contains(&v.caps.hardware_class.as_str()))
                    .cloned()
                    .collect();
                let untried: Vec<WorkerView> =
                    views.iter().filter(|v| !rec.tried_workers.contains(&v.caps.worker_id)).cloned().collect();
                outcome = [other_hardware, untried]
                    .iter()
                    .filter(|vs| !vs.is_empty())
                    .map(|vs| place_with(task, vs, &scoring))
                    .find(|o| matches!(o, Outcome::Place { .. } | Outcome::Queue { .. }));
            }
            let outcome = outcome.unwrap_or_else(|| place_with(task, &views, &scoring));
            match outcome {
                Outcome::Place { worker_id, gpus, score, candidates, components, predicted_runtime_s, ranked } => {
                    self.queue.remove(&entry);
                    self.waiting.remove(&*entry.3);
                    let mut rec = rec;
                    self.placements += 1;
                    rec.state = TaskState::Assigned as i32;
                    rec.attempt += 1;
                    rec.worker_id = worker_id.clone();
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
                    // views are in worker id order (built from the BTreeMap)
                    let at = views.binary_search_by(|v| v.caps.worker_id.as_str().cmp(&worker_id));
                    if let Some(v) = at.ok().map(|i| &mut views[i]) {
                        let had_room = has_room(v);
                        reserve(&mut v.reserved, &rec);
                        if had_room && !has_room(v) {
                            with_room -= 1;
                        }
                        // later tasks of this pass may wait for it
                        let ends_in = ranked.first().map_or(DEFAULT_RUNTIME_S, |r| r.completion_s);
                        v.free_in_s = Some(v.free_in_s.map_or(ends_in, |f| f.min(ends_in)));
                        let family = &task_family;
                        if !family.is_empty() && !v.recent_families.contains(family) {
                            std::sync::Arc::make_mut(&mut v.recent_families).push(family.clone());
                        }
                    }
                    if let Some(w) = self.workers.get_mut(&worker_id) {
                        if !task_family.is_empty() {
                            let recent = std::sync::Arc::make_mut(&mut w.recent_families);
                            recent.retain(|f| f != &task_family);
                            recent.push(task_family.clone());
                            if recent.len() > AFFINITY_MEMORY {
                                recent.remove(0);
                            }
                        }
                    }
                    self.insert(rec.clone(), now_ms);
                    actions.push(Action::Assign(rec));
                }
                Outcome::Queue { worker_id, wait_s, runtime_s, reason, ranked } => {
                    // Later tasks see it waiting there: they queue behind it, and
                    // only what ends before it starts may use room there now.
                    let at = views.binary_search_by(|v| v.caps.worker_id.as_str().cmp(&worker_id));
                    if let Some(v) = at.ok().map(|i| &mut views[i]) {
                        v.hold_s = Some(v.hold_s.map_or(wait_s, |h| h.min(wait_s)));
                        v.free_in_s = Some(wait_s + runtime_s / f64::from(v.caps.slots.max(1)));
                    }
                    if let Some(r) = self.waiting.get_mut(&*entry.3) {
                        r.reason = format!("waiting {reason}").into();
                        r.decision =
                            Some(Box::new((self.policy.name().into(), ranked.iter().map(candidate_score).collect())));
                    }
                }
                Outcome::Wait { reason } => {
                    if let Some(r) = self.waiting.get_mut(&*entry.3) {
                        r.reason = format!("waiting: {reason}").into();
                    }
                }
                Outcome::NeverFits { .. }
                    if !away.is_empty() && !matches!(place(task, &away), Outcome::NeverFits { .. }) =>
                {
                    if let Some(r) = self.waiting.get_mut(&*entry.3) {
                        r.reason = "waiting: the workers that can run it are offline".into();
                    }
                }
                Outcome::NeverFits { reason } if may_reject && !views.is_empty() => {
                    self.queue.remove(&entry);
                    if self.waiting.remove(&*entry.3).is_some() {
                        let mut rec = rec;
                        rec.state = TaskState::Rejected as i32;
                        rec.reason = format!("fits no registered worker: {reason}");
                        rec.updated_at_ms = now_ms;
                        self.settle_part(&rec, None, now_ms);
                        actions.push(Action::Reject(rec));
                    }
                }
                Outcome::NeverFits { reason } => {
                    if let Some(r) = self.waiting.get_mut(&*entry.3) {
                        r.reason = format!("waiting: {reason}").into();
                    }
                }
            }
        }
        self.model = model;
        actions
    }

    /// The next number (53 bits) of the state's generator (xorshift64*, fixed
    /// seed: runs repeat).
    fn random(&mut self) -> u64 {
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
        let reason: std::sync::Arc<str> = format!("waiting: {workers} worker(s), all with no free slot").into();
        for id in ids {
            if let Some(r) = self.waiting.get_mut(id.as_str()).filter(|r| r.reason.is_empty()) {
                r.reason = reason.clone();
            }
        }
    }

    /// Cancels a non-terminal task: out of the queue, or its reservation freed
    /// (its monitor kills the running attempt). A split task's unfinished parts
    /// are cancelled with it. Returns the cancelled records (for a split task,
    /// its parts; the parent follows in [`State::take_parent_updates`]); empty
    /// when the task is unknown or finished.
    pub fn cancel(&mut self, task_id: &str, now_ms: i64, reason: &str) -> Vec<TaskRecord> {
        let why = if reason.is_empty() { "cancelled".to_string() } else { format!("cancelled: {reason}") };
        if let Some(w) = self.waiting.remove(task_id) {
            self.queue.retain(|e| &*e.3 != task_id);
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
        let done = crate::group::settle(&mut parent, part, res, now_ms);
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

    /// The effective priority of a queued task: raised one level per `aging_ms` waited.
    fn effective(&self, (p, at, _, _): &QueueEntry, now_ms: i64) -> u32 {
        if self.aging_ms <= 0 {
            return *p;
        }
        let raised = u32::try_from((now_ms - at).max(0) / self.aging_ms).unwrap_or(u32::MAX);
        p.saturating_sub(raised).max(1)
    }

    /// The queue in placement order: effective priority (raised one level per
    /// `aging_ms` waited, so nothing starves), then arrival.
    ///
    /// With `fair_share`, tasks of the same effective priority are interleaved
    /// by producer: a producer's k-th waiting task ranks as if it had k more
    /// tasks assigned, so a producer with fewer tasks running goes first and one
    /// large suite cannot hold back everyone else's.
    fn order(&self, now_ms: i64) -> Vec<QueueEntry> {
        let mut order: Vec<QueueEntry> = self.queue.iter().cloned().collect();
        let effective = |e: &QueueEntry| self.effective(e, now_ms);
        if self.aging_ms > 0 || self.fair_share {
            order.sort_by_key(|e| (effective(e), e.1, e.2));
        }
        if !self.fair_share {
            return order;
        }
        let producer = |id: &str| self.waiting.get(id).map_or("", |w| &*w.producer);
        let mut share: HashMap<&str, u64> = HashMap::new();
        for h in self.tasks.values().filter(|h| h.state == TaskState::Assigned) {
            *share.entry(&*h.producer).or_default() += 1;
        }
        let mut rank: HashMap<(u32, &str), u64> = HashMap::new();
        let mut keyed: Vec<((u32, u64, i64, u64), QueueEntry)> = order
            .into_iter()
            .map(|e| {
                let (prio, p) = (effective(&e), producer(&e.3));
                let k = rank.entry((prio, p)).or_insert_with(|| share.get(p).copied().unwrap_or(0));
                let key = (prio, *k, e.1, e.2);
                *k += 1;
                (key, e)
            })
            .collect();
        keyed.sort_by_key(|k| k.0);
        keyed.into_iter().map(|(_, e)| e).collect()
    }

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
        let status = res.status();
        if status == TaskStatus::Succeeded {
            rec.state = TaskState::Succeeded as i32;
            rec.reason = String::new();
            self.settle_part(&rec, Some(res), now_ms);
            return Completion::Done(rec);
        }
        let why = format!("attempt {} on {} ended {}", res.attempt, res.worker_id, status.as_str_name());
        rec.failures += 1;
        if rec.failures >= max_attempts(&rec) || status == TaskStatus::Cancelled {
            rec.state = TaskState::Failed as i32;
            rec.reason = why;
            self.settle_part(&rec, Some(res), now_ms);
            return Completion::Done(rec);
        }
        Completion::Retry(self.requeue(rec, now_ms, why))
    }

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
    fn release(&mut self, task_id: &str) -> Option<TaskRecord> {
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

/// The queue in placement order, as a pass walks it.
enum Order {
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
    fn lazy() -> Self {
        Order::Lazy(Vec::new())
    }

    fn next(&mut self, s: &State, now_ms: i64) -> Option<QueueEntry> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let cursors = match self {
            Order::Sorted(it) => return it.next(),
            Order::Lazy(c) => c,
        };
        if cursors.is_empty() {
            // the base priorities present, each a run of the queue
            let mut p = s.queue.first().map(|e| e.0);
            while let Some(base) = p {
                cursors.push((base, None));
                let Some(after) = base.checked_add(1) else { break };
                let start: QueueEntry = (after, i64::MIN, 0, "".into());
                p = s.queue.range((Included(start), Unbounded)).next().map(|e| e.0);
            }
        }
        let mut best: Option<(usize, (u32, i64, u64), QueueEntry)> = None;
        for (i, (base, cursor)) in cursors.iter().enumerate() {
            let lower = match cursor {
                Some(c) => Excluded(c.clone()),
                None => Included((*base, i64::MIN, 0, "".into())),
            };
            let Some(head) = s.queue.range((lower, Unbounded)).next().filter(|e| e.0 == *base) else { continue };
            let key = (s.effective(head, now_ms), head.1, head.2);
            if best.as_ref().is_none_or(|(_, k, _)| key < *k) {
                best = Some((i, key, head.clone()));
            }
        }
        let (i, _, entry) = best?;
        cursors[i].1 = Some(entry.clone());
        Some(entry)
    }
}

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

fn reserve(r: &mut Reserved, rec: &TaskRecord) {
    let d = Demand::of(&rec.task.clone().unwrap_or_default());
    r.cpu_cores += d.cpu_cores;
    r.memory_mb += d.memory_mb;
    r.slots += 1;
    r.gpus.extend(rec.gpu_indices.iter().copied());
    for (k, n) in rec.task.as_ref().map(|t| t.requirements.clone().unwrap_or_default().accelerators).unwrap_or_default()
    {
        *r.accelerators.entry(k).or_default() += n;
    }
}

fn unreserve(r: &mut Reserved, rec: &TaskRecord) {
    let d = Demand::of(&rec.task.clone().unwrap_or_default());
    r.cpu_cores = (r.cpu_cores - d.cpu_cores).max(0.0);
    r.memory_mb = (r.memory_mb - d.memory_mb).max(0);
    r.slots = r.slots.saturating_sub(1);
    r.gpus.retain(|g| !rec.gpu_indices.contains(g));
    for (k, n) in rec.task.as_ref().map(|t| t.requirements.clone().unwrap_or_default().accelerators).unwrap_or_default()
    {
        if let Some(have) = r.accelerators.get_mut(&k) {
            *have = have.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::{CpuInfo, Requirements, TaskRequest};

    fn caps(id: &str, cores: u32, slots: u32) -> WorkerCapabilities {
        WorkerCapabilities {
            worker_id: id.into(),
            cpu: Some(CpuInfo { logical_cores: cores, ..Default::default() }),
            memory_mb: 16384,
            slots,
            revision: 7,
            ..Default::default()
        }
    }

    fn queued(id: &str, prio: u32, at: i64) -> TaskRecord {
        TaskRecord {
            task: Some(TaskRequest {
                task_id: id.into(),
                command: vec!["true".into()],
                priority: prio,
                ..Default::default()
            }),
            state: TaskState::Queued as i32,
            queued_at_ms: at,
            ..Default::default()
        }
    }

    fn result(rec: &TaskRecord, status: TaskStatus) -> ExecutionResult {
        ExecutionResult {
            task_id: rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
            attempt: rec.attempt,
            worker_id: rec.worker_id.clone(),
            status: status as i32,
            ..Default::default()
        }
    }

    fn assigned(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Assign(r) => {
                    Some((r.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(), r.worker_id.clone()))
                }
                Action::Reject(_) => None,
            })
            .collect()
    }

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
            matches!(lost.as_slice(), [Completion::Retry(r)] if r.reason == "worker a lost" && r.losses == 1),
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

    /// Splits a task with `placement` and queues its parts.
    fn insert_split(s: &mut State, id: &str, placement: hwsched_proto::v1::Placement) {
        let mut parent = queued(id, 3, 0);
        parent.task.as_mut().expect("task").placement = Some(placement);
        let (parent, parts) = crate::group::split(&parent, 0);
        s.insert(parent, 0);
        for p in parts {
            s.insert(p, 0);
        }
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

    fn hb(worker: &str, temp: f64, throttling: bool) -> WorkerHeartbeat {
        WorkerHeartbeat {
            worker_id: worker.into(),
            state: 1,
            capabilities_revision: 7,
            max_temp_c: temp,
            throttling,
            ..Default::default()
        }
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

    fn trained(pairs: &[(&str, &str, f64)]) -> hwsched_model::Model {
        let mut m = hwsched_model::Model::default();
        for (name, hw, secs) in pairs {
            m.observe(&ExecutionResult {
                name: (*name).into(),
                hardware_class: (*hw).into(),
                duration_s: *secs,
                status: TaskStatus::Succeeded as i32,
                ..Default::default()
            });
        }
        m
    }

    fn named(id: &str, name: &str, at: i64) -> TaskRecord {
        let mut r = queued(id, 3, at);
        if let Some(t) = r.task.as_mut() {
            t.name = name.into();
        }
        r
    }

    fn with_class(id: &str, hw: &str, slots: u32) -> WorkerCapabilities {
        WorkerCapabilities { hardware_class: hw.into(), ..caps(id, 8, slots) }
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
        let order: Vec<String> = s.order(20).into_iter().map(|e| e.3.to_string()).collect();
        assert_eq!(order, vec!["big-0", "small-0", "big-1", "big-2"]);
        s.fair_share = false;
        let order: Vec<String> = s.order(20).into_iter().map(|e| e.3.to_string()).collect();
        assert_eq!(order, vec!["big-0", "big-1", "big-2", "small-0"]);
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
}
