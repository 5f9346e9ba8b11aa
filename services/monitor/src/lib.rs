//! The hwsched monitor, one per worker node: detects this host's capabilities,
//! registers them, streams telemetry and heartbeats every interval, and runs
//! the tasks the scheduler assigns to this worker.
#![forbid(unsafe_code)]

pub mod config;
pub mod detect;
pub mod executor;
pub mod gpu;
pub mod host;
pub mod probes;
pub mod sampler;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use futures::StreamExt;
use hwsched_bus::{
    now_ms,
    streams::{self, Durable},
    Bus, Stream,
};
use hwsched_proto::{
    v1::{MetricSample, MetricsBatch, WorkerCapabilities, WorkerHeartbeat, WorkerState},
    SCHEMA_VERSION,
};
use hwsched_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

pub use config::MonitorConfig;
use executor::{Executor, Running};
use gpu::Gpus;
use sampler::Sampler;

/// How often running tasks' process trees are sampled.
pub const TASK_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// How long running tasks may finish after shutdown is requested before they are killed.
pub const DRAIN_GRACE: Duration = Duration::from_secs(20);

/// Runs the monitor until `shutdown` is cancelled.
pub async fn run(
    cfg: MonitorConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker_id = detect::worker_id(cfg.worker_id.as_deref()).map_err(anyhow::Error::msg)?;
    let gpus = Gpus::init();
    let caps = detect::detect(&cfg, &worker_id, gpus.as_ref(), now_ms());
    tracing::info!(
        worker_id,
        hardware_class = %caps.hardware_class,
        cores = caps.cpu.as_ref().map_or(0, |c| c.logical_cores),
        memory_mb = caps.memory_mb,
        gpus = caps.gpus.len(),
        slots = caps.slots,
        "capabilities detected"
    );
    streams::provision(&bus).await?;

    let subjects = bus.subjects().clone();
    let mut caps_requests = bus
        .client()
        .subscribe(subjects.worker_capabilities(&worker_id))
        .await
        .context("subscribe to capability requests")?;
    bus.publish(subjects.worker_register(&worker_id), &caps).await?;

    let consumer = streams::durable(
        &bus,
        &Durable::new(Stream::Assign, format!("monitor-{worker_id}"))
            .filter(subjects.assign(&worker_id))
            .max_ack_pending(i64::from(caps.slots.max(1))),
    )
    .await?;
    let mut assignments = consumer.messages().await.context("consume assignments")?;

    let running = Arc::new(Mutex::new(Running::default()));
    let executor = Arc::new(Executor {
        bus: bus.clone(),
        worker_id: worker_id.clone(),
        hardware_class: caps.hardware_class.clone(),
        task_dir: cfg.task_dir.clone(),
        running: running.clone(),
    });
    let kill = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let telemetry_loop = tokio::spawn(telemetry_loop(
        bus.clone(),
        caps.clone(),
        gpus,
        running.clone(),
        cfg.interval_ms,
        shutdown.clone(),
    ));
    telemetry.set_ready(true);
    tracing::info!(worker_id, "monitor ready");

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(req) = caps_requests.next() => {
                if let Some(reply) = req.reply {
                    let _ = bus.client().publish(reply, hwsched_bus::codec::encode(&caps)).await;
                }
            }
            next = assignments.next() => match next {
                Some(Ok(msg)) => { tasks.spawn(executor.clone().handle(msg, kill.clone())); }
                Some(Err(e)) => tracing::warn!(error = %e, "assignment stream error"),
                None => anyhow::bail!("assignment consumer closed"),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }

    drop(assignments);
    telemetry.set_ready(false);
    if !tasks.is_empty() {
        tracing::info!(running = tasks.len(), grace_s = DRAIN_GRACE.as_secs(), "waiting for running tasks");
        let drained = tokio::time::timeout(DRAIN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            kill.cancel();
            while tasks.join_next().await.is_some() {}
        }
    }
    let _ = telemetry_loop.await;
    let offline = heartbeat(&caps, WorkerState::Offline, &Running::default(), &sampler::Reading::default(), u64::MAX);
    bus.publish(subjects.worker_heartbeat(&worker_id), &offline).await?;
    tracing::info!(worker_id, "monitor stopped");
    Ok(())
}

/// Every interval: sample the host, publish metrics and the heartbeat, account running tasks.
async fn telemetry_loop(
    bus: Bus,
    caps: WorkerCapabilities,
    gpus: Option<Gpus>,
    running: Arc<Mutex<Running>>,
    interval_ms: u64,
    shutdown: CancellationToken,
) {
    let mut sampler = match Sampler::new() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read host statistics: no telemetry from this worker");
            return;
        }
    };
    let subjects = bus.subjects().clone();
    let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Tasks are sampled more often than the host so short tests still get a measurement.
    let mut track_tick = tokio::time::interval(TASK_SAMPLE_INTERVAL);
    track_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_gpus = Vec::new();
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = track_tick.tick() => {
                track_running(&mut sampler, &running, &last_gpus);
                continue;
            }
            _ = tick.tick() => {}
        }
        seq += 1;
        let reading = sampler.tick(gpus.as_ref());
        last_gpus = reading.gpus.clone();
        let snapshot = Running {
            tasks: running.lock().unwrap_or_else(|p| p.into_inner()).tasks.clone(),
            usage: Default::default(),
        };
        let mut samples = reading.samples.clone();
        samples.push(MetricSample {
            metric: "worker.slots_used".into(),
            device: "worker".into(),
            value: snapshot.tasks.len() as f64,
        });
        let batch = MetricsBatch {
            schema_version: SCHEMA_VERSION,
            worker_id: caps.worker_id.clone(),
            timestamp_ms: now_ms(),
            samples,
        };
        if let Err(e) = bus.publish_durable(subjects.metrics(&caps.worker_id), &batch, None, None).await {
            tracing::warn!(error = %e, "metrics batch not stored");
        }
        let hb = heartbeat(&caps, WorkerState::Active, &snapshot, &reading, seq);
        if let Err(e) = bus.publish(subjects.worker_heartbeat(&caps.worker_id), &hb).await {
            tracing::warn!(error = %e, "heartbeat not sent");
        }
    }
}

/// Samples every running task's process tree. Holds the lock while sampling so an
/// ending task never loses its accumulator.
fn track_running(sampler: &mut Sampler, running: &Mutex<Running>, gpus: &[gpu::GpuSample]) {
    let mut r = running.lock().unwrap_or_else(|p| p.into_inner());
    if !r.usage.is_empty() {
        sampler.track(&mut r.usage, gpus);
    }
}

fn heartbeat(
    caps: &WorkerCapabilities,
    state: WorkerState,
    running: &Running,
    r: &sampler::Reading,
    seq: u64,
) -> WorkerHeartbeat {
    WorkerHeartbeat {
        schema_version: SCHEMA_VERSION,
        worker_id: caps.worker_id.clone(),
        state: state as i32,
        capabilities_revision: caps.revision,
        slots_total: caps.slots,
        slots_used: running.tasks.len() as u32,
        running_task_ids: running.tasks.iter().cloned().collect(),
        cpu_util_pct: r.cpu_util_pct,
        memory_used_pct: r.memory_used_pct,
        max_temp_c: r.max_temp_c,
        throttling: r.throttling,
        seq,
        timestamp_ms: now_ms(),
    }
}
