//! The hwsched scheduler: consumes task requests, rejects invalid ones with
//! reasons, records accepted ones durably, places them on workers with the
//! pure core (`hwsched-placement`), retries failures elsewhere and re-places
//! the tasks of lost workers.
#![forbid(unsafe_code)]

mod config;
mod control;
mod intake;
mod io;
pub mod lease;
mod submissions;

pub use config::SchedulerConfig;
pub use hwsched_placement::state;

use std::time::Duration;

use anyhow::Context;
use async_nats::{
    jetstream::{self, kv, AckKind},
    service,
};
use futures::StreamExt;
use hwsched_bus::{
    micro, now_ms,
    streams::{self, Durable},
    task_event, trace, Bus, Stream, REPLY_TO,
};
use hwsched_proto::{
    v1::{
        CancelReply, CancelTask, ExecutionResult, ExplainReply, ExplainRequest, ModelSnapshot, QueueReply, SubmitReply,
        TaskAssignment, TaskEventKind, TaskRecord, TaskRejection, TaskRequest, TaskState, TaskStatus, TasksReply,
        TasksRequest, WorkerCapabilities, WorkerHeartbeat,
    },
    Message, SCHEMA_VERSION,
};
use hwsched_telemetry::{
    prometheus_client::metrics::counter::Counter, prometheus_client::metrics::gauge::Gauge, Telemetry,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use hwsched_placement::group;
pub use intake::{parse as parse_submission, Refusal};
use lease::Lease;
use state::{Action, Completion, State};

/// Key of the learner's snapshot in the model bucket.
fn hwsched_learner_key() -> &'static str {
    hwsched_model::SNAPSHOT_KEY
}

/// `first` and whatever else `stream` has ready, up to [`INTAKE_BATCH`] messages.
fn ready_batch<S, E>(first: jetstream::Message, stream: &mut S, what: &str) -> Vec<jetstream::Message>
where
    S: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut batch = vec![first];
    while batch.len() < INTAKE_BATCH {
        match futures::FutureExt::now_or_never(stream.next()) {
            Some(Some(Ok(m))) => batch.push(m),
            Some(Some(Err(e))) => tracing::warn!(error = %e, "{what} stream error"),
            _ => break,
        }
    }
    batch
}

/// A worker's capabilities are asked for at most this often (ms).
const CAPS_REQUEST_EVERY_MS: i64 = 5_000;
/// Capability requests in flight at once. A scheduler that starts beside
/// 10,000 running workers hears each one's heartbeat before its capabilities:
/// one request task per worker held about 20 MB at once.
const CAPS_IN_FLIGHT: usize = 64;

/// What became of one submission.
enum Intake {
    /// Refused, or to be retried: nothing to queue.
    Done,
    /// Recorded and acknowledged: queue it (a split task: the parent, then its parts).
    Accepted(Vec<TaskRecord>),
    /// Its task id is already recorded.
    Exists { msg: Box<jetstream::Message>, task_id: String, reply_to: Option<Reply> },
}

/// Submissions (or results) taken in one batch.
const INTAKE_BATCH: usize = 1024;
/// Submission or result records written at once.
const INTAKE_CONCURRENCY: usize = 256;

/// Assignments of one placement pass in flight at once (record, send, announce).
const ASSIGN_CONCURRENCY: usize = 256;

// Submissions and results are acknowledged without waiting for the server to
// confirm: a lost ack only means a redelivery, which finds the task's record
// (a duplicate submission) or a stale attempt (a result already applied).

/// Ack wait of the scheduler's consumers.
const CONSUMER_ACK_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
struct Metrics {
    accepted: Counter,
    rejected: Counter,
    duplicates: Counter,
    assigned: Counter,
    retried: Counter,
    succeeded: Counter,
    failed: Counter,
    queued: Gauge,
    workers: Gauge,
}

impl Metrics {
    fn register(&self, t: &Telemetry) {
        t.register(|r| {
            let r = r.sub_registry_with_prefix("hwsched_scheduler");
            r.register("tasks_accepted", "Submissions accepted", self.accepted.clone());
            r.register("tasks_rejected", "Submissions rejected (invalid or fitting no worker)", self.rejected.clone());
            r.register(
                "tasks_duplicate",
                "Submissions dropped as duplicates of a known task_id",
                self.duplicates.clone(),
            );
            r.register("assignments", "Attempts assigned to workers", self.assigned.clone());
            r.register("retries", "Attempts queued again after a failure or a lost worker", self.retried.clone());
            r.register("tasks_succeeded", "Tasks finished successfully", self.succeeded.clone());
            r.register("tasks_failed", "Tasks failed with no attempts left", self.failed.clone());
            r.register("queue_depth", "Tasks waiting for a worker", self.queued.clone());
            r.register("workers_known", "Workers known (any state)", self.workers.clone());
        });
    }
}

fn task_id(rec: &TaskRecord) -> String {
    rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default()
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

/// Where and how to answer a producer.
struct Reply {
    to: String,
    json: bool,
}

/// The scheduler's handles for writing and sending: cheap to clone, so a
/// placement pass's assignments can be sent while the next submissions are taken.
#[derive(Clone)]
struct Io {
    bus: Bus,
    records: kv::Store,
    metrics: Metrics,
}

struct Scheduler {
    cfg: SchedulerConfig,
    io: Io,
    state: State,
    started_ms: i64,
    /// The last pass's assignments being sent; yields the tasks not sent.
    sending: Option<tokio::task::JoinHandle<Vec<String>>>,
    /// Workers whose capabilities to ask for ([`ask_capabilities`]).
    caps_ask: mpsc::UnboundedSender<String>,
    /// When each worker's capabilities were last asked for.
    caps_asked: std::collections::HashMap<String, i64>,
    /// When the queue metrics were last published.
    queue_published_ms: i64,
}

/// The id the scheduler's own metrics carry on the metrics stream.
pub const METRICS_ID: &str = "hwsched-scheduler";

/// How often the queue metrics are published.
const QUEUE_METRICS_EVERY_MS: i64 = 5_000;

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    cfg: SchedulerConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    streams::provision(&bus).await?;
    let metrics = Metrics::default();
    metrics.register(&telemetry);
    let leases = streams::bucket(&bus, &bus.subjects().leases_bucket()).await?;
    let holder = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into()),
        std::process::id(),
        now_ms()
    );
    telemetry.set_ready(true);
    loop {
        let Some(mut lease) = Lease::acquire(leases.clone(), &holder, &shutdown).await else { break };
        tracing::info!(holder, "became the active scheduler");
        match run_active(cfg.clone(), &bus, metrics.clone(), &shutdown, &mut lease).await {
            Ok(Stepped::Shutdown) => {
                lease.release().await;
                break;
            }
            Ok(Stepped::LostLease) => continue,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        }
    }
    telemetry.set_ready(false);
    tracing::info!("scheduler stopped");
    Ok(())
}

/// Why the active loop ended.
enum Stepped {
    Shutdown,
    LostLease,
}

/// Asks each worker named on `asks` for its capabilities, [`CAPS_IN_FLIGHT`] at
/// a time, and passes the answers on. Ends when the sender of `asks` is dropped.
async fn ask_capabilities(bus: Bus, asks: mpsc::UnboundedReceiver<String>, answers: mpsc::Sender<WorkerCapabilities>) {
    let asks = futures::stream::unfold(asks, |mut rx| async move { rx.recv().await.map(|id| (id, rx)) });
    asks.map(|worker_id| {
        let bus = bus.clone();
        async move {
            let subject = bus.subjects().worker_capabilities(&worker_id);
            match tokio::time::timeout(Duration::from_secs(2), bus.client().request(subject, Default::default())).await
            {
                Ok(Ok(m)) => WorkerCapabilities::decode(m.payload.as_ref())
                    .map_err(|e| tracing::warn!(worker_id, error = %e, "undecodable capabilities"))
                    .ok(),
                _ => {
                    tracing::debug!(worker_id, "capabilities request unanswered");
                    None
                }
            }
        }
    })
    .buffer_unordered(CAPS_IN_FLIGHT)
    .filter_map(|caps| async move { caps })
    .for_each(|caps| {
        let answers = answers.clone();
        async move {
            let _ = answers.send(caps).await;
        }
    })
    .await;
}

/// The active scheduler: consumes, places and supervises while it holds the lease.
async fn run_active(
    cfg: SchedulerConfig,
    bus: &Bus,
    metrics: Metrics,
    shutdown: &CancellationToken,
    lease: &mut Lease,
) -> anyhow::Result<Stepped> {
    let subjects = bus.subjects().clone();
    let records = streams::bucket(bus, &subjects.tasks_bucket()).await?;
    let (caps_tx, mut caps_rx) = mpsc::channel(64);
    let (caps_ask, asks) = mpsc::unbounded_channel();
    // ends when the loop drops `caps_ask`
    tokio::spawn(ask_capabilities(bus.clone(), asks, caps_tx));
    let mut s = Scheduler {
        state: {
            let mut st = State::with_aging((cfg.aging_s * 1000) as i64);
            st.cooldown_ms = (cfg.throttle_cooldown_s * 1000) as i64;
            st.weights = cfg.weights;
            st.policy = cfg.policy;
            st.fair_share = cfg.fair_share;
            st.explore_share = cfg.explore_share;
            st.pack = cfg.pack;
            st
        },
        cfg,
        io: Io { bus: bus.clone(), records, metrics },
        started_ms: now_ms(),
        queue_published_ms: 0,
        sending: None,
        caps_ask,
        caps_asked: Default::default(),
    };
    s.load_records().await?;
    let model_bucket = streams::bucket(bus, &subjects.model_bucket()).await?;
    if let Ok(Some(bytes)) = model_bucket.get(hwsched_learner_key()).await {
        s.on_model(&bytes);
    }
    let mut model_updates = model_bucket.watch(hwsched_learner_key()).await.context("watch the learner's model")?;

    // The loop acks within milliseconds; a short ack wait lets a restarted scheduler
    // get what its predecessor had pulled but not acknowledged without a long pause.
    let consumer = |s| Durable::new(s, "scheduler").ack_wait(CONSUMER_ACK_WAIT).max_ack_pending(4096);
    let mut submissions = streams::durable(bus, &consumer(Stream::Tasks)).await?.messages().await?;
    let mut results = streams::durable(bus, &consumer(Stream::Results)).await?.messages().await?;
    let mut heartbeats = bus.client().subscribe(subjects.workers_heartbeat_all()).await?;
    let mut registrations = bus.client().subscribe(subjects.workers_register_all()).await?;
    // Only the active scheduler answers (and shows in `nats micro ls`); the
    // service stops when this scheduler steps down.
    let service = micro::start(
        bus,
        "hwsched-scheduler",
        "hwsched scheduler (the active one): queue, tasks, explain, cancel",
        [("policy".to_string(), s.cfg.policy.to_string())].into(),
    )
    .await?;
    let mut cancels = micro::endpoint(&service, "cancel", subjects.control_cancel()).await?;
    let mut explains = micro::endpoint(&service, "explain", subjects.control_explain()).await?;
    let mut queues = micro::endpoint(&service, "queue", subjects.control_queue()).await?;
    let mut listings = micro::endpoint(&service, "tasks", subjects.control_tasks()).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut renew = tokio::time::interval(lease::renew_every());
    tracing::info!(queued = s.state.queued(), "scheduler ready");

    let mut last_tick = tokio::time::Instant::now();
    let outcome = loop {
        // Biased: liveness first, so a busy or stalled loop never mistakes live workers for lost ones.
        let dirty = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break Ok(Stepped::Shutdown),
            _ = renew.tick() => {
                if !lease.renew().await {
                    break Ok(Stepped::LostLease);
                }
                false
            }
            Some(m) = heartbeats.next() => s.on_heartbeat(&m.payload),
            Some(m) = registrations.next() => match WorkerCapabilities::decode(m.payload.as_ref()) {
                Ok(caps) => s.on_capabilities(caps),
                Err(e) => { tracing::warn!(error = %e, subject = %m.subject, "undecodable registration"); false }
            },
            Some(caps) = caps_rx.recv() => s.on_capabilities(caps),
            Some(m) = cancels.next() => { s.on_cancel(m).await; true }
            Some(m) = explains.next() => { s.on_explain(m).await; false }
            Some(req) = queues.next() => {
                micro::respond(&req, &QueueReply { tasks: s.state.queue_view(now_ms()) }).await;
                false
            }
            Some(req) = listings.next() => { s.on_tasks(req).await; false }
            Some(Ok(entry)) = model_updates.next() => { s.on_model(&entry.value); true }
            m = submissions.next() => match m {
                Some(Ok(msg)) => {
                    // take what else is ready too: one placement pass for the batch
                    let batch = ready_batch(msg, &mut submissions, "submission");
                    s.on_submissions(batch).await;
                    true
                }
                Some(Err(e)) => { tracing::warn!(error = %e, "submission stream error"); false }
                None => break Err(anyhow::anyhow!("submission consumer closed")),
            },
            m = results.next() => match m {
                Some(Ok(msg)) => {
                    let batch = ready_batch(msg, &mut results, "result");
                    s.on_results(batch).await;
                    true
                }
                Some(Err(e)) => { tracing::warn!(error = %e, "result stream error"); false }
                None => break Err(anyhow::anyhow!("result consumer closed")),
            },
            _ = tick.tick() => {
                // After a stall, heartbeats that queued meanwhile are read first (biased) before judging anyone.
                let stalled = last_tick.elapsed() > Duration::from_secs(3);
                last_tick = tokio::time::Instant::now();
                if !stalled {
                    s.supervise().await;
                }
                true
            }
        };
        if dirty {
            s.place().await;
        }
    };
    // what this scheduler assigned is sent before it stops or hands over
    s.settle_sends().await;
    if let Err(e) = service.stop().await {
        tracing::debug!(error = %e, "NATS service not stopped cleanly");
    }
    outcome
}

impl Scheduler {
    /// Resumes every non-terminal task recorded before a restart.
    async fn load_records(&mut self) -> anyhow::Result<()> {
        let mut keys = self.io.records.keys().await.context("list task records")?;
        let now = now_ms();
        let mut n = 0;
        while let Some(key) = keys.next().await {
            let key = key.context("read task record key")?;
            let Some(bytes) = self.io.records.get(&key).await.context("read task record")? else {
                continue;
            };
            match TaskRecord::decode(bytes.as_ref()) {
                Ok(rec) if matches!(rec.state(), TaskState::Queued | TaskState::Assigned | TaskState::Split) => {
                    self.state.insert(rec, now);
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(key, error = %e, "undecodable task record skipped"),
            }
        }
        // Split tasks whose parts were not all recorded, or ended unnoticed, before the restart.
        let split = self.state.records_in(TaskState::Split);
        for parent in split {
            let (live, ended) = match self.ensure_parts(&parent).await {
                Ok(parts) => parts,
                Err(e) => {
                    // the parts it could not read stay open; the others go on
                    tracing::error!(task_id = %task_id(&parent), error = %e, "parts of a split task not resumed");
                    continue;
                }
            };
            for p in live {
                self.state.insert(p, now);
            }
            for p in ended {
                self.state.settle_part(&p, None, now);
            }
        }
        self.publish_parent_updates().await;
        if n > 0 {
            tracing::info!(tasks = n, "resumed unfinished tasks");
        }
        self.resend_recent_assignments(now).await;
        Ok(())
    }

    /// A scheduler that died between recording an assignment and sending it
    /// left a task no worker will ever hear of. Its successor sends every
    /// assignment recorded within the de-duplication window again under the
    /// same message id: JetStream drops the ones that were sent, the others
    /// reach their worker. (Older ones are caught by the assignment grace,
    /// except on observe-only workers, which do not list what they run.)
    async fn resend_recent_assignments(&self, now: i64) {
        let window = streams::TASK_DEDUP_WINDOW.as_millis() as i64 * 9 / 10;
        let recent: Vec<TaskRecord> = self
            .state
            .records_in(TaskState::Assigned)
            .into_iter()
            .filter(|r| now - r.assigned_at_ms < window)
            .collect();
        let resent = futures::stream::iter(recent)
            .map(|rec| async move { self.io.publish_assignment(&rec).await })
            .buffer_unordered(INTAKE_CONCURRENCY)
            .filter(|sent| futures::future::ready(*sent))
            .count()
            .await;
        if resent > 0 {
            tracing::info!(assignments = resent, "recent assignments sent again (duplicates dropped by JetStream)");
        }
    }

    async fn event(&self, rec: &TaskRecord, kind: TaskEventKind, reason: &str) {
        self.io.event(rec, kind, reason).await;
    }

    async fn save(&self, rec: &TaskRecord) {
        self.io.save(rec).await;
    }

    /// Applies a batch of results to the state, then stores and announces each
    /// outcome (concurrently across tasks) before acknowledging its result.
    async fn on_results(&mut self, msgs: Vec<jetstream::Message>) {
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
        self.publish_parent_updates().await;
    }

    async fn finish(&self, msg: jetstream::Message, res: ExecutionResult, c: Completion) {
        match c {
            Completion::Done(rec) => {
                self.save(&rec).await;
                let status = res.status();
                if rec.state() == TaskState::Succeeded {
                    self.io.metrics.succeeded.inc();
                } else {
                    self.io.metrics.failed.inc();
                }
                tracing::info!(task_id = %res.task_id, worker_id = %res.worker_id, status = status.as_str_name(), duration_s = res.duration_s, "task finished");
                self.event(&rec, TaskEventKind::Finished, status.as_str_name()).await;
                self.reply_finished(&rec, Some(&res)).await;
            }
            Completion::Retry(rec) => {
                self.save(&rec).await;
                self.io.metrics.retried.inc();
                tracing::info!(task_id = %res.task_id, reason = %rec.reason, "task will be retried");
                self.event(&rec, TaskEventKind::Retried, &rec.reason).await;
            }
            Completion::Stale => {
                tracing::debug!(task_id = %res.task_id, attempt = res.attempt, "stale result ignored")
            }
        }
        let _ = msg.ack().await;
    }

    fn on_heartbeat(&mut self, payload: &[u8]) -> bool {
        let hb = match WorkerHeartbeat::decode(payload) {
            Ok(hb) if hwsched_placement::is_valid_id(&hb.worker_id) => hb,
            Ok(_) | Err(_) => {
                tracing::debug!("invalid heartbeat ignored");
                return false;
            }
        };
        let worker_id = hb.worker_id.clone();
        let was = self.state.workers.get(&worker_id).map(|w| w.state);
        let offline = hb.state() == hwsched_proto::v1::WorkerState::Offline;
        let needs_caps = self.state.heartbeat(hb, now_ms());
        let changed = was != self.state.workers.get(&worker_id).map(|w| w.state);
        // One request per worker at a time: a burst of heartbeats from workers whose
        // registration was missed must not become a burst of requests.
        let now = now_ms();
        let asked_recently = self.caps_asked.get(&worker_id).is_some_and(|at| now - at < CAPS_REQUEST_EVERY_MS);
        if needs_caps && !offline && !asked_recently {
            self.caps_asked.insert(worker_id.clone(), now);
            let _ = self.caps_ask.send(worker_id);
        }
        // a state change (e.g. a worker back or draining) can change placements
        changed
    }

    fn on_capabilities(&mut self, caps: WorkerCapabilities) -> bool {
        if !hwsched_placement::is_valid_id(&caps.worker_id) {
            return false;
        }
        let id = caps.worker_id.clone();
        self.caps_asked.remove(&id);
        let known = self.state.workers.get(&id).and_then(|w| w.caps.as_deref()) == Some(&caps);
        if self.state.register(caps, now_ms()) {
            tracing::info!(worker_id = id, "worker joined");
        }
        self.io.metrics.workers.set(self.state.workers.len() as i64);
        // placements change only when the worker is new or its capabilities changed
        !known
    }

    /// A new model snapshot from the learner: used from the next placement on.
    fn on_model(&mut self, bytes: &[u8]) {
        match ModelSnapshot::decode(bytes) {
            Ok(snap) if self.state.model.as_ref().is_none_or(|m| m.version() < snap.version || snap.version == 0) => {
                tracing::info!(version = snap.version, pairs = snap.entries.len(), "model loaded");
                self.state.model = Some(hwsched_model::Model::from_snapshot(snap));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "undecodable model snapshot ignored"),
        }
    }

    /// Lost workers and forgotten assignments: their tasks are queued again (or fail).
    async fn supervise(&mut self) {
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
                Completion::Stale => {}
            }
        }
        self.publish_parent_updates().await;
        self.publish_queue_metrics().await;
    }

    /// Publishes `scheduler.queued` and `scheduler.oldest_queued_s` (device
    /// `queue`, worker id [`METRICS_ID`]) on the metrics stream every few
    /// seconds: the recorder stores them for the dashboards, and alert rules
    /// (queue wait too long) read them.
    async fn publish_queue_metrics(&mut self) {
        let now = now_ms();
        if now - self.queue_published_ms < QUEUE_METRICS_EVERY_MS {
            return;
        }
        self.queue_published_ms = now;
        let (queued, oldest_ms) = self.state.queue_age(now);
        let sample = |metric: &str, value: f64| hwsched_proto::v1::MetricSample {
            metric: metric.into(),
            device: "queue".into(),
            value,
        };
        let batch = hwsched_proto::v1::MetricsBatch {
            schema_version: hwsched_proto::SCHEMA_VERSION,
            worker_id: METRICS_ID.into(),
            timestamp_ms: now,
            samples: vec![
                sample("scheduler.queued", queued as f64),
                sample("scheduler.oldest_queued_s", oldest_ms as f64 / 1000.0),
            ],
        };
        let subject = self.io.bus.subjects().metrics(METRICS_ID);
        if let Err(e) = self.io.bus.client().publish(subject, batch.encode_to_vec().into()).await {
            tracing::debug!(error = %e, "queue metrics not published");
        }
    }

    async fn place(&mut self) {
        self.settle_sends().await;
        let now = now_ms();
        let may_reject = now - self.started_ms > (self.cfg.startup_grace_s * 1000) as i64;
        let mut assigns = Vec::new();
        for action in self.state.plan(now, may_reject) {
            match action {
                Action::Assign(rec) => assigns.push(rec),
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
        if assigns.is_empty() {
            return;
        }
        // Each assignment is recorded, announced and sent in that order; different
        // tasks' assignments proceed concurrently, in the background: the loop takes
        // the next submissions and results meanwhile. A result can only follow its
        // assignment's send; what else writes a task's record (the supervisor,
        // cancels, the next pass) waits for the sends first (`settle_sends`), so a
        // task's record is never written out of order.
        let io = self.io.clone();
        self.sending = Some(tokio::spawn(async move {
            let io = &io;
            futures::stream::iter(assigns)
                .map(|rec| async move {
                    let span = tracing::info_span!("assign", task_id = %task_id(&rec), worker_id = %rec.worker_id, attempt = rec.attempt);
                    hwsched_telemetry::set_parent(&span, &rec.traceparent);
                    let sent = io.send_assignment(&rec).instrument(span).await;
                    (!sent).then(|| task_id(&rec))
                })
                .buffer_unordered(ASSIGN_CONCURRENCY)
                .filter_map(|unsent| async move { unsent })
                .collect()
                .await
        }));
    }

    /// Waits for the last pass's assignments to be sent; those that could not be
    /// go back to the queue.
    async fn settle_sends(&mut self) {
        let Some(sending) = self.sending.take() else { return };
        let unsent = match sending.await {
            Ok(unsent) => unsent,
            Err(e) => {
                // their records say assigned: the supervisor places them again after the grace
                tracing::error!(error = %e, "sending assignments failed");
                Vec::new()
            }
        };
        let now = now_ms();
        for id in unsent {
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
}
