//! `hwsched bench assign`: end-to-end load generator for the scheduler. It
//! plays N simulated workers (registration, heartbeats, an executor that
//! acknowledges each assignment and reports success at once) and a producer
//! that submits tasks through JetStream at a fixed rate or as fast as
//! acknowledgements allow; it measures submit → assignment latency and
//! throughput. The scheduler under test runs as its own process.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus, Stream};
use hwsched_config::NatsConfig;
use hwsched_proto::{
    v1::{
        CpuInfo, ExecutionResult, TaskAssignment, TaskRequest, TaskStatus, WorkerCapabilities, WorkerHeartbeat,
        WorkerState,
    },
    Message,
};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Submit → assignment throughput and latency against a running scheduler.
    Assign(AssignArgs),
    /// Sample → alert notification latency against a running alerting service.
    Alerts(crate::bench_alerts::AlertsArgs),
    /// Metric rows per second through a running recorder into ClickHouse.
    Ingest(crate::bench_ingest::IngestArgs),
    /// Producer → result through the running system with real monitors: a
    /// throughput run, or a soak at a fixed rate sampling each service's memory.
    E2e(crate::bench_e2e::E2eArgs),
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    workers: usize,
    /// Slots per worker.
    #[arg(long, default_value_t = 8)]
    slots: u32,
    /// Tasks to submit.
    #[arg(long, default_value_t = 20_000)]
    tasks: usize,
    /// Submissions per second (0 = as fast as JetStream acknowledges them).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unacknowledged submissions in flight.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Give up waiting for assignments after this long, s.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

pub async fn run(
    nats: &NatsConfig,
    clickhouse: &hwsched_config::ClickHouseConfig,
    cmd: BenchCommand,
) -> anyhow::Result<()> {
    let bus = Bus::connect(nats, "hwsched-bench", Duration::from_secs(5)).await?;
    let args = match cmd {
        BenchCommand::Assign(args) => args,
        BenchCommand::Alerts(args) => return crate::bench_alerts::run(&bus, args).await,
        BenchCommand::Ingest(args) => return crate::bench_ingest::run(&bus, clickhouse, args).await,
        BenchCommand::E2e(args) => return crate::bench_e2e::run(&bus, args).await,
    };
    streams::provision(&bus).await?;
    let run_id = format!("{:x}", now_ms() % 0xffff_ffff);
    let ids: Vec<String> = (0..args.workers).map(|i| format!("bench-{run_id}-w{i:05}")).collect();
    let workers = Arc::new(Workers::new(&ids, args.slots));
    let registered = workers.register(&bus).await?;
    let hb = tokio::spawn(workers.clone().heartbeats(bus.clone()));
    let answering = tokio::spawn(workers.clone().answer_capabilities(bus.clone()));
    eprintln!("{registered} workers registered; waiting 3 s for the scheduler to see them");
    tokio::time::sleep(Duration::from_secs(3)).await;

    let latencies = Arc::new(Mutex::new(Vec::with_capacity(args.tasks)));
    let assigned = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let consumer =
        tokio::spawn(execute(bus.clone(), latencies.clone(), assigned.clone(), duplicates.clone(), run_id.clone()));

    let start = Instant::now();
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..args.tasks {
        if args.rate > 0.0 {
            let due = start + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let t = TaskRequest {
            task_id: format!("bench-{run_id}-{i:07}"),
            name: "bench".into(),
            command: vec!["true".into()],
            submitted_at_ms: now_ms(),
            ..Default::default()
        };
        acks.push(std::future::IntoFuture::into_future(submit(&bus, &t).await?));
        while acks.len() >= args.window {
            acks.next().await.transpose().context("submission ack")?;
        }
    }
    while let Some(a) = acks.next().await {
        a.context("submission ack")?;
    }
    let submitted_in = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    while (assigned.load(Ordering::Relaxed) as usize) < args.tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_in = start.elapsed();
    hb.abort();
    answering.abort();
    consumer.abort();

    let mut lat = latencies.lock().map_err(|_| anyhow::anyhow!("latency lock poisoned"))?.clone();
    lat.sort_unstable();
    let n = lat.len();
    let pct = |p: f64| lat.get(((n as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0);
    println!(
        "workers {} x {} slots, tasks {}, rate {}",
        args.workers,
        args.slots,
        args.tasks,
        if args.rate > 0.0 { format!("{}/s", args.rate) } else { "max".into() }
    );
    println!(
        "submitted in {:.2} s ({:.0}/s)",
        submitted_in.as_secs_f64(),
        args.tasks as f64 / submitted_in.as_secs_f64()
    );
    println!(
        "assigned {n} of {} in {:.2} s: {:.0} assignments/s",
        args.tasks,
        all_in.as_secs_f64(),
        n as f64 / all_in.as_secs_f64()
    );
    let dups = duplicates.load(Ordering::Relaxed);
    println!("duplicate assignments {dups} ({:.3} % of tasks)", 100.0 * dups as f64 / args.tasks.max(1) as f64);
    println!(
        "submit -> assignment received: p50 {} ms, p99 {} ms, max {} ms",
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or(0)
    );
    if let Some(cpu) = own_cpu_s() {
        println!("load generator CPU {cpu:.1} s");
    }
    anyhow::ensure!(n == args.tasks, "only {n} of {} tasks were assigned within {} s", args.tasks, args.timeout_s);
    Ok(())
}

/// Publishes `t` on the submission subject with its task id as
/// `Nats-Msg-Id`; the acknowledgement is left to the caller to await, so
/// that many submissions can be in flight.
pub(crate) async fn submit(
    bus: &Bus,
    t: &TaskRequest,
) -> anyhow::Result<async_nats::jetstream::context::PublishAckFuture> {
    let mut h = hwsched_bus::proto_headers(None);
    h.insert(hwsched_bus::MSG_ID, t.task_id.as_str());
    bus.jetstream()
        .publish_with_headers(bus.subjects().tasks_submit(), h, t.encode_to_vec().into())
        .await
        .context("submit")
}

/// CPU time this process used so far (user + system), s; Linux only.
fn own_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the command name (which may contain spaces) in parentheses
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The simulated fleet.
struct Workers {
    slots: u32,
    caps: HashMap<String, WorkerCapabilities>,
}

impl Workers {
    fn new(ids: &[String], slots: u32) -> Self {
        let caps = ids
            .iter()
            .map(|id| {
                let c = WorkerCapabilities {
                    schema_version: 1,
                    worker_id: id.clone(),
                    hostname: id.clone(),
                    cpu: Some(CpuInfo { logical_cores: 64, arch: "x86_64".into(), ..Default::default() }),
                    memory_mb: 256 * 1024,
                    slots,
                    backends: vec!["cpu".into()],
                    hardware_class: "cpu:bench".into(),
                    revision: 1,
                    ..Default::default()
                };
                (id.clone(), c)
            })
            .collect();
        Self { slots, caps }
    }

    async fn register(&self, bus: &Bus) -> anyhow::Result<usize> {
        for (id, c) in &self.caps {
            bus.client().publish(bus.subjects().worker_register(id), c.encode_to_vec().into()).await?;
        }
        bus.client().flush().await?;
        Ok(self.caps.len())
    }

    /// Every worker's heartbeat, once a second.
    async fn heartbeats(self: Arc<Self>, bus: Bus) {
        let mut seq = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            seq += 1;
            for id in self.caps.keys() {
                let hb = WorkerHeartbeat {
                    schema_version: 1,
                    worker_id: id.clone(),
                    state: WorkerState::Active as i32,
                    capabilities_revision: 1,
                    slots_total: self.slots,
                    seq,
                    timestamp_ms: now_ms(),
                    interval_ms: 1000,
                    // an external executor: running tasks are not listed
                    observe_only: true,
                    ..Default::default()
                };
                let _ = bus.client().publish(bus.subjects().worker_heartbeat(id), hb.encode_to_vec().into()).await;
            }
        }
    }

    async fn answer_capabilities(self: Arc<Self>, bus: Bus) {
        let Ok(mut sub) = bus.client().subscribe(bus.subjects().worker_capabilities("*")).await else { return };
        while let Some(m) = sub.next().await {
            let id = m.subject.as_str().split('.').rev().nth(1).unwrap_or("");
            if let (Some(reply), Some(c)) = (m.reply, self.caps.get(id)) {
                let _ = bus.client().publish(reply, c.encode_to_vec().into()).await;
            }
        }
    }
}

/// The fleet's executor: takes every assignment of this run, records its
/// latency, and reports success at once.
async fn execute(
    bus: Bus,
    latencies: Arc<Mutex<Vec<u64>>>,
    assigned: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
    run_id: String,
) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let durable = streams::Durable::new(Stream::Assign, format!("bench-{run_id}"))
        // the only executor on this NATS: every worker's assignments
        .filter(bus.subjects().assign("*"))
        .max_ack_pending(100_000);
    let mut messages = streams::durable(&bus, &durable).await?.messages().await?;
    while let Some(m) = messages.next().await {
        let m = m.map_err(|e| anyhow::anyhow!("assignment consumer: {e}"))?;
        let received = now_ms();
        let a = TaskAssignment::decode(m.payload.as_ref())?;
        let t = a.task.clone().unwrap_or_default();
        // a task assigned again (a scheduler that took over re-sent it) is counted apart
        let fresh = seen.insert(t.task_id.clone());
        if fresh {
            if let Ok(mut l) = latencies.lock() {
                l.push(u64::try_from(received - t.submitted_at_ms).unwrap_or(0));
            }
            assigned.fetch_add(1, Ordering::Relaxed);
        } else {
            duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let _ = m.ack().await;
        let r = ExecutionResult {
            schema_version: 1,
            task_id: t.task_id.clone(),
            attempt: a.attempt,
            worker_id: a.worker_id.clone(),
            status: TaskStatus::Succeeded as i32,
            started_at_ms: received,
            finished_at_ms: now_ms(),
            hardware_class: "cpu:bench".into(),
            name: t.name.clone(),
            ..Default::default()
        };
        let mut h = hwsched_bus::proto_headers(None);
        h.insert(hwsched_bus::MSG_ID, format!("{}:{}", r.task_id, r.attempt).as_str());
        let _ = bus
            .jetstream()
            .publish_with_headers(bus.subjects().results(&r.worker_id, &r.task_id), h, r.encode_to_vec().into())
            .await;
    }
    Ok(())
}
