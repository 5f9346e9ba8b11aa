//! The queries of `hwsched report`: a fleet report over a time window, read
//! from `hw_metrics`, `task_runs` and `alerts`.
//!
//! [`Store::report`] runs them all; each section also has its own typed
//! query over a [`ReportWindow`]. They work on the old plain schema (18.16:
//! `DateTime` columns) and the modern one (`DateTime64(3)`,
//! `LowCardinality`): times are compared against `toDateTime(<unix s>)` and
//! every output column is cast explicitly, so the rows decode the same on both.

mod rows;

use clickhouse::{Client, Row};
use serde::Deserialize;

pub use self::rows::{
    AlertEntry, Failure, HardwareDurations, MetricStats, Point, Report, SlowTest, Summary, TaskResources,
    WorkerUtilization,
};
use crate::{Store, StoreError};

/// The metrics the utilization section covers (CPU and memory as the
/// machine-wide devices `cpu` and `mem`; GPUs per device).
fn utilization_filter() -> String {
    use hwsched_proto::metric::{CPU_UTIL_PCT, GPU_MEM_USED_PCT, GPU_TEMP_C, GPU_UTIL_PCT, MEM_USED_PCT};
    format!(
        "((metric = '{CPU_UTIL_PCT}' AND device = 'cpu') OR (metric = '{MEM_USED_PCT}' AND device = 'mem') \
         OR metric IN ('{GPU_UTIL_PCT}', '{GPU_MEM_USED_PCT}', '{GPU_TEMP_C}'))"
    )
}

const FAILED: &str = "('failed', 'timed_out', 'error')";
/// Attempts that ran to their end: a cancelled attempt or a superseded hedged
/// copy was stopped, so its duration says nothing about the test.
const RAN_TO_END: &str = "status != 'cancelled'";

/// What a failed read of the first queries says about the likely cause.
const HINT: &str = "has `hwsched schema migrate` (or the recorder) created the tables?";

/// The window the report's queries read.
#[derive(Debug, Clone)]
pub struct ReportWindow {
    /// Now (server clock), unix seconds.
    pub now: u32,
    /// Start of the window, unix seconds.
    pub from: u32,
    /// The bucket of the fleet CPU series, seconds (60 points or so, in whole minutes).
    pub bucket_s: u32,
    /// Most rows per list.
    pub limit: u64,
    /// `hw_metrics`, with `FINAL` where the table collapses redelivered samples.
    metrics: &'static str,
}

/// Attempts of the window by status.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct RunTotals {
    /// Attempts that finished in the window.
    pub tasks_run: u64,
    /// Of which succeeded.
    pub succeeded: u64,
    /// Of which failed, timed out or errored.
    pub failed: u64,
    /// Of which cancelled by a user.
    pub cancelled: u64,
    /// Of which superseded: hedged copies the scheduler stopped because their twin ended first.
    pub superseded: u64,
    /// Sum of the attempts' durations, seconds.
    pub total_s: f64,
}

/// One metric of one device of one worker, as read.
#[derive(Row, Deserialize)]
struct UtilRow {
    worker_id: String,
    metric: String,
    device: String,
    samples: u64,
    min: f64,
    avg: f64,
    p95: f64,
    max: f64,
}

fn read(what: &str) -> impl FnOnce(clickhouse::error::Error) -> StoreError + '_ {
    move |source| StoreError::Read { what: what.to_string(), source }
}

impl Store {
    /// Reads the report of the last `window_s` seconds (lists at most `limit` rows).
    pub async fn report(&self, window_s: u64, limit: u64) -> Result<Report, StoreError> {
        let w = self.report_window(window_s, limit).await?;
        let totals = self.run_totals(&w).await?;
        let workers_seen = self.workers_seen(&w).await?;
        let alerts_fired = self.alerts_fired(&w).await?;
        let utilization = self.utilization(&w).await?;
        let fleet_cpu = self.fleet_cpu(&w).await?;
        let tasks = self.task_resources(&w).await?;
        let slowest = self.slowest_tests(&w).await?;
        let hardware = self.hardware_durations(&w).await?;
        let failures = self.failures(&w).await?;
        let alerts = self.alert_entries(&w).await?;
        let decided = totals.succeeded + totals.failed;
        Ok(Report {
            generated_at: w.now,
            window_s,
            from: w.from,
            database: self.database.clone(),
            server_version: self.version().to_string(),
            limit,
            summary: Summary {
                workers_seen,
                tasks_run: totals.tasks_run,
                succeeded: totals.succeeded,
                failed: totals.failed,
                cancelled: totals.cancelled,
                superseded: totals.superseded,
                success_rate: (decided > 0).then(|| totals.succeeded as f64 / decided as f64),
                total_task_time_s: if totals.total_s.is_finite() { totals.total_s } else { 0.0 },
                alerts_fired,
            },
            utilization,
            fleet_cpu,
            fleet_cpu_bucket_s: w.bucket_s,
            tasks,
            slowest,
            hardware,
            failures,
            alerts,
        })
    }

    /// The window of the last `window_s` seconds by the server's clock.
    pub async fn report_window(&self, window_s: u64, limit: u64) -> Result<ReportWindow, StoreError> {
        let c = self.client();
        let now: u32 = c.query("SELECT toUInt32(now())").fetch_one().await.map_err(read("ClickHouse now()"))?;
        let from = now.saturating_sub(u32::try_from(window_s).unwrap_or(u32::MAX));
        // 60 points or so, in whole minutes
        let bucket = (window_s / 60).div_ceil(60).max(1) * 60;
        let bucket_s = u32::try_from(bucket).unwrap_or(u32::MAX);
        let metrics = metrics_table(c, &self.database).await?;
        Ok(ReportWindow { now, from, bucket_s, limit, metrics })
    }

    /// Attempts that finished in the window, by status (redelivered ones once).
    pub async fn run_totals(&self, w: &ReportWindow) -> Result<RunTotals, StoreError> {
        self.client()
            .query(&format!(
                "SELECT toUInt64(count()), toUInt64(countIf(status = 'succeeded')), toUInt64(countIf(status IN {FAILED})), \
                 toUInt64(countIf(status = 'cancelled' AND category != 'superseded')), \
                 toUInt64(countIf(status = 'cancelled' AND category = 'superseded')), toFloat64(sum(duration_s)) \
                 FROM task_runs FINAL WHERE finished_at >= toDateTime(?)"
            ))
            .bind(w.from)
            .fetch_one()
            .await
            .map_err(read(&format!("read task_runs ({HINT})")))
    }

    /// Distinct workers that sent metrics or ran a task in the window.
    pub async fn workers_seen(&self, w: &ReportWindow) -> Result<u64, StoreError> {
        self.client()
            .query(&format!(
                "SELECT toUInt64(uniqExact(w)) FROM (\
                 SELECT toString(worker_id) AS w FROM {} WHERE time >= toDateTime(?) \
                 UNION ALL SELECT toString(worker_id) AS w FROM task_runs FINAL WHERE finished_at >= toDateTime(?)\
                 ) WHERE w != ''",
                w.metrics
            ))
            .bind(w.from)
            .bind(w.from)
            .fetch_one()
            .await
            .map_err(read(&format!("read hw_metrics ({HINT})")))
    }

    /// Alerts that started firing in the window.
    pub async fn alerts_fired(&self, w: &ReportWindow) -> Result<u64, StoreError> {
        self.client()
            .query(
                "SELECT toUInt64(count()) FROM (SELECT fingerprint, starts_at FROM alerts FINAL \
                 WHERE starts_at >= toDateTime(?) AND state = 'firing' GROUP BY fingerprint, starts_at)",
            )
            .bind(w.from)
            .fetch_one()
            .await
            .map_err(read(&format!("read alerts ({HINT})")))
    }

    /// Per worker: min/avg/p95/max of CPU, memory and (per GPU) GPU metrics.
    pub async fn utilization(&self, w: &ReportWindow) -> Result<Vec<WorkerUtilization>, StoreError> {
        let util: Vec<UtilRow> = self
            .client()
            .query(&format!(
                "SELECT toString(worker_id), toString(metric), toString(device), toUInt64(count()), \
                 toFloat64(min(value)), toFloat64(avg(value)), toFloat64(quantile(0.95)(value)), toFloat64(max(value)) \
                 FROM {} WHERE time >= toDateTime(?) AND {} \
                 GROUP BY worker_id, metric, device ORDER BY worker_id, metric, device",
                w.metrics,
                utilization_filter()
            ))
            .bind(w.from)
            .fetch_all()
            .await
            .map_err(read("read hw_metrics"))?;
        let mut utilization: Vec<WorkerUtilization> = Vec::new();
        for r in util {
            let stats = MetricStats {
                metric: r.metric,
                device: r.device,
                samples: r.samples,
                min: r.min,
                avg: r.avg,
                p95: r.p95,
                max: r.max,
            };
            match utilization.last_mut() {
                Some(u) if u.worker_id == r.worker_id => u.metrics.push(stats),
                _ => utilization.push(WorkerUtilization { worker_id: r.worker_id, metrics: vec![stats] }),
            }
        }
        Ok(utilization)
    }

    /// Fleet CPU (average of every worker's `cpu.util_pct`) per bucket.
    pub async fn fleet_cpu(&self, w: &ReportWindow) -> Result<Vec<Point>, StoreError> {
        self.client()
            .query(&format!(
                "SELECT toUInt32(intDiv(toUInt32(toUnixTimestamp(time)), ?) * ?) AS t, toFloat64(avg(value)) \
                 FROM {} WHERE time >= toDateTime(?) AND metric = '{}' AND device = 'cpu' \
                 GROUP BY t ORDER BY t",
                w.metrics,
                hwsched_proto::metric::CPU_UTIL_PCT
            ))
            .bind(w.bucket_s)
            .bind(w.bucket_s)
            .bind(w.from)
            .fetch_all()
            .await
            .map_err(read("read hw_metrics"))
    }

    /// Task runs (attempts) of the window, latest first.
    pub async fn task_resources(&self, w: &ReportWindow) -> Result<Vec<TaskResources>, StoreError> {
        self.client()
            .query(
                "SELECT task_id, attempt, name, toString(test_type), toString(worker_id), toString(hardware_class), \
                 toString(status), toUInt32(toUnixTimestamp(finished_at)) AS f, toFloat64(duration_s), \
                 toFloat64(cpu_peak_pct), toFloat64(cpu_avg_pct), toUInt64(memory_peak_mb), toUInt64(gpu_memory_peak_mb) \
                 FROM task_runs FINAL WHERE finished_at >= toDateTime(?) ORDER BY f DESC, task_id, attempt LIMIT ?",
            )
            .bind(w.from)
            .bind(w.limit)
            .fetch_all()
            .await
            .map_err(read("read task_runs"))
    }

    /// Durations per task name x hardware class, slowest (p95) first, of the
    /// attempts that ran to their end ([`RAN_TO_END`]).
    pub async fn slowest_tests(&self, w: &ReportWindow) -> Result<Vec<SlowTest>, StoreError> {
        self.client()
            .query(&format!(
                "SELECT name, toString(test_type), toString(hardware_class), toUInt64(count()), \
                 toFloat64(quantile(0.5)(duration_s)), toFloat64(quantile(0.95)(duration_s)) AS p95, \
                 toFloat64(max(duration_s)) AS mx \
                 FROM task_runs FINAL WHERE finished_at >= toDateTime(?) AND {RAN_TO_END} \
                 GROUP BY name, test_type, hardware_class ORDER BY p95 DESC, mx DESC, name LIMIT ?",
            ))
            .bind(w.from)
            .bind(w.limit)
            .fetch_all()
            .await
            .map_err(read("read task_runs"))
    }

    /// Durations per hardware class, of the attempts that ran to their end
    /// ([`RAN_TO_END`]; the summary's total task time counts stopped ones too).
    pub async fn hardware_durations(&self, w: &ReportWindow) -> Result<Vec<HardwareDurations>, StoreError> {
        self.client()
            .query(&format!(
                "SELECT toString(hardware_class) AS h, toUInt64(count()), toFloat64(quantile(0.5)(duration_s)), \
                 toFloat64(quantile(0.95)(duration_s)), toFloat64(max(duration_s)), toFloat64(sum(duration_s)) \
                 FROM task_runs FINAL WHERE finished_at >= toDateTime(?) AND {RAN_TO_END} \
                 GROUP BY hardware_class ORDER BY h",
            ))
            .bind(w.from)
            .fetch_all()
            .await
            .map_err(read("read task_runs"))
    }

    /// Failed, timed-out and errored attempts, latest first.
    pub async fn failures(&self, w: &ReportWindow) -> Result<Vec<Failure>, StoreError> {
        self.client()
            .query(&format!(
                "SELECT task_id, attempt, name, toString(test_type), toString(worker_id), toString(hardware_class), \
                 toString(status), exit_code, toUInt32(toUnixTimestamp(finished_at)) AS f, toFloat64(duration_s), error \
                 FROM task_runs FINAL WHERE finished_at >= toDateTime(?) AND status IN {FAILED} \
                 ORDER BY f DESC, task_id, attempt LIMIT ?"
            ))
            .bind(w.from)
            .bind(w.limit)
            .fetch_all()
            .await
            .map_err(read("read task_runs"))
    }

    /// One entry per alert (fingerprint and start), from all its transitions:
    /// those with a transition in the window, and those still firing; latest
    /// start first.
    pub async fn alert_entries(&self, w: &ReportWindow) -> Result<Vec<AlertEntry>, StoreError> {
        self.client()
            .query(
                "SELECT fingerprint, toString(any(rule)), toString(any(severity)), toString(any(worker_id)), \
                 toString(any(device)), toString(any(metric)), \
                 if(max(state = 'resolved') = 1, 'resolved', toString(argMax(state, time))) AS st, \
                 toUInt32(toUnixTimestamp(starts_at)) AS s, toUInt32(max(toUnixTimestamp(ends_at))), \
                 toFloat64(argMax(value, time)), toFloat64(any(threshold)), argMax(summary, time), \
                 toString(argMax(muted_by, time)) \
                 FROM alerts FINAL GROUP BY fingerprint, starts_at \
                 HAVING max(time) >= toDateTime(?) OR st != 'resolved' \
                 ORDER BY s DESC, fingerprint LIMIT ?",
            )
            .bind(w.from)
            .bind(w.limit)
            .fetch_all()
            .await
            .map_err(read("read alerts"))
    }
}

/// `hw_metrics`, with `FINAL` where the table collapses redelivered samples
/// (a ReplacingMergeTree): plain `MergeTree` on older schemas refuses `FINAL`.
async fn metrics_table(c: &Client, database: &str) -> Result<&'static str, StoreError> {
    let engines: Vec<String> = c
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = 'hw_metrics'")
        .bind(database)
        .fetch_all()
        .await
        .map_err(read("read system.tables"))?;
    match engines.first() {
        None => Err(StoreError::MissingTable { database: database.to_string(), table: "hw_metrics" }),
        Some(e) if e.contains("Replacing") => Ok("hw_metrics FINAL"),
        Some(_) => Ok("hw_metrics"),
    }
}
