//! Bad hardware told from bad tests: each ended attempt is evidence about its
//! worker (`suspect::judge` against its workload's failure rate on the other
//! workers); a suspect worker is quarantined (no new tasks, only probes) unless
//! the breaker says too much of the fleet or its class already is; passing
//! probes restore it. See `docs/FAILURES.md`.

use std::collections::{BTreeSet, HashMap, VecDeque};

use hwsched_proto::v1::{FailureCategory, TaskRecord, TaskRequest, TaskState, WorkerState};

use crate::{
    quarantine::QuarantinePolicy,
    state::State,
    suspect::{self, Verdict},
};

/// Label of a probe task: the worker it probes.
pub const PROBE_LABEL: &str = "hwsched.probe";
/// Fleet-wide outcome counts of a workload are halved past this many runs (recent ones weigh more).
const FLEET_MEMORY: u64 = 1_000;

/// A worker out of service.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantine {
    /// Since when, ms.
    pub since_ms: i64,
    /// Why.
    pub reason: String,
    /// Probes passed in a row.
    pub probes_passed: u32,
    /// When the next probe may go, ms.
    pub probe_due_ms: i64,
    /// The probe in flight (task id).
    pub probe: Option<String>,
}

/// The breaker: quarantining stopped because too much would be out.
#[derive(Debug, Clone, PartialEq)]
pub struct Breaker {
    /// Opened at, ms.
    pub since_ms: i64,
    /// Last time it stopped a quarantine, ms (it closes a window after).
    pub last_blocked_ms: i64,
    /// Why, for the alert.
    pub reason: String,
    /// Workers it kept in service although suspect.
    pub suspects: BTreeSet<String>,
}

/// What changed, for the service to log, count and alert on.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthEvent {
    /// A worker was quarantined.
    Quarantined { worker_id: String, reason: String },
    /// A worker passed its probes (or was released by an operator) and is back.
    Restored { worker_id: String, how: String },
    /// The breaker opened: suspects stay in service, an operator must look.
    BreakerOpened { reason: String },
    /// The breaker closed (nothing blocked for a window).
    BreakerClosed,
}

/// One attempt as evidence.
#[derive(Debug, Clone)]
struct Evidence {
    workload: String,
    failed: bool,
    at_ms: i64,
}

/// Evidence and quarantines.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// (runs, failures) per workload over the fleet.
    fleet: HashMap<String, (u64, u64)>,
    /// (runs, failures) per (workload, hardware class).
    by_class: HashMap<(String, String), (u64, u64)>,
    /// Recent attempts per worker.
    evidence: HashMap<String, VecDeque<Evidence>>,
    /// Quarantines started: (at ms, worker id, hardware class).
    started: VecDeque<(i64, String, String)>,
    pub(super) quarantined: HashMap<String, Quarantine>,
    pub(super) breaker: Option<Breaker>,
    events: Vec<HealthEvent>,
    probes: u64,
}

/// Whether a category says anything about the worker: `Some(failed)`, or `None`.
fn evidence_of(category: FailureCategory) -> Option<bool> {
    match category {
        FailureCategory::Unspecified => Some(false),
        FailureCategory::TestFailed
        | FailureCategory::Signaled
        | FailureCategory::Timeout
        | FailureCategory::Infrastructure
        | FailureCategory::GpuFault => Some(true),
        FailureCategory::OutOfMemory
        | FailureCategory::WorkerLost
        | FailureCategory::Refused
        | FailureCategory::Cancelled
        | FailureCategory::Superseded => None,
    }
}

/// Whether `rec` is a probe (its task carries [`PROBE_LABEL`]).
pub fn is_probe(rec: &TaskRecord) -> bool {
    rec.task.as_ref().is_some_and(|t| t.labels.contains_key(PROBE_LABEL))
}

impl State {
    /// Takes an ended attempt of an ordinary task as evidence about its worker.
    pub(super) fn observe_health(&mut self, rec: &TaskRecord, category: FailureCategory, now_ms: i64) {
        let Some(failed) = evidence_of(category).filter(|_| self.quarantine.enabled) else { return };
        let workload = rec.task.as_ref().map(hwsched_model::task_workload_key).unwrap_or_default();
        let class = self.workers.get(&rec.worker_id).map(class_of).unwrap_or_default();
        for runs in [
            self.health.fleet.entry(workload.clone()).or_default(),
            self.health.by_class.entry((workload.clone(), class)).or_default(),
        ] {
            runs.0 += 1;
            runs.1 += u64::from(failed);
            if runs.0 > FLEET_MEMORY {
                *runs = (runs.0 / 2, runs.1 / 2);
            }
        }
        let keep = self.quarantine.evidence.max(1);
        let window = self.quarantine.window_ms;
        let ev = self.health.evidence.entry(rec.worker_id.clone()).or_default();
        ev.push_back(Evidence { workload, failed, at_ms: now_ms });
        while ev.len() > keep || ev.front().is_some_and(|e| now_ms - e.at_ms > window) {
            ev.pop_front();
        }
        if !failed || self.health.quarantined.contains_key(&rec.worker_id) {
            return;
        }
        let reason = if category == FailureCategory::GpuFault {
            Some(format!("GPU fault during attempt {} of {}", rec.attempt, task_id(rec)))
        } else {
            let v = self.verdict(&rec.worker_id);
            (v.failures >= self.quarantine.min_failures as usize && v.p_value < self.quarantine.alpha).then(|| {
                format!(
                    "{} of its last {} attempts failed, {:.1} expected from their tests elsewhere (p = {:.1e})",
                    v.failures, v.attempts, v.expected, v.p_value
                )
            })
        };
        if let Some(reason) = reason {
            self.suspect(&rec.worker_id, reason, now_ms);
        }
    }

    /// The failure test on a worker's evidence: each attempt against its
    /// workload's failure rate on the other workers of the worker's class,
    /// with the rate on the rest of the fleet as the prior (weight
    /// [`suspect::CLASS_PRIOR_WEIGHT`] runs). The recent attempts of
    /// quarantined and suspect workers are left out of both: what is normal
    /// is judged on the workers in good standing. Attempts of workloads no
    /// other worker ran are left out too.
    pub fn verdict<'a>(&'a self, worker_id: &'a str) -> Verdict {
        let Some(ev) = self.health.evidence.get(worker_id) else { return suspect::judge(&[]) };
        let class = self.workers.get(worker_id).map(class_of).unwrap_or_default();
        let suspects = self.health.breaker.iter().flat_map(|b| b.suspects.iter());
        let left_out = self.health.quarantined.keys().chain(suspects).filter(|w| *w != worker_id);
        // (runs, failures) per workload to take out: of the fleet, and of the class
        let mut fleet_out: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut class_out: HashMap<&str, (u64, u64)> = HashMap::new();
        let same_class = |w: &str| self.workers.get(w).map(class_of).unwrap_or_default() == class;
        for w in std::iter::once(worker_id).chain(left_out.map(String::as_str)) {
            for e in self.health.evidence.get(w).into_iter().flatten() {
                count(&mut fleet_out, e);
                if same_class(w) {
                    count(&mut class_out, e);
                }
            }
        }
        let minus = |(runs, fails): (u64, u64), (r, f): (u64, u64)| (runs.saturating_sub(r), fails.saturating_sub(f));
        // only attempts of workloads other workers ran count: without them, a
        // failure says nothing about where it happened (the test may fail everywhere)
        let attempts: Vec<(f64, bool)> = ev
            .iter()
            .filter_map(|e| {
                let w = e.workload.as_str();
                let fleet = self.health.fleet.get(w).copied().unwrap_or_default();
                let fleet = minus(fleet, fleet_out.get(w).copied().unwrap_or_default());
                let peers = self.health.by_class.get(&(e.workload.clone(), class.clone())).copied().unwrap_or_default();
                let peers = minus(peers, class_out.get(w).copied().unwrap_or_default());
                (fleet.0 > 0).then(|| (suspect::peer_failure_rate(peers, minus(fleet, peers)), e.failed))
            })
            .collect();
        suspect::judge(&attempts)
    }

    /// A suspect worker: quarantined, unless the breaker stops it.
    fn suspect(&mut self, worker_id: &str, reason: String, now_ms: i64) {
        let class = |w: &str| self.workers.get(w).map(class_of).unwrap_or_default();
        let my_class = class(worker_id);
        let window = self.quarantine.window_ms;
        while self.health.started.front().is_some_and(|(at, _, _)| now_ms - at > window) {
            self.health.started.pop_front();
        }
        let out: BTreeSet<&str> = self
            .health
            .started
            .iter()
            .map(|(_, w, _)| w.as_str())
            .chain(self.health.quarantined.keys().map(String::as_str))
            .collect();
        let live = |w: &&crate::state::Worker| w.caps.is_some() && w.state != WorkerState::Offline;
        let fleet = self.workers.values().filter(live).count();
        let in_class = self.workers.values().filter(live).filter(|w| class_of(w) == my_class).count();
        let out_in_class = out.iter().filter(|w| class(w) == my_class).count();
        let (fleet_cap, class_cap) = (
            QuarantinePolicy::allowed(self.quarantine.max_fleet_share, fleet),
            QuarantinePolicy::allowed(self.quarantine.max_class_share, in_class),
        );
        let blocked = if out.len() + 1 > fleet_cap {
            Some(format!(
                "{} of {fleet} workers would be quarantined within the window (limit {fleet_cap})",
                out.len() + 1
            ))
        } else if out_in_class + 1 > class_cap {
            Some(format!(
                "{} of {in_class} workers of class {my_class:?} would be quarantined within the window (limit {class_cap})",
                out_in_class + 1
            ))
        } else {
            None
        };
        if let Some(why) = blocked {
            let reason = format!("breaker open: {why}; {worker_id} stays in service although suspect ({reason})");
            let b = self.health.breaker.get_or_insert_with(|| Breaker {
                since_ms: now_ms,
                last_blocked_ms: now_ms,
                reason: reason.clone(),
                suspects: BTreeSet::new(),
            });
            b.last_blocked_ms = now_ms;
            if b.suspects.insert(worker_id.to_string()) {
                b.reason = reason.clone();
                self.health.events.push(HealthEvent::BreakerOpened { reason });
            }
            return;
        }
        self.health.started.push_back((now_ms, worker_id.to_string(), my_class));
        let due = now_ms + self.quarantine.probe_interval_ms;
        let q =
            Quarantine { since_ms: now_ms, reason: reason.clone(), probes_passed: 0, probe_due_ms: due, probe: None };
        self.health.quarantined.insert(worker_id.to_string(), q);
        self.health.events.push(HealthEvent::Quarantined { worker_id: worker_id.to_string(), reason });
        self.changed = true;
    }

    /// Probes for quarantined workers that are due one and have room; closes
    /// the breaker once it blocked nothing for a window.
    pub(super) fn probes(&mut self, now_ms: i64) -> Vec<TaskRecord> {
        if self.health.breaker.as_ref().is_some_and(|b| now_ms - b.last_blocked_ms > self.quarantine.window_ms) {
            self.health.breaker = None;
            self.health.events.push(HealthEvent::BreakerClosed);
        }
        let due: Vec<String> = self
            .health
            .quarantined
            .iter()
            .filter(|(_, q)| q.probe.is_none() && now_ms >= q.probe_due_ms)
            .map(|(w, _)| w.clone())
            .filter(|w| {
                self.workers.get(w).is_some_and(|w| {
                    w.state == WorkerState::Active && w.caps.as_ref().is_some_and(|c| w.reserved.slots < c.slots.max(1))
                })
            })
            .collect();
        let mut out = Vec::new();
        for worker_id in due {
            self.health.probes += 1;
            let id: String = format!("hws-probe-{worker_id}-{}", self.health.probes)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect();
            let task = TaskRequest {
                task_id: id.clone(),
                name: "hwsched probe".into(),
                command: self.quarantine.probe_command.clone(),
                timeout_s: self.quarantine.probe_timeout_s,
                max_attempts: 1,
                producer: "hwsched".into(),
                labels: [(PROBE_LABEL.to_string(), worker_id.clone())].into(),
                submitted_at_ms: now_ms,
                ..Default::default()
            };
            let rec = TaskRecord {
                task: Some(task),
                state: TaskState::Assigned as i32,
                attempt: 1,
                worker_id: worker_id.clone(),
                queued_at_ms: now_ms,
                updated_at_ms: now_ms,
                assigned_at_ms: now_ms,
                reason: "probe of a quarantined worker".into(),
                ..Default::default()
            };
            if let Some(q) = self.health.quarantined.get_mut(&worker_id) {
                q.probe = Some(id);
            }
            self.insert(rec.clone(), now_ms);
            out.push(rec);
        }
        out
    }

    /// A probe ended (`passed`, or failed or lost): count it, restore the worker after enough passes.
    pub(super) fn probe_ended(&mut self, rec: &TaskRecord, passed: bool, now_ms: i64) {
        let Some(q) = self.health.quarantined.get_mut(&rec.worker_id) else { return };
        q.probe = None;
        q.probe_due_ms = now_ms + self.quarantine.probe_interval_ms;
        q.probes_passed = if passed { q.probes_passed + 1 } else { 0 };
        if q.probes_passed >= self.quarantine.probe_passes {
            let how = format!("passed {} probes in a row", q.probes_passed);
            self.restore(&rec.worker_id.clone(), how);
        }
    }

    /// Takes a worker out of quarantine (an operator's release); false when it was not in one.
    pub fn release_worker(&mut self, worker_id: &str) -> bool {
        self.health.quarantined.contains_key(worker_id) && {
            self.restore(worker_id, "released by an operator".into());
            true
        }
    }

    fn restore(&mut self, worker_id: &str, how: String) {
        self.health.quarantined.remove(worker_id);
        self.health.evidence.remove(worker_id);
        self.health.events.push(HealthEvent::Restored { worker_id: worker_id.to_string(), how });
        self.changed = true;
    }

    /// The quarantined workers, by id.
    pub fn quarantined(&self) -> Vec<(&String, &Quarantine)> {
        let mut q: Vec<(&String, &Quarantine)> = self.health.quarantined.iter().collect();
        q.sort_by(|a, b| a.0.cmp(b.0));
        q
    }

    /// Whether `worker_id` is quarantined.
    pub fn is_quarantined(&self, worker_id: &str) -> bool {
        self.health.quarantined.contains_key(worker_id)
    }

    /// The breaker, while open.
    pub fn breaker(&self) -> Option<&Breaker> {
        self.health.breaker.as_ref()
    }

    /// What changed since the last call.
    pub fn take_health_events(&mut self) -> Vec<HealthEvent> {
        std::mem::take(&mut self.health.events)
    }
}

/// Adds an attempt to (runs, failures) per workload.
fn count<'a>(m: &mut HashMap<&'a str, (u64, u64)>, e: &'a Evidence) {
    let o = m.entry(e.workload.as_str()).or_default();
    o.0 += 1;
    o.1 += u64::from(e.failed);
}

fn class_of(w: &crate::state::Worker) -> String {
    w.caps.as_ref().map(|c| c.hardware_class.clone()).unwrap_or_default()
}

fn task_id(rec: &TaskRecord) -> &str {
    rec.task.as_ref().map_or("", |t| t.task_id.as_str())
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
