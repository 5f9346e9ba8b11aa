//! Whether an assignment a worker received is still the scheduler's intent:
//! shared by the monitor and external executors (`hwsched-client`), which
//! must never run an attempt the scheduler has since moved or ended.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv, AckKind};
use hwsched_proto::{
    v1::{ExecutionResult, TaskAssignment, TaskRecord, TaskState},
    Message, SCHEMA_VERSION,
};

/// How long an unrecorded assignment is awaited before it is refused.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// Is an assignment the scheduler's current intent?
#[derive(Debug, PartialEq)]
pub enum Currency {
    /// Recorded as this attempt on this worker: run it.
    Current,
    /// Moved or ended since (why): do not run it.
    Stale(String),
    /// Sent by a scheduler that has not recorded it yet: wait briefly.
    Unconfirmed,
}

/// What the scheduler's record `rec` says of assignment `a`.
pub fn currency(rec: Option<&TaskRecord>, a: &TaskAssignment) -> Currency {
    let Some(rec) = rec else { return Currency::Stale("the scheduler has no record of the task".into()) };
    match rec.state() {
        TaskState::Assigned if rec.attempt == a.attempt && rec.worker_id == a.worker_id => Currency::Current,
        // the hedged copy of a straggling attempt runs beside it
        TaskState::Assigned
            if rec.hedge.as_ref().is_some_and(|h| h.attempt == a.attempt && h.worker_id == a.worker_id) =>
        {
            Currency::Current
        }
        // Written concurrently by a scheduler from before it recorded first: give it a moment.
        TaskState::Queued if rec.attempt + 1 == a.attempt => Currency::Unconfirmed,
        s => Currency::Stale(format!(
            "the task is now {} (attempt {} on {:?})",
            s.as_str_name(),
            rec.attempt,
            rec.worker_id
        )),
    }
}

/// Waits (at most [`CONFIRM_WITHIN`]) until the scheduler's record in
/// `records` confirms `a`; `Err` says why it must not run. An unreadable
/// record lets it run: at-least-once beats losing it.
pub async fn confirm(records: &kv::Store, a: &TaskAssignment) -> Result<(), String> {
    let task_id = a.task.as_ref().map(|t| t.task_id.as_str()).unwrap_or("");
    let deadline = tokio::time::Instant::now() + CONFIRM_WITHIN;
    loop {
        let rec = match records.get(task_id).await {
            Ok(bytes) => bytes.and_then(|b| TaskRecord::decode(b.as_ref()).ok()),
            Err(e) => {
                tracing::warn!(error = %e, "task record unreadable, running the assignment unconfirmed");
                return Ok(());
            }
        };
        match currency(rec.as_ref(), a) {
            Currency::Current => return Ok(()),
            Currency::Stale(why) => return Err(why),
            Currency::Unconfirmed if tokio::time::Instant::now() >= deadline => {
                // The scheduler sent it and died before recording it: a restarted
                // scheduler places the still-queued task again, so dropping this copy loses nothing.
                return Err("the scheduler never recorded this assignment".into());
            }
            Currency::Unconfirmed => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Marks a held assignment in progress every `every`, so JetStream does not
/// redeliver it while it runs; abort the task running this to stop.
pub async fn keep_in_progress(msg: Arc<jetstream::Message>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let _ = msg.ack_with(AckKind::Progress).await;
    }
}

/// The result of assignment `a` run by `worker_id` (of `hardware_class`)
/// from `started_at_ms` to `finished_at_ms`: what identifies the attempt and
/// its workload; the caller fills in how it ended.
pub fn result_of(
    a: &TaskAssignment,
    worker_id: &str,
    hardware_class: &str,
    started_at_ms: i64,
    finished_at_ms: i64,
) -> ExecutionResult {
    let task = a.task.clone().unwrap_or_default();
    ExecutionResult {
        schema_version: SCHEMA_VERSION,
        task_id: task.task_id,
        attempt: a.attempt,
        worker_id: worker_id.into(),
        started_at_ms,
        finished_at_ms,
        duration_s: (finished_at_ms - started_at_ms) as f64 / 1000.0,
        hardware_class: hardware_class.into(),
        name: task.name,
        test_type: task.test_type,
        model_family: task.model_family,
        model_id: task.model_id,
        producer: task.producer,
        revision: task.revision,
        queued_at_ms: a.queued_at_ms,
        assigned_at_ms: a.assigned_at_ms,
        predicted_duration_s: a.predicted_duration_s,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::TaskRequest;

    fn assignment(attempt: u32, worker: &str) -> TaskAssignment {
        TaskAssignment { attempt, worker_id: worker.into(), task: Some(TaskRequest::default()), ..Default::default() }
    }

    fn record(state: TaskState, attempt: u32, worker: &str) -> TaskRecord {
        TaskRecord { state: state as i32, attempt, worker_id: worker.into(), ..Default::default() }
    }

    #[test]
    fn only_the_recorded_attempt_on_this_worker_is_current() {
        let a = assignment(2, "w1");
        assert_eq!(currency(Some(&record(TaskState::Assigned, 2, "w1")), &a), Currency::Current);
        assert_eq!(currency(Some(&record(TaskState::Queued, 1, "")), &a), Currency::Unconfirmed);
        for stale in [
            record(TaskState::Assigned, 3, "w2"), // re-placed since
            record(TaskState::Assigned, 2, "w2"),
            record(TaskState::Succeeded, 2, "w1"),
            record(TaskState::Queued, 2, ""), // requeued after this attempt
            record(TaskState::Cancelled, 2, "w1"),
        ] {
            assert!(matches!(currency(Some(&stale), &a), Currency::Stale(_)), "{stale:?}");
        }
        assert!(matches!(currency(None, &a), Currency::Stale(_)));
    }

    #[test]
    fn a_hedged_copy_is_current_beside_the_attempt_it_copies() {
        let mut rec = record(TaskState::Assigned, 1, "slow");
        rec.hedge = Some(hwsched_proto::v1::HedgeAttempt { attempt: 2, worker_id: "w1".into(), ..Default::default() });
        assert_eq!(currency(Some(&rec), &assignment(2, "w1")), Currency::Current);
        assert_eq!(currency(Some(&rec), &assignment(1, "slow")), Currency::Current);
        assert!(matches!(currency(Some(&rec), &assignment(2, "slow")), Currency::Stale(_)));
        rec.state = TaskState::Succeeded as i32;
        assert!(matches!(currency(Some(&rec), &assignment(2, "w1")), Currency::Stale(_)), "the race is over");
    }
}
