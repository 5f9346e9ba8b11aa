//! How the state holds tasks: a waiting task's queue entry and encoded record,
//! an assigned or split task's encoded record, and what the frequent paths
//! read of a record (priority, attempts, runtime estimate, concurrency key).

use std::sync::Arc;

use hwsched_proto::v1::{CandidateScore, TaskRecord, TaskRequest, TaskState};
use hwsched_proto::Message as _;

use crate::{
    score::DEFAULT_RUNTIME_S,
    validate::{DEFAULT_MAX_ATTEMPTS, DEFAULT_PRIORITY},
};

/// A queued task. Ordered by its fields in turn: base priority, then arrival
/// (queued at, then the sequence number the state gave it). The id is shared:
/// a pass copies the queue in its order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct QueueEntry {
    /// Base priority (1 highest), as submitted.
    pub(super) priority: u32,
    /// When it was (first) queued.
    pub(super) queued_at_ms: i64,
    /// Order of insertion into the state (ties of `queued_at_ms`).
    pub(super) seq: u64,
    /// The task.
    pub(super) task_id: Arc<str>,
}

impl QueueEntry {
    /// An entry before every entry of base priority `priority`.
    pub(super) fn first_of(priority: u32) -> Self {
        Self { priority, queued_at_ms: i64::MIN, seq: 0, task_id: "".into() }
    }
}

/// A waiting task, held encoded: it costs its encoded size (a small task's
/// record is about 150 bytes) instead of the whole record struct (about 1 KB
/// before its strings). What a placement pass changes is kept beside it.
#[derive(Debug)]
pub(super) struct Waiting {
    /// The record as queued, protobuf, without the fields below.
    packed: Box<[u8]>,
    /// Why it waits (one text shared by all the tasks a pass found waiting for the same reason).
    pub(super) reason: Arc<str>,
    /// The policy and best candidates of the last decision that made it wait for a worker.
    pub(super) decision: Option<Box<(String, Vec<CandidateScore>)>>,
    /// Its producer (fair share orders by it).
    pub(super) producer: Box<str>,
    /// A hash of its requirements: tasks with the same one fit the same workers.
    pub(super) needs: u64,
    /// A hash of what its runtime estimates depend on (requirements, workload
    /// key, declared duration, producer): tasks with the same one have the same
    /// estimates on every worker.
    pub(super) estimates: u64,
}

impl Waiting {
    pub(super) fn pack(mut rec: TaskRecord) -> Self {
        let reason = std::mem::take(&mut rec.reason).into();
        let policy = std::mem::take(&mut rec.policy);
        let candidates = std::mem::take(&mut rec.candidates);
        let decision = (!policy.is_empty() || !candidates.is_empty()).then(|| Box::new((policy, candidates)));
        let producer = rec.task.as_ref().map_or("", |t| t.producer.as_str()).into();
        let (needs, estimates) = {
            use std::hash::{Hash, Hasher};
            // a fixed-key hasher: the same value in every process
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
            task.requirements.as_ref().map(|r| r.encode_to_vec()).hash(&mut h);
            let needs = h.finish();
            (&task.test_type, &task.model_family, &task.model_id, &task.name, &task.producer).hash(&mut h);
            task.expected_duration_s.to_bits().hash(&mut h);
            (needs, h.finish())
        };
        Self { packed: rec.encode_to_vec().into_boxed_slice(), reason, decision, producer, needs, estimates }
    }

    pub(super) fn unpack(&self) -> TaskRecord {
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
pub(super) struct Held {
    packed: Box<[u8]>,
    pub(super) state: TaskState,
    pub(super) worker_id: Box<str>,
    pub(super) attempt: u32,
    pub(super) assigned_at_ms: i64,
    pub(super) producer: Box<str>,
    /// Its hedged copy, when one runs: (worker, attempt, assigned at ms).
    pub(super) hedge: Option<(Box<str>, u32, i64)>,
}

impl Held {
    /// Whether `attempt` on `worker_id` is its hedged copy.
    pub(super) fn is_hedge(&self, attempt: u32, worker_id: &str) -> bool {
        self.hedge.as_ref().is_some_and(|(w, a, _)| *a == attempt && &**w == worker_id)
    }
}

impl Held {
    pub(super) fn pack(rec: &TaskRecord) -> Self {
        Self {
            packed: rec.encode_to_vec().into_boxed_slice(),
            state: rec.state(),
            worker_id: rec.worker_id.as_str().into(),
            attempt: rec.attempt,
            assigned_at_ms: rec.assigned_at_ms,
            producer: rec.task.as_ref().map_or("", |t| t.producer.as_str()).into(),
            hedge: rec.hedge.as_ref().map(|h| (h.worker_id.as_str().into(), h.attempt, h.assigned_at_ms)),
        }
    }

    pub(super) fn unpack(&self) -> TaskRecord {
        // encoded here from a valid record: decoding cannot fail
        TaskRecord::decode(&self.packed[..]).unwrap_or_default()
    }
}

/// The request of a record that has none.
pub(super) static NO_TASK: std::sync::LazyLock<TaskRequest> = std::sync::LazyLock::new(Default::default);

/// A record's base priority (the default when unset).
pub(super) fn priority(r: &TaskRecord) -> u32 {
    match r.task.as_ref().map_or(0, |t| t.priority) {
        0 => DEFAULT_PRIORITY,
        p => p,
    }
}

/// How many attempts a record may fail (the default when unset).
pub(super) fn max_attempts(r: &TaskRecord) -> u32 {
    match r.task.as_ref().map_or(0, |t| t.max_attempts) {
        0 => DEFAULT_MAX_ATTEMPTS,
        n => n,
    }
}

/// The number of a record's next attempt: past every attempt it has had,
/// its hedged copies' included.
pub(super) fn next_attempt(r: &TaskRecord) -> u32 {
    let hedged = r.hedge.as_ref().map_or(0, |h| h.attempt);
    let ended = r.history.iter().map(|h| h.attempt).max().unwrap_or(0);
    r.attempt.max(hedged).max(ended) + 1
}

/// Seconds an assigned attempt is expected to run: the model's prediction for
/// its worker, else the producer's expected duration, else the default.
pub(super) fn runtime_estimate(r: &TaskRecord) -> f64 {
    let t = r.task.as_ref().unwrap_or(&*NO_TASK);
    if r.predicted_runtime_s > 0.0 {
        r.predicted_runtime_s
    } else if t.expected_duration_s > 0.0 {
        t.expected_duration_s
    } else {
        DEFAULT_RUNTIME_S
    }
}

/// A record's concurrency key, when it has one.
pub(super) fn concurrency_key(r: &TaskRecord) -> Option<String> {
    r.task.as_ref().map(|t| t.concurrency_key.clone()).filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_entries_order_by_priority_then_arrival_then_sequence() {
        let e = |priority, queued_at_ms, seq, id: &str| QueueEntry { priority, queued_at_ms, seq, task_id: id.into() };
        let mut v = [e(3, 5, 2, "a"), e(1, 9, 1, "b"), e(3, 5, 1, "c"), e(3, 1, 9, "d")];
        v.sort();
        let ids: Vec<&str> = v.iter().map(|e| &*e.task_id).collect();
        assert_eq!(ids, ["b", "d", "c", "a"]);
        assert!(QueueEntry::first_of(3) < e(3, i64::MIN, 1, ""));
        assert!(QueueEntry::first_of(3) > e(2, i64::MAX, u64::MAX, "z"));
    }

    #[test]
    fn records_round_trip_their_encoding() {
        let rec = TaskRecord {
            task: Some(TaskRequest { task_id: "t".into(), producer: "p".into(), ..Default::default() }),
            state: TaskState::Queued as i32,
            reason: "waiting: why".into(),
            policy: "hwsched".into(),
            candidates: vec![CandidateScore { worker_id: "w".into(), ..Default::default() }],
            ..Default::default()
        };
        let w = Waiting::pack(rec.clone());
        assert_eq!((&*w.reason, &*w.producer), ("waiting: why", "p"));
        assert_eq!(w.unpack(), rec);
        let h = Held::pack(&rec);
        assert_eq!((h.state, &*h.producer), (TaskState::Queued, "p"));
        assert_eq!(h.unpack(), rec);
    }

    #[test]
    fn defaults_apply_to_unset_fields() {
        let mut rec = TaskRecord::default();
        assert_eq!((priority(&rec), max_attempts(&rec)), (DEFAULT_PRIORITY, DEFAULT_MAX_ATTEMPTS));
        assert_eq!(runtime_estimate(&rec), DEFAULT_RUNTIME_S);
        assert_eq!(concurrency_key(&rec), None);
        rec.task = Some(TaskRequest { expected_duration_s: 30.0, concurrency_key: "db".into(), ..Default::default() });
        assert_eq!(runtime_estimate(&rec), 30.0);
        rec.predicted_runtime_s = 12.0;
        assert_eq!(runtime_estimate(&rec), 12.0);
        assert_eq!(concurrency_key(&rec).as_deref(), Some("db"));
    }
}
