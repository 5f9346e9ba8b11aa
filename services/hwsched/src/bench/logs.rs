//! `hwsched bench logs`: live output against the running system (a
//! scheduler and at least one monitor). Two tasks: one prints its clock
//! (`date +%s%N`) every `--interval-ms`, and a follower (`hwsched logs -f`'s
//! code, [`hwsched_client::Client::follow_logs`]) measures written -> seen per
//! line (same host, same clock); another prints `--bytes` of output while the
//! monitor's resident memory is sampled every 100 ms from /proc (so the
//! monitor must run on this host: `--monitor-pid`).

use std::time::{Duration, Instant};

use clap::Args;
use hwsched_bus::Bus;
use hwsched_client::Client;
use hwsched_proto::v1::OutputStream;

use crate::bench::shared::{percentile, run_id, submit};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Lines the latency task prints.
    #[arg(long, default_value_t = 200)]
    lines: u32,
    /// Time between its lines, ms.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Bytes the volume task prints (lines of 100 bytes), e.g. 104857600.
    #[arg(long, default_value_t = 100 << 20)]
    bytes: u64,
    /// The monitor's process id, to sample its resident memory while the volume task runs.
    #[arg(long)]
    monitor_pid: Option<u32>,
    /// Give up after this long, s.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
}

pub async fn run(bus: &Bus, args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::from_bus(bus.clone());
    let limit = Duration::from_secs(args.timeout_s);
    let id = format!("bench-logs-{}", run_id());
    let script =
        format!("for i in $(seq {}); do date +%s%N; sleep {:.3}; done", args.lines, args.interval_ms as f64 / 1000.0);
    let mut follow = client.follow_logs(&id, None).await?;
    submit(bus, &task(&id, &script)).await?.await?;
    let mut lat_ms: Vec<f64> = Vec::new();
    let mut partial = String::new();
    tokio::time::timeout(limit, async {
        while let Some(c) = follow.next().await? {
            let seen_ns = now_ns();
            if c.stream() != OutputStream::Stdout {
                continue;
            }
            partial.push_str(&String::from_utf8_lossy(&c.data));
            while let Some(i) = partial.find('\n') {
                if let Ok(written_ns) = partial[..i].trim().parse::<i128>() {
                    lat_ms.push((seen_ns - written_ns) as f64 / 1e6);
                }
                partial.drain(..=i);
            }
        }
        anyhow::Ok(())
    })
    .await??;
    lat_ms.sort_by(f64::total_cmp);
    println!(
        "live log latency, line written -> seen by a follower: {} lines, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lat_ms.len(),
        percentile(&lat_ms, 0.5),
        percentile(&lat_ms, 0.99),
        lat_ms.last().copied().unwrap_or_default()
    );
    volume(bus, &client, &args, limit).await
}

/// The volume task, with the monitor's memory sampled while it runs.
async fn volume(bus: &Bus, client: &Client, args: &LogsArgs, limit: Duration) -> anyhow::Result<()> {
    let id = format!("bench-logs-vol-{}", run_id());
    // 99 characters and a newline per line
    let script = format!("yes {} | head -c {}", "x".repeat(98), args.bytes);
    let mut follow = client.follow_logs(&id, None).await?;
    let before = args.monitor_pid.and_then(rss_kib);
    let started = Instant::now();
    submit(bus, &task(&id, &script)).await?.await?;
    let (mut seen, mut dropped, mut peak) = (0u64, 0u64, before.unwrap_or(0));
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::time::timeout(limit, async {
        loop {
            tokio::select! {
                c = follow.next() => match c? {
                    Some(c) => {
                        seen += c.data.len() as u64;
                        dropped += c.dropped;
                    }
                    None => break,
                },
                _ = tick.tick() => peak = peak.max(args.monitor_pid.and_then(rss_kib).unwrap_or(0)),
            }
        }
        anyhow::Ok(())
    })
    .await??;
    let r = client.attempt_result(&id, None).await?;
    println!(
        "volume: {} bytes written in {:.1} s, {} seen live ({} batches dropped), stored: {}",
        r.stdout_bytes,
        started.elapsed().as_secs_f64(),
        seen,
        dropped,
        r.logs_stored
    );
    match before {
        Some(b) => println!(
            "monitor resident memory: {:.1} MiB before, peak {:.1} MiB while the task printed",
            b as f64 / 1024.0,
            peak as f64 / 1024.0
        ),
        None => println!("monitor resident memory: not sampled (give --monitor-pid of a monitor on this host)"),
    }
    Ok(())
}

fn task(id: &str, script: &str) -> hwsched_proto::v1::TaskRequest {
    let mut t = hwsched_client::task(["sh", "-c", script]);
    t.task_id = id.to_string();
    t.max_attempts = 1;
    t
}

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// VmRSS of `pid`, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
