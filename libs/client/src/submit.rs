//! Submitting tasks and following them to their end.
//!
//! Each task is published to `hws.tasks.submit` through JetStream with its id
//! as `Nats-Msg-Id` (a resubmission within the window is dropped) and an
//! `Hws-Reply-To` inbox, on which the scheduler answers twice: the verdict
//! (accepted, duplicate, rejected with reasons) and, when the task has ended,
//! how it ended. Lifecycle events (`hws.events.<id>`) and execution results
//! (`hws.results.<id>`) arrive in between.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use futures::StreamExt;
use hwsched_bus::{codec, MSG_ID, REPLY_TO};
use hwsched_proto::{
    v1::{ExecutionResult, PartResult, SubmitReply, TaskEvent, TaskRequest, TaskStatus},
    Message,
};

use crate::{Client, Error};

/// How long the scheduler's verdict on a submission is awaited.
pub const VERDICT_WITHIN: Duration = Duration::from_secs(10);

/// One thing that happened to a submitted task (or to a shard or replica of one).
#[derive(Debug, Clone)]
pub enum Update {
    /// The scheduler accepted it.
    Accepted {
        /// Task id.
        task_id: String,
    },
    /// Already submitted earlier (by JetStream's de-duplication or the
    /// scheduler's records): not run again, and not followed.
    Duplicate {
        /// Task id.
        task_id: String,
    },
    /// Refused, with one reason per problem: at intake, or later when it
    /// turned out to fit no registered worker. It has ended.
    Rejected {
        /// Task id.
        task_id: String,
        /// Why.
        reasons: Vec<String>,
    },
    /// A lifecycle event: queued, assigned, started, retried (also of a part:
    /// see [`hwsched_placement::group::parent_of`]).
    Event(TaskEvent),
    /// The task has ended.
    Finished(Box<Finished>),
}

/// How a task ended.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// Task id.
    pub task_id: String,
    /// Final status (UNSPECIFIED when it never ran: rejected at placement).
    pub status: TaskStatus,
    /// Where its last attempt ran (a split task: every part's worker).
    pub worker_id: String,
    /// Exit code of the last attempt (-1 when it never ran).
    pub exit_code: i32,
    /// Runtime of the last attempt, s.
    pub duration_s: f64,
    /// Attempts made.
    pub attempts: u32,
    /// Why it ended as it did (empty on plain success).
    pub reasons: Vec<String>,
    /// The last attempt's execution result (resources, output tails), when one was stored.
    pub result: Option<ExecutionResult>,
    /// A sharded or replicated task: how each part ended.
    pub parts: Vec<PartResult>,
}

impl Finished {
    /// Succeeded (every part, for a split task).
    pub fn succeeded(&self) -> bool {
        self.status == TaskStatus::Succeeded
    }
}

/// Submitted tasks being followed; [`Submission::next`] yields their updates
/// until every one has ended.
#[derive(Debug)]
pub struct Submission {
    client: Client,
    replies: async_nats::Subscriber,
    events: async_nats::Subscriber,
    results: async_nats::Subscriber,
    /// Tasks whose verdict has not come yet.
    awaiting_verdict: BTreeSet<String>,
    verdict_deadline: tokio::time::Instant,
    /// Tasks followed and not ended yet.
    open: BTreeSet<String>,
    /// The last result per task (or part), to go with its end.
    last: HashMap<String, ExecutionResult>,
    ready: std::collections::VecDeque<Update>,
    /// Every task submitted, by id.
    tasks: BTreeMap<String, TaskRequest>,
}

impl Client {
    /// Submits `tasks` (ids must be set; see [`crate::new_task_id`]) and
    /// returns the stream of what happens to them. Fails when no stream stores
    /// submissions yet (no scheduler has ever run on this NATS).
    pub async fn submit(&self, tasks: Vec<TaskRequest>) -> Result<Submission, Error> {
        let bus = &self.bus;
        let s = bus.subjects();
        let sub = |subject: String| async move {
            bus.client().subscribe(subject.clone()).await.map_err(|e| Error::bus(&format!("subscribe {subject}"), e))
        };
        let events = sub(s.events_all()).await?;
        let results = sub(s.results_all()).await?;
        let inbox = bus.client().new_inbox();
        let replies = sub(inbox.clone()).await?;
        let mut ready = std::collections::VecDeque::new();
        let mut awaiting_verdict = BTreeSet::new();
        for t in &tasks {
            let mut headers = hwsched_bus::proto_headers(Some(&hwsched_bus::trace::new_traceparent()));
            headers.insert(MSG_ID, t.task_id.as_str());
            headers.insert(REPLY_TO, inbox.as_str());
            let ack = bus
                .jetstream()
                .publish_with_headers(s.tasks_submit(), headers, codec::encode(t))
                .await
                .map_err(|e| Error::bus(&format!("submit {}", t.task_id), e))?
                .await
                .map_err(|e| {
                    Error::bus(
                        &format!(
                            "submit {}: no stream stores {} ({e}); start `hwsched scheduler` (or `hwsched all`) once",
                            t.task_id,
                            s.tasks_submit()
                        ),
                        "not stored",
                    )
                })?;
            if ack.duplicate {
                ready.push_back(Update::Duplicate { task_id: t.task_id.clone() });
            } else {
                awaiting_verdict.insert(t.task_id.clone());
            }
        }
        Ok(Submission {
            client: self.clone(),
            replies,
            events,
            results,
            open: awaiting_verdict.clone(),
            awaiting_verdict,
            verdict_deadline: tokio::time::Instant::now() + VERDICT_WITHIN,
            last: HashMap::new(),
            ready,
            tasks: tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect(),
        })
    }
}

impl Submission {
    /// Every task submitted, by id.
    pub fn tasks(&self) -> &BTreeMap<String, TaskRequest> {
        &self.tasks
    }

    /// Verdicts (accepted, duplicate, rejected) not yet returned by [`Submission::next`].
    pub fn verdicts_pending(&self) -> usize {
        let queued = self
            .ready
            .iter()
            .filter(|u| matches!(u, Update::Accepted { .. } | Update::Duplicate { .. } | Update::Rejected { .. }))
            .count();
        self.awaiting_verdict.len() + queued
    }

    /// Tasks not ended yet (accepted, or waiting for their verdict).
    pub fn open(&self) -> &BTreeSet<String> {
        &self.open
    }

    /// Whether `task_id` is one of this submission's tasks or a part of one.
    fn concerns(&self, task_id: &str) -> bool {
        self.open.contains(task_id)
            || hwsched_placement::group::parent_of(task_id).is_some_and(|p| self.open.contains(p))
    }

    /// The next update, `None` once every task has ended. Fails when the
    /// scheduler gives no verdict within [`VERDICT_WITHIN`].
    pub async fn next(&mut self) -> Result<Option<Update>, Error> {
        loop {
            if let Some(u) = self.ready.pop_front() {
                return Ok(Some(u));
            }
            if self.open.is_empty() {
                return Ok(None);
            }
            let verdicts_due = !self.awaiting_verdict.is_empty();
            tokio::select! {
                _ = tokio::time::sleep_until(self.verdict_deadline), if verdicts_due => {
                    return Err(Error::NoResponder {
                        service: "scheduler",
                        subject: self.client.bus.subjects().tasks_submit(),
                        hint: format!(
                            "no verdict within {VERDICT_WITHIN:?} for {} task(s): is `hwsched scheduler` (or `hwsched all`) running?",
                            self.awaiting_verdict.len()
                        ),
                    });
                }
                Some(m) = self.replies.next() => {
                    if let Ok(r) = SubmitReply::decode(m.payload.as_ref()) {
                        self.on_reply(r).await;
                    }
                }
                Some(m) = self.results.next() => {
                    if let Ok(r) = ExecutionResult::decode(m.payload.as_ref()) {
                        if self.concerns(&r.task_id) {
                            self.last.insert(r.task_id.clone(), r);
                        }
                    }
                }
                Some(m) = self.events.next() => {
                    if let Ok(ev) = TaskEvent::decode(m.payload.as_ref()) {
                        if self.concerns(&ev.task_id) {
                            self.ready.push_back(Update::Event(ev));
                        }
                    }
                }
            }
        }
    }

    async fn on_reply(&mut self, r: SubmitReply) {
        if !r.finished {
            if !self.awaiting_verdict.remove(&r.task_id) {
                return;
            }
            if r.accepted {
                self.ready.push_back(Update::Accepted { task_id: r.task_id });
            } else {
                self.open.remove(&r.task_id);
                self.ready.push_back(if r.duplicate {
                    Update::Duplicate { task_id: r.task_id }
                } else {
                    Update::Rejected { task_id: r.task_id, reasons: r.reasons }
                });
            }
            return;
        }
        if !self.open.remove(&r.task_id) {
            return;
        }
        self.awaiting_verdict.remove(&r.task_id);
        if !r.accepted {
            // accepted at intake, then found to fit no worker: it never ran
            let reasons = r.reasons.into_iter().filter(|x| !x.is_empty()).collect();
            self.ready.push_back(Update::Rejected { task_id: r.task_id, reasons });
            return;
        }
        let mut result = self.last.remove(&r.task_id);
        if result.is_none() && r.attempts > 0 && r.parts.is_empty() {
            // the result may still be on its way to this subscription: read it from its stream
            // (its worker's: a hedged task's losing copy may have ended later)
            let worker = Some(r.worker_id.as_str()).filter(|w| !w.is_empty());
            result = self.client.bus.stored_result(worker, &r.task_id).await.ok().flatten();
        }
        self.ready.push_back(Update::Finished(Box::new(Finished {
            status: r.status(),
            task_id: r.task_id,
            worker_id: r.worker_id,
            exit_code: r.exit_code,
            duration_s: r.duration_s,
            attempts: r.attempts,
            reasons: r.reasons.into_iter().filter(|x| !x.is_empty()).collect(),
            result,
            parts: r.parts,
        })));
    }

    /// The rest of the updates as a stream (ends after the last task's end or an error).
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Update, Error>> {
        futures::stream::unfold(Some(self), |s| async move {
            let mut s = s?;
            match s.next().await {
                Ok(Some(u)) => Some((Ok(u), Some(s))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
