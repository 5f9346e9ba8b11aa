//! Submissions: intake of new tasks (decode, validate, record, split into
//! parts), duplicates and recovery of records, refusals and the replies to
//! producers.

use std::time::Duration;

use async_nats::jetstream::{self, kv, AckKind};
use futures::StreamExt;
use hwsched_bus::{now_ms, task_event, trace, REPLY_TO};
use hwsched_placement::group;
use hwsched_proto::{
    v1::{ExecutionResult, SubmitReply, TaskEventKind, TaskRecord, TaskRejection, TaskRequest, TaskState, TaskStatus},
    Message, SCHEMA_VERSION,
};

use crate::{
    intake::{self, Refusal},
    io::task_id,
    scheduler::{Scheduler, INTAKE_CONCURRENCY},
};

/// What became of one submission.
enum Intake {
    /// Refused, or to be retried: nothing to queue.
    Done,
    /// Recorded and acknowledged: queue it (a split task: the parent, then its parts).
    Accepted(Vec<TaskRecord>),
    /// Its task id is already recorded.
    Exists { msg: Box<jetstream::Message>, task_id: String, reply_to: Option<Reply> },
}

/// Where and how to answer a producer.
pub(crate) struct Reply {
    to: String,
    json: bool,
}

/// A reply subject we will publish to: a plain subject outside hwsched's own namespace
/// (a producer must not be able to inject results or assignments through it).
fn reply_subject_ok(subject: &str, prefix: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 256
        && !subject.starts_with(&format!("{prefix}."))
        && !subject.starts_with("$JS.")
        && subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace))
}

/// The record of a task just submitted: queued, or split when it is sharded
/// or replicated (the record names its parts).
fn queued_record(task: TaskRequest, traceparent: String, reply_to: Option<&Reply>, now: i64) -> TaskRecord {
    let rec = TaskRecord {
        schema_version: SCHEMA_VERSION,
        task: Some(TaskRequest {
            submitted_at_ms: if task.submitted_at_ms > 0 { task.submitted_at_ms } else { now },
            ..task
        }),
        state: TaskState::Queued as i32,
        queued_at_ms: now,
        updated_at_ms: now,
        traceparent,
        reply_to: reply_to.map(|r| r.to.clone()).unwrap_or_default(),
        reply_json: reply_to.is_some_and(|r| r.json),
        ..Default::default()
    };
    if group::is_split(rec.task.as_ref().unwrap_or(&TaskRequest::default())) {
        group::split(&rec, now).0
    } else {
        rec
    }
}

impl Scheduler {
    /// Takes a batch of submissions: each is validated and recorded (the
    /// records are written concurrently), then the accepted ones join the queue.
    pub(crate) async fn on_submissions(&mut self, msgs: Vec<jetstream::Message>) {
        let this = &*self;
        let outcomes: Vec<Intake> =
            futures::stream::iter(msgs).map(|m| this.intake(m)).buffer_unordered(INTAKE_CONCURRENCY).collect().await;
        let now = now_ms();
        for o in outcomes {
            match o {
                Intake::Done => {}
                Intake::Accepted(recs) => {
                    for rec in recs {
                        self.state.insert(rec, now);
                    }
                }
                Intake::Exists { msg, task_id, reply_to } => self.on_existing(*msg, task_id, reply_to).await,
            }
        }
    }

    /// One submission: refused, recorded and acknowledged, or found to exist already.
    async fn intake(&self, msg: jetstream::Message) -> Intake {
        let reply_to = msg.headers.as_ref().and_then(|h| h.get(REPLY_TO)).map(|v| v.as_str().to_string());
        let json = matches!(hwsched_bus::Encoding::from_headers(msg.headers.as_ref()), Ok(hwsched_bus::Encoding::Json));
        let prefix = self.io.bus.subjects().prefix().to_string();
        let reply_to = reply_to.filter(|to| reply_subject_ok(to, &prefix)).map(|to| Reply { to, json });
        let task = match intake::parse(msg.headers.as_ref(), &msg.payload) {
            Ok(t) => t,
            Err(refusal) => {
                self.refuse(refusal, reply_to.as_ref()).await;
                let _ = msg.ack().await;
                return Intake::Done;
            }
        };
        let now = now_ms();
        // The producer's context as it came (its span is the parent of the `assign` span); a new trace without one.
        let traceparent = trace::incoming(msg.headers.as_ref()).map_or_else(trace::new_traceparent, str::to_string);
        let rec = queued_record(task, traceparent, reply_to.as_ref(), now);
        let task_id = rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
        match self.io.records.create(&task_id, rec.encode_to_vec().into()).await {
            Ok(_) => {
                let split = !rec.parts.is_empty();
                if split {
                    // announced before its parts are
                    self.event(&rec, TaskEventKind::Queued, &rec.reason).await;
                }
                let parts = match self.ensure_parts(&rec).await {
                    Ok((parts, _)) => parts,
                    Err(e) => {
                        // redelivered, the submission finds the record and completes the split
                        tracing::warn!(task_id, error = %e, "cannot record the parts yet, will retry");
                        let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                        return Intake::Done;
                    }
                };
                let _ = msg.ack().await;
                self.io.metrics.accepted.inc();
                tracing::info!(
                    task_id,
                    parts = parts.len(),
                    trace_id = trace::trace_id(&rec.traceparent).unwrap_or(""),
                    "task queued"
                );
                if !split {
                    self.event(&rec, TaskEventKind::Queued, "").await;
                }
                self.reply(reply_to.as_ref(), SubmitReply { task_id, accepted: true, ..Default::default() }).await;
                Intake::Accepted(std::iter::once(rec).chain(parts).collect())
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                Intake::Exists { msg: Box::new(msg), task_id, reply_to }
            }
            Err(e) => {
                tracing::warn!(task_id, error = %e, "cannot record task yet, will retry");
                let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                Intake::Done
            }
        }
    }

    /// A submission whose task id is already recorded: an earlier create that
    /// reported a failure but succeeded (take the task on), or a duplicate.
    async fn on_existing(&mut self, msg: jetstream::Message, task_id: String, reply_to: Option<Reply>) {
        if self.recover_record(&task_id).await {
            let _ = msg.ack().await;
            self.io.metrics.accepted.inc();
            tracing::info!(task_id, "task queued (record found from an earlier attempt to record it)");
            self.reply(reply_to.as_ref(), SubmitReply { task_id, accepted: true, ..Default::default() }).await;
            return;
        }
        let _ = msg.ack().await;
        self.io.metrics.duplicates.inc();
        tracing::info!(task_id, "duplicate submission ignored (task_id already known)");
        let reasons = vec!["task_id: already submitted; this copy is ignored".to_string()];
        self.reply(
            reply_to.as_ref(),
            SubmitReply { task_id, accepted: false, duplicate: true, reasons, ..Default::default() },
        )
        .await;
    }

    /// A record that exists in the bucket but not in memory (its create timed out
    /// yet succeeded, and the submission was redelivered): take it on.
    async fn recover_record(&mut self, task_id: &str) -> bool {
        if self.state.knows(task_id) {
            return false;
        }
        let Ok(Some(bytes)) = self.io.records.get(task_id).await else { return false };
        match TaskRecord::decode(bytes.as_ref()) {
            Ok(rec) if rec.state() == TaskState::Queued => {
                self.event(&rec, TaskEventKind::Queued, "").await;
                self.state.insert(rec, now_ms());
                true
            }
            Ok(rec) if rec.state() == TaskState::Split => {
                let Ok((parts, ended)) = self.ensure_parts(&rec).await else { return false };
                self.event(&rec, TaskEventKind::Queued, &rec.reason).await;
                let now = now_ms();
                self.state.insert(rec, now);
                for p in parts {
                    self.state.insert(p, now);
                }
                for p in ended {
                    self.state.settle_part(&p, None, now);
                }
                self.publish_parent_updates().await;
                true
            }
            _ => false,
        }
    }

    /// A refused submission: stored on the rejections subject, announced (when it
    /// has a valid task id) and answered.
    pub(crate) async fn refuse(&self, r: Refusal, reply_to: Option<&Reply>) {
        self.io.metrics.rejected.inc();
        tracing::warn!(task_id = %r.task_id, reasons = ?r.reasons, "submission rejected");
        let rejection = TaskRejection {
            schema_version: SCHEMA_VERSION,
            task_id: r.task_id.clone(),
            reasons: r.reasons.clone(),
            timestamp_ms: now_ms(),
        };
        let subject = self.io.bus.subjects().tasks_rejected();
        if let Err(e) = self.io.bus.publish_durable(subject, &rejection, None, None).await {
            tracing::warn!(error = %e, "rejection not stored");
        }
        if hwsched_proto::is_valid_id(&r.task_id) {
            let task = TaskRequest { task_id: r.task_id.clone(), ..Default::default() };
            let ev = task_event(Some(&task), TaskEventKind::Rejected, 0, "", &r.reasons.join("; "));
            self.io.bus.publish_event(&ev, None).await;
        }
        self.reply(
            reply_to,
            SubmitReply {
                task_id: r.task_id,
                accepted: false,
                reasons: r.reasons,
                duplicate: false,
                ..Default::default()
            },
        )
        .await;
    }

    /// Answers the producer at `reply_to` (if any), in the encoding it submitted in.
    async fn reply(&self, reply_to: Option<&Reply>, reply: SubmitReply) {
        let Some(r) = reply_to else { return };
        let sent = if r.json {
            match serde_json::to_vec(&reply) {
                Ok(body) => self.io.bus.client().publish(r.to.clone(), body.into()).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            self.io.bus.publish(r.to.clone(), &reply).await.map_err(|e| e.to_string())
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "submit reply not sent");
        }
    }

    /// The final reply to a producer that asked for verdicts.
    pub(crate) async fn reply_finished(&self, rec: &TaskRecord, res: Option<&ExecutionResult>) {
        if rec.reply_to.is_empty() {
            return;
        }
        if !rec.parts.is_empty() {
            let (status, exit_code, duration_s, workers) = group::summary(rec);
            let reply = SubmitReply {
                task_id: task_id(rec),
                accepted: true,
                finished: true,
                status: status as i32,
                worker_id: workers,
                exit_code,
                duration_s,
                attempts: rec.parts.iter().map(|p| p.attempts).sum(),
                reasons: vec![rec.reason.clone()],
                duplicate: false,
                parts: rec.parts.clone(),
            };
            self.reply(Some(&Reply { to: rec.reply_to.clone(), json: rec.reply_json }), reply).await;
            return;
        }
        let reply = SubmitReply {
            task_id: rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
            // rejected at placement: it will never run
            accepted: rec.state() != TaskState::Rejected,
            finished: true,
            status: res
                .map_or(if rec.state() == TaskState::Cancelled { TaskStatus::Cancelled as i32 } else { 0 }, |r| {
                    r.status
                }),
            worker_id: res.map(|r| r.worker_id.clone()).unwrap_or_default(),
            exit_code: res.map_or(-1, |r| r.exit_code),
            duration_s: res.map_or(0.0, |r| r.duration_s),
            attempts: rec.attempt,
            reasons: if rec.reason.is_empty() { vec![] } else { vec![rec.reason.clone()] },
            duplicate: false,
            parts: vec![],
        };
        self.reply(Some(&Reply { to: rec.reply_to.clone(), json: rec.reply_json }), reply).await;
    }
}
