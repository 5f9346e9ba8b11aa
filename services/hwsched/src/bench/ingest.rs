//! `hwsched bench ingest`: metric rows per second through a running recorder
//! into ClickHouse. It publishes `--rows` samples (batches of
//! `--samples-per-batch`, like a monitor's) to the metrics stream, as fast as
//! JetStream acknowledges them, and polls ClickHouse until every row of its
//! run is stored; it reports the publish rate and the end-to-end ingest rate
//! (first publish to last row stored). `scripts/bench-ingest.sh` starts a
//! nats-server, ClickHouse and the recorder; publishing while the recorder
//! is stopped and starting it afterwards (`--no-wait`, then `--wait-only`)
//! measures a backlog catch-up instead.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::{stream::FuturesUnordered, StreamExt};
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_config::ClickHouseConfig;
use hwsched_proto::{
    v1::{MetricSample, MetricsBatch},
    Message,
};

use crate::bench::shared::run_id;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Metric rows (samples) to publish.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Samples per batch (one batch = one message).
    #[arg(long, default_value_t = 20)]
    samples_per_batch: usize,
    /// Simulated workers the batches are spread over.
    #[arg(long, default_value_t = 100)]
    workers: usize,
    /// Unacknowledged publishes in flight.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Run id (worker ids are `ingest-<run>-wNNN`); default: a fresh one.
    #[arg(long)]
    run: Option<String>,
    /// Publish only; do not wait for ClickHouse.
    #[arg(long, conflicts_with = "wait_only")]
    no_wait: bool,
    /// Do not publish: wait for `--rows` rows of `--run` to be stored.
    #[arg(long, requires = "run")]
    wait_only: bool,
    /// Give up waiting after this long, s.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

pub async fn run(bus: &Bus, clickhouse: &ClickHouseConfig, args: IngestArgs) -> anyhow::Result<()> {
    streams::provision(bus).await?;
    let run = args.run.clone().unwrap_or_else(run_id);
    let start = Instant::now();
    if !args.wait_only {
        publish(bus, &run, &args).await?;
        let s = start.elapsed().as_secs_f64();
        println!("run {run}: published {} rows in {s:.2} s: {:.0} rows/s", args.rows, args.rows as f64 / s);
    }
    if args.no_wait {
        return Ok(());
    }
    let store = hwsched_store::Store::connect(clickhouse).await.context("connect to ClickHouse")?;
    let pattern = format!("ingest-{run}-w%");
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let want = args.rows as u64;
    loop {
        let n = store.count_metrics_like(&pattern).await?;
        if n >= want {
            let s = start.elapsed().as_secs_f64();
            println!(
                "run {run}: {n} rows stored {s:.2} s after the first publish: {:.0} rows/s end to end",
                n as f64 / s
            );
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "run {run}: {n} rows stored after {} s", args.timeout_s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish(bus: &Bus, run: &str, args: &IngestArgs) -> anyhow::Result<()> {
    use hwsched_proto::metric::{CPU_UTIL_PCT, GPU_MEM_USED_PCT, GPU_TEMP_C, GPU_UTIL_PCT, MEM_USED_PCT};
    let metrics = [CPU_UTIL_PCT, MEM_USED_PCT, GPU_UTIL_PCT, GPU_MEM_USED_PCT, GPU_TEMP_C];
    let batches = args.rows.div_ceil(args.samples_per_batch.max(1));
    let base = now_ms();
    let mut in_flight = FuturesUnordered::new();
    let mut left = args.rows;
    for b in 0..batches {
        let worker = format!("ingest-{run}-w{:03}", b % args.workers.max(1));
        let n = left.min(args.samples_per_batch);
        left -= n;
        // one batch per worker per second of simulated time
        let at = base - ((batches - b) / args.workers.max(1)) as i64 * 1000;
        let samples = (0..n)
            .map(|i| MetricSample {
                metric: metrics[i % metrics.len()].into(),
                device: format!("dev{}", i / metrics.len()),
                value: ((b * 31 + i * 7) % 1000) as f64 / 10.0,
            })
            .collect();
        let batch = MetricsBatch {
            schema_version: hwsched_proto::SCHEMA_VERSION,
            worker_id: worker.clone(),
            timestamp_ms: at,
            samples,
        };
        let ack = bus.jetstream().publish(bus.subjects().metrics(&worker), batch.encode_to_vec().into()).await?;
        in_flight.push(std::future::IntoFuture::into_future(ack));
        if in_flight.len() >= args.window {
            if let Some(r) = in_flight.next().await {
                r.context("publish not acknowledged")?;
            }
        }
    }
    while let Some(r) = in_flight.next().await {
        r.context("publish not acknowledged")?;
    }
    Ok(())
}
