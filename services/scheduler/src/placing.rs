//! Placing and supervising: the placement pass (assignments sent in the
//! background, those not sent queued again), the learner's model it uses,
//! the supervisor (lost workers, forgotten assignments) and the queue
//! metrics it publishes.

use futures::StreamExt;
use hwsched_bus::now_ms;
use hwsched_placement::state::{Action, Completion};
use hwsched_proto::{
    v1::{MetricSample, MetricsBatch, ModelSnapshot, TaskEventKind, TaskRecord, TaskStatus},
    Message, SCHEMA_VERSION,
};
use tracing::Instrument;

use crate::{intake::Refusal, io::task_id, metrics::METRICS_ID, scheduler::Scheduler};

/// Assignments of one placement pass in flight at once (record, send, announce).
const ASSIGN_CONCURRENCY: usize = 256;

/// Placement passes whose assignments may be in flight at once: a pass does
/// not wait for the previous ones' sends (two round trips each) unless this
/// many are still going.
const PASSES_IN_FLIGHT: usize = 4;

/// How often the queue metrics are published.
const QUEUE_METRICS_EVERY_MS: i64 = 5_000;

/// An assignment a pass made that could not be sent, by task id.
#[derive(Debug)]
pub(crate) enum Unsent {
    /// The task's attempt: it goes back to the queue.
    Attempt(String),
    /// A straggler's hedged copy: undone, the attempt it copies goes on alone.
    Copy(String),
}

impl Scheduler {
    /// A new model snapshot from the learner: used from the next placement on.
    pub(crate) fn on_model(&mut self, bytes: &[u8]) {
        match ModelSnapshot::decode(bytes) {
            Ok(snap) if self.state.model.as_ref().is_none_or(|m| m.version() < snap.version || snap.version == 0) => {
                tracing::info!(version = snap.version, pairs = snap.entries.len(), "model loaded");
                self.state.model = Some(hwsched_model::Model::from_snapshot(snap));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "undecodable model snapshot ignored"),
        }
    }

    /// A placement pass: assigns what fits, rejects what can never fit (once
    /// the startup grace is over).
    pub(crate) async fn place(&mut self) {
        self.settle(false).await;
        let now = now_ms();
        let may_reject = now - self.started_ms > (self.cfg.startup_grace_s * 1000) as i64;
        let mut assigns = Vec::new();
        for action in self.state.plan(now, may_reject) {
            match action {
                Action::Assign(rec) => assigns.push((rec, false)),
                Action::Hedge(rec) => assigns.push((rec, true)),
                Action::Reject(rec) => {
                    self.save(&rec).await;
                    let task_id = rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
                    self.refuse(Refusal { task_id, reasons: vec![rec.reason.clone()] }, None).await;
                    self.reply_finished(&rec, None).await;
                }
            }
        }
        self.publish_parent_updates().await;
        self.io.metrics.queued.set(self.state.queued() as i64);
        if self.health_events().await {
            self.queue_published_ms = 0;
        }
        if !assigns.is_empty() {
            self.send_in_background(assigns);
        }
    }

    /// Sends a pass's assignments (and hedged copies, marked `true`) while the
    /// loop goes on ([`Self::settle_sends`] waits for them).
    fn send_in_background(&mut self, assigns: Vec<(TaskRecord, bool)>) {
        // Each assignment is recorded, announced and sent in that order; different
        // tasks' assignments proceed concurrently, in the background: the loop takes
        // the next submissions and results and runs the next passes meanwhile. A
        // result can only follow its assignment's send, and a pass only writes tasks
        // that wait (the ones being sent are assigned in the state); what else may
        // write a task being sent (the supervisor, cancels, stepping down) waits for
        // every send first (`settle_sends`), so a task's record is never written out
        // of order.
        let io = self.io.clone();
        self.sending.push(tokio::spawn(async move {
            let io = &io;
            futures::stream::iter(assigns)
                .map(|(rec, copy)| async move {
                    let span = tracing::info_span!("assign", task_id = %task_id(&rec), worker_id = %rec.worker_id, attempt = rec.attempt, hedge = copy);
                    hwsched_telemetry::set_parent(&span, &rec.traceparent);
                    if copy {
                        let sent = io.send_hedge(&rec).instrument(span).await;
                        (!sent).then(|| Unsent::Copy(task_id(&rec)))
                    } else {
                        let sent = io.send_assignment(&rec).instrument(span).await;
                        (!sent).then(|| Unsent::Attempt(task_id(&rec)))
                    }
                })
                .buffer_unordered(ASSIGN_CONCURRENCY)
                .filter_map(|unsent| async move { unsent })
                .collect()
                .await
        }));
    }

    /// Waits for every pass's assignments to be sent; those that could not be
    /// go back to the queue.
    pub(crate) async fn settle_sends(&mut self) {
        self.settle(true).await;
    }

    /// Takes in the sends that ended (with `all`, waits for every one; else
    /// only for the oldest beyond [`PASSES_IN_FLIGHT`] - 1, leaving room for
    /// this pass's) and queues again the tasks that could not be sent.
    async fn settle(&mut self, all: bool) {
        let pending = std::mem::take(&mut self.sending);
        let n = pending.len();
        let mut unsent = Vec::new();
        for (i, sending) in pending.into_iter().enumerate() {
            if !(all || sending.is_finished() || n - i >= PASSES_IN_FLIGHT) {
                self.sending.push(sending);
                continue;
            }
            match sending.await {
                Ok(ids) => unsent.extend(ids),
                // their records say assigned: the supervisor places them again after the grace
                Err(e) => tracing::error!(error = %e, "sending assignments failed"),
            }
        }
        if unsent.is_empty() {
            return;
        }
        let now = now_ms();
        for unsent in unsent {
            let id = match unsent {
                Unsent::Attempt(id) => id,
                Unsent::Copy(id) => {
                    self.state.unhedge(&id, now);
                    if let Some(rec) = self.state.record(&id) {
                        self.save(&rec).await;
                    }
                    continue;
                }
            };
            let worker = self.state.worker_of(&id).unwrap_or_default().to_string();
            self.state.unassign(&id, now);
            if let Some(queued) = self.state.record(&id) {
                self.save(&queued).await;
                // its ASSIGNED was announced: say it is waiting again
                self.event(&queued, TaskEventKind::Retried, &format!("assignment to {worker} not sent; queued again"))
                    .await;
            }
        }
        self.io.metrics.queued.set(self.state.queued() as i64);
    }

    /// Lost workers and forgotten assignments: their tasks are queued again (or fail).
    pub(crate) async fn supervise(&mut self) {
        self.settle_sends().await;
        let (timeout, grace) = (self.cfg.worker_timeout_ms as i64, self.cfg.assignment_grace_ms as i64);
        for c in self.state.supervise(now_ms(), timeout, grace) {
            match c {
                Completion::Retry(rec) => {
                    tracing::warn!(task_id = %task_id(&rec), reason = %rec.reason, "attempt lost, task queued again");
                    self.io.metrics.retried.inc();
                    self.save(&rec).await;
                    self.event(&rec, TaskEventKind::Retried, &rec.reason).await;
                }
                Completion::Done(rec) => {
                    tracing::warn!(task_id = %task_id(&rec), reason = %rec.reason, "task failed");
                    self.io.metrics.failed.inc();
                    self.save(&rec).await;
                    self.event(&rec, TaskEventKind::Finished, TaskStatus::Error.as_str_name()).await;
                    self.reply_finished(&rec, None).await;
                }
                Completion::Continues(rec) => {
                    tracing::warn!(task_id = %task_id(&rec), reason = %rec.reason, "hedged copy lost, its twin goes on");
                    self.save(&rec).await;
                }
                Completion::Stale => {}
            }
        }
        self.stop_hedge_losers().await;
        self.publish_parent_updates().await;
        self.publish_queue_metrics().await;
    }

    /// Publishes `scheduler.queued` and `scheduler.oldest_queued_s` (device
    /// `queue`, worker id [`METRICS_ID`]) and the quarantine samples on the
    /// metrics stream every few seconds (at once when the breaker opens or
    /// closes): the recorder stores them for the dashboards, and alert rules
    /// (queue wait too long, quarantine breaker open) read them.
    async fn publish_queue_metrics(&mut self) {
        let now = now_ms();
        if self.health_events().await {
            self.queue_published_ms = 0;
        }
        if now - self.queue_published_ms < QUEUE_METRICS_EVERY_MS {
            return;
        }
        self.queue_published_ms = now;
        let (queued, oldest_ms) = self.state.queue_age(now);
        let sample = |metric: &str, value: f64| MetricSample { metric: metric.into(), device: "queue".into(), value };
        let batch = MetricsBatch {
            schema_version: SCHEMA_VERSION,
            worker_id: METRICS_ID.into(),
            timestamp_ms: now,
            samples: [
                vec![
                    sample("scheduler.queued", queued as f64),
                    sample("scheduler.oldest_queued_s", oldest_ms as f64 / 1000.0),
                ],
                self.health_samples(),
            ]
            .concat(),
        };
        let subject = self.io.bus.subjects().metrics(METRICS_ID);
        if let Err(e) = self.io.bus.client().publish(subject, batch.encode_to_vec().into()).await {
            tracing::debug!(error = %e, "queue metrics not published");
        }
    }
}
