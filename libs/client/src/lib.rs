//! The client library of hwsched, which the `hwsched` command line is built on
//! and other Rust tools embed: connect, submit one task or a suite and follow
//! it to its end as a stream of updates, ask the services (queue, tasks,
//! explain, cancel, drain, workers, a task's history), read a task's logs
//! (stored, or live as they are written) and download its artifacts, and run
//! a worker's assignments as an external executor.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hwsched_client::Error> {
//! use hwsched_client::{Client, Update};
//! use hwsched_config::NatsConfig;
//!
//! let client = Client::connect(&NatsConfig::new("nats://127.0.0.1:4222")).await?;
//! let task = hwsched_client::task(["pytest", "tests/test_model.py"]);
//! let mut run = client.submit(vec![task]).await?;
//! while let Some(update) = run.next().await? {
//!     if let Update::Finished(f) = update {
//!         println!("{} ended {:?} on {}", f.task_id, f.status, f.worker_id);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Every request names the service it needs in its error when nobody answers,
//! and [`Error::exit_code`] maps each kind of failure to the exit status the
//! command line uses.
#![forbid(unsafe_code)]

mod artifacts;
pub mod bundle;
mod executor;
mod history;
mod logs;
pub mod mutes;
mod submit;
pub mod suite;
mod workers;

use std::time::Duration;

use bytes::Bytes;
use hwsched_bus::{codec, Bus, BusError};
use hwsched_config::NatsConfig;
use hwsched_proto::{
    v1::{
        CancelReply, CancelTask, DrainReply, DrainWorker, ExplainReply, ExplainRequest, QuarantineReply,
        QuarantineRequest, QueueReply, TaskRecord, TaskRequest, TaskState, TasksReply, TasksRequest,
    },
    Message, SCHEMA_VERSION,
};

pub use artifacts::artifact_path;
pub use bundle::Bundle;
pub use executor::{Assignment, Executor, Outcome};
pub use history::{Attempt, History};
pub use logs::LogFollow;
pub use submit::{Finished, Submission, Update};
pub use suite::SuiteError;
pub use workers::WorkerView;

/// What went wrong, by what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// NATS could not be reached (the message names the URL and the variable to set).
    #[error(transparent)]
    Connect(BusError),
    /// Nobody serves `subject`: the service is not running, or listens under another subject prefix.
    #[error("no {service} answers on {subject}: {hint}")]
    NoResponder {
        /// The service that should answer.
        service: &'static str,
        /// Where it was asked.
        subject: String,
        /// What to try.
        hint: String,
    },
    /// The service did not answer in time.
    #[error("no answer from the {service} on {subject} within {timeout:?}: is it overloaded or stalled?")]
    Timeout {
        /// The service asked.
        service: &'static str,
        /// Where it was asked.
        subject: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The service answered with an error.
    #[error("the {service} refused the request: {status}")]
    Refused {
        /// The service.
        service: &'static str,
        /// Its reason.
        status: String,
    },
    /// A suite file that cannot be read or does not describe tasks.
    #[error(transparent)]
    Suite(#[from] SuiteError),
    /// A bundle that cannot be packed (the message names the file) or stored.
    #[error("bundle: {0}")]
    Bundle(hwsched_bundle::BundleError),
    /// Anything else on the way (publish failed, undecodable reply, stream unavailable).
    #[error("{0}")]
    Bus(String),
    /// A task's stored output or artifact is missing, corrupt, or refused (a hostile path).
    #[error("{0}")]
    Output(String),
    /// A request the user must fix (a mute without a reason, a pattern matching everything).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The exit status the command line gives this error: 2 for input the user
    /// must fix, 3 when NATS or a service is unreachable, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Suite(_) | Error::Invalid(_) => exit::USAGE,
            Error::Connect(BusError::Config(_)) => exit::USAGE,
            Error::Connect(_) | Error::NoResponder { .. } | Error::Timeout { .. } => exit::UNAVAILABLE,
            Error::Refused { .. } | Error::Bus(_) | Error::Output(_) => exit::FAILURE,
            Error::Bundle(e) => Error::bundle_exit_code(e),
        }
    }

    fn bus(what: &str, e: impl std::fmt::Display) -> Self {
        Error::Bus(format!("{what}: {e}"))
    }
}

/// Exit statuses of the `hwsched` command line (documented in its `--help`).
pub mod exit {
    /// Done, and everything asked for succeeded.
    pub const OK: u8 = 0;
    /// Done, but a task failed or was rejected, or what was named does not exist.
    pub const FAILURE: u8 = 1;
    /// Bad usage or input: a flag, the configuration, a suite file.
    pub const USAGE: u8 = 2;
    /// NATS unreachable, or no service answered.
    pub const UNAVAILABLE: u8 = 3;
    /// Interrupted (Ctrl-C) before the tasks ended.
    pub const INTERRUPTED: u8 = 130;
}

/// How long a request to a service waits for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to hwsched's NATS.
#[derive(Debug, Clone)]
pub struct Client {
    bus: Bus,
}

/// A task running `argv` with a generated id and default requirements.
pub fn task<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> TaskRequest {
    let command: Vec<String> = argv.into_iter().map(Into::into).collect();
    TaskRequest {
        schema_version: SCHEMA_VERSION,
        task_id: new_task_id(),
        name: command.join(" "),
        command,
        ..Default::default()
    }
}

/// A fresh task id (`t-` and 12 hex digits).
pub fn new_task_id() -> String {
    format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

impl Client {
    /// Connects, giving up after 5 s (the error names the URL).
    pub async fn connect(cfg: &NatsConfig) -> Result<Self, Error> {
        Self::connect_within(cfg, Duration::from_secs(5)).await
    }

    /// Connects, retrying until `deadline`.
    pub async fn connect_within(cfg: &NatsConfig, deadline: Duration) -> Result<Self, Error> {
        Ok(Self { bus: Bus::connect(cfg, "hwsched-client", deadline).await.map_err(Error::Connect)? })
    }

    /// A client on an existing connection.
    pub fn from_bus(bus: Bus) -> Self {
        Self { bus }
    }

    /// The underlying connection.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Asks `service` on `subject` and decodes its answer.
    async fn ask<R: Message + Default>(&self, service: &'static str, subject: String, body: Bytes) -> Result<R, Error> {
        let req = async_nats::Request::new().payload(body).timeout(Some(REQUEST_TIMEOUT));
        let m = match self.bus.client().send_request(subject.clone(), req).await {
            Ok(m) => m,
            Err(e) => {
                return Err(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        Error::NoResponder { service, hint: hint(service, self.bus.subjects().prefix()), subject }
                    }
                    async_nats::RequestErrorKind::TimedOut => {
                        Error::Timeout { service, subject, timeout: REQUEST_TIMEOUT }
                    }
                    _ => Error::bus(&format!("request on {subject}"), e),
                })
            }
        };
        if let Some(status) = m.headers.as_ref().and_then(|h| h.get(async_nats::service::NATS_SERVICE_ERROR)) {
            return Err(Error::Refused { service, status: status.to_string() });
        }
        R::decode(m.payload.as_ref()).map_err(|e| Error::bus(&format!("undecodable answer on {subject}"), e))
    }

    /// Cancels a task: out of the queue, or its running attempt stopped.
    pub async fn cancel(&self, task_id: &str, reason: &str) -> Result<CancelReply, Error> {
        let req = CancelTask { task_id: task_id.into(), reason: reason.into(), ..Default::default() };
        self.ask(SCHEDULER, self.bus.subjects().control_cancel(), codec::encode(&req)).await
    }

    /// The waiting tasks in placement order, each with why it waits.
    pub async fn queue(&self) -> Result<Vec<TaskRecord>, Error> {
        let r: QueueReply = self.ask(SCHEDULER, self.bus.subjects().control_queue(), Bytes::new()).await?;
        Ok(r.tasks)
    }

    /// The tasks the scheduler holds now (waiting or placed), newest first;
    /// `state` narrows them (UNSPECIFIED: all), `limit` caps them (0: 1000).
    pub async fn tasks(&self, state: TaskState, limit: u32) -> Result<TasksReply, Error> {
        let req = TasksRequest { state: state as i32, limit };
        self.ask(SCHEDULER, self.bus.subjects().control_tasks(), codec::encode(&req)).await
    }

    /// The scheduler's record of a task (live, or stored once ended); `None` when unknown.
    pub async fn explain(&self, task_id: &str) -> Result<Option<TaskRecord>, Error> {
        let req = ExplainRequest { task_id: task_id.into() };
        let r: ExplainReply = self.ask(SCHEDULER, self.bus.subjects().control_explain(), codec::encode(&req)).await?;
        Ok(r.record.filter(|_| r.found))
    }

    /// The workers the scheduler quarantined and its breaker; `release` names
    /// one to put back in service at once.
    pub async fn quarantine(&self, release: Option<&str>) -> Result<QuarantineReply, Error> {
        let req = QuarantineRequest { release: release.unwrap_or_default().into() };
        self.ask(SCHEDULER, self.bus.subjects().control_quarantine(), codec::encode(&req)).await
    }

    /// Drains a worker (`drain = true`: no new tasks, running ones finish) or
    /// undrains it. An unknown worker is [`Error::NoResponder`] from its monitor.
    pub async fn drain(&self, worker_id: &str, drain: bool, reason: &str) -> Result<DrainReply, Error> {
        if !hwsched_proto::is_valid_id(worker_id) {
            return Err(Error::NoResponder {
                service: MONITOR,
                subject: format!("{}.workers.{worker_id}.drain", self.bus.subjects().prefix()),
                hint: format!("{worker_id:?} is not a worker id (letters, digits, '-' and '_'); `hwsched workers` lists the live ones"),
            });
        }
        let req = DrainWorker { worker_id: worker_id.into(), drain, reason: reason.into() };
        self.ask(MONITOR, self.bus.subjects().worker_drain(worker_id), codec::encode(&req)).await.map_err(|e| match e {
            Error::NoResponder { subject, .. } => Error::NoResponder {
                service: MONITOR,
                subject,
                hint: format!("no live worker is called {worker_id:?}; `hwsched workers` lists the live ones"),
            },
            e => e,
        })
    }
}

const SCHEDULER: &str = "scheduler";
const MONITOR: &str = "monitor";

fn hint(service: &str, prefix: &str) -> String {
    let run = match service {
        SCHEDULER => "start `hwsched scheduler` (or `hwsched all`)",
        _ => "start `hwsched monitor` on that worker",
    };
    format!("{run} against this NATS with subject prefix {prefix:?} (HWSCHED_SUBJECT_PREFIX)")
}
