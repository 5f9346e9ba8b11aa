//! An external executor: runs a worker's assignments in your own code
//! instead of the monitor's process runner (a device farm, a browser pool, an
//! emulator). Pair it with `hwsched monitor --observe-only` on the same
//! worker id, which registers the worker and streams its telemetry.
//!
//! The contract is the monitor's: an assignment is run only while the
//! scheduler's record still says it is this attempt on this worker; `started`
//! is announced before the work begins; the result is stored (de-duplicated
//! by `<task_id>:<attempt>`) before the assignment is acknowledged; an
//! assignment held is marked in progress so JetStream does not redeliver it.
//!
//! ```no_run
//! # async fn demo(client: hwsched_client::Client) -> Result<(), hwsched_client::Error> {
//! use hwsched_client::Outcome;
//! let mut exec = client.executor("phone-17", 1).await?;
//! while let Some(a) = exec.next().await? {
//!     a.started().await;
//!     let ok = a.task.command.first().is_some(); // run it your way
//!     a.finish(if ok { Outcome::succeeded() } else { Outcome::failed(1, "no command") }).await?;
//! }
//! # Ok(()) }
//! ```

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, kv, AckKind};
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, trace};
use hwsched_proto::v1::{ExecutionResult, TaskAssignment, TaskEventKind, TaskRequest, TaskStatus, WorkerCapabilities};

use crate::{Client, Error};

/// How long [`Client::executor`] waits for the worker's monitor to answer.
pub const MONITOR_WITHIN: Duration = Duration::from_secs(10);

/// How long an assignment waits for redelivery when its executor vanished.
pub const ACK_WAIT: Duration = Duration::from_secs(30);

/// Consumes one worker's assignments.
pub struct Executor {
    client: Client,
    worker_id: String,
    hardware_class: String,
    records: kv::Store,
    messages: hwsched_bus::consume::Messages,
}

/// How an attempt ended, as the executor saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final status.
    pub status: TaskStatus,
    /// Exit code (0 on success).
    pub exit_code: i32,
    /// Why it did not succeed (empty on success).
    pub error: String,
    /// Tail of its output.
    pub stdout_tail: String,
    /// Tail of its error output.
    pub stderr_tail: String,
}

impl Outcome {
    /// Succeeded, exit 0.
    pub fn succeeded() -> Self {
        Self {
            status: TaskStatus::Succeeded,
            exit_code: 0,
            error: String::new(),
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }

    /// Failed with `exit_code`, because of `error`.
    pub fn failed(exit_code: i32, error: &str) -> Self {
        Self { status: TaskStatus::Failed, exit_code, error: error.into(), ..Self::succeeded() }
    }
}

/// One assignment to run; [`Assignment::finish`] reports it.
#[derive(Debug)]
pub struct Assignment {
    /// What to run.
    pub task: TaskRequest,
    /// Attempt number (1 for the first).
    pub attempt: u32,
    /// GPUs reserved for it (indices on the worker).
    pub gpu_indices: Vec<u32>,
    /// Shard position (0 of 1 for a plain task).
    pub shard_index: u32,
    /// Shards in all (1 for a plain task).
    pub shard_total: u32,
    assignment: TaskAssignment,
    msg: Arc<jetstream::Message>,
    client: Client,
    worker_id: String,
    hardware_class: String,
    traceparent: String,
    started_at_ms: i64,
    progress: tokio::task::JoinHandle<()>,
}

impl Client {
    /// Starts consuming `worker_id`'s assignments, at most `slots` held at once.
    /// The worker's monitor (`--observe-only`) must be running: its hardware
    /// class goes into every result, which is what the learner learns by.
    pub async fn executor(&self, worker_id: &str, slots: u32) -> Result<Executor, Error> {
        let bus = &self.bus;
        // started together with its monitor, the executor gives it a moment to come up
        let deadline = tokio::time::Instant::now() + MONITOR_WITHIN;
        let caps: WorkerCapabilities = loop {
            let asked = self.ask("monitor", bus.subjects().worker_capabilities(worker_id), Default::default()).await;
            match asked {
                Err(Error::NoResponder { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => break other,
            }
        }
        .map_err(|e| match e {
            Error::NoResponder { service, subject, .. } => Error::NoResponder {
                service,
                subject,
                hint: format!("run `hwsched monitor --observe-only --worker-id {worker_id}` on that worker first"),
            },
            e => e,
        })?;
        let d = streams::assignments(bus, worker_id, slots, ACK_WAIT);
        let messages = streams::consume(bus, &d).await.map_err(|e| Error::bus("consume assignments", e))?;
        let records =
            streams::bucket(bus, &bus.subjects().tasks_bucket()).await.map_err(|e| Error::bus("task records", e))?;
        Ok(Executor {
            client: self.clone(),
            worker_id: worker_id.into(),
            hardware_class: caps.hardware_class,
            records,
            messages,
        })
    }
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("worker_id", &self.worker_id).finish_non_exhaustive()
    }
}

impl Executor {
    /// The next assignment to run. Undecodable, misaddressed and stale ones
    /// (moved or ended by the scheduler since) are dropped here, with a log line.
    pub async fn next(&mut self) -> Result<Option<Assignment>, Error> {
        loop {
            let msg = match self.messages.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(Error::bus("assignment stream", e)),
                Some(Ok(m)) => m,
            };
            let why = match hwsched_bus::decode::<TaskAssignment>(msg.headers.as_ref(), &msg.payload) {
                Ok(a) if a.worker_id == self.worker_id && a.task.as_ref().is_some_and(|t| !t.command.is_empty()) => {
                    Ok(a)
                }
                Ok(a) if a.worker_id != self.worker_id => {
                    Err(format!("assignment for worker {:?} on this worker's subject", a.worker_id))
                }
                Ok(_) => Err("assignment without a command".to_string()),
                Err(e) => Err(format!("undecodable assignment: {e}")),
            };
            let a = match why {
                Ok(a) => a,
                Err(why) => {
                    self.client.bus.reject_message(&self.worker_id, &msg, &why).await;
                    continue;
                }
            };
            if let Err(why) = hwsched_bus::assignment::confirm(&self.records, &a).await {
                tracing::warn!(reason = %why, "stale assignment, not run");
                let _ = msg.ack_with(AckKind::Term).await;
                continue;
            }
            let msg = Arc::new(msg);
            let progress = tokio::spawn(hwsched_bus::assignment::keep_in_progress(msg.clone(), ACK_WAIT / 3));
            return Ok(Some(Assignment {
                task: a.task.clone().unwrap_or_default(),
                attempt: a.attempt,
                gpu_indices: a.gpu_indices.clone(),
                shard_index: a.shard_index,
                shard_total: a.shard_total.max(1),
                traceparent: trace::continue_from(msg.headers.as_ref()),
                assignment: a,
                msg,
                client: self.client.clone(),
                worker_id: self.worker_id.clone(),
                hardware_class: self.hardware_class.clone(),
                started_at_ms: now_ms(),
                progress,
            }));
        }
    }
}

impl Assignment {
    /// Announces that the work has begun (the `started` event).
    pub async fn started(&self) {
        let ev = hwsched_bus::task_event(
            self.assignment.task.as_ref(),
            TaskEventKind::Started,
            self.attempt,
            &self.worker_id,
            "",
        );
        self.client.bus.publish_event(&ev, Some(&self.traceparent)).await;
    }

    /// Stores the result, then acknowledges the assignment. On error the
    /// assignment stays unacknowledged and is redelivered after [`ACK_WAIT`].
    pub async fn finish(self, o: Outcome) -> Result<(), Error> {
        self.progress.abort();
        let result = ExecutionResult {
            status: o.status as i32,
            exit_code: o.exit_code,
            stdout_tail: o.stdout_tail,
            stderr_tail: o.stderr_tail,
            error: o.error,
            ..hwsched_bus::assignment::result_of(
                &self.assignment,
                &self.worker_id,
                &self.hardware_class,
                self.started_at_ms,
                now_ms(),
            )
        };
        let bus = &self.client.bus;
        let msg_id = format!("{}:{}", result.task_id, result.attempt);
        bus.publish_durable(
            bus.subjects().results(&result.worker_id, &result.task_id),
            &result,
            Some(&msg_id),
            Some(&self.traceparent),
        )
        .await
        .map_err(|e| Error::bus("store the result", e))?;
        self.msg.double_ack().await.map_err(|e| Error::bus("acknowledge the assignment", e))?;
        Ok(())
    }

    /// Gives the assignment back unrun: JetStream redelivers it at once.
    pub async fn release(self) {
        self.progress.abort();
        let _ = self.msg.ack_with(AckKind::Nak(None)).await;
    }
}

impl Drop for Assignment {
    fn drop(&mut self) {
        self.progress.abort();
    }
}
