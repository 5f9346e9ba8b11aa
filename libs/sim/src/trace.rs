//! The trace format: JSON lines, one worker or one task per line (documented
//! in docs/SIMULATOR.md). Workers carry their real capability message and a
//! thermal and background-load profile; tasks carry their real request, the
//! arrival time and the true runtime on each hardware class. Faults are
//! optional fields (`faults` on workers; `needs_memory_mb` and `straggler` on
//! tasks, besides their `failure_rate`), so older traces parse as before.

use std::collections::BTreeMap;

use hwsched_proto::v1::{TaskRequest, WorkerCapabilities};
use serde::{Deserialize, Serialize};

/// Why a trace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A line is not a worker or a task.
    #[error("line {line}: {source}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The lines parse but do not make a usable trace.
    #[error("{0}")]
    Invalid(String),
}

/// How a worker heats: busy target temperature = `ambient_c + heat_c` × the
/// share of its slots in use; it moves towards the target with time constant
/// `tau_s`. It throttles (runs at half speed) from `throttle_c` until it has
/// cooled below `throttle_c - 5`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thermal {
    /// Idle temperature, °C.
    pub ambient_c: f64,
    /// Rise when every slot is busy, °C.
    pub heat_c: f64,
    /// Time constant, s.
    #[serde(default = "default_tau")]
    pub tau_s: f64,
    /// Throttling threshold, °C.
    #[serde(default = "default_throttle")]
    pub throttle_c: f64,
}

fn default_tau() -> f64 {
    30.0
}

fn default_throttle() -> f64 {
    90.0
}

/// CPU load of other tenants on a worker during a window. At 95 % or more the
/// worker is overloaded: tasks there run at half speed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Background {
    /// Start, s since the trace began.
    pub from_s: f64,
    /// End, s.
    pub to_s: f64,
    /// CPU utilisation by others, percent.
    pub cpu_pct: f64,
}

/// What goes wrong on a worker during a fault window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The worker has gone bad (a full disk, a broken driver, a flaky NIC):
    /// its attempts fail as tests do (TEST_FAILED).
    Failing,
    /// GPU faults (Xid errors, a GPU off the bus): its attempts end GPU_FAULT.
    GpuFault,
}

/// A worker's fault window: each attempt started on it from `from_s` until
/// `to_s` fails with probability `p` (part-way through), with the category of
/// `kind`; a probe started there in the window fails whatever `p`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerFault {
    /// What goes wrong.
    pub kind: FaultKind,
    /// Start, s since the trace began.
    pub from_s: f64,
    /// End, s.
    pub to_s: f64,
    /// Probability that an attempt started in the window fails.
    pub p: f64,
}

impl WorkerFault {
    /// Whether the window is open at `t_s`.
    pub fn open_at(&self, t_s: f64) -> bool {
        self.from_s <= t_s && t_s < self.to_s
    }
}

/// Some attempts of a task run longer than they should (a noisy neighbour,
/// slow storage): with probability `p` an attempt takes `factor` x its runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Straggler {
    /// Probability that an attempt straggles.
    pub p: f64,
    /// How much longer it then runs (>= 1).
    pub factor: f64,
}

/// One worker of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerLine {
    /// What its monitor would register (`hardware_class` names its class).
    pub capabilities: WorkerCapabilities,
    /// Thermal profile; absent: it never heats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal: Option<Thermal>,
    /// Load by other tenants.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<Background>,
    /// When it enters service and registers, s (absent: at 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_s: Option<f64>,
    /// When it leaves service, s (absent: never): it vanishes, its running
    /// attempts are lost and it sends no more heartbeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leave_s: Option<f64>,
    /// Fault windows (absent: it never goes bad).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<WorkerFault>,
}

impl WorkerLine {
    /// When it enters service, s.
    pub fn joins_at(&self) -> f64 {
        self.join_s.unwrap_or(0.0)
    }

    /// When it leaves service, s (infinity: never).
    pub fn leaves_at(&self) -> f64 {
        self.leave_s.unwrap_or(f64::INFINITY)
    }
}

/// One task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskLine {
    /// When the producer submits it, s since the trace began.
    pub arrival_s: f64,
    /// The request as a producer would submit it.
    pub request: TaskRequest,
    /// True runtime at full speed on each hardware class it can run on, s.
    pub runtime_s: BTreeMap<String, f64>,
    /// Probability that an attempt fails, per hardware class (absent: 0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_rate: BTreeMap<String, f64>,
    /// The memory the test really needs, MB (absent: what it asks for is
    /// enough). An attempt granted less (the request's `memory_mb`, raised by
    /// out-of-memory retries) ends OUT_OF_MEMORY part-way through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_memory_mb: Option<i64>,
    /// Attempts that run longer (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub straggler: Option<Straggler>,
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Line {
    /// A worker (boxed, as tasks are: lines are parsed one at a time).
    Worker(Box<WorkerLine>),
    /// A task.
    Task(Box<TaskLine>),
}

/// A whole trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// The fleet.
    pub workers: Vec<WorkerLine>,
    /// The tasks, by arrival.
    pub tasks: Vec<TaskLine>,
}

impl Trace {
    /// Parses JSON lines (blank lines and lines starting with `#` are skipped)
    /// and checks that the trace is usable.
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let mut t = Trace::default();
        for (i, raw) in text.lines().enumerate() {
            let raw = raw.trim();
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            match serde_json::from_str::<Line>(raw).map_err(|source| TraceError::Parse { line: i + 1, source })? {
                Line::Worker(w) => t.workers.push(*w),
                Line::Task(task) => t.tasks.push(*task),
            }
        }
        t.tasks.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
        t.check()?;
        Ok(t)
    }

    /// The trace as JSON lines: workers first, then tasks.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        let lines = self
            .workers
            .iter()
            .cloned()
            .map(|w| Line::Worker(Box::new(w)))
            .chain(self.tasks.iter().cloned().map(|t| Line::Task(Box::new(t))));
        for line in lines {
            out.push_str(&serde_json::to_string(&line).unwrap_or_default());
            out.push('\n');
        }
        out
    }

    /// Worker ids are unique and named, each has a hardware class and a
    /// presence window (`join_s >= 0`, `leave_s > join_s`), task ids are
    /// unique, and each task has a positive runtime for every hardware class
    /// of the fleet it could run on.
    pub fn check(&self) -> Result<(), TraceError> {
        let bad = |m: String| Err(TraceError::Invalid(m));
        if self.workers.is_empty() {
            return bad("the trace has no worker".into());
        }
        let mut ids = std::collections::BTreeSet::new();
        for w in &self.workers {
            let c = &w.capabilities;
            if !hwsched_proto::is_valid_id(&c.worker_id) || !ids.insert(c.worker_id.clone()) {
                return bad(format!("worker id {:?} is invalid or repeated", c.worker_id));
            }
            if c.hardware_class.is_empty() {
                return bad(format!("worker {} has no hardware_class", c.worker_id));
            }
            let (join, leave) = (w.joins_at(), w.leaves_at());
            if !join.is_finite() || join < 0.0 || leave.is_nan() || leave <= join {
                return bad(format!("worker {}: join_s must be >= 0 and leave_s after it", c.worker_id));
            }
            for f in &w.faults {
                if !(f.from_s.is_finite() && f.from_s >= 0.0 && f.to_s > f.from_s && (0.0..=1.0).contains(&f.p)) {
                    return bad(format!("worker {}: a fault needs 0 <= from_s < to_s and p in [0, 1]", c.worker_id));
                }
            }
        }
        let fleet: Vec<hwsched_placement::WorkerView> =
            self.workers.iter().map(|w| hwsched_placement::WorkerView::available(w.capabilities.clone())).collect();
        let mut ids = std::collections::BTreeSet::new();
        for t in &self.tasks {
            let id = &t.request.task_id;
            if !ids.insert(id.clone()) {
                return bad(format!("task id {id:?} is repeated"));
            }
            if let Err(reasons) = hwsched_placement::validate(&t.request) {
                return bad(format!("task {id}: {}", reasons.join("; ")));
            }
            if !t.arrival_s.is_finite() || t.arrival_s < 0.0 {
                return bad(format!("task {id}: arrival_s must be a number >= 0"));
            }
            if t.needs_memory_mb.is_some_and(|m| m <= 0) {
                return bad(format!("task {id}: needs_memory_mb must be positive"));
            }
            if t.straggler.as_ref().is_some_and(|s| !((0.0..=1.0).contains(&s.p) && s.factor >= 1.0)) {
                return bad(format!("task {id}: a straggler needs p in [0, 1] and factor >= 1"));
            }
            for w in &fleet {
                if hwsched_placement::fit::fits_ever(&t.request, &w.caps) {
                    let hw = &w.caps.hardware_class;
                    if !t.runtime_s.get(hw).is_some_and(|r| *r > 0.0) {
                        return bad(format!("task {id} can run on {} but has no runtime_s for {hw}", w.caps.worker_id));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
# one cpu worker, one task
{"kind":"worker","capabilities":{"workerId":"cpu-1","hardwareClass":"cpu:x86","slots":2,"cpu":{"logicalCores":8},"memoryMb":"16384"}}
{"kind":"task","arrival_s":1.5,"request":{"taskId":"t1","name":"unit","command":["true"]},"runtime_s":{"cpu:x86":10}}
"#;

    #[test]
    fn parses_and_round_trips() {
        let t = Trace::parse(SMALL).expect("valid");
        assert_eq!(t.workers.len(), 1);
        assert_eq!(t.tasks[0].runtime_s["cpu:x86"], 10.0);
        assert_eq!(Trace::parse(&t.to_jsonl()).expect("round trip"), t);
    }

    #[test]
    fn bad_lines_name_the_line_and_problem() {
        let e = Trace::parse("{\"kind\":\"worker\"}\n").expect_err("no capabilities");
        assert!(e.to_string().starts_with("line 1:"), "{e}");
        let missing = SMALL.replace(r#""runtime_s":{"cpu:x86":10}"#, r#""runtime_s":{"gpu:h100":10}"#);
        let e = Trace::parse(&missing).expect_err("no runtime for the class it fits");
        assert!(e.to_string().contains("no runtime_s for cpu:x86"), "{e}");
        let typo = SMALL.replace("arrival_s", "arrival");
        assert!(Trace::parse(&typo).is_err());
        let backwards = SMALL.replace(r#""memoryMb":"16384"}}"#, r#""memoryMb":"16384"},"join_s":60,"leave_s":30}"#);
        let e = Trace::parse(&backwards).expect_err("leaves before it joins");
        assert!(e.to_string().contains("leave_s after it"), "{e}");
    }

    #[test]
    fn join_and_leave_are_optional_and_round_trip() {
        let with = SMALL.replace(r#""memoryMb":"16384"}}"#, r#""memoryMb":"16384"},"join_s":60,"leave_s":600.5}"#);
        let t = Trace::parse(&with).expect("valid");
        assert_eq!((t.workers[0].joins_at(), t.workers[0].leaves_at()), (60.0, 600.5));
        assert_eq!(Trace::parse(&t.to_jsonl()).expect("round trip"), t);
        let plain = Trace::parse(SMALL).expect("valid");
        assert_eq!((plain.workers[0].joins_at(), plain.workers[0].leaves_at()), (0.0, f64::INFINITY));
        assert!(!plain.to_jsonl().contains("join_s"));
    }

    #[test]
    fn faults_are_optional_checked_and_round_trip() {
        let faulty = SMALL
            .replace(
                r#""memoryMb":"16384"}}"#,
                r#""memoryMb":"16384"},"faults":[{"kind":"failing","from_s":60,"to_s":600,"p":0.5},{"kind":"gpu_fault","from_s":700,"to_s":800,"p":1}]}"#,
            )
            .replace(
                r#""runtime_s":{"cpu:x86":10}"#,
                r#""runtime_s":{"cpu:x86":10},"needs_memory_mb":12000,"straggler":{"p":0.1,"factor":3}"#,
            );
        let t = Trace::parse(&faulty).expect("valid");
        let w = &t.workers[0];
        assert_eq!(w.faults.len(), 2);
        assert_eq!(
            (w.faults[1].kind, w.faults[0].open_at(60.0), w.faults[0].open_at(600.0)),
            (FaultKind::GpuFault, true, false)
        );
        assert_eq!(t.tasks[0].needs_memory_mb, Some(12_000));
        assert_eq!(t.tasks[0].straggler, Some(Straggler { p: 0.1, factor: 3.0 }));
        assert_eq!(Trace::parse(&t.to_jsonl()).expect("round trip"), t);
        assert!(!Trace::parse(SMALL).expect("valid").to_jsonl().contains("faults"));
        let e = Trace::parse(&faulty.replace(r#""p":0.5"#, r#""p":1.5"#)).expect_err("p above 1");
        assert!(e.to_string().contains("a fault needs"), "{e}");
        let e = Trace::parse(&faulty.replace(r#""factor":3"#, r#""factor":0.5"#)).expect_err("faster straggler");
        assert!(e.to_string().contains("straggler"), "{e}");
        assert!(Trace::parse(&faulty.replace(r#""kind":"failing""#, r#""kind":"melting""#)).is_err());
        assert!(Trace::parse(&faulty.replace(r#""p":0.5"#, r#""p":0.5,"q":1"#)).is_err(), "unknown field");
    }
}
