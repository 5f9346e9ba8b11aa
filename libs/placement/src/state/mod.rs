//! The scheduler's state machine: workers, reservations, the queue and task
//! records. Pure (time is passed in), so every transition is unit-tested.
//!
//! - `mod.rs`: the [`State`], what a pass and a result return, and `insert`.
//! - `records.rs`: how waiting and assigned tasks are held (encoded) and keyed in the queue.
//! - `worker.rs`: one known worker, its reservations and its view for placement.
//! - `liveness.rs`: registration, heartbeats (thermal hysteresis), supervision of silent workers.
//! - `queue.rs`: the queue's placement order (aging, fair share) and the lazy order a pass walks.
//! - `pass.rs`: the placement pass ([`State::plan`]), step by step; `decide.rs`: one task's decision.
//! - `outcome.rs`: results, retries, lost attempts, un-assignment.
//! - `health.rs`: evidence about workers, quarantine, probes, the breaker.
//! - `hedging.rs`: hedged copies of stragglers, and how a copy's end settles its task.
//! - `parts.rs`: split tasks: settling their parts, cancelling.
//! - `views.rs`: read-only views of the records.
//!
//! Deterministic: the same calls give the same results in every process
//! (maps whose order reaches a result are ordered maps).

mod batch;
mod decide;
mod health;
mod hedging;
mod liveness;
mod outcome;
mod parts;
mod pass;
mod queue;
mod records;
#[cfg(test)]
mod testutil;
mod views;
mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use hwsched_proto::v1::{TaskRecord, TaskState, WorkerState};

pub use self::health::{is_probe, Breaker, HealthEvent, Quarantine, PROBE_LABEL};
pub use self::worker::{Worker, HOT_C, HOT_HYSTERESIS_C};
use self::{
    records::{concurrency_key, priority, runtime_estimate, Held, QueueEntry, Waiting},
    worker::{reserve, unreserve},
};
use crate::{
    batch::Heuristic,
    declared::Declarations,
    score::{Policy, Weights},
};

/// How many recent model families are remembered per worker.
const AFFINITY_MEMORY: usize = 8;

/// A pass runs at least this often while tasks wait, even when nothing it
/// reads changed (aging, cool-downs ending and running estimates move with
/// time alone), ms.
pub const REPLAN_MS: i64 = 5_000;

/// Attempts a task may lose with its worker before it fails.
pub const MAX_LOSSES: u32 = crate::retry::INFRASTRUCTURE_RETRIES;

/// What the IO layer must do after a placement pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Persist the record and send the assignment.
    Assign(TaskRecord),
    /// Tell the producer the task can never run here.
    Reject(TaskRecord),
    /// Persist the record and send the assignment of its hedged copy
    /// (`hedge::copy_view` is that copy's own record).
    Hedge(TaskRecord),
}

/// What a result did to its task.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Terminal: succeeded, or failed with no attempts left.
    Done(TaskRecord),
    /// Failed with attempts left: queued again.
    Retry(TaskRecord),
    /// One copy of a hedged task ended without success (or was lost): the
    /// other goes on as the current attempt.
    Continues(TaskRecord),
    /// Not for the current attempt (duplicate or late): ignored.
    Stale,
}

/// Workers, queue and records.
#[derive(Debug, Default)]
pub struct State {
    /// Workers by id.
    pub workers: BTreeMap<String, Worker>,
    /// Assigned and split tasks by id, held encoded. Waiting tasks are held
    /// in `waiting` ([`State::record`] answers for both). Ordered: supervision
    /// and [`State::records_in`] walk it, and their order reaches the caller.
    tasks: BTreeMap<String, Held>,
    /// Waiting tasks by id, in `queue`'s order of arrival (looked up, never walked).
    waiting: HashMap<Arc<str>, Waiting>,
    queue: BTreeSet<QueueEntry>,
    /// Assigned tasks per concurrency key (looked up, never walked).
    running_keys: HashMap<String, u32>,
    /// When each assigned task was last reported running by its worker (looked up, never walked).
    seen_running: HashMap<String, i64>,
    /// The same for hedged copies, by task id (looked up, never walked).
    seen_hedge: HashMap<String, i64>,
    seq: u64,
    /// Waiting this long raises a task one priority level (0 = no aging).
    pub aging_ms: i64,
    /// A throttling worker gets nothing until it has not throttled for this long.
    pub cooldown_ms: i64,
    /// The learner's latest model.
    pub model: Option<hwsched_model::Model>,
    /// Score weights and packing.
    pub weights: Weights,
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
    /// How failed attempts are retried, unless a task says otherwise.
    pub retry: crate::retry::Retry,
    /// When suspect workers are quarantined, and how they come back.
    pub quarantine: crate::quarantine::QuarantinePolicy,
    /// Evidence about workers, quarantines and the breaker.
    health: health::Health,
    /// When stragglers get a hedged copy (off by default).
    pub hedge: crate::hedge::HedgePolicy,
    /// Hedged copies made, and when the last look for stragglers was.
    hedging: hedging::Hedging,
    /// What producers' declared durations turned out to be, from the results applied.
    pub declarations: Declarations,
    /// Whether estimates correct declared durations by [`State::declarations`]
    /// (off: the ablation, declarations taken as they are).
    pub trust_declarations: bool,
    /// How a pass orders the waiting tasks it considers together when more
    /// wait than the fleet has room for (hwsched policy, without fair share;
    /// `None`: queue order). See `batch.rs`.
    pub batch: Option<Heuristic>,
    /// Something a pass reads changed since the last pass (a task queued or
    /// released, a worker registered, went away or changed usability); see
    /// [`State::plan`].
    changed: bool,
    /// The model version, whether it could reject, and the time of the last pass that ran.
    last_pass: Option<(Option<u64>, bool, i64)>,
    /// Placements made (round-robin turn).
    placements: u64,
    /// State of the random policy's generator (xorshift; fixed seed, so runs repeat).
    rng: u64,
    /// Tasks queued since the last placement pass (they have no reason yet).
    unexplained: Vec<String>,
    /// Split tasks whose parts ended since [`State::take_parent_updates`].
    parent_updates: Vec<TaskRecord>,
}

impl State {
    /// An empty state whose queue raises a task one priority level per `aging_ms` waited.
    pub fn with_aging(aging_ms: i64) -> Self {
        Self {
            aging_ms,
            cooldown_ms: 60_000,
            rng: 0x9e37_79b9_7f4a_7c15,
            batch: Some(Heuristic::default()),
            trust_declarations: true,
            ..Default::default()
        }
    }

    /// Adds a record: queued ones join the queue, assigned ones reserve on their worker.
    pub fn insert(&mut self, rec: TaskRecord, now_ms: i64) {
        self.changed = true;
        let id = rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
        match rec.state() {
            TaskState::Queued => {
                self.seq += 1;
                if rec.reason.is_empty() {
                    self.unexplained.push(id.clone());
                }
                let task_id: Arc<str> = id.as_str().into();
                let entry =
                    QueueEntry { priority: priority(&rec), queued_at_ms: rec.queued_at_ms, seq: self.seq, task_id };
                self.waiting.insert(entry.task_id.clone(), Waiting::pack(rec));
                self.queue.insert(entry);
                return;
            }
            // waits for its parts; never placed itself
            TaskState::Split => {}
            TaskState::Assigned => {
                self.occupy(&rec, now_ms);
                if let Some(copy) = crate::hedge::copy_view(&rec) {
                    self.occupy(&copy, now_ms);
                }
                if let Some(k) = concurrency_key(&rec) {
                    *self.running_keys.entry(k).or_default() += 1;
                }
            }
            _ => return,
        }
        self.tasks.insert(id, Held::pack(&rec));
    }

    /// Reserves what the attempt `rec` records on its worker (known from now
    /// on if it was not), with its expected end.
    fn occupy(&mut self, rec: &TaskRecord, now_ms: i64) {
        let w = self.workers.entry(rec.worker_id.clone()).or_insert_with(|| Worker {
            last_seen_ms: now_ms,
            state: WorkerState::Active,
            ..Default::default()
        });
        reserve(&mut w.reserved, rec);
        w.ends.push((rec.assigned_at_ms, runtime_estimate(rec)));
    }

    /// Frees what [`State::occupy`] took.
    fn vacate(&mut self, rec: &TaskRecord) {
        if let Some(w) = self.workers.get_mut(&rec.worker_id) {
            unreserve(&mut w.reserved, rec);
            let end = (rec.assigned_at_ms, runtime_estimate(rec));
            if let Some(i) = w.ends.iter().position(|e| *e == end) {
                w.ends.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testutil::queued;

    #[test]
    fn insert_queues_waiting_records_and_reserves_assigned_ones() {
        let mut s = State::default();
        s.insert(queued("q", 3, 0), 0);
        let mut a = queued("a", 3, 0);
        a.state = TaskState::Assigned as i32;
        a.worker_id = "w".into();
        s.insert(a, 5);
        let mut done = queued("done", 3, 0);
        done.state = TaskState::Succeeded as i32;
        s.insert(done, 5);
        assert_eq!(s.queued(), 1);
        assert!(s.knows("q") && s.knows("a") && !s.knows("done"));
        let w = &s.workers["w"];
        assert_eq!((w.reserved.slots, w.last_seen_ms, w.state), (1, 5, WorkerState::Active), "a worker not yet known");
        assert_eq!(s.unexplained, ["q"]);
    }
}
