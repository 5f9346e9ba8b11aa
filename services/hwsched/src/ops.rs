//! The operator commands: workers, queue, tasks, explain, cancel, drain,
//! events and the live `watch` view. Each reads live state over NATS through
//! `hwsched-client` and prints through `render` (tables) or `output` (JSON).

use std::{io::Write, time::Duration};

use clap::{Args, ValueEnum};
use futures::StreamExt;
use hwsched_bus::now_ms;
use hwsched_client::{exit, Client};
use hwsched_proto::{
    v1::{TaskEvent, TaskState},
    Message,
};

use crate::{
    output::{self, Format},
    render,
};

/// How long `workers` listens for heartbeats (monitors send one a second by default).
const LISTEN: Duration = Duration::from_millis(2500);

fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// `hwsched workers`.
pub async fn workers(client: &Client, format: Format) -> anyhow::Result<u8> {
    let ws = client.workers(LISTEN).await?;
    match format {
        Format::Table => print!("{}", render::workers(&ws)),
        Format::Json => print_json(&output::workers_json(&ws))?,
    }
    Ok(exit::OK)
}

/// `hwsched queue`.
pub async fn queue(client: &Client, format: Format) -> anyhow::Result<u8> {
    let q = client.queue().await?;
    match format {
        Format::Table => print!("{}", render::queue(&q, now_ms())),
        Format::Json => print_json(&serde_json::Value::Array(q.iter().map(output::proto).collect()))?,
    }
    Ok(exit::OK)
}

/// Task states `hwsched tasks --state` takes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateFilter {
    /// Waiting for a worker.
    Queued,
    /// Placed on a worker (sent, or running).
    Assigned,
    /// Split into shards or replicas that run.
    Split,
}

/// `hwsched tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// One task's history (events and every attempt's result); without it, the tasks the scheduler holds now.
    task_id: Option<String>,
    /// Only tasks in this state.
    #[arg(long, value_enum)]
    state: Option<StateFilter>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

/// `hwsched tasks [ID]`: exit 1 when the task named has no history.
pub async fn tasks(client: &Client, args: TasksArgs) -> anyhow::Result<u8> {
    if let Some(id) = &args.task_id {
        let h = client.history(id).await?;
        match args.output {
            Format::Table => print!("{}", render::history(id, &h)),
            Format::Json => print_json(&serde_json::json!({
                "taskId": id,
                "events": h.events.iter().map(output::proto).collect::<Vec<_>>(),
                "attempts": h.attempts.iter().map(|a| output::proto(&a.result)).collect::<Vec<_>>(),
            }))?,
        }
        return Ok(if h.is_empty() { exit::FAILURE } else { exit::OK });
    }
    let state = match args.state {
        None => TaskState::Unspecified,
        Some(StateFilter::Queued) => TaskState::Queued,
        Some(StateFilter::Assigned) => TaskState::Assigned,
        Some(StateFilter::Split) => TaskState::Split,
    };
    let r = client.tasks(state, args.limit).await?;
    match args.output {
        Format::Table => print!("{}", render::tasks(&r.tasks, r.total, now_ms())),
        Format::Json => print_json(&output::proto(&r))?,
    }
    Ok(exit::OK)
}

/// `hwsched explain`: exit 1 when the task is unknown.
pub async fn explain(client: &Client, task_id: &str, format: Format) -> anyhow::Result<u8> {
    let Some(rec) = client.explain(task_id).await? else {
        eprintln!("{task_id}: unknown to the scheduler (never submitted, rejected at intake, or expired)");
        return Ok(exit::FAILURE);
    };
    match format {
        Format::Table => print!("{}", render::explain(&rec, now_ms())),
        Format::Json => print_json(&output::proto(&rec))?,
    }
    Ok(exit::OK)
}

/// `hwsched cancel`: exit 1 when the task was unknown or had already ended.
pub async fn cancel(client: &Client, task_id: &str, reason: &str) -> anyhow::Result<u8> {
    let r = client.cancel(task_id, reason).await?;
    println!("{task_id}: {}", r.detail);
    Ok(if r.found { exit::OK } else { exit::FAILURE })
}

/// `hwsched drain` and `hwsched undrain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Worker id (as `hwsched workers` shows it).
    worker_id: String,
    /// Why (shown by `hwsched workers`).
    #[arg(long, default_value = "")]
    reason: String,
    /// Wait until the tasks running on it have ended.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = 3600)]
    wait_timeout_s: u64,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

/// Drains (or undrains) a worker; `--wait` polls until nothing runs there.
pub async fn drain(client: &Client, args: DrainArgs, drain: bool) -> anyhow::Result<u8> {
    let mut r = client.drain(&args.worker_id, drain, &args.reason).await?;
    let show = |r: &hwsched_proto::v1::DrainReply| match args.output {
        Format::Table => print!("{}", render::drain(r, now_ms())),
        Format::Json => println!("{}", output::proto(r)),
    };
    show(&r);
    if !(drain && args.wait) {
        return Ok(exit::OK);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout_s);
    while !r.running.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            eprintln!("gave up waiting: {} task(s) still running on {}", r.running.len(), args.worker_id);
            return Ok(exit::FAILURE);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // asking again changes nothing: the drain holds, the reply lists what still runs
        r = client.drain(&args.worker_id, true, "").await?;
    }
    show(&r);
    Ok(exit::OK)
}

/// `hwsched events`: prints every lifecycle event until Ctrl-C.
pub async fn events(client: &Client, format: Format) -> anyhow::Result<u8> {
    let bus = client.bus();
    let mut events = bus.client().subscribe(bus.subjects().events_all()).await?;
    let stop = hwsched_shutdown::install_signal_handlers();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(exit::OK),
            Some(m) = events.next() => {
                let Ok(ev) = TaskEvent::decode(m.payload.as_ref()) else { continue };
                match format {
                    Format::Table => if let Some(line) = render::event(&ev) { println!("{line}") },
                    Format::Json => println!("{}", output::proto(&ev)),
                }
            }
        }
    }
}

/// `hwsched watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2.0)]
    interval_s: f64,
    /// Stop after this many refreshes (0: until Ctrl-C).
    #[arg(long, short = 'n', default_value_t = 0)]
    count: u32,
}

/// A live view refreshing in place: workers, then the tasks the scheduler
/// holds. On a terminal each frame replaces the last; otherwise frames follow
/// one another.
pub async fn watch(client: &Client, args: WatchArgs) -> anyhow::Result<u8> {
    let interval = Duration::from_secs_f64(args.interval_s.max(0.2));
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let stop = hwsched_shutdown::install_signal_handlers();
    let mut n = 0;
    loop {
        // workers listen for a whole heartbeat period, a little less than the refresh
        let ws = client.workers(interval.min(LISTEN).mul_f64(0.9)).await?;
        let frame = match client.tasks(TaskState::Unspecified, 30).await {
            Ok(t) => format!(
                "{}\n{} queued, {} placed\n{}",
                render::workers(&ws),
                t.tasks.iter().filter(|r| r.state() == TaskState::Queued).count(),
                t.tasks.iter().filter(|r| r.state() != TaskState::Queued).count(),
                render::tasks(&t.tasks, t.total, now_ms())
            ),
            Err(e) => format!("{}\n(tasks unavailable: {e})\n", render::workers(&ws)),
        };
        let stamp = format!("hwsched watch, every {:.1}s ({})\n\n", interval.as_secs_f64(), clock(now_ms()));
        if tty {
            print!("\x1b[H\x1b[2J{stamp}{frame}");
        } else {
            println!("{stamp}{frame}");
        }
        std::io::stdout().flush()?;
        n += 1;
        if args.count > 0 && n >= args.count {
            return Ok(exit::OK);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(exit::OK),
            _ = tokio::time::sleep(interval.saturating_sub(LISTEN.min(interval).mul_f64(0.9))) => {}
        }
    }
}

/// `HH:MM:SS` UTC.
fn clock(ms: i64) -> String {
    let s = (ms / 1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
