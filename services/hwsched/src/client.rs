//! Client commands: submit (and wait), follow events, list workers, schema.

use std::{collections::BTreeMap, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use futures::StreamExt;
use hwsched_bus::{codec, Bus, MSG_ID, REPLY_TO};
use hwsched_config::{ClickHouseConfig, NatsConfig};
use hwsched_proto::{
    v1::{
        CancelReply, CancelTask, ExecutionResult, ExplainReply, ExplainRequest, GpuRequirement, Placement, QueueReply,
        Requirements, SubmitReply, TaskEvent, TaskEventKind, TaskRequest, TaskStatus, WorkerCapabilities,
        WorkerHeartbeat, WorkerState,
    },
    Message, SCHEMA_VERSION,
};

/// `hwsched submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A suite: JSON array of tasks (or {"tasks": [...]}) in the documented JSON form.
    #[arg(long, short = 'f', conflicts_with = "command")]
    file: Option<PathBuf>,
    /// Task id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// Human-readable name.
    #[arg(long)]
    name: Option<String>,
    /// Priority 1 (highest) .. 5 (lowest).
    #[arg(long, default_value_t = 3)]
    priority: u32,
    /// CPU cores.
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory, e.g. 512M or 8G (plain numbers are MB).
    #[arg(long, value_parser = parse_memory_mb, allow_hyphen_values = true)]
    memory: Option<i64>,
    /// GPUs.
    #[arg(long)]
    gpu: Option<u32>,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<u32>,
    /// Run N shards side by side, each told HWSCHED_SHARD_INDEX and HWSCHED_SHARD_TOTAL.
    #[arg(long, conflicts_with = "replicate")]
    shards: Option<u32>,
    /// Run one copy on each of these hardware classes (e.g. cpu,gpu:nvidia-h100).
    #[arg(long, value_delimiter = ',')]
    replicate: Vec<String>,
    /// Only on these hardware classes (e.g. gpu:nvidia-a100).
    #[arg(long = "hardware-class", value_delimiter = ',')]
    hardware_class: Vec<String>,
    /// Wait for every task to finish, printing its lifecycle; exit 1 if any failed.
    #[arg(long)]
    wait: bool,
    /// Appended to every task id (e.g. to submit the same suite file again as new tasks).
    #[arg(long, allow_hyphen_values = true)]
    id_suffix: Option<String>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    wait_timeout_s: u64,
    /// The command to run, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_memory_mb(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'G' | 'g')) => (&s[..i], 1024.0),
        Some((i, 'M' | 'm')) => (&s[..i], 1.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?}: expected e.g. 512M or 8G"))?;
    Ok((v * mult) as i64)
}

fn tasks_from(args: &SubmitArgs) -> anyhow::Result<Vec<TaskRequest>> {
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let list = match value {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(mut o) => match o.remove("tasks") {
                Some(serde_json::Value::Array(a)) => a,
                _ => bail!("{}: expected an array of tasks or {{\"tasks\": [...]}}", path.display()),
            },
            _ => bail!("{}: expected an array of tasks", path.display()),
        };
        return list
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let mut t: TaskRequest =
                    serde_json::from_value(v).with_context(|| format!("{}: task #{}", path.display(), i + 1))?;
                if t.task_id.is_empty() {
                    t.task_id = new_id();
                }
                Ok(t)
            })
            .collect();
    }
    if args.command.is_empty() {
        bail!("nothing to submit: give a command after `--` or a suite with --file");
    }
    let gpus = args.gpu.map(|count| GpuRequirement { count, ..Default::default() });
    let placement = match (args.shards, args.replicate.is_empty()) {
        (Some(shards), _) => Some(Placement { strategy: "sharded".into(), shards, ..Default::default() }),
        (None, false) => Some(Placement {
            strategy: "replicated".into(),
            hardware_classes: args.replicate.clone(),
            ..Default::default()
        }),
        (None, true) => None,
    };
    Ok(vec![TaskRequest {
        schema_version: SCHEMA_VERSION,
        task_id: args.id.clone().unwrap_or_else(new_id),
        name: args.name.clone().unwrap_or_else(|| args.command.join(" ")),
        command: args.command.clone(),
        priority: args.priority,
        timeout_s: args.timeout.unwrap_or(0),
        requirements: Some(Requirements {
            cpu_cores: args.cpu.unwrap_or(0.0),
            memory_mb: args.memory.unwrap_or(0),
            gpus,
            hardware_classes: args.hardware_class.clone(),
            ..Default::default()
        }),
        placement,
        producer: "hwsched-cli".into(),
        ..Default::default()
    }])
}

fn new_id() -> String {
    format!("t-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

async fn connect(nats: &NatsConfig) -> anyhow::Result<Bus> {
    Ok(Bus::connect(nats, "hwsched-cli", Duration::from_secs(5)).await?)
}

/// Submits, prints each verdict, and with `--wait` follows every task to its end.
pub async fn submit(nats: &NatsConfig, args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let mut tasks = tasks_from(&args)?;
    if let Some(suffix) = &args.id_suffix {
        for t in &mut tasks {
            t.task_id.push_str(suffix);
        }
    }
    let bus = connect(nats).await?;
    let s = bus.subjects().clone();
    let mut events = bus.client().subscribe(s.events_all()).await?;
    let mut results = bus.client().subscribe(s.results_all()).await?;
    let inbox = bus.client().new_inbox();
    let mut replies = bus.client().subscribe(inbox.clone()).await?;
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    let mut expected_verdicts = 0;
    for t in &tasks {
        let mut headers = hwsched_bus::proto_headers(Some(&hwsched_bus::trace::new_traceparent()));
        headers.insert(MSG_ID, t.task_id.as_str());
        headers.insert(REPLY_TO, inbox.as_str());
        let ack = bus
            .jetstream()
            .publish_with_headers(s.tasks_submit(), headers, codec::encode(t))
            .await
            .with_context(|| format!("submit {}", t.task_id))?
            .await
            .with_context(|| {
                format!(
                    "submit {}: no stream stores {} yet; start `hwsched scheduler` (or `hwsched all`) once",
                    t.task_id,
                    s.tasks_submit()
                )
            })?;
        if ack.duplicate {
            // JetStream dropped it as a resubmission within its de-duplication window.
            println!("{:<16} duplicate: already submitted, not run again", t.task_id);
        } else {
            expected_verdicts += 1;
            pending.insert(t.task_id.clone(), t.name.clone());
        }
    }
    let mut failed = 0usize;
    // One verdict per task; "finished" replies on the same inbox are not verdicts.
    let mut awaiting: std::collections::BTreeSet<String> = pending.keys().cloned().collect();
    debug_assert_eq!(awaiting.len(), expected_verdicts);
    while !awaiting.is_empty() {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(10), replies.next()).await else {
            bail!(
                "no verdict from the scheduler within 10 s for {} task(s): is `hwsched scheduler` (or `hwsched all`) running?",
                awaiting.len()
            );
        };
        let r = SubmitReply::decode(m.payload.as_ref())?;
        if r.finished || !awaiting.remove(&r.task_id) {
            continue;
        }
        if r.accepted {
            println!("{:<16} accepted", r.task_id);
        } else if r.duplicate {
            println!("{:<16} duplicate: already submitted, not run again", r.task_id);
            pending.remove(&r.task_id);
        } else {
            println!("{:<16} rejected: {}", r.task_id, r.reasons.join("; "));
            pending.remove(&r.task_id);
            failed += 1;
        }
    }
    if !args.wait {
        return Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    let waited = pending.len() + failed;
    let split: std::collections::BTreeSet<String> =
        tasks.iter().filter(|t| hwsched_placement::group::is_split(t)).map(|t| t.task_id.clone()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout_s);
    let mut last: BTreeMap<String, ExecutionResult> = BTreeMap::new();
    while !pending.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => bail!("gave up waiting: {} task(s) unfinished", pending.len()),
            Some(m) = results.next() => {
                if let Ok(r) = ExecutionResult::decode(m.payload.as_ref()) {
                    let part_of = hwsched_placement::group::parent_of(&r.task_id);
                    if pending.contains_key(&r.task_id) || part_of.is_some_and(|p| pending.contains_key(p)) {
                        last.insert(r.task_id.clone(), r);
                    }
                }
            }
            Some(m) = replies.next() => {
                // A split task ends with its final verdict, which lists its parts.
                let Ok(r) = SubmitReply::decode(m.payload.as_ref()) else { continue };
                if !(r.finished && split.contains(&r.task_id)) { continue; }
                if let Some(name) = pending.remove(&r.task_id) {
                    let status = r.status().as_str_name().trim_start_matches("TASK_STATUS_").to_lowercase();
                    let name = if name.is_empty() { String::new() } else { format!(" [{name}]") };
                    println!("{:<16}{name} finished {status}: {}", r.task_id, r.reasons.join("; "));
                    print_parts(&r);
                    if r.status() != TaskStatus::Succeeded {
                        failed += 1;
                    }
                }
            }
            Some(m) = events.next() => {
                let Ok(ev) = TaskEvent::decode(m.payload.as_ref()) else { continue };
                let part_of = hwsched_placement::group::parent_of(&ev.task_id);
                if part_of.is_some_and(|p| pending.contains_key(p)) {
                    // a shard's or replica's own lifecycle, shown but not counted
                    print_event(&ev, last.get(&ev.task_id));
                    continue;
                }
                if !pending.contains_key(&ev.task_id) { continue; }
                print_event(&ev, last.get(&ev.task_id));
                if split.contains(&ev.task_id) { continue; }
                match ev.kind() {
                    TaskEventKind::Finished | TaskEventKind::Rejected | TaskEventKind::Cancelled => {
                        pending.remove(&ev.task_id);
                        if ev.kind() != TaskEventKind::Finished || ev.reason != TaskStatus::Succeeded.as_str_name() {
                            failed += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    println!("{waited} task(s): {} succeeded, {failed} failed", waited - failed);
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// The parts of a finished split task, one line each.
fn print_parts(r: &SubmitReply) {
    for p in &r.parts {
        let state = p.state().as_str_name().trim_start_matches("TASK_STATE_").to_lowercase();
        let on = if p.worker_id.is_empty() { String::new() } else { format!(" on {}", p.worker_id) };
        let class = if p.hardware_class.is_empty() { String::new() } else { format!(" [{}]", p.hardware_class) };
        let why = if p.reason.is_empty() || p.state() == hwsched_proto::v1::TaskState::Succeeded {
            String::new()
        } else {
            format!(": {}", p.reason)
        };
        println!("  {:<22}{class} {state}{on} in {:.2}s (exit {}){why}", p.task_id, p.duration_s, p.exit_code);
    }
}

fn print_event(ev: &TaskEvent, result: Option<&ExecutionResult>) {
    let what = match ev.kind() {
        TaskEventKind::Queued => "queued".to_string(),
        TaskEventKind::Assigned => format!("assigned to {} (attempt {}, {})", ev.worker_id, ev.attempt, ev.reason),
        TaskEventKind::Started => format!("started on {}", ev.worker_id),
        TaskEventKind::Retried => format!("retry: {}", ev.reason),
        TaskEventKind::Finished => match result {
            Some(r) => format!(
                "finished {} on {} in {:.2}s (exit {}, peak {} MB){}",
                ev.reason.trim_start_matches("TASK_STATUS_").to_lowercase(),
                r.worker_id,
                r.duration_s,
                r.exit_code,
                r.resources.as_ref().map_or(0, |u| u.memory_peak_mb),
                if r.error.is_empty() { String::new() } else { format!(": {}", r.error) }
            ),
            None => format!("finished {}", ev.reason.trim_start_matches("TASK_STATUS_").to_lowercase()),
        },
        TaskEventKind::Rejected => format!("rejected: {}", ev.reason),
        TaskEventKind::Cancelled => format!("cancelled: {}", ev.reason),
        TaskEventKind::Unspecified => return,
    };
    let name = if ev.name.is_empty() { String::new() } else { format!(" [{}]", ev.name) };
    println!("{:<16}{name} {what}", ev.task_id);
}

/// `hwsched events`: prints every lifecycle event until Ctrl-C.
pub async fn events(nats: &NatsConfig) -> anyhow::Result<()> {
    let bus = connect(nats).await?;
    let mut events = bus.client().subscribe(bus.subjects().events_all()).await?;
    let mut results = bus.client().subscribe(bus.subjects().results_all()).await?;
    let mut last: BTreeMap<String, ExecutionResult> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            Some(m) = results.next() => {
                if let Ok(r) = ExecutionResult::decode(m.payload.as_ref()) {
                    last.insert(r.task_id.clone(), r);
                }
            }
            Some(m) = events.next() => {
                if let Ok(ev) = TaskEvent::decode(m.payload.as_ref()) {
                    print_event(&ev, last.get(&ev.task_id));
                    if ev.kind() == TaskEventKind::Finished {
                        last.remove(&ev.task_id);
                    }
                }
            }
        }
    }
}

/// `hwsched cancel`: exit 0 when the task was found and cancelled.
pub async fn cancel(nats: &NatsConfig, task_id: String, reason: String) -> anyhow::Result<ExitCode> {
    let bus = connect(nats).await?;
    let req = CancelTask { task_id: task_id.clone(), reason };
    let m = tokio::time::timeout(
        Duration::from_secs(5),
        bus.client().request(bus.subjects().control_cancel(), codec::encode(&req)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer from the scheduler within 5 s: is it running?"))?
    .context("cancel request")?;
    let r = CancelReply::decode(m.payload.as_ref())?;
    println!("{task_id}: {}", r.detail);
    Ok(if r.found { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Asks the active scheduler on `subject`.
async fn ask(bus: &Bus, subject: String, body: bytes::Bytes) -> anyhow::Result<async_nats::Message> {
    tokio::time::timeout(Duration::from_secs(5), bus.client().request(subject, body))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from the scheduler within 5 s: is it running?"))?
        .map_err(|e| anyhow::anyhow!("no scheduler answered ({e}): is `hwsched scheduler` (or `hwsched all`) running?"))
}

fn ago(ms: i64) -> String {
    let s = (hwsched_bus::now_ms() - ms).max(0) as f64 / 1000.0;
    if s < 120.0 {
        format!("{s:.1}s")
    } else {
        format!("{:.1}m", s / 60.0)
    }
}

/// `hwsched queue`.
pub async fn queue(nats: &NatsConfig) -> anyhow::Result<()> {
    let bus = connect(nats).await?;
    let m = ask(&bus, bus.subjects().control_queue(), Default::default()).await?;
    let q = QueueReply::decode(m.payload.as_ref())?;
    println!("{:<28} {:>4} {:>8}  REASON", "TASK", "PRIO", "WAITING");
    for r in &q.tasks {
        let t = r.task.clone().unwrap_or_default();
        println!(
            "{:<28} {:>4} {:>8}  {}",
            t.task_id,
            if t.priority == 0 { 3 } else { t.priority },
            ago(r.queued_at_ms),
            r.reason
        );
    }
    if q.tasks.is_empty() {
        println!("(no task is waiting)");
    }
    Ok(())
}

/// `hwsched explain`: exit 1 when the task is unknown.
pub async fn explain(nats: &NatsConfig, task_id: String) -> anyhow::Result<ExitCode> {
    let bus = connect(nats).await?;
    let req = ExplainRequest { task_id: task_id.clone() };
    let m = ask(&bus, bus.subjects().control_explain(), codec::encode(&req)).await?;
    let r = ExplainReply::decode(m.payload.as_ref())?;
    let Some(rec) = r.record.filter(|_| r.found) else {
        println!("{task_id}: unknown to the scheduler (never submitted, rejected at intake, or expired)");
        return Ok(ExitCode::FAILURE);
    };
    let t = rec.task.clone().unwrap_or_default();
    let state = rec.state().as_str_name().trim_start_matches("TASK_STATE_").to_lowercase();
    let name = if t.name.is_empty() { String::new() } else { format!(" [{}]", t.name) };
    println!("task       {}{name}", t.task_id);
    println!("state      {state}, attempt {}, failures {}, lost {}", rec.attempt, rec.failures, rec.losses);
    if !rec.worker_id.is_empty() {
        println!("worker     {} (GPUs {:?})", rec.worker_id, rec.gpu_indices);
    }
    println!("queued     {} ago", ago(rec.queued_at_ms));
    if rec.predicted_runtime_s > 0.0 {
        println!("predicted  {:.1}s on that hardware", rec.predicted_runtime_s);
    }
    if !rec.tried_workers.is_empty() {
        println!("tried      {}", rec.tried_workers.join(", "));
    }
    println!("why        {}", if rec.reason.is_empty() { "-" } else { &rec.reason });
    if !rec.parent_id.is_empty() {
        let which = if rec.shard_total > 0 {
            format!("shard {} of {}", rec.shard_index, rec.shard_total)
        } else {
            "replica".to_string()
        };
        println!("part of    {} ({which})", rec.parent_id);
    }
    if !rec.parts.is_empty() {
        println!("parts      (explain each for its placement)");
        for p in &rec.parts {
            let state = match p.state() {
                hwsched_proto::v1::TaskState::Unspecified => "running".to_string(),
                s => s.as_str_name().trim_start_matches("TASK_STATE_").to_lowercase(),
            };
            let class = if p.hardware_class.is_empty() { "-" } else { &p.hardware_class };
            let on = if p.worker_id.is_empty() { "-" } else { &p.worker_id };
            println!("  {:<24} {:<20} {:<10} {on}", p.task_id, class, state);
        }
    }
    if !rec.candidates.is_empty() {
        println!(
            "decision   {} policy, best {} of {} candidate(s) (the chosen or awaited worker first):",
            rec.policy,
            rec.candidates.len(),
            rec.candidates_total.max(rec.candidates.len() as u32)
        );
        println!(
            "  {:<20} {:<28} {:>7} {:>7} {:>10} {:>9}  COMPONENTS",
            "WORKER", "HARDWARE", "COST", "WAIT", "COMPLETION", "PREDICTED"
        );
        for c in &rec.candidates {
            let predicted =
                if c.predicted_runtime_s > 0.0 { format!("{:.1}s", c.predicted_runtime_s) } else { "-".into() };
            let parts: Vec<String> = c.components.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
            println!(
                "  {:<20} {:<28} {:>7.3} {:>6.0}s {:>9.1}s {:>9}  {}",
                c.worker_id,
                c.hardware_class,
                c.cost,
                c.wait_s,
                c.completion_s,
                predicted,
                parts.join(", ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hwsched workers`: listens to heartbeats for 2.5 s and asks each worker for its capabilities.
pub async fn workers(nats: &NatsConfig) -> anyhow::Result<()> {
    let bus = connect(nats).await?;
    let mut hbs = bus.client().subscribe(bus.subjects().workers_heartbeat_all()).await?;
    let mut seen: BTreeMap<String, WorkerHeartbeat> = BTreeMap::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, hbs.next()).await {
        if let Ok(hb) = WorkerHeartbeat::decode(m.payload.as_ref()) {
            seen.insert(hb.worker_id.clone(), hb);
        }
    }
    println!(
        "{:<24} {:<36} {:>6} {:>6} {:>6} {:>6} {:<8}",
        "WORKER", "HARDWARE", "SLOTS", "CPU%", "MEM%", "TEMP", "STATE"
    );
    for (id, hb) in &seen {
        let caps = bus
            .client()
            .request(bus.subjects().worker_capabilities(id), Default::default())
            .await
            .ok()
            .and_then(|m| WorkerCapabilities::decode(m.payload.as_ref()).ok());
        let state = match hb.state() {
            WorkerState::Active => "active",
            WorkerState::Draining => "draining",
            WorkerState::Offline => "offline",
            WorkerState::Unspecified => "?",
        };
        println!(
            "{:<24} {:<36} {:>6} {:>6.1} {:>6.1} {:>6.1} {:<8}",
            id,
            caps.map(|c| c.hardware_class).unwrap_or_else(|| "?".into()),
            format!("{}/{}", hb.slots_used, hb.slots_total),
            hb.cpu_util_pct,
            hb.memory_used_pct,
            hb.max_temp_c,
            state
        );
    }
    if seen.is_empty() {
        println!("(no heartbeats in 2.5 s: is a monitor running against this NATS and subject prefix?)");
    }
    Ok(())
}

/// `hwsched schema`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Print the DDL for a server version (e.g. 18.16 or 24.8).
    Print {
        /// ClickHouse server version to render for.
        #[arg(long)]
        server_version: String,
    },
    /// Detect the configured server's version and apply the migrations not yet applied.
    Migrate,
}

/// Runs a schema command.
pub async fn schema(cmd: SchemaCommand, clickhouse: &ClickHouseConfig) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Print { server_version } => {
            let v = hwsched_store::ServerVersion::parse(&server_version)
                .with_context(|| format!("--server-version {server_version:?}: expected e.g. 18.16 or 24.8"))?;
            for ddl in hwsched_store::schema::render(v, &clickhouse.database) {
                println!("{ddl};\n");
            }
        }
        SchemaCommand::Migrate => {
            let store = hwsched_store::Store::connect(clickhouse).await?;
            let applied = store.migrate(clickhouse).await?;
            println!("server {}, database {}", store.version(), clickhouse.database);
            if applied.is_empty() {
                println!("nothing to apply");
            }
            for (version, description) in store.applied_migrations().await? {
                let now = if applied.contains(&version) { "applied now" } else { "already applied" };
                println!("  {version:>3}  {description} ({now})");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory_mb("512"), Ok(512));
        assert_eq!(parse_memory_mb("8G"), Ok(8192));
        assert_eq!(parse_memory_mb("256M"), Ok(256));
        assert!(parse_memory_mb("lots").is_err());
    }
}
