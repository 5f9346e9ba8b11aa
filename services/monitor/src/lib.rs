//! The hwsched monitor, one per worker node: detects this host's capabilities,
//! registers them, streams telemetry and heartbeats every interval, and runs
//! the tasks the scheduler assigns to this worker.
#![forbid(unsafe_code)]

pub mod config;
pub mod detect;
pub mod drain;
pub mod executor;
pub mod gpu;
pub mod host;
pub mod outbox;
pub mod policy;
pub mod probes;
pub mod process;
pub mod rapl;
pub mod sampler;
pub mod telemetry;
pub mod usage;

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_proto::v1::WorkerState;
use hwsched_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

pub use config::MonitorConfig;
use executor::{Executor, Running};
use gpu::Gpus;
use outbox::Outbox;
use tokio::sync::watch;

/// How long running tasks may finish after shutdown is requested before they are killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(20);

/// Runs the monitor until `shutdown` is cancelled.
pub async fn run(
    cfg: MonitorConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker_id =
        detect::worker_id(cfg.worker_id.as_deref(), cfg.node_name.as_deref()).map_err(anyhow::Error::msg)?;
    let gpus = Gpus::init().map(Arc::new);
    let started_at = now_ms();
    let caps = {
        let (c, g) = (cfg.clone(), gpus.clone());
        let id = worker_id.clone();
        tokio::task::spawn_blocking(move || detect::detect(&c, &id, g.as_deref(), started_at)).await?
    };
    tracing::info!(
        worker_id,
        hardware_class = %caps.hardware_class,
        cores = caps.cpu.as_ref().map_or(0, |c| c.logical_cores),
        memory_mb = caps.memory_mb,
        gpus = caps.gpus.len(),
        slots = caps.slots,
        level = ?cfg.level,
        "capabilities detected"
    );
    // a monitor's NATS user may not change streams: it creates only what is missing
    streams::provision_if_missing(&bus).await?;

    let subjects = bus.subjects().clone();
    // Request/reply through the NATS services API, so `nats micro ls` lists every monitor.
    let service = hwsched_bus::micro::start(
        &bus,
        "hwsched-monitor",
        "hwsched monitor: capabilities and drain of one worker",
        [("worker_id".to_string(), worker_id.clone()), ("hardware_class".to_string(), caps.hardware_class.clone())]
            .into(),
    )
    .await?;
    let mut caps_requests =
        hwsched_bus::micro::endpoint(&service, "capabilities", subjects.worker_capabilities(&worker_id)).await?;
    let mut drain_requests = hwsched_bus::micro::endpoint(&service, "drain", subjects.worker_drain(&worker_id)).await?;
    let mut drain = drain::Drain::load(&bus, &worker_id).await?;
    bus.publish(subjects.worker_register(&worker_id), &caps).await?;

    // In observe-only mode another executor consumes this worker's assignments.
    let mut assignments = if cfg.observe_only {
        tracing::info!("observe-only: reporting telemetry, not executing assignments");
        None
    } else {
        let consumer = streams::durable(
            &bus,
            &streams::assignments(&bus, &worker_id, caps.slots, Duration::from_secs(cfg.ack_wait_s)),
        )
        .await?;
        Some(consumer.messages().await.context("consume assignments")?)
    };
    let mut cancels = bus.client().subscribe(subjects.control_cancel()).await.context("subscribe to cancels")?;

    let running = Arc::new(Running::default());
    let executor = Arc::new(Executor {
        bus: bus.clone(),
        records: streams::bucket(&bus, &subjects.tasks_bucket()).await?,
        attempts: streams::bucket(&bus, &subjects.attempts_bucket()).await?,
        worker_id: worker_id.clone(),
        hardware_class: caps.hardware_class.clone(),
        task_dir: cfg.task_dir.clone(),
        policy: Arc::new(policy::Policy::from_config(&cfg.policy).map_err(anyhow::Error::msg)?),
        running: running.clone(),
        ack_wait: Duration::from_secs(cfg.ack_wait_s),
    });
    let (caps_tx, caps_rx) = watch::channel(caps);
    let (state_tx, state_rx) = watch::channel(drain.state());
    let outbox = Arc::new(Outbox::new(cfg.buffer_batches));
    let last_heartbeat = Arc::new(std::sync::Mutex::new(None));
    let stop_telemetry = CancellationToken::new();
    let sender = {
        let (o, b, s) = (outbox.clone(), bus.clone(), stop_telemetry.clone());
        tokio::spawn(async move { o.run(b, s).await })
    };
    let ticker = tokio::spawn(
        telemetry::Loop {
            bus: bus.clone(),
            cfg,
            caps: caps_tx,
            gpus,
            running,
            state: state_rx,
            outbox: outbox.clone(),
            last_heartbeat: last_heartbeat.clone(),
        }
        .run(stop_telemetry.clone()),
    );
    let kill = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    telemetry.set_ready(true);
    tracing::info!(worker_id, "monitor ready");

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(req) = caps_requests.next() => {
                let caps = caps_rx.borrow().clone();
                hwsched_bus::micro::respond(&req, &caps).await;
            }
            Some(req) = drain_requests.next() => {
                match hwsched_bus::decode::<hwsched_proto::v1::DrainWorker>(req.message.headers.as_ref(), &req.message.payload) {
                    Ok(d) => match drain.apply(&d, executor.running.task_ids()).await {
                        Ok(reply) => {
                            state_tx.send_replace(drain.state());
                            // announced before the reply, on the same connection: once
                            // `hwsched drain` returns, the scheduler has it ahead of any new task
                            announce(&bus, &last_heartbeat, drain.state()).await;
                            hwsched_bus::micro::respond(&req, &reply).await;
                        }
                        Err(why) => hwsched_bus::micro::respond_error(&req, 500, why).await,
                    },
                    Err(e) => hwsched_bus::micro::respond_error(&req, hwsched_bus::micro::BAD_REQUEST, e.to_string()).await,
                }
            }
            Some(m) = cancels.next() => {
                if let Ok(c) = hwsched_bus::decode::<hwsched_proto::v1::CancelTask>(m.headers.as_ref(), &m.payload) {
                    if executor.cancel(&c.task_id) > 0 {
                        tracing::info!(task_id = %c.task_id, reason = %c.reason, "cancelling running task");
                    }
                }
            }
            next = async { match assignments.as_mut() { Some(a) => a.next().await, None => std::future::pending().await } } => match next {
                Some(Ok(msg)) => { tasks.spawn(executor.clone().handle(msg, kill.clone())); }
                Some(Err(e)) => tracing::warn!(error = %e, "assignment stream error"),
                None => anyhow::bail!("assignment consumer closed"),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

    // Leaving: take no new work, say so, let running tasks finish within the grace.
    drop(assignments);
    if let Err(e) = service.stop().await {
        tracing::debug!(error = %e, "NATS service not stopped cleanly");
    }
    telemetry.set_ready(false);
    state_tx.send_replace(WorkerState::Draining);
    if !tasks.is_empty() {
        tracing::info!(running = tasks.len(), grace_s = DRAIN_GRACE.as_secs(), "draining: waiting for running tasks");
        let drained = tokio::time::timeout(DRAIN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            kill.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }
    stop_telemetry.cancel();
    let _ = ticker.await;
    let _ = sender.await;
    flush_outbox(&bus, &outbox).await;
    let caps = caps_rx.borrow().clone();
    let offline = telemetry::heartbeat(&caps, WorkerState::Offline, vec![], &sampler::Reading::default(), u64::MAX, 0);
    bus.publish(subjects.worker_heartbeat(&worker_id), &offline).await?;
    tracing::info!(worker_id, "monitor stopped");
    Ok(())
}

/// Sends the last heartbeat again with `state`.
async fn announce(bus: &Bus, last: &std::sync::Mutex<Option<hwsched_proto::v1::WorkerHeartbeat>>, state: WorkerState) {
    let hb = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(mut hb) = hb {
        hb.state = state as i32;
        hb.timestamp_ms = now_ms();
        if let Err(e) = bus.publish(bus.subjects().worker_heartbeat(&hb.worker_id), &hb).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
    }
}

/// Sends what is still buffered, for at most a few seconds.
async fn flush_outbox(bus: &Bus, outbox: &Arc<Outbox>) {
    if outbox.is_empty() {
        return;
    }
    let stop = CancellationToken::new();
    let (o, b, s) = (outbox.clone(), bus.clone(), stop.clone());
    let sender = tokio::spawn(async move { o.run(b, s).await });
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while !outbox.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop.cancel();
    let _ = sender.await;
}
