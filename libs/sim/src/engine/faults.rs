//! Faults (docs/SIMULATOR.md, "Faults"): how an attempt ends, given its
//! worker's fault windows, the memory it was granted, its test's flakiness
//! and stragglers; the result a monitor would report for it; and the probes
//! the scheduler sends to quarantined workers, which run [`PROBE_S`] on their
//! worker and fail when it is in a fault window.

use hwsched_placement::state::HealthEvent;
use hwsched_proto::v1::{ExecutionResult, FailureCategory, ResourceUsage, TaskRecord, TaskStatus};

use super::{secs_to_ms, Attempt, Ev, Sim};
use crate::trace::FaultKind;

/// How long a probe runs on its worker, s.
pub const PROBE_S: f64 = 5.0;

/// How an attempt will end, decided when it starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Fate {
    /// Its failure category (`None`: it succeeds).
    pub failure: Option<FailureCategory>,
    /// Whether the failure is its worker's (a fault window), not the test's own.
    pub worker_fault: bool,
    /// Full-speed seconds it runs (a failing attempt ends part-way through).
    pub work_s: f64,
}

/// A probe running on a quarantined worker.
#[derive(Debug, Clone)]
pub(super) struct ProbeRun {
    worker: usize,
    attempt: u32,
    started_ms: i64,
    passes: bool,
}

impl Sim<'_> {
    /// How an attempt of `task` started on worker `w` at `now` with
    /// `grant_mb` of memory ends. The first failure that applies wins: a
    /// fault window of the worker (GPU faults first), then running out of
    /// memory, then the test's own flakiness. A trace without faults draws
    /// exactly what it drew before faults existed.
    pub(super) fn fate(&mut self, task: usize, w: usize, grant_mb: i64, now: i64) -> Fate {
        let trace = self.trace;
        let line = &trace.tasks[task];
        let class = &self.workers[w].class;
        let runtime = line.runtime_s.get(class).copied().unwrap_or(f64::INFINITY);
        let flaky = self.rng.f64() < line.failure_rate.get(class).copied().unwrap_or(0.0);
        let t_s = now as f64 / 1000.0;
        let mut failure = None;
        let faults = &trace.workers[w].faults;
        for kind in [FaultKind::GpuFault, FaultKind::Failing] {
            for f in faults.iter().filter(|f| f.kind == kind && f.open_at(t_s)) {
                if failure.is_none() && self.rng.f64() < f.p {
                    failure = Some(match kind {
                        FaultKind::GpuFault => FailureCategory::GpuFault,
                        FaultKind::Failing => FailureCategory::TestFailed,
                    });
                }
            }
        }
        let worker_fault = failure.is_some();
        if failure.is_none() && line.needs_memory_mb.is_some_and(|need| grant_mb < need) {
            failure = Some(FailureCategory::OutOfMemory);
        }
        if failure.is_none() && flaky {
            failure = Some(FailureCategory::TestFailed);
        }
        let mut work_s = if failure.is_some() { runtime * (0.2 + 0.8 * self.rng.f64()) } else { runtime };
        if let Some(s) = &line.straggler {
            if self.rng.f64() < s.p {
                work_s *= s.factor;
            }
        }
        Fate { failure, worker_fault, work_s }
    }

    /// The result a monitor reports for attempt `a` of `task` ending at `now`.
    pub(super) fn result_of(&self, task: usize, a: &Attempt, now: i64) -> ExecutionResult {
        let req = &self.trace.tasks[task].request;
        let failure = a.fate.failure;
        let status = match failure {
            None => TaskStatus::Succeeded,
            Some(FailureCategory::GpuFault) => TaskStatus::Error,
            Some(_) => TaskStatus::Failed,
        };
        // killed at its cgroup limit: it peaked at what it was granted
        let oom = failure == Some(FailureCategory::OutOfMemory);
        let resources = oom.then(|| ResourceUsage { memory_peak_mb: a.grant_mb.max(0) as u64, ..Default::default() });
        ExecutionResult {
            task_id: req.task_id.clone(),
            attempt: a.attempt,
            worker_id: self.workers[a.worker].id.clone(),
            status: status as i32,
            exit_code: match failure {
                None => 0,
                Some(FailureCategory::OutOfMemory) => 137,
                Some(_) => 1,
            },
            category: failure.map_or(FailureCategory::Unspecified, |c| c) as i32,
            resources,
            started_at_ms: a.started_ms,
            finished_at_ms: now,
            duration_s: (now - a.started_ms) as f64 / 1000.0,
            hardware_class: self.workers[a.worker].class.clone(),
            name: req.name.clone(),
            test_type: req.test_type.clone(),
            model_family: req.model_family.clone(),
            model_id: req.model_id.clone(),
            producer: req.producer.clone(),
            revision: req.revision.clone(),
            predicted_duration_s: a.predicted_s,
            ..Default::default()
        }
    }

    /// Starts a probe the scheduler assigned: it passes unless its worker is
    /// in a fault window now (the probe stands for a diagnostic that catches
    /// the fault).
    pub(super) fn start_probe(&mut self, rec: &TaskRecord, now: i64) {
        // a worker gone before the scheduler noticed: supervision ends the probe
        let Some(w) = self.by_id.get(&rec.worker_id).copied().filter(|w| self.present[*w]) else { return };
        let id = rec.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default();
        let t_s = now as f64 / 1000.0;
        let passes = !self.trace.workers[w].faults.iter().any(|f| f.open_at(t_s));
        self.workers[w].probes.push(id.clone());
        self.tally.probes += 1;
        self.probe_runs.insert(id.clone(), ProbeRun { worker: w, attempt: rec.attempt, started_ms: now, passes });
        self.push(now + secs_to_ms(PROBE_S), Ev::ProbeEnd(id));
    }

    /// A probe ends: its result goes to the scheduler (never to the learner).
    pub(super) fn end_probe(&mut self, id: &str, now: i64) {
        // dropped when its worker left
        let Some(p) = self.probe_runs.remove(id) else { return };
        self.workers[p.worker].probes.retain(|x| x != id);
        self.tally.probe_ms += now - p.started_ms;
        let (status, category) = if p.passes {
            (TaskStatus::Succeeded, FailureCategory::Unspecified)
        } else {
            (TaskStatus::Failed, FailureCategory::TestFailed)
        };
        let res = ExecutionResult {
            task_id: id.to_string(),
            attempt: p.attempt,
            worker_id: self.workers[p.worker].id.clone(),
            status: status as i32,
            exit_code: i32::from(!p.passes),
            category: category as i32,
            started_at_ms: p.started_ms,
            finished_at_ms: now,
            duration_s: (now - p.started_ms) as f64 / 1000.0,
            hardware_class: self.workers[p.worker].class.clone(),
            ..Default::default()
        };
        self.state.complete(&res, now);
    }

    /// Drops the probes of a worker that left (the scheduler's supervision
    /// notices the loss).
    pub(super) fn drop_probes(&mut self, w: usize) {
        for id in std::mem::take(&mut self.workers[w].probes) {
            self.probe_runs.remove(&id);
        }
    }

    /// Counts what the scheduler's health tracking did since the last call (at `now`).
    pub(super) fn count_health_events(&mut self, now: i64) {
        for e in self.state.take_health_events() {
            match e {
                HealthEvent::Quarantined { worker_id, .. } => {
                    // as the learner does on the scheduler's announcement (hws.health.quarantined)
                    if self.cfg.handles_failures() {
                        self.model.blame_worker(&worker_id, now - self.state.quarantine.window_ms, now);
                    }
                    self.tally.quarantines += 1;
                    self.tally.health_ms.push((now, true));
                }
                HealthEvent::Restored { .. } => {
                    self.tally.restores += 1;
                    self.tally.health_ms.push((now, false));
                }
                HealthEvent::BreakerOpened { .. } => self.tally.breaker_opened += 1,
                HealthEvent::BreakerClosed => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "fault_tests.rs"]
mod tests;
