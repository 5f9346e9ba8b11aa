//! What the client commands print, as pure functions of what they read (and
//! the time now), so the tables are golden-tested (`golden/*.txt`; set
//! `UPDATE_GOLDEN=1` to rewrite them after a deliberate change).

use std::fmt::Write as _;

use hwsched_client::{History, Update, WorkerView};
use hwsched_placement::retry::{category as retry_category, category_name};
use hwsched_proto::v1::{
    DrainReply, ExecutionResult, FailureCategory, TaskEvent, TaskEventKind, TaskRecord, TaskState, TaskStatus,
    WorkerState,
};

/// How long ago, short: `12.3s`, `4.5m`, `2.0h`.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    secs((now_ms - then_ms).max(0) as f64 / 1000.0)
}

pub use crate::model::secs;

fn lower(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

/// `queued`, `assigned`, ... of a record.
pub fn state(rec: &TaskRecord) -> String {
    lower(rec.state().as_str_name(), "TASK_STATE_")
}

/// `succeeded`, `timed_out`, ...
pub fn status(s: TaskStatus) -> String {
    lower(s.as_str_name(), "TASK_STATUS_")
}

fn worker_state(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Active => "active",
        WorkerState::Draining => "draining",
        WorkerState::Offline => "offline",
        WorkerState::Unspecified => "?",
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// `hwsched workers`.
pub fn workers(ws: &[WorkerView]) -> String {
    let mut out = format!(
        "{:<24} {:<34} {:>6} {:>6} {:>6} {:>6} {:>6} {:<9} {}\n",
        "WORKER", "HARDWARE", "SLOTS", "CPU%", "MEM%", "GPU%", "TEMP", "STATE", "NOTE"
    );
    for w in ws {
        let hb = &w.heartbeat;
        let gpu = if hb.gpus == 0 { "-".to_string() } else { format!("{:.1}", hb.gpu_util_pct) };
        // 0 = no readable sensor
        let temp = if hb.max_temp_c == 0.0 { "-".to_string() } else { format!("{:.1}", hb.max_temp_c) };
        let mut note = Vec::new();
        if let Some(d) = &w.drain {
            note.push(if d.reason.is_empty() { "drained".to_string() } else { format!("drained: {}", d.reason) });
        }
        if hb.throttling {
            note.push("throttling".into());
        }
        if hb.observe_only {
            note.push("external executor".into());
        }
        if hwsched_placement::fit::critically_overloaded(
            (hb.cpu_util_pct, hb.tasks_cpu_util_pct),
            (hb.memory_used_pct, hb.tasks_memory_used_pct),
        ) {
            note.push("overloaded by others".into());
        }
        let cores = w.capabilities.as_ref().and_then(|c| c.cpu.as_ref()).map_or(0, |c| c.logical_cores);
        if let Some(why) = hwsched_proto::slots_beyond_cores(hb.slots_total, cores) {
            note.push(why);
        }
        let line = format!(
            "{:<24} {:<34} {:>6} {:>6.1} {:>6.1} {:>6} {:>6} {:<9} {}",
            w.id(),
            w.hardware_class(),
            format!("{}/{}", hb.slots_used, hb.slots_total),
            hb.cpu_util_pct,
            hb.memory_used_pct,
            gpu,
            temp,
            worker_state(hb.state()),
            note.join(", ")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if ws.is_empty() {
        out.push_str("(no heartbeats: is a monitor running against this NATS and subject prefix?)\n");
    }
    out
}

/// `hwsched queue`.
pub fn queue(tasks: &[TaskRecord], now_ms: i64) -> String {
    let mut out = format!("{:<28} {:>4} {:>8}  REASON\n", "TASK", "PRIO", "WAITING");
    for r in tasks {
        let t = r.task.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<28} {:>4} {:>8}  {}",
            t.task_id,
            if t.priority == 0 { 3 } else { t.priority },
            age(now_ms, r.queued_at_ms),
            or_dash(&r.reason)
        );
    }
    if tasks.is_empty() {
        out.push_str("(no task is waiting)\n");
    }
    out
}

fn task_id(r: &TaskRecord) -> &str {
    r.task.as_ref().map_or("", |t| t.task_id.as_str())
}

/// `hwsched tasks`.
pub fn tasks(tasks: &[TaskRecord], total: u32, now_ms: i64) -> String {
    let mut out = format!(
        "{:<28} {:<9} {:>7} {:<20} {:>8} {:>8}  NAME\n",
        "TASK", "STATE", "ATTEMPT", "WORKER", "AGE", "RUNNING"
    );
    for r in tasks {
        let name = r.task.as_ref().map_or("", |t| t.name.as_str());
        let running = if r.state() == TaskState::Assigned && r.assigned_at_ms > 0 {
            age(now_ms, r.assigned_at_ms)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<28} {:<9} {:>7} {:<20} {:>8} {:>8}  {}",
            task_id(r),
            state(r),
            r.attempt,
            or_dash(&r.worker_id),
            age(now_ms, r.queued_at_ms),
            running,
            name
        );
    }
    if tasks.is_empty() {
        out.push_str("(the scheduler holds no task: none waiting or running)\n");
    } else if (tasks.len() as u32) < total {
        let _ = writeln!(out, "({} of {total} shown: --limit)", tasks.len());
    }
    out
}

/// `hwsched explain`.
pub fn explain(rec: &TaskRecord, now_ms: i64) -> String {
    let mut out = String::new();
    let t = rec.task.clone().unwrap_or_default();
    let name = if t.name.is_empty() { String::new() } else { format!(" [{}]", t.name) };
    let _ = writeln!(out, "task       {}{name}", t.task_id);
    let _ = writeln!(
        out,
        "state      {}, attempt {}, failures {}, lost {}",
        state(rec),
        rec.attempt,
        rec.failures,
        rec.losses
    );
    if !rec.worker_id.is_empty() {
        let _ = writeln!(out, "worker     {} (GPUs {:?})", rec.worker_id, rec.gpu_indices);
    }
    if let Some(h) = &rec.hedge {
        let _ = writeln!(
            out,
            "hedged     attempt {} on {} (GPUs {:?}): {}",
            h.attempt, h.worker_id, h.gpu_indices, h.reason
        );
    }
    let _ = writeln!(out, "queued     {} ago", age(now_ms, rec.queued_at_ms));
    if rec.predicted_runtime_s > 0.0 {
        let _ = writeln!(out, "predicted  {:.1}s on that hardware", rec.predicted_runtime_s);
    }
    if !rec.tried_workers.is_empty() {
        let _ = writeln!(out, "tried      {}", rec.tried_workers.join(", "));
    }
    let _ = writeln!(out, "why        {}", or_dash(&rec.reason));
    attempts(&mut out, rec);
    if !rec.parent_id.is_empty() {
        let which = if rec.shard_total > 0 {
            format!("shard {} of {}", rec.shard_index, rec.shard_total)
        } else {
            "replica".to_string()
        };
        let _ = writeln!(out, "part of    {} ({which})", rec.parent_id);
    }
    if !rec.parts.is_empty() {
        out.push_str("parts      (explain each for its placement)\n");
        for p in &rec.parts {
            let state = match p.state() {
                TaskState::Unspecified => "running".to_string(),
                s => lower(s.as_str_name(), "TASK_STATE_"),
            };
            let _ = writeln!(
                out,
                "  {:<24} {:<20} {:<10} {}",
                p.task_id,
                or_dash(&p.hardware_class),
                state,
                or_dash(&p.worker_id)
            );
        }
    }
    if !rec.candidates.is_empty() {
        let _ = writeln!(
            out,
            "decision   {} policy, best {} of {} candidate(s) (the chosen or awaited worker first):",
            rec.policy,
            rec.candidates.len(),
            rec.candidates_total.max(rec.candidates.len() as u32)
        );
        let _ = writeln!(
            out,
            "  {:<20} {:<28} {:>7} {:>7} {:>10} {:>9}  COMPONENTS",
            "WORKER", "HARDWARE", "COST", "WAIT", "COMPLETION", "PREDICTED"
        );
        for c in &rec.candidates {
            let predicted =
                if c.predicted_runtime_s > 0.0 { format!("{:.1}s", c.predicted_runtime_s) } else { "-".into() };
            // a map: sorted, so the line reads the same every time
            let mut parts: Vec<(&String, &f64)> = c.components.iter().collect();
            parts.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = parts.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
            let _ = writeln!(
                out,
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
    out
}

/// One lifecycle event, as `submit --wait` and `events` print it.
pub fn event(ev: &TaskEvent) -> Option<String> {
    let what = match ev.kind() {
        TaskEventKind::Queued => "queued".to_string(),
        TaskEventKind::Assigned => format!("assigned to {} (attempt {}, {})", ev.worker_id, ev.attempt, ev.reason),
        TaskEventKind::Started => format!("started on {}", ev.worker_id),
        TaskEventKind::Retried => format!("retry: {}", ev.reason),
        TaskEventKind::Finished => format!("finished {}", lower(&ev.reason, "TASK_STATUS_")),
        TaskEventKind::Rejected => format!("rejected: {}", ev.reason),
        TaskEventKind::Cancelled => format!("cancelled: {}", ev.reason),
        TaskEventKind::Unspecified => return None,
    };
    let name = if ev.name.is_empty() { String::new() } else { format!(" [{}]", ev.name) };
    Some(format!("{:<16}{name} {what}", ev.task_id))
}

/// `on w1 in 1.20s (exit 0, peak 313 MB): error`.
fn ran(r: &ExecutionResult) -> String {
    let peak = r.resources.as_ref().map_or(String::new(), |u| format!(", peak {} MB", u.memory_peak_mb));
    let err = if r.error.is_empty() { String::new() } else { format!(": {}", r.error) };
    format!("on {} in {:.2}s (exit {}{peak}){err}", r.worker_id, r.duration_s, r.exit_code)
}

/// One update of `submit --wait`; `name` is the task's name.
pub fn update(u: &Update, name: &str) -> Option<String> {
    let label = |id: &str| if name.is_empty() { format!("{id:<16}") } else { format!("{id:<16} [{name}]") };
    Some(match u {
        Update::Accepted { task_id } => format!("{} accepted", label(task_id)),
        Update::Duplicate { task_id } => format!("{} duplicate: already submitted, not run again", label(task_id)),
        Update::Rejected { task_id, reasons } => format!("{} rejected: {}", label(task_id), reasons.join("; ")),
        // the end of a task is its `Finished` or `Rejected` update
        Update::Event(ev)
            if matches!(ev.kind(), TaskEventKind::Finished | TaskEventKind::Rejected | TaskEventKind::Cancelled)
                && hwsched_placement::group::parent_of(&ev.task_id).is_none() =>
        {
            return None
        }
        Update::Event(ev) => return event(ev),
        Update::Finished(f) => {
            let mut line = format!("{} finished {}", label(&f.task_id), status(f.status));
            match (&f.result, f.parts.is_empty()) {
                (Some(r), true) => {
                    let _ = write!(line, " {}", ran(r));
                }
                (None, true) if !f.reasons.is_empty() => {
                    let _ = write!(line, ": {}", f.reasons.join("; "));
                }
                (_, false) => {
                    let _ = write!(line, ": {}", f.reasons.join("; "));
                    for p in &f.parts {
                        let st = lower(p.state().as_str_name(), "TASK_STATE_");
                        let on = if p.worker_id.is_empty() { String::new() } else { format!(" on {}", p.worker_id) };
                        let class = if p.hardware_class.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", p.hardware_class)
                        };
                        let why = if p.reason.is_empty() || p.state() == TaskState::Succeeded {
                            String::new()
                        } else {
                            format!(": {}", p.reason)
                        };
                        let _ = write!(
                            line,
                            "\n  {:<22}{class} {st}{on} in {:.2}s (exit {}){why}",
                            p.task_id, p.duration_s, p.exit_code
                        );
                    }
                }
                _ => {}
            }
            line
        }
    })
}

/// A task's history (`hwsched tasks <id>`).
pub fn history(task_id: &str, h: &History) -> String {
    let mut out = String::new();
    if h.is_empty() {
        let _ = writeln!(out, "{task_id}: nothing stored (never submitted, or older than the streams keep)");
        return out;
    }
    let first = h.events.first().map_or(0, |e| e.timestamp_ms);
    let _ = writeln!(out, "{task_id}");
    out.push_str("events\n");
    for ev in &h.events {
        let what = match ev.kind() {
            TaskEventKind::Assigned => format!("assigned to {} (attempt {})", ev.worker_id, ev.attempt),
            TaskEventKind::Started => format!("started on {} (attempt {})", ev.worker_id, ev.attempt),
            k => {
                let r = if ev.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", lower(&ev.reason, "TASK_STATUS_"))
                };
                format!("{}{r}", lower(k.as_str_name(), "TASK_EVENT_KIND_"))
            }
        };
        let _ = writeln!(out, "  +{:<8} {what}", secs((ev.timestamp_ms - first).max(0) as f64 / 1000.0));
    }
    if !h.attempts.is_empty() {
        let _ = writeln!(
            out,
            "attempts\n  {:>3} {:<10} {:<15} {:<20} {:>9} {:>5} {:>8} {:>7}  ERROR",
            "#", "STATUS", "CATEGORY", "WORKER", "DURATION", "EXIT", "PEAK MB", "CPU%"
        );
        for a in &h.attempts {
            let r = &a.result;
            let (peak, cpu) = r
                .resources
                .as_ref()
                .map_or(("-".into(), "-".into()), |u| (u.memory_peak_mb.to_string(), format!("{:.0}", u.cpu_peak_pct)));
            let _ = writeln!(
                out,
                "  {:>3} {:<10} {:<15} {:<20} {:>9} {:>5} {:>8} {:>7}  {}",
                r.attempt,
                status(r.status()),
                or_dash(category_name(retry_category(r))),
                r.worker_id,
                format!("{:.2}s", r.duration_s),
                r.exit_code,
                peak,
                cpu,
                or_dash(&r.error)
            );
        }
    }
    out
}

/// The ended attempts of `explain`: how each ended and what the scheduler did next.
fn attempts(out: &mut String, rec: &TaskRecord) {
    if rec.history.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "attempts\n  {:>3} {:<15} {:<20} {:<24} {:>9} {:>11}  NEXT",
        "#", "CATEGORY", "WORKER", "HARDWARE", "DURATION", "PEAK/ASK MB"
    );
    for a in &rec.history {
        let what = if a.category() == FailureCategory::Unspecified {
            status(a.status())
        } else {
            category_name(a.category()).to_string()
        };
        let memory = if a.memory_mb > 0 { format!("{}/{}", a.memory_peak_mb, a.memory_mb) } else { "-".into() };
        let _ = writeln!(
            out,
            "  {:>3} {:<15} {:<20} {:<24} {:>9} {:>11}  {}",
            a.attempt,
            what,
            or_dash(&a.worker_id),
            or_dash(&a.hardware_class),
            format!("{:.2}s", a.duration_s),
            memory,
            a.decision
        );
    }
}

/// `hwsched drain` / `undrain`.
pub fn drain(d: &DrainReply, now_ms: i64) -> String {
    let mut out = if d.draining {
        let why = if d.reason.is_empty() { String::new() } else { format!(" ({})", d.reason) };
        format!("{} drained{why} {} ago: takes no new tasks", d.worker_id, age(now_ms, d.since_ms))
    } else {
        format!("{} active: takes tasks", d.worker_id)
    };
    if d.running.is_empty() {
        out.push_str("; nothing running\n");
    } else {
        let _ = writeln!(out, "; {} running: {}", d.running.len(), d.running.join(", "));
    }
    out
}

/// What a suite's progress line shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Tasks ended well.
    pub done: usize,
    /// Tasks ended badly (failed, rejected, cancelled).
    pub failed: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks accepted and waiting.
    pub queued: usize,
    /// Estimated seconds to the end, when the model predicts enough of them.
    pub eta_s: Option<f64>,
}

/// `[#######-----------]  7/20  done 6  failed 1  running 3  queued 10  ETA 1.2m`.
pub fn progress(p: &Progress, width: usize) -> String {
    let total = p.done + p.failed + p.running + p.queued;
    let ended = p.done + p.failed;
    let filled = (ended * width).checked_div(total).unwrap_or(0);
    let eta = p.eta_s.map_or("?".to_string(), secs);
    format!(
        "[{}{}] {ended}/{total}  done {}  failed {}  running {}  queued {}  ETA {eta}",
        "#".repeat(filled),
        "-".repeat(width - filled),
        p.done,
        p.failed,
        p.running,
        p.queued
    )
}

#[cfg(test)]
mod tests;
