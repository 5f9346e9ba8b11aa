//! The hwsched monitor, one per worker node: detects this host's capabilities,
//! registers them, streams telemetry and heartbeats every interval, and runs
//! the tasks the scheduler assigns to this worker.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod config;
pub mod detect;
pub mod drain;
pub mod executor;
pub mod gpu;
pub mod gpu_faults;
pub mod host;
pub mod inputs;
pub mod metrics;
pub mod outbox;
pub mod output;
pub mod own;
pub mod policy;
pub mod probes;
pub mod process;
pub mod rapl;
pub mod sampler;
pub mod telemetry;
pub mod usage;
pub mod work;

use std::{convert::Infallible, future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_proto::v1::{WorkerCapabilities, WorkerState};
use hwsched_shutdown::Components;
use hwsched_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

pub use config::MonitorConfig;
use executor::{Executor, Running};
use gpu::Gpus;
use outbox::Outbox;
use tokio::sync::watch;
use work::Work;
pub use work::DRAIN_GRACE;

/// How long the monitor's components may take to stop once shutdown is
/// requested: the drain of running tasks, then sending what is buffered.
const STOP_GRACE: Duration = Duration::from_secs(DRAIN_GRACE.as_secs() + 10);

/// Runs the monitor until `shutdown` is cancelled, or until one of its
/// components (work loop, telemetry, metrics sender) ends: then it stops as on
/// a signal and returns an error naming the component.
pub async fn run(
    cfg: MonitorConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    run_with(cfg, bus, telemetry, shutdown, telemetry::Loop::run).await
}

/// [`run`] with the telemetry loop given by the caller (`telemetry::Loop::run`
/// in the service). Nothing outside the process can end the real loop, so a
/// test wraps it to end it and see the monitor stop.
#[doc(hidden)]
pub async fn run_with<F, Fut>(
    cfg: MonitorConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
    telemetry_loop: F,
) -> anyhow::Result<()>
where
    F: FnOnce(telemetry::Loop, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), telemetry::LoopError>> + Send,
{
    let Started { work, caps: caps_tx, gpus, running } = start(&cfg, &bus, &telemetry).await?;
    let worker_id = work.executor.worker_id.clone();
    let caps = work.caps.clone();
    let outbox = Arc::new(Outbox::new(cfg.buffer_batches));
    let ticker = telemetry::Loop {
        bus: bus.clone(),
        cfg,
        caps: caps_tx,
        gpus,
        running,
        state: work.state.subscribe(),
        outbox: outbox.clone(),
        last_heartbeat: work.last_heartbeat.clone(),
    };
    // Telemetry outlives the work loop: heartbeats say DRAINING while tasks finish.
    let stop_telemetry = CancellationToken::new();
    let mut components = Components::<anyhow::Error>::new(shutdown.clone()).grace(STOP_GRACE);
    components.add("telemetry", telemetry_loop(ticker, stop_telemetry.clone()));
    let (o, b, s) = (outbox.clone(), bus.clone(), stop_telemetry.clone());
    components.add("metrics sender", async move {
        o.run(b, s).await;
        Ok::<(), Infallible>(())
    });
    components.add("work loop", work.run(&telemetry, &shutdown, stop_telemetry));
    telemetry.set_ready(true);
    tracing::info!(worker_id, "monitor ready");
    let (slots, cores) = {
        let c = caps.borrow();
        (c.slots, c.cpu.as_ref().map_or(0, |c| c.logical_cores))
    };
    if let Some(why) = hwsched_proto::slots_beyond_cores(slots, cores) {
        tracing::warn!(slots, cores, "{why}");
    }
    let stopped = components.run().await;

    flush_outbox(&bus, &outbox).await;
    let caps = caps.borrow().clone();
    let offline = telemetry::heartbeat(&caps, WorkerState::Offline, vec![], &sampler::Reading::default(), u64::MAX, 0);
    let said = bus.publish(bus.subjects().worker_heartbeat(&worker_id), &offline).await;
    stopped?;
    said?;
    tracing::info!(worker_id, "monitor stopped");
    Ok(())
}
/// What [`start`] sets up: the work loop, and what the telemetry loop shares with it.
struct Started {
    work: Work,
    caps: watch::Sender<WorkerCapabilities>,
    gpus: Option<Arc<Gpus>>,
    running: Arc<Running>,
}

/// Detects capabilities, registers them, opens the endpoints and consumers.
async fn start(cfg: &MonitorConfig, bus: &Bus, telemetry: &Telemetry) -> anyhow::Result<Started> {
    let (worker_id, gpus, caps) = detect_capabilities(cfg).await?;
    // a monitor's NATS user may not change streams: it creates only what is missing
    streams::provision_if_missing(bus).await?;

    let subjects = bus.subjects().clone();
    // Request/reply through the NATS services API, so `nats micro ls` lists every monitor.
    let service = hwsched_bus::micro::start(
        bus,
        "hwsched-monitor",
        "hwsched monitor: capabilities and drain of one worker",
        [("worker_id".to_string(), worker_id.clone()), ("hardware_class".to_string(), caps.hardware_class.clone())]
            .into(),
    )
    .await?;
    let caps_requests =
        hwsched_bus::micro::endpoint(&service, "capabilities", subjects.worker_capabilities(&worker_id)).await?;
    let drain_requests = hwsched_bus::micro::endpoint(&service, "drain", subjects.worker_drain(&worker_id)).await?;
    let drain = drain::Drain::load(bus, &worker_id).await?;
    bus.publish(subjects.worker_register(&worker_id), &caps).await?;

    // In observe-only mode another executor consumes this worker's assignments.
    let assignments = if cfg.observe_only {
        tracing::info!("observe-only: reporting telemetry, not executing assignments");
        None
    } else {
        let durable = streams::assignments(bus, &worker_id, caps.slots, Duration::from_secs(cfg.ack_wait_s));
        Some(streams::consume(bus, &durable).await.context("consume assignments")?)
    };
    let cancels = bus.client().subscribe(subjects.control_cancel()).await.context("subscribe to cancels")?;

    let running = Arc::new(Running::default());
    let policy = policy::Policy::from_config(&cfg.policy).map_err(anyhow::Error::msg)?;
    let outputs = output::Outputs::open(bus, &cfg.output, policy.run_as.is_some()).await?;
    let inputs = inputs::Inputs::open(cfg, &worker_id, bus, telemetry).map_err(anyhow::Error::msg)?;
    let cgroups = cgroup::setup(&cfg.cgroups, &worker_id);
    let executor = Arc::new(Executor {
        bus: bus.clone(),
        records: streams::bucket(bus, &subjects.tasks_bucket()).await?,
        attempts: streams::bucket(bus, &subjects.attempts_bucket()).await?,
        worker_id,
        hardware_class: caps.hardware_class.clone(),
        task_dir: cfg.task_dir.clone(),
        policy: Arc::new(policy),
        inputs: Arc::new(inputs),
        running: running.clone(),
        ack_wait: Duration::from_secs(cfg.ack_wait_s),
        outputs,
        cgroups,
        fail_while: cfg.test_only_fail_while.clone(),
        // without NVML an empty ledger: no attempt is ever a GPU fault
        gpu_faults: gpus.as_ref().map(|g| g.faults()).unwrap_or_default(),
    });
    let (caps_tx, caps_rx) = watch::channel(caps);
    let work = Work {
        bus: bus.clone(),
        service,
        caps_requests,
        drain_requests,
        state: watch::channel(drain.state()).0,
        drain,
        assignments,
        cancels,
        executor,
        caps: caps_rx,
        last_heartbeat: Arc::new(std::sync::Mutex::new(None)),
    };
    Ok(Started { work, caps: caps_tx, gpus, running })
}

/// This worker's id, its GPUs and its capabilities as detected at start.
async fn detect_capabilities(cfg: &MonitorConfig) -> anyhow::Result<(String, Option<Arc<Gpus>>, WorkerCapabilities)> {
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
    Ok((worker_id, gpus, caps))
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
