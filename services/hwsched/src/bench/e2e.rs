//! `hwsched bench e2e`: producer → result through the whole running system
//! (scheduler, real monitors running each task's command, learner, recorder).
//! It submits tasks through JetStream, either as fast as the system finishes
//! them (a window of unfinished tasks) or at a fixed rate (open loop: a
//! system that falls behind shows as a growing backlog and latency), reads
//! every result from `HWS_RESULTS`, and samples the resident memory of the
//! processes it is told about, so that a soak shows whether any service
//! leaks. It reports every `--report-s` and sums up at the end.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use async_nats::jetstream::{
    consumer::{self, DeliverPolicy},
    context::PublishError,
    publish::PublishAck,
};
use clap::Args;
use futures::StreamExt;
use hwsched_bus::{now_ms, Bus, Stream};
use hwsched_proto::{
    v1::{ExecutionResult, TaskRequest, TaskStatus},
    Message,
};

use crate::bench::shared::{percentile, run_id, submit};

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Tasks per second; 0 = as fast as they finish, `--window` unfinished at most.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Tasks to submit (default 10,000 unless `--duration-s` is given).
    #[arg(long)]
    tasks: Option<usize>,
    /// Submit for this long, s (a soak), instead of a number of tasks.
    #[arg(long)]
    duration_s: Option<u64>,
    /// Unfinished tasks at most when `--rate` is 0.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// The command every task runs, split at whitespace (no shell).
    #[arg(long, default_value = "true")]
    command: String,
    /// A process whose resident memory is sampled every 5 s, as NAME=PID
    /// (repeatable; read from /proc, so the process must run on this host).
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = parse_pid)]
    pids: Vec<(String, u32)>,
    /// A progress line every this many seconds.
    #[arg(long, default_value_t = 30)]
    report_s: u64,
    /// Memory samples taken in the first this many seconds are warm-up,
    /// left out of the trend.
    #[arg(long, default_value_t = 60)]
    warmup_s: u64,
    /// Give up waiting for the last results after this long, s.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
}

fn parse_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected NAME=PID"))?;
    let pid = pid.parse().map_err(|_| format!("{s:?}: {pid:?} is not a process id"))?;
    Ok((name.to_string(), pid))
}

/// How often resident memory is read.
const MEMORY_EVERY: Duration = Duration::from_secs(5);

pub async fn run(bus: &Bus, args: E2eArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be 0 or more");
    anyhow::ensure!(!args.command.trim().is_empty(), "--command is empty");
    let total = match (args.tasks, args.duration_s) {
        (Some(n), _) => n,
        (None, Some(_)) => usize::MAX,
        (None, None) => 10_000,
    };
    let run_id = run_id();
    let prefix = format!("e2e-{run_id}-");
    let mut results = results_since_now(bus).await?;

    let start = Instant::now();
    let stop_at = args.duration_s.map(|s| start + Duration::from_secs(s));
    let mut t = Tally::default();
    let mut memory = Memory::new(&args.pids);
    let mut report = tokio::time::interval_at(
        (start + Duration::from_secs(args.report_s)).into(),
        Duration::from_secs(args.report_s.max(1)),
    );
    let mut sample = tokio::time::interval(MEMORY_EVERY);
    let mut acks = futures::stream::FuturesUnordered::<
        futures::future::BoxFuture<'static, Result<PublishAck, PublishError>>,
    >::new();
    let mut next_due = start;
    let mut last_result = start;
    println!("bench e2e: {}, command {:?}, run {run_id}", describe(&args, total), args.command);

    loop {
        let submitting = t.submitted < total && stop_at.is_none_or(|s| Instant::now() < s);
        if !submitting && t.finished() >= t.submitted {
            break;
        }
        if !submitting && last_result.elapsed() > Duration::from_secs(args.timeout_s) {
            break;
        }
        let room = args.rate > 0.0 || t.submitted - t.finished() < args.window;
        let can_submit = submitting && room && acks.len() < 256;
        tokio::select! {
            biased;
            _ = sample.tick() => memory.sample(start.elapsed()),
            _ = report.tick() => t.report(start.elapsed(), &memory),
            Some(m) = results.next() => {
                let m = m.context("results consumer")?;
                if let Ok(r) = ExecutionResult::decode(m.payload.as_ref()) {
                    if let Some(i) = r.task_id.strip_prefix(&prefix).and_then(|i| i.parse::<usize>().ok()) {
                        t.result(i, &r);
                        last_result = Instant::now();
                    }
                }
            }
            Some(a) = acks.next(), if !acks.is_empty() => {
                a.context("submission not acknowledged")?;
            }
            _ = tokio::time::sleep_until(next_due.into()), if can_submit => {
                let ack = submit(bus, &task(&prefix, t.submitted, &args.command)).await?;
                acks.push(Box::pin(std::future::IntoFuture::into_future(ack)));
                t.submitted_at.push(Instant::now());
                t.submitted += 1;
                if args.rate > 0.0 {
                    next_due = start + Duration::from_secs_f64(t.submitted as f64 / args.rate);
                }
            }
            // nothing to do but wait for results (window full, or done submitting)
            _ = tokio::time::sleep(Duration::from_millis(50)), if !can_submit => {}
        }
    }
    let elapsed = start.elapsed();
    memory.sample(elapsed);
    t.summary(elapsed, &memory, args.warmup_s);
    anyhow::ensure!(
        t.finished() == t.submitted,
        "{} of {} tasks finished (no result for {} s)",
        t.finished(),
        t.submitted,
        args.timeout_s
    );
    Ok(())
}

/// Task `i` of the run: `command`, one attempt.
fn task(prefix: &str, i: usize, command: &str) -> TaskRequest {
    TaskRequest {
        task_id: format!("{prefix}{i:09}"),
        name: "e2e".into(),
        command: command.split_whitespace().map(String::from).collect(),
        submitted_at_ms: now_ms(),
        // one result per task: a failing command is not retried
        max_attempts: 1,
        ..Default::default()
    }
}

fn describe(args: &E2eArgs, total: usize) -> String {
    let rate = if args.rate > 0.0 { format!("{}/s", args.rate) } else { format!("max ({} unfinished)", args.window) };
    match args.duration_s {
        Some(s) if args.tasks.is_none() => format!("rate {rate} for {s} s"),
        _ => format!("{total} tasks at rate {rate}"),
    }
}

/// Every result stored from now on (an ordered consumer, so a burst of
/// results is never dropped the way a slow core subscriber's would be).
async fn results_since_now(bus: &Bus) -> anyhow::Result<consumer::pull::Ordered> {
    hwsched_bus::streams::provision(bus).await?;
    let stream = bus.jetstream().get_stream(bus.subjects().stream(Stream::Results)).await?;
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig { deliver_policy: DeliverPolicy::New, ..Default::default() })
        .await?;
    Ok(c.messages().await?)
}

/// What was submitted and what came back.
#[derive(Default)]
struct Tally {
    submitted: usize,
    submitted_at: Vec<Instant>,
    /// Latency of each finished task, ms, by task number.
    done: HashMap<usize, u32>,
    failed: usize,
    duplicates: usize,
    /// (elapsed s, finished) at the last report.
    last_report: (f64, usize),
    /// Latencies since the last report, ms.
    recent: Vec<u32>,
}

impl Tally {
    fn finished(&self) -> usize {
        self.done.len()
    }

    fn result(&mut self, i: usize, r: &ExecutionResult) {
        let Some(at) = self.submitted_at.get(i) else { return };
        let ms = u32::try_from(at.elapsed().as_millis()).unwrap_or(u32::MAX);
        if self.done.insert(i, ms).is_some() {
            self.duplicates += 1;
            return;
        }
        if r.status() != TaskStatus::Succeeded {
            self.failed += 1;
        }
        self.recent.push(ms);
    }

    fn report(&mut self, elapsed: Duration, memory: &Memory) {
        let (then, finished_then) = self.last_report;
        let now = elapsed.as_secs_f64();
        let rate = (self.finished() - finished_then) as f64 / (now - then).max(1e-3);
        let mut recent = std::mem::take(&mut self.recent);
        recent.sort_unstable();
        println!(
            "{:>6.0} s  submitted {:>8}  finished {:>8}  unfinished {:>6}  {:>6.0}/s  p50 {:>5} ms  p99 {:>6} ms  {}",
            now,
            self.submitted,
            self.finished(),
            self.submitted - self.finished(),
            rate,
            percentile(&recent, 0.5),
            percentile(&recent, 0.99),
            memory.latest()
        );
        self.last_report = (now, self.finished());
    }

    fn summary(&self, elapsed: Duration, memory: &Memory, warmup_s: u64) {
        let mut lat: Vec<u32> = self.done.values().copied().collect();
        lat.sort_unstable();
        println!(
            "finished {} of {} in {:.1} s: {:.0} tasks/s; failed {}, duplicate results {}",
            self.finished(),
            self.submitted,
            elapsed.as_secs_f64(),
            self.finished() as f64 / elapsed.as_secs_f64().max(1e-3),
            self.failed,
            self.duplicates
        );
        println!(
            "submit -> result: p50 {} ms, p99 {} ms, max {} ms",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0)
        );
        for line in memory.trends(warmup_s) {
            println!("{line}");
        }
    }
}

/// Resident memory of the watched processes over time.
struct Memory {
    procs: Vec<Watched>,
}

/// A watched process: name, pid, (elapsed s, resident MB) samples.
type Watched = (String, u32, Vec<(f64, f64)>);

impl Memory {
    fn new(pids: &[(String, u32)]) -> Self {
        Self { procs: pids.iter().map(|(n, p)| (n.clone(), *p, Vec::new())).collect() }
    }

    fn sample(&mut self, elapsed: Duration) {
        for (_, pid, samples) in &mut self.procs {
            if let Some(mb) = rss_mb(*pid) {
                samples.push((elapsed.as_secs_f64(), mb));
            }
        }
    }

    fn latest(&self) -> String {
        self.procs
            .iter()
            .filter_map(|(n, _, s)| s.last().map(|(_, mb)| format!("{n} {mb:.1}")))
            .collect::<Vec<_>>()
            .join("  ")
            + if self.procs.is_empty() { "" } else { " MB" }
    }

    /// Per process: memory after warm-up, at the end, the peak, and the
    /// least-squares slope over the samples after warm-up.
    fn trends(&self, warmup_s: u64) -> Vec<String> {
        self.procs
            .iter()
            .map(|(name, pid, samples)| {
                let settled: Vec<(f64, f64)> = samples.iter().copied().filter(|(t, _)| *t >= warmup_s as f64).collect();
                match (settled.first(), settled.last()) {
                    (Some(first), Some(last)) if settled.len() >= 2 => format!(
                        "{name} (pid {pid}) resident: {:.1} MB after warm-up, {:.1} MB at the end, peak {:.1} MB, trend {:+.2} MB per 10 min ({} samples)",
                        first.1,
                        last.1,
                        settled.iter().map(|s| s.1).fold(0.0, f64::max),
                        slope(&settled) * 600.0,
                        settled.len()
                    ),
                    _ => format!("{name} (pid {pid}): too few samples after the {warmup_s} s warm-up"),
                }
            })
            .collect()
    }
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (num, den) =
        points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Resident memory of a process, MB (Linux /proc).
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_a_flat_series() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        assert!((slope(&line) - 2.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 7.0)).collect();
        assert_eq!(slope(&flat), 0.0);
        assert_eq!(slope(&[(1.0, 1.0)]), 0.0, "one point has no trend");
    }

    #[test]
    fn pid_arguments_name_a_process() {
        assert_eq!(parse_pid("scheduler=42"), Ok(("scheduler".into(), 42)));
        assert!(parse_pid("scheduler").is_err());
        assert!(parse_pid("scheduler=x").expect_err("not a pid").contains("not a process id"));
    }

    #[test]
    fn a_second_result_for_a_task_is_a_duplicate() {
        let mut t = Tally { submitted: 1, submitted_at: vec![Instant::now()], ..Default::default() };
        let r = ExecutionResult { status: TaskStatus::Failed as i32, ..Default::default() };
        t.result(0, &r);
        t.result(0, &r);
        t.result(5, &r); // not submitted by this run
        assert_eq!((t.finished(), t.failed, t.duplicates), (1, 1, 1));
    }
}
