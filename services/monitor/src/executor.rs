//! Handles one assignment: checks that it is still current, runs it
//! ([`crate::process`]), publishes `started` and the result, and acknowledges
//! it only after the result is stored. The assignment is marked in progress
//! until then, so a long test is not redelivered.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, kv, AckKind};
use hwsched_bus::{assignment, now_ms, trace, Bus};
use hwsched_proto::{
    v1::{
        AttemptJournal, CancelTask, ExecutionResult, FailureCategory, TaskAssignment, TaskEventKind, TaskRequest,
        TaskStatus,
    },
    Message,
};
use hwsched_shutdown::Backoff;
use tokio_util::sync::CancellationToken;

use crate::{
    gpu_faults::{self, GpuFaults},
    inputs::{Inputs, StartError},
    output::Outputs,
    process,
    usage::TaskUsage,
};

/// First wait before republishing a result that was not stored; it doubles up to [`RESULT_BACKOFF_CAP`].
const RESULT_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between result publish attempts.
const RESULT_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// What runs on this worker now; shared with the telemetry loop.
#[derive(Debug, Default)]
pub struct Running {
    /// (task id, attempt) running now, with what stops it.
    pub tasks: Mutex<HashMap<(String, u32), Stopper>>,
    /// Resource accumulators by root process id.
    pub usage: Arc<Mutex<HashMap<u32, TaskUsage>>>,
}

impl Running {
    /// Task ids running now, for the heartbeat.
    pub fn task_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> =
            self.tasks.lock().unwrap_or_else(|p| p.into_inner()).keys().map(|(t, _)| t.clone()).collect();
        ids.sort();
        ids
    }
}

/// Stops a running attempt early: cancelled (by a user, the whole task), or
/// superseded (the scheduler stopping the losing copy of a hedged task).
#[derive(Debug, Clone, Default)]
pub struct Stopper {
    token: CancellationToken,
    superseded: Arc<std::sync::atomic::AtomicBool>,
}

impl Stopper {
    fn stop(&self, superseded: bool) {
        if superseded {
            self.superseded.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.token.cancel();
    }

    fn superseded(&self) -> bool {
        self.superseded.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Runs assignments for one worker.
#[derive(Debug)]
pub struct Executor {
    /// Bus to publish on.
    pub bus: Bus,
    /// The scheduler's task records (read-only here): is an assignment still current?
    pub records: kv::Store,
    /// This fleet's journal of started attempts.
    pub attempts: kv::Store,
    /// This worker.
    pub worker_id: String,
    /// Learner hardware key of this worker.
    pub hardware_class: String,
    /// Default working directory.
    pub task_dir: Option<std::path::PathBuf>,
    /// What this worker agrees to run, and how.
    pub policy: Arc<crate::policy::Policy>,
    /// Bundles: the cache, and where bundle tasks run.
    pub inputs: Arc<Inputs>,
    /// Shared running state.
    pub running: Arc<Running>,
    /// The assignment consumer's ack wait; held assignments are marked in progress three times per period.
    pub ack_wait: Duration,
    /// Brings each attempt's logs, artifacts and test results back.
    pub outputs: Outputs,
    /// Fault injection for tests: while this file exists, attempts are reported failed.
    pub fail_while: Option<std::path::PathBuf>,
    /// Where each attempt gets a cgroup of its own; `None`: none usable, or `--cgroups off`.
    pub cgroups: Option<Arc<crate::cgroup::Cgroups>>,
    /// Faults of this worker's GPUs, fed by the telemetry loop's GPU sweeps (empty without NVML).
    pub gpu_faults: Arc<GpuFaults>,
}

impl Executor {
    /// Handles the assignment in `msg`. When `stop` fires first the process is
    /// killed and the message is left unacknowledged, so JetStream redelivers it.
    pub async fn handle(self: Arc<Self>, msg: jetstream::Message, stop: CancellationToken) {
        let a: TaskAssignment = match hwsched_bus::decode(msg.headers.as_ref(), &msg.payload) {
            Ok(a) => a,
            Err(e) => {
                self.bus.reject_message(&self.worker_id, &msg, &format!("undecodable assignment: {e}")).await;
                return;
            }
        };
        let task = a.task.clone().unwrap_or_default();
        let tp = trace::continue_from(msg.headers.as_ref());
        let span = tracing::info_span!("task", task_id = %task.task_id, attempt = a.attempt, trace_id = trace::trace_id(&tp).unwrap_or(""));
        // the child of the span that sent the assignment (the scheduler's `assign`), not of `tp`'s made-up id
        hwsched_telemetry::set_parent(&span, trace::incoming(msg.headers.as_ref()).unwrap_or(&tp));
        let key = (task.task_id.clone(), a.attempt);
        if a.worker_id != self.worker_id || task.command.first().is_none_or(|c| c.is_empty()) {
            let why = if a.worker_id != self.worker_id {
                format!("assignment for worker {:?} on this worker's subject", a.worker_id)
            } else {
                "assignment without a command".to_string()
            };
            tracing::Instrument::instrument(self.bus.reject_message(&self.worker_id, &msg, &why), span).await;
            return;
        }
        let stopper = Stopper::default();
        let fresh = match self.running.tasks.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(stopper.clone());
                true
            }
        };
        if !fresh {
            // A redelivery of what already runs here: the running copy will report.
            tracing::info!(parent: &span, "assignment redelivered while running, keeping the running copy");
            let _ = msg.ack_with(AckKind::Ack).await;
            return;
        }
        let msg = Arc::new(msg);
        let progress = tokio::spawn(assignment::keep_in_progress(msg.clone(), self.ack_wait / 3));
        self.execute(&a, &msg, &tp, &span, &stop, &stopper).await;
        progress.abort();
        self.running.tasks.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }

    /// Cancels what `c` names running here: every attempt of its task, or
    /// only the one attempt it names when it names one (on this worker: the
    /// scheduler superseding a hedged copy); returns how many.
    pub fn cancel(&self, c: &CancelTask) -> usize {
        if c.attempt != 0 && c.worker_id != self.worker_id {
            return 0;
        }
        let tasks = self.running.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks
            .iter()
            .filter(|((t, a), _)| *t == c.task_id && (c.attempt == 0 || *a == c.attempt))
            .map(|(_, stopper)| stopper.stop(c.attempt != 0))
            .count()
    }

    async fn execute(
        &self,
        a: &TaskAssignment,
        msg: &jetstream::Message,
        tp: &str,
        span: &tracing::Span,
        stop: &CancellationToken,
        stopper: &Stopper,
    ) {
        let task = a.task.clone().unwrap_or_default();
        let journal_key = format!("{}.{}", task.task_id, a.attempt);
        // Started by an earlier incarnation of this monitor? Never run an attempt twice:
        // stop what it left running, and report the attempt interrupted if it is still current.
        // (both reads at once: two round trips on every assignment's path)
        let (earlier, current) =
            tokio::join!(self.journaled(&journal_key), hwsched_bus::assignment::confirm(&self.records, a));
        if let Some(j) = &earlier {
            let killed = process::kill_orphan(j.pgid as u32, j.start_ticks);
            tracing::warn!(parent: span, orphan_killed = killed, "attempt was started before this monitor restarted");
        }
        if let Err(why) = current {
            tracing::warn!(parent: span, reason = %why, "stale assignment, not run");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
        if let Some(j) = earlier {
            if self.result_stored(a, &task.task_id).await {
                // it ended and its result was stored; only the assignment's ack was lost
                tracing::info!(parent: span, "attempt already ended and its result stored, not run again");
                let _ = msg.double_ack().await;
                return;
            }
            let o = process::Outcome::error("interrupted: the monitor restarted while this attempt ran".into());
            let result = self.result(a, o, j.started_at_ms, now_ms());
            self.finish(msg, result, tp, span, stop).await;
            return;
        }
        let started_at_ms = now_ms();
        let (started, sandbox) = match self.start(a, &task, span).await {
            Ok(s) => s,
            Err(why) => {
                // a sandbox made for it is already removed
                let mut result = self.result(a, process::Outcome::error(why.message), started_at_ms, now_ms());
                result.bad_input = why.bad_input;
                if why.refused {
                    result.category = FailureCategory::Refused as i32;
                }
                self.finish(msg, result, tp, span, stop).await;
                return;
            }
        };
        self.journal(&journal_key, &started, started_at_ms, span).await;
        // Announced once journaled: whoever sees "started" can rely on a restart not re-running it.
        self.event(a, TaskEventKind::Started, "", tp).await;
        tracing::info!(parent: span, command = ?task.command, "task started");
        let interrupt = async {
            tokio::select! {
                _ = stop.cancelled() => process::Interrupt::Stop,
                _ = stopper.token.cancelled() => process::Interrupt::Cancel,
            }
        };
        let Some(mut o) = started.wait(&self.running.usage, interrupt).await else {
            tracing::warn!(parent: span, "monitor stopping: task killed, assignment left for redelivery");
            // the next incarnation must run it afresh, not report it interrupted
            let _ = self.attempts.delete(&journal_key).await;
            return;
        };
        let finished_at_ms = now_ms();
        // stored while the sandbox is still there, before the result says the attempt is over
        let output = std::mem::take(&mut o.output);
        let brought =
            tracing::Instrument::instrument(self.outputs.bring_back(&task, a.attempt, output), span.clone()).await;
        if !matches!(o.status, TaskStatus::Succeeded | TaskStatus::Cancelled) && !a.gpu_indices.is_empty() {
            // a GPU fault that ended it may be seen only by the sweep after its end
            self.gpu_faults.settle(finished_at_ms).await;
        }
        let mut result = self.result(a, o, started_at_ms, finished_at_ms);
        if result.status() == TaskStatus::Cancelled && stopper.superseded() {
            result.category = FailureCategory::Superseded as i32;
            result.error = "superseded: the scheduler stopped this hedged copy, its twin ended first".into();
        }
        brought.apply(&mut result);
        if let Some(file) = self.fail_while.as_ref().filter(|f| f.exists()) {
            result.status = TaskStatus::Failed as i32;
            result.category = FailureCategory::TestFailed as i32;
            result.exit_code = 1;
            result.error = format!("fault injected: {} exists (--test-only-fail-while-file-exists)", file.display());
        }
        drop(sandbox);
        self.finish(msg, result, tp, span, stop).await;
    }

    /// Checks `task` against the policy, makes its sandbox (with its bundle) and starts its process.
    /// The sandbox guard removes the directory when the attempt is over, however it
    /// ends, and before its result is published: whoever sees the result finds the
    /// sandbox gone. On an error the sandbox, if one was made, is already removed.
    async fn start(
        &self,
        a: &TaskAssignment,
        task: &TaskRequest,
        span: &tracing::Span,
    ) -> Result<(process::Started, Option<SandboxGuard>), StartError> {
        if let Err(why) = self.policy.check(task) {
            tracing::warn!(parent: span, reason = %why, "task refused");
            return Err(StartError::refused(why));
        }
        // made before the sandbox, so that failing here leaves nothing to remove
        // (dropped on a later error, it removes itself)
        let cgroup = match &self.cgroups {
            Some(c) => Some(
                c.create(&task.task_id, a.attempt, task.requirements.as_ref())
                    .map_err(|e| StartError::from(format!("cannot make the attempt's cgroup: {e}")))?,
            ),
            None => None,
        };
        let prepared = self.inputs.prepare(&self.policy, task, a.attempt).await?;
        let sandbox = prepared.sandbox;
        let workdir = if let Some(w) = &prepared.workdir {
            Some(w.as_path())
        } else if !task.workdir.is_empty() {
            Some(std::path::Path::new(&task.workdir))
        } else {
            sandbox.as_deref().or(self.task_dir.as_deref())
        };
        let spec = process::Spec {
            argv: &task.command,
            env: self.environment(a, task),
            workdir,
            timeout: Duration::from_secs(u64::from(if task.timeout_s == 0 { 3600 } else { task.timeout_s })),
            task_id: &task.task_id,
            gpus: &a.gpu_indices,
            user: self.policy.run_as.as_ref().map(|u| (u.uid, u.gid)),
            capture: self.outputs.capture(&task.task_id, a.attempt),
            cgroup,
        };
        let started = process::start(spec, &self.running.usage);
        let sandbox = sandbox.map(SandboxGuard);
        Ok((started?, sandbox))
    }

    /// The task's environment: the monitor's own as the policy filters it, then the task's, then ours.
    fn environment(&self, a: &TaskAssignment, task: &TaskRequest) -> Vec<(String, String)> {
        let gpus: Vec<String> = a.gpu_indices.iter().map(u32::to_string).collect();
        let mut env = self.policy.environment(std::env::vars());
        env.extend(task.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend([
            ("HWSCHED_TASK_ID".to_string(), task.task_id.clone()),
            ("HWSCHED_ATTEMPT".into(), a.attempt.to_string()),
            ("HWSCHED_WORKER_ID".into(), self.worker_id.clone()),
            ("HWSCHED_SHARD_INDEX".into(), a.shard_index.to_string()),
            ("HWSCHED_SHARD_TOTAL".into(), a.shard_total.max(1).to_string()),
            // Only the GPUs reserved for it: none means none, not all.
            ("CUDA_VISIBLE_DEVICES".into(), gpus.join(",")),
        ]);
        env
    }

    /// Journals a started attempt, so that a restarted monitor stops it rather than running it again.
    async fn journal(&self, key: &str, started: &process::Started, started_at_ms: i64, span: &tracing::Span) {
        let journal = AttemptJournal {
            worker_id: self.worker_id.clone(),
            pgid: started.pid() as i32,
            start_ticks: process::start_ticks(started.pid()).unwrap_or(0),
            started_at_ms,
        };
        if let Err(e) = self.attempts.put(key, journal.encode_to_vec().into()).await {
            tracing::warn!(parent: span, error = %e, "attempt journal not written: a monitor restart now could run this attempt again");
        }
    }

    /// Whether this worker's result of attempt `a` is on the results stream
    /// (false when it cannot be read: the attempt is then reported interrupted).
    async fn result_stored(&self, a: &TaskAssignment, task_id: &str) -> bool {
        match self.bus.stored_result(Some(&self.worker_id), task_id).await {
            Ok(r) => r.is_some_and(|r| r.attempt == a.attempt),
            Err(e) => {
                tracing::warn!(task_id, error = %e, "stored result not read");
                false
            }
        }
    }

    /// The journal entry of an attempt this worker started before, if any.
    async fn journaled(&self, key: &str) -> Option<AttemptJournal> {
        let bytes = self.attempts.get(key).await.ok()??;
        AttemptJournal::decode(bytes.as_ref()).ok().filter(|j| j.worker_id == self.worker_id)
    }

    /// The result of attempt `a`: a fault of one of its GPUs while it ran is named in its error
    /// and, unless it succeeded or was cancelled, makes it GPU_FAULT.
    fn result(
        &self,
        a: &TaskAssignment,
        mut o: process::Outcome,
        started_at_ms: i64,
        finished_at_ms: i64,
    ) -> ExecutionResult {
        let faults = self.gpu_faults.lock().faults_during(&a.gpu_indices, started_at_ms, finished_at_ms);
        let category = category(&o, !faults.is_empty());
        let task_id = a.task.as_ref().map_or("", |t| t.task_id.as_str());
        for (gpu, fault) in &faults {
            tracing::warn!(
                task_id,
                attempt = a.attempt,
                gpu,
                fault = %fault,
                status = o.status.as_str_name(),
                category = category.as_str_name(),
                "GPU fault during the attempt"
            );
        }
        if o.status != TaskStatus::Succeeded {
            gpu_faults::append_to(&mut o.error, &faults);
        }
        ExecutionResult {
            status: o.status as i32,
            category: category as i32,
            exit_code: o.exit_code,
            resources: Some(o.usage),
            stdout_tail: o.stdout,
            stderr_tail: o.stderr,
            error: o.error,
            ..assignment::result_of(a, &self.worker_id, &self.hardware_class, started_at_ms, finished_at_ms)
        }
    }

    /// Stores the result, then acknowledges the assignment. Retries until stored or `stop`.
    async fn finish(
        &self,
        msg: &jetstream::Message,
        result: ExecutionResult,
        tp: &str,
        span: &tracing::Span,
        stop: &CancellationToken,
    ) {
        let subject = self.bus.subjects().results(&result.worker_id, &result.task_id);
        let msg_id = format!("{}:{}", result.task_id, result.attempt);
        let mut backoff = Backoff::doubling(RESULT_BACKOFF, RESULT_BACKOFF_CAP);
        loop {
            match self.bus.publish_durable(subject.clone(), &result, Some(&msg_id), Some(tp)).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(parent: span, error = %e, "result not stored yet, retrying");
                    if !backoff.wait(stop).await {
                        tracing::warn!(parent: span, "monitor stopping before the result was stored; assignment left for redelivery");
                        return;
                    }
                }
            }
        }
        let status = TaskStatus::try_from(result.status).unwrap_or_default();
        if let Err(e) = msg.double_ack().await {
            tracing::warn!(parent: span, error = %e, "assignment ack failed; a redelivery will be recognised as stale");
        }
        tracing::info!(parent: span, status = status.as_str_name(), exit_code = result.exit_code, duration_s = result.duration_s, "task finished");
    }

    async fn event(&self, a: &TaskAssignment, kind: TaskEventKind, reason: &str, tp: &str) {
        let ev = hwsched_bus::task_event(a.task.as_ref(), kind, a.attempt, &self.worker_id, reason);
        self.bus.publish_event(&ev, Some(tp)).await;
    }
}

/// Why an ended run did not succeed, from how it ended: a fault of one of its
/// GPUs while it ran (`gpu_fault`) outranks everything but a cancel (the GPU, not
/// the test, is to blame; a cancelled task is not retried), and the kernel's OOM
/// killer in its cgroup outranks the exit it caused.
fn category(o: &process::Outcome, gpu_fault: bool) -> FailureCategory {
    match o.status {
        TaskStatus::Succeeded => FailureCategory::Unspecified,
        TaskStatus::Cancelled => FailureCategory::Cancelled,
        _ if gpu_fault => FailureCategory::GpuFault,
        _ if o.usage.oom_kills > 0 => FailureCategory::OutOfMemory,
        TaskStatus::TimedOut => FailureCategory::Timeout,
        TaskStatus::Failed if o.exit_code >= 0 => FailureCategory::TestFailed,
        TaskStatus::Failed => FailureCategory::Signaled,
        TaskStatus::Error | TaskStatus::Unspecified => FailureCategory::Infrastructure,
    }
}

/// Removes an attempt's sandbox directory when dropped.
struct SandboxGuard(std::path::PathBuf);

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "sandbox not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::{FailureCategory as C, TaskStatus};

    use super::category;
    use crate::process::Outcome;

    fn ended(status: TaskStatus, exit_code: i32, oom_kills: u32) -> Outcome {
        let mut o = Outcome::error(String::new());
        (o.status, o.exit_code, o.usage.oom_kills) = (status, exit_code, oom_kills);
        o
    }

    #[test]
    fn a_gpu_fault_outranks_how_a_failed_attempt_ended() {
        for (o, without) in [
            (ended(TaskStatus::Failed, 1, 0), C::TestFailed),
            (ended(TaskStatus::Failed, -1, 0), C::Signaled),
            (ended(TaskStatus::TimedOut, -1, 0), C::Timeout),
            (ended(TaskStatus::Failed, 137, 1), C::OutOfMemory),
            (ended(TaskStatus::Error, -1, 0), C::Infrastructure),
        ] {
            assert_eq!(category(&o, false), without);
            assert_eq!(category(&o, true), C::GpuFault, "{without:?}");
        }
        // a succeeded attempt stays succeeded; a cancelled one is not retried
        assert_eq!(category(&ended(TaskStatus::Succeeded, 0, 0), true), C::Unspecified);
        assert_eq!(category(&ended(TaskStatus::Cancelled, -1, 0), true), C::Cancelled);
    }
}
