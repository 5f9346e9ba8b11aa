//! A task's output: the stored copy in the Object Store `hws_logs` (complete
//! up to the monitor's cap, there as long as the store keeps it, whatever
//! happened to the monitor since) and the live batches on
//! `hws.logs.<task_id>.<attempt>` (stream `HWS_LOGS`), followed from the
//! start of the attempt until the task ends.

use std::{collections::BTreeMap, time::Duration};

use futures::{stream::BoxStream, StreamExt};
use hwsched_bus::{objects, Stream};
use hwsched_proto::{
    v1::{ExecutionResult, LogChunk, OutputStream, TaskEvent, TaskEventKind},
    Message,
};
use tokio::{io::AsyncWrite, time::Instant};

use crate::{Client, Error};

/// After the task ended, how long a follower waits for end markers that may
/// never come (the monitor died) once nothing more arrives.
pub const LINGER: Duration = Duration::from_secs(3);

impl Client {
    /// The result of `task_id`'s `attempt`, or of its latest attempt that has one.
    pub async fn attempt_result(&self, task_id: &str, attempt: Option<u32>) -> Result<ExecutionResult, Error> {
        let h = self.history(task_id).await?;
        let found = h
            .attempts
            .into_iter()
            .map(|a| a.result)
            .filter(|r| attempt.is_none_or(|n| r.attempt == n))
            .max_by_key(|r| (r.attempt, r.finished_at_ms));
        found.ok_or_else(|| {
            Error::Output(match attempt {
                Some(n) => format!(
                    "task {task_id:?} has no result for attempt {n} (`hwsched tasks {task_id}` lists its attempts)"
                ),
                None => format!("task {task_id:?} has no result yet (still running? `hwsched logs -f` follows it)"),
            })
        })
    }

    /// Copies the stored `stream` of the attempt `r` reports into `out`;
    /// returns the bytes copied. A stream the command wrote nothing to is not
    /// stored (monitors before that change stored it empty): nothing to copy.
    pub async fn stored_log(
        &self,
        r: &ExecutionResult,
        stream: OutputStream,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, Error> {
        let written = if stream == OutputStream::Stderr { r.stderr_bytes } else { r.stdout_bytes };
        if written == 0 {
            return Ok(0);
        }
        let bucket = self.bus.subjects().logs_bucket();
        let store = hwsched_bus::streams::object_store(&self.bus, &bucket).await.map_err(|e| Error::bus("logs", e))?;
        let name = objects::log_object(&r.task_id, r.attempt, stream);
        let mut object = store.get(&name).await.map_err(|e| {
            Error::Output(format!(
                "{bucket}/{name}: {e} (expired, or the monitor could not store it: see the result's error)"
            ))
        })?;
        tokio::io::copy(&mut object, out).await.map_err(|e| Error::Output(format!("{bucket}/{name}: {e}")))
    }

    /// Follows the live output of `task_id` (one attempt, or every attempt)
    /// from its start; [`LogFollow::next`] ends once the task has ended and
    /// every started attempt's streams are closed.
    pub async fn follow_logs(&self, task_id: &str, attempt: Option<u32>) -> Result<LogFollow, Error> {
        let s = self.bus.subjects();
        let filter = match attempt {
            Some(n) => s.logs(task_id, n),
            None => s.logs_of(task_id),
        };
        Ok(LogFollow {
            logs: self.ordered(Stream::Logs, filter).await?,
            events: self.ordered(Stream::Events, s.events(task_id)).await?,
            attempt,
            started: BTreeMap::new(),
            ended_at: None,
            last: Instant::now(),
        })
    }

    /// Every message on `subject` in `stream`, from the first stored on, then live.
    async fn ordered(
        &self,
        stream: Stream,
        subject: String,
    ) -> Result<BoxStream<'static, Result<async_nats::jetstream::Message, String>>, Error> {
        let (_, c) = self.ordered_consumer(stream, &subject, "follow").await?;
        let msgs = c.messages().await.map_err(|e| Error::bus(&format!("follow {subject}"), e))?;
        Ok(msgs.map(|m| m.map_err(|e| e.to_string())).boxed())
    }
}

/// Live output being followed.
pub struct LogFollow {
    logs: BoxStream<'static, Result<async_nats::jetstream::Message, String>>,
    events: BoxStream<'static, Result<async_nats::jetstream::Message, String>>,
    attempt: Option<u32>,
    /// Attempts seen (started, or with output), with how many of their streams have ended.
    started: BTreeMap<u32, u8>,
    /// When the task's end was seen.
    ended_at: Option<Instant>,
    /// When the last batch arrived.
    last: Instant,
}

impl std::fmt::Debug for LogFollow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFollow")
            .field("attempt", &self.attempt)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl LogFollow {
    /// The next batch, in the order the monitor sent them; `None` once the task has ended.
    pub async fn next(&mut self) -> Result<Option<LogChunk>, Error> {
        loop {
            if self.done() {
                return Ok(None);
            }
            let linger = self.ended_at.map(|t| t.max(self.last) + LINGER);
            tokio::select! {
                m = self.logs.next() => {
                    let m = m.ok_or_else(|| Error::Bus("live log stream closed".into()))?.map_err(|e| Error::bus("live logs", e))?;
                    let Ok(c) = LogChunk::decode(m.payload.as_ref()) else { continue };
                    self.last = Instant::now();
                    let closed = self.started.entry(c.attempt).or_default();
                    if c.eof {
                        *closed += 1;
                    }
                    return Ok(Some(c));
                }
                m = self.events.next() => {
                    let m = m.ok_or_else(|| Error::Bus("event stream closed".into()))?.map_err(|e| Error::bus("events", e))?;
                    if let Ok(ev) = TaskEvent::decode(m.payload.as_ref()) {
                        self.event(&ev);
                    }
                }
                _ = sleep_until(linger) => return Ok(None),
            }
        }
    }

    fn event(&mut self, ev: &TaskEvent) {
        match ev.kind() {
            TaskEventKind::Started if self.attempt.is_none_or(|n| n == ev.attempt) => {
                self.started.entry(ev.attempt).or_default();
            }
            TaskEventKind::Finished | TaskEventKind::Cancelled | TaskEventKind::Rejected => {
                self.ended_at.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
    }

    fn done(&self) -> bool {
        let closed = |n: &u32| self.started.get(n).is_some_and(|c| *c >= 2);
        match self.attempt {
            Some(n) => closed(&n) || (self.ended_at.is_some() && !self.started.contains_key(&n)),
            None => self.ended_at.is_some() && self.started.keys().all(closed),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Client {
    /// Every live batch of every task from now on (a plain subscription to
    /// `hws.logs.>`: nothing from before it). `hwsched submit --wait --logs`
    /// subscribes before it submits, so it misses nothing of its own tasks.
    pub async fn live_logs(&self) -> Result<BoxStream<'static, LogChunk>, Error> {
        let subject = self.bus.subjects().logs_all();
        let sub = self
            .bus
            .client()
            .subscribe(subject.clone())
            .await
            .map_err(|e| Error::bus(&format!("subscribe {subject}"), e))?;
        Ok(sub.filter_map(|m| async move { LogChunk::decode(m.payload.as_ref()).ok() }).boxed())
    }
}
