//! The rows of `hwsched report`: what [`Store::report`](crate::Store::report)
//! reads, the report's JSON as it is written.

use serde::{Deserialize, Serialize};

/// Everything the report shows; the JSON output is this object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When the report was made (server clock), unix seconds.
    pub generated_at: u32,
    /// The window's length, seconds (`--since`).
    pub window_s: u64,
    /// Start of the window, unix seconds (`generated_at - window_s`).
    pub from: u32,
    /// ClickHouse database read.
    pub database: String,
    /// ClickHouse server version (major.minor).
    pub server_version: String,
    /// Most rows per list.
    pub limit: u64,
    /// Fleet totals.
    pub summary: Summary,
    /// Per worker: min/avg/p95/max of CPU, memory and (per GPU) GPU metrics.
    pub utilization: Vec<WorkerUtilization>,
    /// Fleet CPU (average of every worker's `cpu.util_pct`) per bucket.
    pub fleet_cpu: Vec<Point>,
    /// The bucket of `fleet_cpu`, seconds.
    pub fleet_cpu_bucket_s: u32,
    /// Task runs (attempts) of the window, latest first, at most `limit`.
    pub tasks: Vec<TaskResources>,
    /// Durations per task name x hardware class, slowest (p95) first, at most `limit`.
    pub slowest: Vec<SlowTest>,
    /// Durations per hardware class.
    pub hardware: Vec<HardwareDurations>,
    /// Failed, timed-out and errored attempts, latest first, at most `limit`.
    pub failures: Vec<Failure>,
    /// Alerts active in the window (or still firing), latest start first, at most `limit`.
    pub alerts: Vec<AlertEntry>,
}

/// Fleet totals of the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Distinct workers that sent metrics or ran a task.
    pub workers_seen: u64,
    /// Attempts that finished in the window (any status).
    pub tasks_run: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Of which failed, timed out or errored.
    pub failed: u64,
    /// Of which cancelled by a user.
    pub cancelled: u64,
    /// Of which superseded: hedged copies the scheduler stopped because their
    /// twin ended first (absent from reports written before the field: 0).
    #[serde(default)]
    pub superseded: u64,
    /// succeeded / (succeeded + failed); none without either.
    pub success_rate: Option<f64>,
    /// Sum of the attempts' durations, seconds.
    pub total_task_time_s: f64,
    /// Alerts that started firing in the window.
    pub alerts_fired: u64,
}

/// One worker's metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerUtilization {
    /// Worker id.
    pub worker_id: String,
    /// One entry per metric and device.
    pub metrics: Vec<MetricStats>,
}

impl WorkerUtilization {
    /// The stats of `metric` on `device`.
    pub fn stat(&self, metric: &str, device: &str) -> Option<&MetricStats> {
        self.metrics.iter().find(|m| m.metric == metric && m.device == device)
    }
}

/// Statistics of one metric of one device over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricStats {
    /// e.g. cpu.util_pct.
    pub metric: String,
    /// e.g. cpu, mem, gpu0.
    pub device: String,
    /// Samples.
    pub samples: u64,
    /// Minimum.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// 95th percentile (ClickHouse `quantile`, approximate on large samples).
    pub p95: f64,
    /// Maximum.
    pub max: f64,
}

/// One point of a time series.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Point {
    /// Start of the bucket, unix seconds.
    pub time: u32,
    /// Value.
    pub value: f64,
}

/// One attempt's resources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct TaskResources {
    /// Task id.
    pub task_id: String,
    /// Attempt.
    pub attempt: u32,
    /// Task name.
    pub name: String,
    /// Test type.
    pub test_type: String,
    /// Worker.
    pub worker_id: String,
    /// Hardware class.
    pub hardware_class: String,
    /// succeeded, failed, timed_out, error, cancelled.
    pub status: String,
    /// Finished, unix seconds.
    pub finished_at: u32,
    /// Duration, seconds.
    pub duration_s: f64,
    /// CPU peak, %.
    pub cpu_peak_pct: f64,
    /// CPU average, %.
    pub cpu_avg_pct: f64,
    /// Memory peak, MB.
    pub memory_peak_mb: u64,
    /// GPU memory peak, MB.
    pub gpu_memory_peak_mb: u64,
}

/// Durations of one task name on one hardware class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct SlowTest {
    /// Task name.
    pub name: String,
    /// Test type.
    pub test_type: String,
    /// Hardware class.
    pub hardware_class: String,
    /// Attempts.
    pub runs: u64,
    /// Median duration, seconds.
    pub p50_s: f64,
    /// 95th percentile, seconds.
    pub p95_s: f64,
    /// Longest, seconds.
    pub max_s: f64,
}

/// Durations on one hardware class.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct HardwareDurations {
    /// Hardware class.
    pub hardware_class: String,
    /// Attempts.
    pub runs: u64,
    /// Median duration, seconds.
    pub p50_s: f64,
    /// 95th percentile, seconds.
    pub p95_s: f64,
    /// Longest, seconds.
    pub max_s: f64,
    /// Sum, seconds.
    pub total_s: f64,
}

/// One failed attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct Failure {
    /// Task id.
    pub task_id: String,
    /// Attempt.
    pub attempt: u32,
    /// Task name.
    pub name: String,
    /// Test type.
    pub test_type: String,
    /// Worker.
    pub worker_id: String,
    /// Hardware class.
    pub hardware_class: String,
    /// failed, timed_out or error.
    pub status: String,
    /// Exit code (-1: killed or never started).
    pub exit_code: i32,
    /// Finished, unix seconds.
    pub finished_at: u32,
    /// Duration, seconds.
    pub duration_s: f64,
    /// Error text.
    pub error: String,
}

/// One alert (all transitions of one fingerprint and start).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct AlertEntry {
    /// Fingerprint.
    pub fingerprint: String,
    /// Rule.
    pub rule: String,
    /// info, warning, critical.
    pub severity: String,
    /// Worker.
    pub worker_id: String,
    /// Device.
    pub device: String,
    /// Metric.
    pub metric: String,
    /// Latest state: firing or resolved.
    pub state: String,
    /// Started, unix seconds.
    pub starts_at: u32,
    /// Resolved, unix seconds (0 while firing).
    pub ends_at: u32,
    /// Value at the latest transition.
    pub value: f64,
    /// Threshold.
    pub threshold: f64,
    /// Summary.
    pub summary: String,
    /// Why notifications were muted (silence or inhibition), empty if not.
    pub muted_by: String,
}
