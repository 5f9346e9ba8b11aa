//! The active scheduler's loop: while it holds the lease it takes one input
//! at a time (liveness first), runs a placement pass after each input that
//! can change placements, and sends what it assigned before it steps down.

use std::time::Duration;

use anyhow::Context;
use async_nats::{
    jetstream::{self, kv},
    service::{self, endpoint::Endpoint},
    Subscriber,
};
use futures::StreamExt;
use hwsched_bus::{
    consume, micro,
    streams::{self, Durable},
    Bus, Stream,
};
use hwsched_proto::{v1::WorkerCapabilities, Message};
use tokio::{
    sync::mpsc,
    time::{Instant, Interval},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::SchedulerConfig,
    io::Io,
    lease::{self, Lease},
    metrics::Metrics,
    scheduler::Scheduler,
    workers::ask_capabilities,
};

/// Submissions (or results) taken in one batch.
const INTAKE_BATCH: usize = 1024;

/// Ack wait of the scheduler's consumers.
const CONSUMER_ACK_WAIT: Duration = Duration::from_secs(10);

/// Why the active loop ended.
pub(crate) enum Stepped {
    Shutdown,
    LostLease,
    /// Taking over failed before the loop started: nothing was consumed.
    TakeoverFailed(anyhow::Error),
}

/// What the loop does after one input.
enum Next {
    /// Goes on, with a placement pass first when the input can change placements.
    Continue { place: bool },
    /// Steps down (or fails).
    Stop(anyhow::Result<Stepped>),
}

/// The active scheduler: consumes, places and supervises while it holds the lease.
pub(crate) async fn run_active(
    cfg: SchedulerConfig,
    bus: &Bus,
    metrics: Metrics,
    shutdown: &CancellationToken,
    lease: &mut Lease,
) -> anyhow::Result<Stepped> {
    // What fails while taking over (JetStream unavailable while a NATS cluster
    // elects a leader, say) is retried by the caller, not the end of the service.
    // Each of its requests waits out its timeout while the server is gone, so
    // taking over yields to a shutdown; what it read or opened is dropped.
    let Some(taken) = shutdown.run_until_cancelled(take_over(cfg, bus, metrics)).await else {
        return Ok(Stepped::Shutdown);
    };
    let (mut s, mut inputs) = match taken {
        Ok(ready) => ready,
        Err(e) => return Ok(Stepped::TakeoverFailed(e)),
    };
    tracing::info!(queued = s.state.queued(), "scheduler ready");

    let outcome = loop {
        match inputs.next(&mut s, shutdown, lease).await {
            Next::Continue { place: true } => s.place().await,
            Next::Continue { place: false } => {}
            Next::Stop(outcome) => break outcome,
        }
    };
    // what this scheduler assigned is sent before it stops or hands over
    s.settle_sends().await;
    inputs.close().await;
    outcome
}

/// Resumes what the predecessor recorded and opens the inputs.
async fn take_over(cfg: SchedulerConfig, bus: &Bus, metrics: Metrics) -> anyhow::Result<(Scheduler, Inputs)> {
    let records = streams::bucket(bus, &bus.subjects().tasks_bucket()).await?;
    let (caps_tx, caps_rx) = mpsc::channel(64);
    let (caps_ask, asks) = mpsc::unbounded_channel();
    // ends when the loop drops `caps_ask`; if it ends first, the loop stops (see `Inputs::next`)
    tokio::spawn(ask_capabilities(bus.clone(), asks, caps_tx));
    let mut s = Scheduler::new(cfg, Io { bus: bus.clone(), records, metrics }, caps_ask);
    s.load_records().await?;
    let model_bucket = streams::bucket(bus, &bus.subjects().model_bucket()).await?;
    if let Ok(Some(bytes)) = model_bucket.get(hwsched_model::SNAPSHOT_KEY).await {
        s.on_model(&bytes);
    }
    let model_updates = model_bucket.watch(hwsched_model::SNAPSHOT_KEY).await.context("watch the learner's model")?;
    let inputs = Inputs::open(bus, &s.cfg, caps_rx, model_updates).await?;
    Ok((s, inputs))
}

/// What the active scheduler listens to, and its timers.
struct Inputs {
    submissions: consume::Messages,
    results: consume::Messages,
    heartbeats: Subscriber,
    registrations: Subscriber,
    /// Answers to capability requests ([`ask_capabilities`]).
    caps: mpsc::Receiver<WorkerCapabilities>,
    model_updates: kv::Watch,
    /// The control endpoints' NATS service.
    service: service::Service,
    cancels: Endpoint,
    explains: Endpoint,
    queues: Endpoint,
    listings: Endpoint,
    quarantines: Endpoint,
    tick: Interval,
    renew: Interval,
    last_tick: Instant,
}

impl Inputs {
    /// Consumes submissions and results, subscribes to workers and starts the
    /// control service.
    async fn open(
        bus: &Bus,
        cfg: &SchedulerConfig,
        caps: mpsc::Receiver<WorkerCapabilities>,
        model_updates: kv::Watch,
    ) -> anyhow::Result<Self> {
        let subjects = bus.subjects();
        // The loop acks within milliseconds; a short ack wait lets a restarted scheduler
        // get what its predecessor had pulled but not acknowledged without a long pause.
        let consumer = |s| Durable::new(s, "scheduler").ack_wait(CONSUMER_ACK_WAIT).max_ack_pending(4096);
        let submissions = streams::consume(bus, &consumer(Stream::Tasks)).await?;
        let results = streams::consume(bus, &consumer(Stream::Results)).await?;
        let heartbeats = bus.client().subscribe(subjects.workers_heartbeat_all()).await?;
        let registrations = bus.client().subscribe(subjects.workers_register_all()).await?;
        // Only the active scheduler answers (and shows in `nats micro ls`); the
        // service stops when this scheduler steps down.
        let service = micro::start(
            bus,
            "hwsched-scheduler",
            "hwsched scheduler (the active one): queue, tasks, explain, cancel, quarantine",
            [("policy".to_string(), cfg.policy.to_string())].into(),
        )
        .await?;
        Ok(Inputs {
            submissions,
            results,
            heartbeats,
            registrations,
            caps,
            model_updates,
            cancels: micro::endpoint(&service, "cancel", subjects.control_cancel()).await?,
            explains: micro::endpoint(&service, "explain", subjects.control_explain()).await?,
            queues: micro::endpoint(&service, "queue", subjects.control_queue()).await?,
            listings: micro::endpoint(&service, "tasks", subjects.control_tasks()).await?,
            quarantines: micro::endpoint(&service, "quarantine", subjects.control_quarantine()).await?,
            service,
            tick: tokio::time::interval(Duration::from_secs(1)),
            renew: tokio::time::interval(lease::renew_every()),
            last_tick: Instant::now(),
        })
    }

    /// Waits for the next input and hands it to the scheduler. Biased: liveness
    /// first, so a busy or stalled loop never mistakes live workers for lost ones.
    async fn next(&mut self, s: &mut Scheduler, shutdown: &CancellationToken, lease: &mut Lease) -> Next {
        let place = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Next::Stop(Ok(Stepped::Shutdown)),
            _ = self.renew.tick() => {
                // (with NATS unreachable a renewal waits out its timeout: a stop must not)
                let renewed = tokio::select! {
                    _ = shutdown.cancelled() => return Next::Stop(Ok(Stepped::Shutdown)),
                    renewed = lease.renew() => renewed,
                };
                if !renewed {
                    return Next::Stop(Ok(Stepped::LostLease));
                }
                false
            }
            // a subscription or the capabilities asker that ends stops the scheduler: without
            // them it would go on placing blind to the workers (the supervisor would lose them all)
            m = self.heartbeats.next() => match m {
                Some(m) => s.on_heartbeat(&m.payload),
                None => return Next::Stop(Err(anyhow::anyhow!("heartbeat subscription closed"))),
            },
            m = self.registrations.next() => match m {
                Some(m) => match WorkerCapabilities::decode(m.payload.as_ref()) {
                    Ok(caps) => s.on_capabilities(caps),
                    Err(e) => { tracing::warn!(error = %e, subject = %m.subject, "undecodable registration"); false }
                },
                None => return Next::Stop(Err(anyhow::anyhow!("registration subscription closed"))),
            },
            caps = self.caps.recv() => match caps {
                Some(caps) => s.on_capabilities(caps),
                None => return Next::Stop(Err(anyhow::anyhow!("the capabilities asker ended"))),
            },
            Some(m) = self.cancels.next() => { s.on_cancel(m).await; true }
            Some(m) = self.explains.next() => { s.on_explain(m).await; false }
            Some(req) = self.queues.next() => { s.on_queue(req).await; false }
            Some(req) = self.listings.next() => { s.on_tasks(req).await; false }
            Some(req) = self.quarantines.next() => { s.on_quarantine(req).await; true }
            update = self.model_updates.next() => match update {
                Some(Ok(entry)) => { s.on_model(&entry.value); true }
                Some(Err(e)) => { tracing::warn!(error = %e, "model watch error"); false }
                // placing on a model that can no longer change is the inert scheduler we replace
                None => return Next::Stop(Err(anyhow::anyhow!("the watch of the learner's model ended"))),
            },
            m = self.submissions.next() => match m {
                Some(Ok(msg)) => {
                    // take what else is ready too: one placement pass for the batch
                    let batch = ready_batch(msg, &mut self.submissions, "submission");
                    s.on_submissions(batch).await;
                    true
                }
                Some(Err(e)) => { tracing::warn!(error = %e, "submission stream error"); false }
                None => return Next::Stop(Err(anyhow::anyhow!("submission consumer closed"))),
            },
            m = self.results.next() => match m {
                Some(Ok(msg)) => {
                    let batch = ready_batch(msg, &mut self.results, "result");
                    s.on_results(batch).await;
                    true
                }
                Some(Err(e)) => { tracing::warn!(error = %e, "result stream error"); false }
                None => return Next::Stop(Err(anyhow::anyhow!("result consumer closed"))),
            },
            _ = self.tick.tick() => {
                // After a stall, heartbeats that queued meanwhile are read first (biased) before judging anyone.
                let stalled = self.last_tick.elapsed() > Duration::from_secs(3);
                self.last_tick = Instant::now();
                if !stalled {
                    s.supervise().await;
                }
                true
            }
        };
        Next::Continue { place }
    }

    /// Stops the control service: a standby that takes over answers instead.
    async fn close(self) {
        if let Err(e) = self.service.stop().await {
            tracing::debug!(error = %e, "NATS service not stopped cleanly");
        }
    }
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
