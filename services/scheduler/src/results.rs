//! Results: each worker result applied to the state, its outcome (finished,
//! retried, stale) stored and announced before the result is acknowledged,
//! and split tasks whose parts ended settled.

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;
use hwsched_bus::now_ms;
use hwsched_placement::{group, state::Completion};
use hwsched_proto::{
    v1::{ExecutionResult, TaskEventKind, TaskState},
    Message as _,
};

use crate::{
    io::task_id,
    scheduler::{Scheduler, INTAKE_CONCURRENCY},
};

impl Scheduler {
    /// Applies a batch of results to the state, then stores and announces each
    /// outcome (concurrently across tasks) before acknowledging its result.
    pub(crate) async fn on_results(&mut self, msgs: Vec<jetstream::Message>) {
        let now = now_ms();
        let mut done = Vec::with_capacity(msgs.len());
        for msg in msgs {
            match hwsched_bus::decode::<ExecutionResult>(msg.headers.as_ref(), &msg.payload) {
                // only the worker's own subject counts: NATS permissions tie it to the publisher
                Ok(res) if self.io.bus.subjects().result_worker(&msg.subject) != Some(res.worker_id.as_str()) => {
                    tracing::warn!(subject = %msg.subject, task_id = %res.task_id, worker_id = %res.worker_id, "result not on its worker's subject, ignored");
                    let _ = msg.ack_with(AckKind::Term).await;
                }
                Ok(res) => {
                    let c = self.state.complete(&res, now);
                    done.push((msg, res, c));
                }
                Err(e) => self.io.bus.reject_message("scheduler", &msg, &format!("undecodable result: {e}")).await,
            }
        }
        let this = &*self;
        futures::stream::iter(done)
            .map(|(msg, res, c)| this.finish(msg, res, c))
            .buffer_unordered(INTAKE_CONCURRENCY)
            .collect::<Vec<()>>()
            .await;
        self.stop_hedge_losers().await;
        self.publish_parent_updates().await;
    }

    /// Stops the losing copies of hedged tasks that ended: each monitor acts
    /// on the cancel naming its attempt (core NATS: one lost here lets the
    /// copy run on, and its late result is ignored as stale).
    pub(crate) async fn stop_hedge_losers(&mut self) {
        for c in self.state.take_hedge_cancels() {
            tracing::info!(task_id = %c.task_id, attempt = c.attempt, worker_id = %c.worker_id, "stopping the hedged task's other copy");
            let subject = self.io.bus.subjects().control_cancel();
            if let Err(e) = self.io.bus.client().publish(subject, c.encode_to_vec().into()).await {
                tracing::warn!(task_id = %c.task_id, error = %e, "stop of a hedged copy not sent; it runs to its end");
            }
        }
    }

    /// Stores and announces one result's outcome, then acknowledges the result.
    async fn finish(&self, msg: jetstream::Message, res: ExecutionResult, c: Completion) {
        self.conclude(&res, c).await;
        let _ = msg.ack().await;
    }

    /// Stores and announces the outcome `c` of the result `res`.
    pub(crate) async fn conclude(&self, res: &ExecutionResult, c: Completion) {
        match c {
            Completion::Done(rec) => {
                self.save(&rec).await;
                let status = res.status();
                self.io.metrics.task_duration.observe(res.duration_s);
                if rec.state() == TaskState::Succeeded {
                    self.io.metrics.succeeded.inc();
                } else {
                    self.io.metrics.failed.inc();
                }
                tracing::info!(task_id = %res.task_id, worker_id = %res.worker_id, status = status.as_str_name(), duration_s = res.duration_s, "task finished");
                self.event(&rec, TaskEventKind::Finished, status.as_str_name()).await;
                self.reply_finished(&rec, Some(res)).await;
            }
            Completion::Retry(rec) => {
                self.save(&rec).await;
                self.io.metrics.retried.inc();
                tracing::info!(task_id = %res.task_id, reason = %rec.reason, "task will be retried");
                self.event(&rec, TaskEventKind::Retried, &rec.reason).await;
            }
            Completion::Continues(rec) => {
                self.save(&rec).await;
                tracing::info!(task_id = %res.task_id, reason = %rec.reason, "hedged copy ended, its twin goes on");
            }
            Completion::Stale => {
                tracing::debug!(task_id = %res.task_id, attempt = res.attempt, "stale result ignored")
            }
        }
    }

    /// Saves the split tasks whose parts ended; announces those now finished.
    pub(crate) async fn publish_parent_updates(&mut self) {
        for rec in self.state.take_parent_updates() {
            self.save(&rec).await;
            // (the metrics count its parts, which ran)
            if rec.state() == TaskState::Split {
                continue;
            }
            let (status, ..) = group::summary(&rec);
            tracing::info!(task_id = %task_id(&rec), status = status.as_str_name(), reason = %rec.reason, "split task finished");
            if rec.state() == TaskState::Cancelled {
                self.event(&rec, TaskEventKind::Cancelled, &rec.reason).await;
            } else {
                self.event(&rec, TaskEventKind::Finished, status.as_str_name()).await;
            }
            self.reply_finished(&rec, None).await;
        }
    }
}
