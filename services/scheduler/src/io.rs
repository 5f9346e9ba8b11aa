//! The scheduler's writes (`Io`): task events, task records (retried
//! briefly) and assignments (recorded, announced, then sent). Every step
//! writes through it (intake, results, supervision, cancels, placement);
//! it is cheap to clone, so a placement pass's assignments are sent in the
//! background while the loop goes on.

use std::time::Duration;

use async_nats::jetstream::kv;
use hwsched_bus::{task_event, Bus};
use hwsched_proto::{
    v1::{TaskAssignment, TaskEventKind, TaskRecord},
    Message, SCHEMA_VERSION,
};

use hwsched_shutdown::Backoff;

use crate::metrics::Metrics;

/// First wait before retrying a task record write; each retry waits four times longer.
const SAVE_BACKOFF: Duration = Duration::from_millis(100);

/// A record's task id: its key in the task bucket.
pub(crate) fn task_id(rec: &TaskRecord) -> String {
    rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default()
}

/// The scheduler's handles for writing and sending: cheap to clone, so a
/// placement pass's assignments can be sent while the next submissions are taken.
#[derive(Clone)]
pub(crate) struct Io {
    pub(crate) bus: Bus,
    pub(crate) records: kv::Store,
    pub(crate) metrics: Metrics,
}

impl Io {
    /// Announces `kind` for the task `rec` records (an `ASSIGNED` event names the candidates).
    pub(crate) async fn event(&self, rec: &TaskRecord, kind: TaskEventKind, reason: &str) {
        let mut ev = task_event(rec.task.as_ref(), kind, rec.attempt, &rec.worker_id, reason);
        if kind == TaskEventKind::Assigned {
            ev.policy = rec.policy.clone();
            ev.candidates = rec.candidates.clone();
            ev.candidates_total = rec.candidates_total;
        }
        self.bus.publish_event(&ev, Some(&rec.traceparent)).await;
    }

    /// Writes the record, retrying briefly: the in-memory state has already moved on.
    pub(crate) async fn save(&self, rec: &TaskRecord) {
        let key = task_id(rec);
        // No cap: the four attempts bound the longest wait.
        let mut backoff = Backoff::new(SAVE_BACKOFF, 4, Duration::MAX);
        for attempt in 1..=4 {
            match self.records.put(&key, rec.encode_to_vec().into()).await {
                Ok(_) => return,
                Err(e) if attempt == 4 => {
                    tracing::error!(task_id = key, error = %e, "task record not saved: a successor scheduler resumes it from its previous state (and applies its stored result)");
                }
                Err(e) => {
                    tracing::warn!(task_id = key, error = %e, "task record not saved yet, retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    /// Records the assignment, then sends it, then announces it. False when it
    /// could not be sent (the caller puts the task back in the queue).
    pub(crate) async fn send_assignment(&self, rec: &TaskRecord) -> bool {
        let task_id = task_id(rec);
        // Recorded first, so the monitor finds the assignment current at once. A crash
        // before the send leaves a recorded assignment no worker reports running: the
        // successor sends it again (`resend_recent_assignments`).
        self.save(rec).await;
        // Announced before it is sent: on this connection ASSIGNED then precedes
        // whatever the attempt leads to (FINISHED, RETRIED).
        self.event(rec, TaskEventKind::Assigned, &rec.reason).await;
        if !self.publish_assignment(rec).await {
            return false;
        }
        self.metrics.assigned.inc();
        tracing::info!(task_id, worker_id = %rec.worker_id, attempt = rec.attempt, reason = %rec.reason, "task assigned");
        true
    }

    /// Records and sends the hedged copy `rec` carries: the record (both
    /// copies) first, then the copy's ASSIGNED event and its assignment.
    pub(crate) async fn send_hedge(&self, rec: &TaskRecord) -> bool {
        let Some(copy) = hwsched_placement::hedge::copy_view(rec) else { return true };
        self.save(rec).await;
        let why = rec.hedge.as_ref().map_or("", |h| h.reason.as_str());
        self.event(&copy, TaskEventKind::Assigned, why).await;
        if !self.publish_assignment(&copy).await {
            return false;
        }
        self.metrics.assigned.inc();
        self.metrics.hedged.inc();
        tracing::info!(task_id = %task_id(rec), worker_id = %copy.worker_id, attempt = copy.attempt, reason = %why, "hedged copy assigned");
        true
    }

    /// Publishes the assignment `rec` records, under a message id unique per
    /// decision and the same every time it is sent.
    pub(crate) async fn publish_assignment(&self, rec: &TaskRecord) -> bool {
        let task_id = task_id(rec);
        let a = TaskAssignment {
            schema_version: SCHEMA_VERSION,
            task: rec.task.clone(),
            attempt: rec.attempt,
            worker_id: rec.worker_id.clone(),
            assigned_at_ms: rec.assigned_at_ms,
            shard_index: rec.shard_index,
            shard_total: rec.shard_total.max(1),
            score: 0.0,
            predicted_duration_s: if rec.predicted_runtime_s > 0.0 {
                rec.predicted_runtime_s
            } else {
                rec.task.as_ref().map_or(0.0, |t| t.expected_duration_s)
            },
            queued_at_ms: rec.queued_at_ms,
            gpu_indices: rec.gpu_indices.clone(),
        };
        // Unique per decision: after a crash the same attempt may be placed again and must not be dropped as a duplicate.
        let msg_id = format!("{task_id}:{}:{}:{}", rec.attempt, rec.worker_id, rec.assigned_at_ms);
        let subject = self.bus.subjects().assign(&rec.worker_id);
        // Sent from the `assign` span (placing.rs), the assignment carries that span's context, so
        // the monitor's span is its child; sent without an exported span, the task's own.
        let traceparent = hwsched_telemetry::traceparent(&tracing::Span::current());
        let traceparent = traceparent.as_deref().unwrap_or(&rec.traceparent);
        if let Err(e) = self.bus.publish_durable(subject, &a, Some(&msg_id), Some(traceparent)).await {
            tracing::warn!(task_id, worker_id = %rec.worker_id, error = %e, "assignment not sent, task stays queued");
            return false;
        }
        true
    }
}
