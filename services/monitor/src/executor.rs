//! Runs one assigned task: start the command in its own process group, stream
//! its output into bounded tails, enforce the timeout, account its resources,
//! publish `started` and the result, then acknowledge.

use std::{
    collections::{HashMap, HashSet},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, AckKind};
use hwsched_bus::{now_ms, trace, Bus};
use hwsched_proto::{
    v1::{ExecutionResult, TaskAssignment, TaskEventKind, TaskStatus},
    SCHEMA_VERSION,
};
use nix::sys::signal::Signal;
use tokio::{io::AsyncReadExt, process::Command};
use tokio_util::sync::CancellationToken;

use crate::sampler::TaskUsage;

/// Bytes of stdout/stderr kept per task.
pub const OUTPUT_TAIL_BYTES: usize = 4096;
/// Time between SIGTERM and SIGKILL when a task is stopped.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often a running task's assignment is marked in progress (well under the ack wait).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// State shared by the executor, the sampler loop and the heartbeat.
#[derive(Debug, Default)]
pub struct Running {
    /// Task ids running now.
    pub tasks: HashSet<String>,
    /// Resource accumulators by root process id.
    pub usage: HashMap<u32, TaskUsage>,
}

/// Runs assignments for one worker.
#[derive(Debug)]
pub struct Executor {
    /// Bus to publish on.
    pub bus: Bus,
    /// This worker.
    pub worker_id: String,
    /// Learner hardware key of this worker.
    pub hardware_class: String,
    /// Default working directory.
    pub task_dir: Option<std::path::PathBuf>,
    /// Shared running state.
    pub running: Arc<Mutex<Running>>,
}

/// How a run ended, before it becomes a result.
struct Outcome {
    status: TaskStatus,
    exit_code: i32,
    error: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    usage: hwsched_proto::v1::ResourceUsage,
}

impl Outcome {
    fn error(msg: String) -> Self {
        Outcome {
            status: TaskStatus::Error,
            exit_code: -1,
            error: msg,
            stdout: vec![],
            stderr: vec![],
            usage: Default::default(),
        }
    }
}

impl Executor {
    /// Executes the assignment in `msg` and acknowledges it once the result is
    /// stored. When `stop` fires first the process is killed and the message is
    /// left unacknowledged, so JetStream redelivers it.
    pub async fn handle(self: Arc<Self>, msg: jetstream::Message, stop: CancellationToken) {
        let a: TaskAssignment = match hwsched_bus::decode(msg.headers.as_ref(), &msg.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, subject = %msg.subject, "undecodable assignment, dropping it");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        let task = a.task.clone().unwrap_or_default();
        let tp = trace::continue_from(msg.headers.as_ref());
        let span = tracing::info_span!("task", task_id = %task.task_id, attempt = a.attempt, trace_id = trace::trace_id(&tp).unwrap_or(""));
        hwsched_telemetry::set_parent(&span, &tp);
        let _enter = span.enter();
        if a.worker_id != self.worker_id {
            tracing::warn!(assigned_to = %a.worker_id, "assignment for another worker, dropping it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
        drop(_enter);

        self.lock().tasks.insert(task.task_id.clone());
        let started_at_ms = now_ms();
        self.event(&a, TaskEventKind::Started, "", &tp).await;
        tracing::info!(parent: &span, command = ?task.command, "task started");

        let progress = async {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        };
        let outcome = tokio::select! {
            o = self.run_command(&a, &stop) => o,
            _ = progress => None,
        };
        self.lock().tasks.remove(&task.task_id);
        let Some(o) = outcome else {
            tracing::warn!(parent: &span, "monitor stopping: task killed, assignment left for redelivery");
            return;
        };
        let finished_at_ms = now_ms();
        let result = ExecutionResult {
            schema_version: SCHEMA_VERSION,
            task_id: task.task_id.clone(),
            attempt: a.attempt,
            worker_id: self.worker_id.clone(),
            status: o.status as i32,
            exit_code: o.exit_code,
            started_at_ms,
            finished_at_ms,
            duration_s: (finished_at_ms - started_at_ms) as f64 / 1000.0,
            resources: Some(o.usage),
            stdout_tail: tail_text(&o.stdout),
            stderr_tail: tail_text(&o.stderr),
            error: o.error,
            hardware_class: self.hardware_class.clone(),
            name: task.name.clone(),
            test_type: task.test_type.clone(),
            model_family: task.model_family.clone(),
            model_id: task.model_id.clone(),
            producer: task.producer.clone(),
            queued_at_ms: a.queued_at_ms,
            assigned_at_ms: a.assigned_at_ms,
            predicted_duration_s: a.predicted_duration_s,
        };
        self.finish(&msg, result, &tp, &span).await;
    }

    async fn finish(&self, msg: &jetstream::Message, result: ExecutionResult, tp: &str, span: &tracing::Span) {
        let subject = self.bus.subjects().results(&result.task_id);
        let msg_id = format!("{}:{}", result.task_id, result.attempt);
        // The result must be stored before the assignment is acknowledged.
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.bus.publish_durable(subject.clone(), &result, Some(&msg_id), Some(tp)).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(parent: span, error = %e, "result not stored yet, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let status = TaskStatus::try_from(result.status).unwrap_or_default();
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(parent: span, error = %e, "assignment ack failed; it may be redelivered");
        }
        tracing::info!(parent: span, status = status.as_str_name(), exit_code = result.exit_code, duration_s = result.duration_s, "task finished");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn event(&self, a: &TaskAssignment, kind: TaskEventKind, reason: &str, tp: &str) {
        let ev = hwsched_bus::task_event(a.task.as_ref(), kind, a.attempt, &self.worker_id, reason);
        self.bus.publish_event(&ev, Some(tp)).await;
    }

    /// Runs the command to completion; `None` when `stop` fired (process group killed).
    async fn run_command(&self, a: &TaskAssignment, stop: &CancellationToken) -> Option<Outcome> {
        let task = a.task.clone().unwrap_or_default();
        let mut cmd = Command::new(&task.command[0]);
        cmd.args(&task.command[1..])
            .envs(&task.env)
            .env("HWSCHED_TASK_ID", &task.task_id)
            .env("HWSCHED_ATTEMPT", a.attempt.to_string())
            .env("HWSCHED_WORKER_ID", &self.worker_id)
            .env("HWSCHED_SHARD_INDEX", a.shard_index.to_string())
            .env("HWSCHED_SHARD_TOTAL", a.shard_total.max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if !a.gpu_indices.is_empty() {
            let list: Vec<String> = a.gpu_indices.iter().map(u32::to_string).collect();
            cmd.env("CUDA_VISIBLE_DEVICES", list.join(","));
        }
        if !task.workdir.is_empty() {
            cmd.current_dir(&task.workdir);
        } else if let Some(d) = &self.task_dir {
            cmd.current_dir(d);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return Some(Outcome::error(format!("cannot start {:?}: {e}", task.command[0]))),
        };
        let pid = child.id().unwrap_or(0);
        self.lock().usage.insert(pid, TaskUsage::default());
        let out = tokio::spawn(read_tail(child.stdout.take()));
        let err = tokio::spawn(read_tail(child.stderr.take()));
        let timeout = Duration::from_secs(u64::from(if task.timeout_s == 0 { 3600 } else { task.timeout_s }));
        let status = tokio::select! {
            s = tokio::time::timeout(timeout, child.wait()) => s,
            _ = stop.cancelled() => {
                stop_group(pid, &mut child).await;
                self.lock().usage.remove(&pid);
                return None;
            }
        };
        if status.is_err() {
            stop_group(pid, &mut child).await;
        } else {
            // Nothing a task started may outlive it.
            signal_group(pid, Signal::SIGKILL);
        }
        let stdout = collect(out).await;
        let stderr = collect(err).await;
        let usage = self.lock().usage.remove(&pid).unwrap_or_default().usage();
        let (status, exit_code, error) = match status {
            Ok(Ok(s)) => match s.code() {
                Some(0) => (TaskStatus::Succeeded, 0, String::new()),
                Some(c) => (TaskStatus::Failed, c, String::new()),
                None => (TaskStatus::Failed, -1, format!("terminated by {s}")),
            },
            Ok(Err(e)) => (TaskStatus::Error, -1, format!("wait failed: {e}")),
            Err(_) => (TaskStatus::TimedOut, -1, format!("timed out after {}s", timeout.as_secs())),
        };
        Some(Outcome { status, exit_code, error, stdout, stderr, usage })
    }
}

/// The output a reader collected, waiting at most 2 s after the process ended.
async fn collect(h: tokio::task::JoinHandle<Vec<u8>>) -> Vec<u8> {
    match tokio::time::timeout(Duration::from_secs(2), h).await {
        Ok(Ok(v)) => v,
        _ => Vec::new(),
    }
}

/// SIGTERM to the task's process group; SIGKILL to whatever is left once the
/// leader exited or the grace period ran out; then reap the leader.
async fn stop_group(pid: u32, child: &mut tokio::process::Child) {
    signal_group(pid, Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    signal_group(pid, Signal::SIGKILL);
    let _ = child.wait().await;
}

fn signal_group(pid: u32, signal: Signal) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
}

/// Reads a pipe to its end, keeping the last [`OUTPUT_TAIL_BYTES`].
async fn read_tail<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    let Some(mut r) = r else { return vec![] };
    let mut keep = Vec::with_capacity(OUTPUT_TAIL_BYTES);
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return keep,
            Ok(n) => {
                keep.extend_from_slice(&buf[..n]);
                if keep.len() > OUTPUT_TAIL_BYTES {
                    keep.drain(..keep.len() - OUTPUT_TAIL_BYTES);
                }
            }
        }
    }
}

fn tail_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
