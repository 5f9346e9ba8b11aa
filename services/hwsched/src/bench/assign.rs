//! `hwsched bench assign`: end-to-end load generator for the scheduler. It
//! plays N simulated workers (registration, heartbeats, an executor that
//! acknowledges each assignment and reports success at once: `fleet.rs`) and a
//! producer that submits tasks through JetStream at a fixed rate or as fast as
//! acknowledgements allow; it measures submit → assignment latency and
//! throughput. The scheduler under test runs as its own process.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_proto::v1::TaskRequest;

use crate::bench::{
    fleet::{execute, Workers},
    shared::{own_cpu_s, percentile, run_id, submit},
};

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

pub async fn run(bus: &Bus, args: AssignArgs) -> anyhow::Result<()> {
    streams::provision(bus).await?;
    let run_id = run_id();
    let ids: Vec<String> = (0..args.workers).map(|i| format!("bench-{run_id}-w{i:05}")).collect();
    let workers = Arc::new(Workers::new(&ids, args.slots));
    let registered = workers.register(bus).await?;
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
    submit_all(bus, &args, &run_id, start).await?;
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
    print_summary(&args, &lat, submitted_in, all_in, duplicates.load(Ordering::Relaxed));
    let n = lat.len();
    anyhow::ensure!(n == args.tasks, "only {n} of {} tasks were assigned within {} s", args.tasks, args.timeout_s);
    Ok(())
}

/// Submits `--tasks` tasks at `--rate` (or as fast as acknowledged), at most
/// `--window` unacknowledged; returns when every submission is acknowledged.
async fn submit_all(bus: &Bus, args: &AssignArgs, run_id: &str, start: Instant) -> anyhow::Result<()> {
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
        acks.push(std::future::IntoFuture::into_future(submit(bus, &t).await?));
        while acks.len() >= args.window {
            acks.next().await.transpose().context("submission ack")?;
        }
    }
    while let Some(a) = acks.next().await {
        a.context("submission ack")?;
    }
    Ok(())
}

/// Prints the run's throughput and latency (`lat`: sorted, ms).
fn print_summary(args: &AssignArgs, lat: &[u64], submitted_in: Duration, all_in: Duration, dups: u64) {
    let n = lat.len();
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
    println!("duplicate assignments {dups} ({:.3} % of tasks)", 100.0 * dups as f64 / args.tasks.max(1) as f64);
    println!(
        "submit -> assignment received: p50 {} ms, p99 {} ms, max {} ms",
        percentile(lat, 0.5),
        percentile(lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    if let Some(cpu) = own_cpu_s() {
        println!("load generator CPU {cpu:.1} s");
    }
}
