//! The rows hwsched writes (`hw_metrics`, `task_runs`,
//! `scheduler_decisions`, `workers`, `alerts`, `test_cases`) and how each is built from its
//! message. Rows with time columns are generic over [`TimeColumn`]: i64
//! milliseconds on modern servers (`DateTime64(3)`), u32 seconds on old ones
//! (`DateTime`).

use hwsched_proto::failure;
use hwsched_proto::v1::{
    Alert, AlertState, CandidateScore, ExecutionResult, MetricsBatch, TaskEvent, TaskStatus, TestCase,
    WorkerCapabilities,
};
use serde::Serialize;

/// A time column as the server stores it: i64 milliseconds (`DateTime64(3)`,
/// modern servers) or u32 seconds (`DateTime`, old ones).
pub trait TimeColumn: Copy + Serialize + Send + Sync + 'static {
    /// The column's value for a unix time in milliseconds.
    fn from_ms(ms: i64) -> Self;
}

impl TimeColumn for i64 {
    fn from_ms(ms: i64) -> Self {
        ms
    }
}

impl TimeColumn for u32 {
    fn from_ms(ms: i64) -> Self {
        secs(ms)
    }
}

/// Unix milliseconds to whole seconds (0 before 1970, `u32::MAX` after 2106).
pub(crate) fn secs(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

/// One `hw_metrics` row; `T` is i64 milliseconds (DateTime64(3)) or u32 seconds (DateTime).
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct MetricRow<T> {
    time: T,
    worker_id: String,
    device: String,
    metric: String,
    value: f64,
}

pub(crate) fn metric_rows<T: TimeColumn>(b: &MetricsBatch) -> impl Iterator<Item = MetricRow<T>> + '_ {
    let t = T::from_ms(b.timestamp_ms);
    b.samples.iter().map(move |s| MetricRow {
        time: t,
        worker_id: b.worker_id.clone(),
        device: s.device.clone(),
        metric: s.metric.clone(),
        value: s.value,
    })
}

/// One `task_runs` row.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct RunRow<T> {
    task_id: String,
    attempt: u32,
    name: String,
    producer: String,
    test_type: String,
    model_family: String,
    model_id: String,
    worker_id: String,
    hardware_class: String,
    status: String,
    exit_code: i32,
    queued_at: T,
    assigned_at: T,
    started_at: T,
    finished_at: T,
    duration_s: f64,
    predicted_duration_s: f64,
    cpu_peak_pct: f64,
    cpu_avg_pct: f64,
    memory_peak_mb: u64,
    gpu_memory_peak_mb: u64,
    error: String,
    category: String,
    cpu_time_s: f64,
    oom_kills: u32,
    memory_limit_mb: u64,
}

/// One `scheduler_decisions` row: one candidate of one decision.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct DecisionRow<T> {
    time: T,
    task_id: String,
    attempt: u32,
    name: String,
    producer: String,
    test_type: String,
    policy: String,
    rank: u8,
    chosen: u8,
    worker_id: String,
    hardware_class: String,
    cost: f64,
    wait_s: f64,
    completion_s: f64,
    predicted_runtime_s: f64,
    candidates_total: u32,
    components: String,
}

pub(crate) fn decision_rows<T: TimeColumn>(e: &TaskEvent) -> Vec<DecisionRow<T>> {
    e.candidates.iter().enumerate().map(|(rank, c)| decision_row(e, rank, c)).collect()
}

fn decision_row<T: TimeColumn>(e: &TaskEvent, rank: usize, c: &CandidateScore) -> DecisionRow<T> {
    let components: std::collections::BTreeMap<&str, f64> =
        c.components.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    DecisionRow {
        time: T::from_ms(e.timestamp_ms),
        task_id: e.task_id.clone(),
        attempt: e.attempt,
        name: e.name.clone(),
        producer: e.producer.clone(),
        test_type: e.test_type.clone(),
        policy: e.policy.clone(),
        rank: u8::try_from(rank).unwrap_or(u8::MAX),
        chosen: u8::from(rank == 0 && c.worker_id == e.worker_id),
        worker_id: c.worker_id.clone(),
        hardware_class: c.hardware_class.clone(),
        cost: c.cost,
        wait_s: c.wait_s,
        completion_s: c.completion_s,
        predicted_runtime_s: c.predicted_runtime_s,
        candidates_total: e.candidates_total,
        components: serde_json::to_string(&components).unwrap_or_default(),
    }
}

/// One `alerts` row: one transition of one alert.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct AlertRow<T> {
    time: T,
    fingerprint: String,
    rule: String,
    severity: String,
    state: String,
    worker_id: String,
    device: String,
    metric: String,
    value: f64,
    threshold: f64,
    starts_at: T,
    ends_at: T,
    summary: String,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    muted_by: String,
}

/// "firing", "resolved", ... as stored in `alerts.state`.
pub fn alert_state_name(s: AlertState) -> &'static str {
    match s {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
        AlertState::Unspecified => "unknown",
    }
}

/// When the transition happened: `at_ms`, or for alerts published without it
/// the end of a resolved alert and the start of any other.
fn alert_time_ms(a: &Alert) -> i64 {
    if a.at_ms != 0 {
        a.at_ms
    } else if a.state() == AlertState::Resolved && a.ends_at_ms != 0 {
        a.ends_at_ms
    } else {
        a.starts_at_ms
    }
}

pub(crate) fn alert_row<T: TimeColumn>(a: &Alert) -> AlertRow<T> {
    // sorted, so a transition always stores the same arrays
    let labels: std::collections::BTreeMap<&String, &String> = a.labels.iter().collect();
    AlertRow {
        time: T::from_ms(alert_time_ms(a)),
        fingerprint: a.fingerprint.clone(),
        rule: a.rule.clone(),
        severity: a.severity.clone(),
        state: alert_state_name(a.state()).to_string(),
        worker_id: a.worker_id.clone(),
        device: a.device.clone(),
        metric: a.metric.clone(),
        value: a.value,
        threshold: a.threshold,
        starts_at: T::from_ms(a.starts_at_ms),
        ends_at: T::from_ms(a.ends_at_ms),
        summary: a.summary.clone(),
        label_keys: labels.keys().map(|k| (*k).clone()).collect(),
        label_values: labels.values().map(|v| (*v).clone()).collect(),
        muted_by: a.muted_by.clone(),
    }
}

/// One `workers` row: a worker's capabilities and when it was seen. Times
/// are unix seconds (`DateTime` on every server).
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Serialize)]
pub struct WorkerRow {
    /// Worker id.
    pub worker_id: String,
    /// Host name.
    pub hostname: String,
    /// Hardware class, e.g. `gpu:nvidia-h100-80gb-hbm3`.
    pub hardware_class: String,
    /// CPU model.
    pub cpu_model: String,
    /// Logical cores.
    pub logical_cores: u32,
    /// Memory, MB.
    pub memory_mb: u64,
    /// Task slots.
    pub slots: u32,
    /// GPUs.
    pub gpu_count: u32,
    /// GPU models, one per GPU.
    pub gpu_models: Vec<String>,
    /// Declared accelerators, `kind:count`.
    pub accelerators: Vec<String>,
    /// Labels, `key=value`.
    pub labels: Vec<String>,
    /// active, draining, offline.
    pub state: String,
    /// First seen.
    pub first_seen: u32,
    /// Last seen.
    pub last_seen: u32,
}

impl WorkerRow {
    /// The row for a worker's capabilities.
    pub fn from_capabilities(c: &WorkerCapabilities) -> Self {
        let mut accelerators: Vec<String> = c.accelerators.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        accelerators.sort();
        let mut labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        Self {
            worker_id: c.worker_id.clone(),
            hostname: c.hostname.clone(),
            hardware_class: c.hardware_class.clone(),
            cpu_model: c.cpu.as_ref().map(|c| c.model.clone()).unwrap_or_default(),
            logical_cores: c.cpu.as_ref().map_or(0, |c| c.logical_cores),
            memory_mb: c.memory_mb,
            slots: c.slots,
            gpu_count: c.gpus.len() as u32,
            gpu_models: c.gpus.iter().map(|g| g.model.clone()).collect(),
            accelerators,
            labels,
            ..Default::default()
        }
    }
}

/// Every status, as stored in `task_runs.status` ([`status_name`]).
pub(crate) const STATUSES: [TaskStatus; 6] = [
    TaskStatus::Succeeded,
    TaskStatus::Failed,
    TaskStatus::TimedOut,
    TaskStatus::Error,
    TaskStatus::Cancelled,
    TaskStatus::Unspecified,
];

/// The status stored as `name` ([`status_name`]).
pub fn status_of(name: &str) -> TaskStatus {
    STATUSES.into_iter().find(|s| status_name(*s) == name).unwrap_or(TaskStatus::Unspecified)
}

/// "out_of_memory", "timeout", ... as stored in `task_runs.category`; "" for a
/// success. A result from a monitor older than the field gets the category its
/// status implies (`hwsched_proto::failure::category`, the scheduler's own
/// reading of it).
pub fn category_of(r: &ExecutionResult) -> &'static str {
    failure::category_name(failure::category(r))
}

/// "succeeded", "failed", ... as stored in `task_runs.status`.
pub fn status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::TimedOut => "timed_out",
        TaskStatus::Error => "error",
        TaskStatus::Cancelled => "cancelled",
        TaskStatus::Unspecified => "unknown",
    }
}

pub(crate) fn run_row<T: TimeColumn>(r: &ExecutionResult) -> RunRow<T> {
    let u = r.resources.unwrap_or_default();
    RunRow {
        task_id: r.task_id.clone(),
        attempt: r.attempt,
        name: r.name.clone(),
        producer: r.producer.clone(),
        test_type: r.test_type.clone(),
        model_family: r.model_family.clone(),
        model_id: r.model_id.clone(),
        worker_id: r.worker_id.clone(),
        hardware_class: r.hardware_class.clone(),
        status: status_name(r.status()).to_string(),
        exit_code: r.exit_code,
        queued_at: T::from_ms(r.queued_at_ms),
        assigned_at: T::from_ms(r.assigned_at_ms),
        started_at: T::from_ms(r.started_at_ms),
        finished_at: T::from_ms(r.finished_at_ms),
        duration_s: r.duration_s,
        predicted_duration_s: r.predicted_duration_s,
        cpu_peak_pct: u.cpu_peak_pct,
        cpu_avg_pct: u.cpu_avg_pct,
        memory_peak_mb: u.memory_peak_mb,
        gpu_memory_peak_mb: u.gpu_memory_peak_mb,
        error: r.error.clone(),
        category: category_of(r).to_string(),
        cpu_time_s: u.cpu_time_s,
        oom_kills: u.oom_kills,
        memory_limit_mb: u.memory_limit_mb,
    }
}

/// The test cases of one attempt, read from its JUnit report(s), with the result they came with.
#[derive(Debug, Clone, Copy)]
pub struct AttemptCases<'a> {
    /// The attempt's result (task, attempt, worker, hardware class, finish time).
    pub result: &'a ExecutionResult,
    /// Its cases, in report order.
    pub cases: &'a [TestCase],
}

/// One `test_cases` row: one test case of one attempt.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
pub struct TestCaseRow<T> {
    time: T,
    task_id: String,
    attempt: u32,
    worker_id: String,
    hardware_class: String,
    suite: String,
    classname: String,
    name: String,
    case_index: u32,
    status: String,
    duration_s: f64,
    message: String,
}

pub(crate) fn test_case_rows<'a, T: TimeColumn>(a: AttemptCases<'a>) -> impl Iterator<Item = TestCaseRow<T>> + 'a {
    let r = a.result;
    a.cases.iter().enumerate().map(move |(i, c)| TestCaseRow {
        time: T::from_ms(r.finished_at_ms),
        task_id: r.task_id.clone(),
        attempt: r.attempt,
        worker_id: r.worker_id.clone(),
        hardware_class: r.hardware_class.clone(),
        suite: c.suite.clone(),
        classname: c.classname.clone(),
        name: c.name.clone(),
        case_index: u32::try_from(i).unwrap_or(u32::MAX),
        status: c.status.clone(),
        duration_s: c.duration_s,
        message: c.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::{FailureCategory, ResourceUsage};

    use super::*;

    #[test]
    fn run_rows_carry_the_category_and_the_cgroup_usage() {
        let oom = ExecutionResult {
            status: TaskStatus::Failed as i32,
            category: FailureCategory::OutOfMemory as i32,
            resources: Some(ResourceUsage {
                cpu_time_s: 2.5,
                oom_kills: 1,
                memory_limit_mb: 64,
                cgroup: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let row = run_row::<u32>(&oom);
        assert_eq!(
            (row.category.as_str(), row.cpu_time_s, row.oom_kills, row.memory_limit_mb),
            ("out_of_memory", 2.5, 1, 64)
        );
        // from a monitor older than the field: the status says it
        let old = ExecutionResult { status: TaskStatus::TimedOut as i32, ..Default::default() };
        assert_eq!(run_row::<i64>(&old).category, "timeout");
        let ok = ExecutionResult { status: TaskStatus::Succeeded as i32, ..Default::default() };
        assert_eq!(run_row::<i64>(&ok).category, "");
    }

    fn alert(state: AlertState) -> Alert {
        Alert {
            fingerprint: "f1".into(),
            state: state as i32,
            starts_at_ms: 1_000,
            labels: [("b".to_string(), "2".to_string()), ("a".to_string(), "1".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn alert_rows_take_the_transition_time_and_sorted_labels() {
        let firing = alert_row::<i64>(&alert(AlertState::Firing));
        assert_eq!((firing.time, firing.starts_at, firing.ends_at), (1_000, 1_000, 0));
        assert_eq!(firing.state, "firing");
        assert_eq!(firing.label_keys, ["a", "b"]);
        assert_eq!(firing.label_values, ["1", "2"]);
        let resolved = Alert { ends_at_ms: 5_000, ..alert(AlertState::Resolved) };
        let row = alert_row::<u32>(&resolved);
        assert_eq!((row.time, row.starts_at, row.ends_at), (5, 1, 5));
        assert_eq!(row.state, "resolved");
        let stamped = Alert { at_ms: 7_000, ..resolved };
        assert_eq!(alert_row::<i64>(&stamped).time, 7_000);
    }
}
