//! `hwsched report`: a fleet report over a time window, read from ClickHouse
//! (`hw_metrics`, `task_runs`, `alerts`) and written as a self-contained HTML
//! page (inline SVG charts, no script, nothing fetched) and/or as JSON.
//!
//! [`fetch`] runs the queries; [`render_html`] is a pure function from the
//! fetched [`Report`] to the page. The queries work on the old plain schema
//! (18.16: `DateTime` columns) and the modern one (`DateTime64(3)`,
//! `LowCardinality`): times are compared against `toDateTime(<unix s>)` and
//! every output column is cast explicitly, so the rows decode the same on both.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use hwsched_config::ClickHouseConfig;
use hwsched_store::Store;
use serde::{Deserialize, Serialize};

/// `hwsched report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// How far back to look: a number and a unit, s, m, h, d or w (30m, 24h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_since)]
    since: u64,
    /// Write the report as a self-contained HTML page (inline SVG charts) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Most rows per list (task runs, failures, slowest tests, alerts).
    #[arg(long, default_value_t = 500)]
    limit: u64,
}

/// `--since`: "90s", "30m", "24h", "7d", "2w" to seconds.
pub fn parse_since(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 30m, 24h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w (e.g. 30m, 24h, 7d)")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: must be more than zero and at most a few years")),
        Some(secs) if secs > 20 * 365 * 86_400 => Err(format!("{s:?}: at most 20 years")),
        Some(secs) => Ok(secs),
    }
}

// ---------------------------------------------------------------------------
// The data
// ---------------------------------------------------------------------------

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
    /// Of which cancelled.
    pub cancelled: u64,
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

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// The metrics the utilization section covers (CPU and memory as the
/// machine-wide devices `cpu` and `mem`; GPUs per device).
const UTILIZATION_FILTER: &str =
    "((metric = 'cpu.util_pct' AND device = 'cpu') OR (metric = 'mem.used_pct' AND device = 'mem') \
     OR metric IN ('gpu.util_pct', 'gpu.mem_used_pct', 'gpu.temp_c'))";

const FAILED: &str = "('failed', 'timed_out', 'error')";

/// Reads the report of the last `window_s` seconds (lists at most `limit` rows).
pub async fn fetch(store: &Store, database: &str, window_s: u64, limit: u64) -> anyhow::Result<Report> {
    let c = store.client();
    let hint = "has `hwsched schema migrate` (or the recorder) created the tables?";
    let now: u32 = c.query("SELECT toUInt32(now())").fetch_one().await.context("ClickHouse now()")?;
    let from = now.saturating_sub(u32::try_from(window_s).unwrap_or(u32::MAX));
    // 60 points or so, in whole minutes
    let bucket = (window_s / 60).div_ceil(60).max(1) * 60;
    let bucket = u32::try_from(bucket).unwrap_or(u32::MAX);
    let metrics = metrics_table(c, database).await?;

    #[derive(clickhouse::Row, Deserialize)]
    struct RunTotals {
        tasks_run: u64,
        succeeded: u64,
        failed: u64,
        cancelled: u64,
        total_s: f64,
    }
    let totals: RunTotals = c
        .query(&format!(
            "SELECT toUInt64(count()), toUInt64(countIf(status = 'succeeded')), toUInt64(countIf(status IN {FAILED})), \
             toUInt64(countIf(status = 'cancelled')), toFloat64(sum(duration_s)) \
             FROM task_runs FINAL WHERE finished_at >= toDateTime(?)"
        ))
        .bind(from)
        .fetch_one()
        .await
        .with_context(|| format!("read task_runs ({hint})"))?;
    let workers_seen: u64 = c
        .query(&format!(
            "SELECT toUInt64(uniqExact(w)) FROM (\
             SELECT toString(worker_id) AS w FROM {metrics} WHERE time >= toDateTime(?) \
             UNION ALL SELECT toString(worker_id) AS w FROM task_runs FINAL WHERE finished_at >= toDateTime(?)\
             ) WHERE w != ''"
        ))
        .bind(from)
        .bind(from)
        .fetch_one()
        .await
        .with_context(|| format!("read hw_metrics ({hint})"))?;
    let alerts_fired: u64 = c
        .query(
            "SELECT toUInt64(count()) FROM (SELECT fingerprint, starts_at FROM alerts FINAL \
             WHERE starts_at >= toDateTime(?) AND state = 'firing' GROUP BY fingerprint, starts_at)",
        )
        .bind(from)
        .fetch_one()
        .await
        .with_context(|| format!("read alerts ({hint})"))?;

    #[derive(clickhouse::Row, Deserialize)]
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
    let util: Vec<UtilRow> = c
        .query(&format!(
            "SELECT toString(worker_id), toString(metric), toString(device), toUInt64(count()), \
             toFloat64(min(value)), toFloat64(avg(value)), toFloat64(quantile(0.95)(value)), toFloat64(max(value)) \
             FROM {metrics} WHERE time >= toDateTime(?) AND {UTILIZATION_FILTER} \
             GROUP BY worker_id, metric, device ORDER BY worker_id, metric, device"
        ))
        .bind(from)
        .fetch_all()
        .await
        .context("read hw_metrics")?;
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
            Some(w) if w.worker_id == r.worker_id => w.metrics.push(stats),
            _ => utilization.push(WorkerUtilization { worker_id: r.worker_id, metrics: vec![stats] }),
        }
    }
    let fleet_cpu: Vec<Point> = c
        .query(&format!(
            "SELECT toUInt32(intDiv(toUInt32(toUnixTimestamp(time)), ?) * ?) AS t, toFloat64(avg(value)) \
             FROM {metrics} WHERE time >= toDateTime(?) AND metric = 'cpu.util_pct' AND device = 'cpu' \
             GROUP BY t ORDER BY t"
        ))
        .bind(bucket)
        .bind(bucket)
        .bind(from)
        .fetch_all()
        .await
        .context("read hw_metrics")?;

    let tasks: Vec<TaskResources> = c
        .query(
            "SELECT task_id, attempt, name, toString(test_type), toString(worker_id), toString(hardware_class), \
             toString(status), toUInt32(toUnixTimestamp(finished_at)) AS f, toFloat64(duration_s), \
             toFloat64(cpu_peak_pct), toFloat64(cpu_avg_pct), toUInt64(memory_peak_mb), toUInt64(gpu_memory_peak_mb) \
             FROM task_runs FINAL WHERE finished_at >= toDateTime(?) ORDER BY f DESC, task_id, attempt LIMIT ?",
        )
        .bind(from)
        .bind(limit)
        .fetch_all()
        .await
        .context("read task_runs")?;
    let slowest: Vec<SlowTest> = c
        .query(
            "SELECT name, toString(test_type), toString(hardware_class), toUInt64(count()), \
             toFloat64(quantile(0.5)(duration_s)), toFloat64(quantile(0.95)(duration_s)) AS p95, \
             toFloat64(max(duration_s)) AS mx \
             FROM task_runs FINAL WHERE finished_at >= toDateTime(?) \
             GROUP BY name, test_type, hardware_class ORDER BY p95 DESC, mx DESC, name LIMIT ?",
        )
        .bind(from)
        .bind(limit)
        .fetch_all()
        .await
        .context("read task_runs")?;
    let hardware: Vec<HardwareDurations> = c
        .query(
            "SELECT toString(hardware_class) AS h, toUInt64(count()), toFloat64(quantile(0.5)(duration_s)), \
             toFloat64(quantile(0.95)(duration_s)), toFloat64(max(duration_s)), toFloat64(sum(duration_s)) \
             FROM task_runs FINAL WHERE finished_at >= toDateTime(?) GROUP BY hardware_class ORDER BY h",
        )
        .bind(from)
        .fetch_all()
        .await
        .context("read task_runs")?;
    let failures: Vec<Failure> = c
        .query(&format!(
            "SELECT task_id, attempt, name, toString(test_type), toString(worker_id), toString(hardware_class), \
             toString(status), exit_code, toUInt32(toUnixTimestamp(finished_at)) AS f, toFloat64(duration_s), error \
             FROM task_runs FINAL WHERE finished_at >= toDateTime(?) AND status IN {FAILED} \
             ORDER BY f DESC, task_id, attempt LIMIT ?"
        ))
        .bind(from)
        .bind(limit)
        .fetch_all()
        .await
        .context("read task_runs")?;
    // One entry per alert (fingerprint and start), from all its transitions:
    // those with a transition in the window, and those still firing.
    let alerts: Vec<AlertEntry> = c
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
        .bind(from)
        .bind(limit)
        .fetch_all()
        .await
        .context("read alerts")?;

    let decided = totals.succeeded + totals.failed;
    Ok(Report {
        generated_at: now,
        window_s,
        from,
        database: database.to_string(),
        server_version: store.version().to_string(),
        limit,
        summary: Summary {
            workers_seen,
            tasks_run: totals.tasks_run,
            succeeded: totals.succeeded,
            failed: totals.failed,
            cancelled: totals.cancelled,
            success_rate: (decided > 0).then(|| totals.succeeded as f64 / decided as f64),
            total_task_time_s: finite(totals.total_s),
            alerts_fired,
        },
        utilization,
        fleet_cpu,
        fleet_cpu_bucket_s: bucket,
        tasks,
        slowest,
        hardware,
        failures,
        alerts,
    })
}

/// `hw_metrics`, with `FINAL` where the table collapses redelivered samples
/// (a ReplacingMergeTree): plain `MergeTree` on older schemas refuses `FINAL`.
async fn metrics_table(c: &clickhouse::Client, database: &str) -> anyhow::Result<&'static str> {
    let engines: Vec<String> = c
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = 'hw_metrics'")
        .bind(database)
        .fetch_all()
        .await
        .context("read system.tables")?;
    match engines.first() {
        None => anyhow::bail!(
            "no table {database}.hw_metrics: has `hwsched schema migrate` (or the recorder) created the tables?"
        ),
        Some(e) if e.contains("Replacing") => Ok("hw_metrics FINAL"),
        Some(_) => Ok("hw_metrics"),
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// `hwsched report`.
pub async fn run(clickhouse: &ClickHouseConfig, args: ReportArgs) -> anyhow::Result<()> {
    let store = Store::connect(clickhouse).await?;
    let report = fetch(&store, &clickhouse.database, args.since, args.limit).await?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, render_html(&report)).with_context(|| format!("write {}", path.display()))?;
    }
    let s = &report.summary;
    println!(
        "last {}: {} workers, {} task runs ({} succeeded, {} failed, {} cancelled), success rate {}, task time {}, {} alerts fired",
        fmt_window(report.window_s),
        s.workers_seen,
        s.tasks_run,
        s.succeeded,
        s.failed,
        s.cancelled,
        s.success_rate.map_or("-".to_string(), |r| format!("{:.1}%", 100.0 * r)),
        fmt_secs(s.total_task_time_s),
        s.alerts_fired
    );
    for path in [&args.json, &args.html].into_iter().flatten() {
        println!("wrote {}", path.display());
    }
    if args.json.is_none() && args.html.is_none() {
        println!("(give --html FILE and/or --json FILE for the full report)");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rendering (pure)
// ---------------------------------------------------------------------------

/// Escapes text for HTML and SVG/XML, in element content and in quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // control characters are not allowed in XML 1.0 (SVG)
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `n` characters of `s`, with an ellipsis when cut (escape afterwards).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// "24h", "7d", "30m", "90s".
pub fn fmt_window(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 && s >= 86_400 && s != 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s >= 3600 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// "4.2s", "12.5m", "3.1h".
fn fmt_secs(s: f64) -> String {
    crate::model::secs(finite(s))
}

fn fmt_num(x: f64) -> String {
    let x = finite(x);
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Unix seconds as "YYYY-MM-DD HH:MM:SS" (UTC); "-" for 0.
pub fn fmt_time(t: u32) -> String {
    if t == 0 {
        return "-".into();
    }
    let days = i64::from(t / 86_400);
    let rem = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The smallest 1, 2 or 5 x 10^k at or above `x` (and above zero).
fn nice_ceil(x: f64) -> f64 {
    if !x.is_finite() || x <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|v| *v >= x * 0.999_999).unwrap_or(10.0 * p)
}

const COLORS: [&str; 4] = ["#4e79a7", "#f28e2b", "#e15759", "#59a14f"];

/// A horizontal grouped bar chart: one group per label, one bar per series.
/// `unit` follows the values ("%", "s"); `min_max` is the least axis maximum.
fn bar_chart(title: &str, series: &[&str], groups: &[(String, Vec<f64>)], unit: &str, min_max: f64) -> String {
    let (w, label_w, value_w, bar_h, gap, top) = (760.0, 230.0, 70.0, 12.0, 10.0, 46.0);
    let plot_w = w - label_w - value_w;
    let group_h = bar_h * series.len() as f64 + gap;
    let h = top + group_h * groups.len() as f64 + 24.0;
    let max = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).fold(min_max, f64::max);
    let max = nice_ceil(max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h:.0}\" \
         viewBox=\"0 0 {w} {h:.0}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"0\" y=\"16\" class=\"ct\">{t}</text>",
        t = esc(title)
    );
    // legend
    let mut lx = label_w;
    for (i, name) in series.iter().enumerate() {
        s.push_str(&format!(
            "<rect x=\"{lx:.0}\" y=\"24\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.0}\" y=\"33\" class=\"lg\">{}</text>",
            COLORS[i % COLORS.len()],
            lx + 14.0,
            esc(name)
        ));
        lx += 24.0 + 7.0 * name.chars().count() as f64;
    }
    // grid and axis labels
    let bottom = h - 20.0;
    for k in 0..=4 {
        let x = label_w + plot_w * f64::from(k) / 4.0;
        let v = max * f64::from(k) / 4.0;
        s.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" class=\"grid\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"middle\">{}{}</text>",
            bottom + 14.0,
            fmt_num(v),
            esc(unit)
        ));
    }
    for (gi, (label, values)) in groups.iter().enumerate() {
        let gy = top + group_h * gi as f64;
        s.push_str(&format!(
            "<text x=\"{:.0}\" y=\"{:.1}\" class=\"lb\" text-anchor=\"end\"><title>{}</title>{}</text>",
            label_w - 8.0,
            gy + (group_h - gap) / 2.0 + 4.0,
            esc(label),
            esc(&clip(label, 34))
        ));
        for (si, v) in values.iter().enumerate() {
            let v = finite(*v).max(0.0);
            let y = gy + bar_h * si as f64;
            let bw = (plot_w * v / max).clamp(0.0, plot_w);
            let name = series.get(si).copied().unwrap_or("");
            s.push_str(&format!(
                "<rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{}\">\
                 <title>{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"val\">{}{}</text>",
                bar_h - 2.0,
                COLORS[si % COLORS.len()],
                esc(&format!("{label}: {name} {}{unit}", fmt_num(v))),
                label_w + bw + 4.0,
                y + bar_h - 3.0,
                fmt_num(v),
                esc(unit)
            ));
        }
    }
    s.push_str("</svg>");
    s
}

/// A time series as a line with its area, 0 to max(100, peak).
fn sparkline(title: &str, points: &[Point], unit: &str) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 150.0, 40.0, 10.0, 26.0, 22.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>\
         <text x=\"0\" y=\"16\" class=\"ct\">{t}</text>",
        t = esc(title)
    );
    let max = nice_ceil(points.iter().map(|p| finite(p.value)).fold(100.0, f64::max));
    for k in 0..=2 {
        let y = top + ph * f64::from(k) / 2.0;
        let v = max * f64::from(2 - k) / 2.0;
        s.push_str(&format!(
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.0}\" y2=\"{y:.1}\" class=\"grid\"/>\
             <text x=\"{:.0}\" y=\"{:.1}\" class=\"ax\" text-anchor=\"end\">{}{}</text>",
            w - right,
            left - 4.0,
            y + 4.0,
            fmt_num(v),
            esc(unit)
        ));
    }
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) if b.time > a.time => (f64::from(a.time), f64::from(b.time)),
        _ => {
            s.push_str(&format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" class=\"ax\" text-anchor=\"middle\">not enough samples for a line</text></svg>",
                left + pw / 2.0,
                top + ph / 2.0
            ));
            return s;
        }
    };
    let xy = |p: &Point| {
        let x = left + pw * (f64::from(p.time) - t0) / (t1 - t0);
        let y = top + ph * (1.0 - (finite(p.value) / max).clamp(0.0, 1.0));
        (x, y)
    };
    let line: Vec<String> = points.iter().map(xy).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let base = top + ph;
    s.push_str(&format!(
        "<polygon points=\"{left:.1},{base:.1} {} {:.1},{base:.1}\" class=\"area\"/>\
         <polyline points=\"{}\" class=\"line\"/>",
        line.join(" "),
        left + pw,
        line.join(" ")
    ));
    let peak = points.iter().copied().fold(points[0], |a, b| if b.value > a.value { b } else { a });
    let (px, py) = xy(&peak);
    s.push_str(&format!(
        "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" class=\"peak\"><title>{}</title></circle>",
        esc(&format!("peak {}{unit} at {} UTC", fmt_num(peak.value), fmt_time(peak.time)))
    ));
    for (x, t, anchor) in [(left, t0, "start"), (w - right, t1, "end")] {
        s.push_str(&format!(
            "<text x=\"{x:.0}\" y=\"{:.0}\" class=\"ax\" text-anchor=\"{anchor}\">{}</text>",
            h - 6.0,
            esc(&fmt_time(t as u32))
        ));
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#1d2330;background:#fff}\
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e8;padding-bottom:4px}\
.meta{color:#5b6475;margin:0 0 12px}.empty{color:#5b6475;font-style:italic}\
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #dde1e8;border-radius:6px;padding:10px 14px;min-width:140px}\
.card .v{font-size:22px;font-weight:600}.card .k{color:#5b6475;font-size:12px;text-transform:uppercase;letter-spacing:.04em}\
table{border-collapse:collapse;width:100%;margin:8px 0 4px;font-size:13px}\
th,td{border-bottom:1px solid #eceef2;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f5f6f8;font-weight:600}td.t{white-space:nowrap}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}\
.st-succeeded{color:#2e7d32}.st-failed,.st-error,.st-timed_out,.sev-critical{color:#c62828;font-weight:600}\
.st-firing,.sev-warning{color:#e65100;font-weight:600}.st-resolved{color:#2e7d32}\
.err{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:12px;margin:0}\
svg.chart{display:block;margin:8px 0}svg .ct{font-size:13px;font-weight:600;fill:#1d2330}\
svg text{font-family:system-ui,sans-serif}svg .lg,svg .lb{font-size:12px;fill:#1d2330}\
svg .ax,svg .val{font-size:11px;fill:#5b6475}svg .grid{stroke:#e3e6eb;stroke-width:1}\
svg .line{fill:none;stroke:#4e79a7;stroke-width:2}svg .area{fill:#4e79a7;fill-opacity:.15;stroke:none}\
svg .peak{fill:#e15759}.note{color:#5b6475;font-size:12px}footer{margin-top:32px;color:#8a93a3;font-size:12px}";

fn td(text: &str) -> String {
    format!("<td>{}</td>", esc(text))
}

fn td_time(t: u32) -> String {
    format!("<td class=\"t\">{}</td>", esc(&fmt_time(t)))
}

fn td_n(text: &str) -> String {
    format!("<td class=\"n\">{}</td>", esc(text))
}

fn td_class(class: &str, text: &str) -> String {
    format!("<td class=\"{}\">{}</td>", esc(class), esc(text))
}

fn thead(cols: &[&str]) -> String {
    let mut s = String::from("<thead><tr>");
    for c in cols {
        // numeric columns are marked with a leading '#'
        match c.strip_prefix('#') {
            Some(c) => s.push_str(&format!("<th class=\"n\">{}</th>", esc(c))),
            None => s.push_str(&format!("<th>{}</th>", esc(c))),
        }
    }
    s.push_str("</tr></thead>");
    s
}

/// A table with a header and one row per item, or, with no items, the `none` note.
fn table<T>(h: &mut String, items: &[T], none: &str, cols: &[&str], row: impl Fn(&T) -> Vec<String>) {
    if items.is_empty() {
        h.push_str(&empty(none));
        return;
    }
    h.push_str("<table>");
    h.push_str(&thead(cols));
    h.push_str("<tbody>");
    for item in items {
        h.push_str("<tr>");
        for cell in row(item) {
            h.push_str(&cell);
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table>");
}

fn empty(what: &str) -> String {
    format!("<p class=\"empty\">{}</p>", esc(what))
}

fn truncated_note(shown: usize, limit: u64, what: &str) -> String {
    if shown as u64 >= limit {
        format!("<p class=\"note\">{}</p>", esc(&format!("Showing the first {shown} {what} (--limit {limit}).")))
    } else {
        String::new()
    }
}

fn card(key: &str, value: &str) -> String {
    format!("<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>", esc(key), esc(value))
}

fn metric_label(metric: &str) -> &str {
    match metric {
        "cpu.util_pct" => "CPU %",
        "mem.used_pct" => "memory %",
        "gpu.util_pct" => "GPU %",
        "gpu.mem_used_pct" => "GPU memory %",
        "gpu.temp_c" => "GPU temperature °C",
        other => other,
    }
}

/// The report as one self-contained HTML page: inline CSS and SVG, no script,
/// nothing loaded from elsewhere. Every piece of data goes through [`esc`].
pub fn render_html(r: &Report) -> String {
    let window = fmt_window(r.window_s);
    let mut h = String::with_capacity(64 * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str(&format!("<title>{}</title>", esc(&format!("hwsched report: last {window}"))));
    h.push_str(&format!("<style>{STYLE}</style></head><body>\n"));
    h.push_str(&format!("<h1>{}</h1>", esc(&format!("hwsched report: last {window}"))));
    h.push_str(&format!(
        "<p class=\"meta\">{}</p>\n",
        esc(&format!(
            "From {} to {} UTC · database {} on ClickHouse {}",
            fmt_time(r.from),
            fmt_time(r.generated_at),
            r.database,
            r.server_version
        ))
    ));

    // summary
    let s = &r.summary;
    h.push_str("<section id=\"summary\"><h2>Fleet summary</h2><div class=\"cards\">");
    h.push_str(&card("workers seen", &s.workers_seen.to_string()));
    h.push_str(&card("task runs", &s.tasks_run.to_string()));
    h.push_str(&card("success rate", &s.success_rate.map_or("-".into(), |x| format!("{:.1}%", 100.0 * x))));
    h.push_str(&card("failed", &s.failed.to_string()));
    h.push_str(&card("cancelled", &s.cancelled.to_string()));
    h.push_str(&card("total task time", &fmt_secs(s.total_task_time_s)));
    h.push_str(&card("alerts fired", &s.alerts_fired.to_string()));
    h.push_str("</div></section>\n");

    // utilization
    h.push_str("<section id=\"utilization\"><h2>Per-worker utilization</h2>");
    if r.utilization.is_empty() {
        h.push_str(&empty("No CPU, memory or GPU metrics in this window."));
    } else {
        let cpu: Vec<(String, Vec<f64>)> = r
            .utilization
            .iter()
            .filter_map(|w| w.stat("cpu.util_pct", "cpu").map(|m| (w.worker_id.clone(), vec![m.avg, m.p95])))
            .collect();
        if !cpu.is_empty() {
            h.push_str(&bar_chart("CPU utilization per worker", &["avg", "p95"], &cpu, "%", 100.0));
        }
        let mem: Vec<(String, Vec<f64>)> = r
            .utilization
            .iter()
            .filter_map(|w| w.stat("mem.used_pct", "mem").map(|m| (w.worker_id.clone(), vec![m.avg, m.p95])))
            .collect();
        if !mem.is_empty() {
            h.push_str(&bar_chart("Memory used per worker", &["avg", "p95"], &mem, "%", 100.0));
        }
        if r.fleet_cpu.len() > 1 {
            h.push_str(&sparkline(
                &format!("Fleet CPU, average of all workers per {}", fmt_window(u64::from(r.fleet_cpu_bucket_s))),
                &r.fleet_cpu,
                "%",
            ));
        }
        h.push_str("<table>");
        h.push_str(&thead(&["worker", "metric", "device", "#samples", "#min", "#avg", "#p95", "#max"]));
        h.push_str("<tbody>");
        for w in &r.utilization {
            for m in &w.metrics {
                h.push_str("<tr>");
                h.push_str(&td(&w.worker_id));
                h.push_str(&td(metric_label(&m.metric)));
                h.push_str(&td(&m.device));
                h.push_str(&td_n(&m.samples.to_string()));
                for v in [m.min, m.avg, m.p95, m.max] {
                    h.push_str(&td_n(&fmt_num(v)));
                }
                h.push_str("</tr>");
            }
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");

    // slowest tests and hardware classes
    h.push_str("<section id=\"durations\"><h2>Durations by hardware class</h2>");
    if r.hardware.is_empty() {
        h.push_str(&empty("No task runs in this window."));
    } else {
        let groups: Vec<(String, Vec<f64>)> =
            r.hardware.iter().map(|c| (display_class(&c.hardware_class), vec![c.p50_s, c.p95_s, c.max_s])).collect();
        h.push_str(&bar_chart("Task duration per hardware class", &["p50", "p95", "max"], &groups, "s", 0.0));
        h.push_str("<table>");
        h.push_str(&thead(&["hardware class", "#runs", "#p50", "#p95", "#max", "#total"]));
        h.push_str("<tbody>");
        for c in &r.hardware {
            h.push_str("<tr>");
            h.push_str(&td(&display_class(&c.hardware_class)));
            h.push_str(&td_n(&c.runs.to_string()));
            for v in [c.p50_s, c.p95_s, c.max_s, c.total_s] {
                h.push_str(&td_n(&fmt_secs(v)));
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("<h2>Slowest tests by hardware class</h2>");
    let cols = ["task", "test type", "hardware class", "#runs", "#p50", "#p95", "#max"];
    table(&mut h, &r.slowest, "No task runs in this window.", &cols, |t| {
        let mut row =
            vec![td(&t.name), td(&t.test_type), td(&display_class(&t.hardware_class)), td_n(&t.runs.to_string())];
        row.extend([t.p50_s, t.p95_s, t.max_s].map(|v| td_n(&fmt_secs(v))));
        row
    });
    h.push_str(&truncated_note(r.slowest.len(), r.limit, "task x hardware pairs"));
    h.push_str("</section>\n");

    // failures
    h.push_str("<section id=\"failures\"><h2>Failures</h2>");
    let cols = ["finished (UTC)", "task", "task id", "worker", "status", "#exit", "#duration", "error"];
    table(&mut h, &r.failures, "No failed, timed-out or errored task runs in this window.", &cols, |f| {
        vec![
            td_time(f.finished_at),
            td(&f.name),
            td(&format!("{} #{}", f.task_id, f.attempt)),
            td(&f.worker_id),
            td_class(&format!("st-{}", f.status), &f.status),
            td_n(&f.exit_code.to_string()),
            td_n(&fmt_secs(f.duration_s)),
            format!(
                "<td><pre class=\"err\" title=\"{}\">{}</pre></td>",
                esc(&clip(&f.error, 2000)),
                esc(&clip(&f.error, 400))
            ),
        ]
    });
    h.push_str(&truncated_note(r.failures.len(), r.limit, "failures"));
    h.push_str("</section>\n");

    // alerts
    h.push_str("<section id=\"alerts\"><h2>Alerts</h2>");
    let cols = [
        "rule",
        "severity",
        "worker",
        "device",
        "state",
        "started (UTC)",
        "ended (UTC)",
        "#value",
        "#threshold",
        "summary",
    ];
    table(&mut h, &r.alerts, "No alerts in this window.", &cols, |a| {
        let state =
            if a.muted_by.is_empty() { a.state.clone() } else { format!("{} (muted: {})", a.state, a.muted_by) };
        vec![
            td(&a.rule),
            td_class(&format!("sev-{}", a.severity), &a.severity),
            td(&a.worker_id),
            td(&a.device),
            td_class(&format!("st-{}", a.state), &state),
            td_time(a.starts_at),
            td_time(a.ends_at),
            td_n(&fmt_num(a.value)),
            td_n(&fmt_num(a.threshold)),
            td(&a.summary),
        ]
    });
    h.push_str(&truncated_note(r.alerts.len(), r.limit, "alerts"));
    h.push_str("</section>\n");

    // per-task resources
    h.push_str("<section id=\"tasks\"><h2>Task runs and their resources</h2>");
    let cols = [
        "finished (UTC)",
        "task",
        "task id",
        "worker",
        "hardware class",
        "status",
        "#duration",
        "#CPU avg %",
        "#CPU peak %",
        "#memory peak MB",
        "#GPU memory peak MB",
    ];
    table(&mut h, &r.tasks, "No task runs in this window.", &cols, |t| {
        vec![
            td_time(t.finished_at),
            td(&t.name),
            td(&format!("{} #{}", t.task_id, t.attempt)),
            td(&t.worker_id),
            td(&display_class(&t.hardware_class)),
            td_class(&format!("st-{}", t.status), &t.status),
            td_n(&fmt_secs(t.duration_s)),
            td_n(&fmt_num(t.cpu_avg_pct)),
            td_n(&fmt_num(t.cpu_peak_pct)),
            td_n(&t.memory_peak_mb.to_string()),
            td_n(&t.gpu_memory_peak_mb.to_string()),
        ]
    });
    h.push_str(&truncated_note(r.tasks.len(), r.limit, "task runs"));
    h.push_str("</section>\n");

    h.push_str(&format!(
        "<footer>{}</footer>\n</body></html>\n",
        esc(&format!("Generated by hwsched report at {} UTC.", fmt_time(r.generated_at)))
    ));
    h
}

/// A hardware class for display ("(none)" for runs never placed).
fn display_class(c: &str) -> String {
    if c.is_empty() {
        "(none)".into()
    } else {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script> & \"x\"";
    const EVIL_ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;x&quot;";

    fn sample() -> Report {
        let stats = |metric: &str, device: &str, avg: f64, max: f64| MetricStats {
            metric: metric.into(),
            device: device.into(),
            samples: 10,
            min: 1.0,
            avg,
            p95: max * 0.95,
            max,
        };
        Report {
            generated_at: 1_795_640_000,
            window_s: 86_400,
            from: 1_795_553_600,
            database: "hwsched".into(),
            server_version: "18.16".into(),
            limit: 500,
            summary: Summary {
                workers_seen: 2,
                tasks_run: 3,
                succeeded: 2,
                failed: 1,
                cancelled: 0,
                success_rate: Some(2.0 / 3.0),
                total_task_time_s: 95.5,
                alerts_fired: 1,
            },
            utilization: vec![
                WorkerUtilization {
                    worker_id: format!("w1 {EVIL}"),
                    metrics: vec![stats("cpu.util_pct", "cpu", 40.0, 90.0), stats("mem.used_pct", "mem", 30.0, 50.0)],
                },
                WorkerUtilization {
                    worker_id: "gpu-box".into(),
                    metrics: vec![
                        stats("cpu.util_pct", "cpu", 10.0, 20.0),
                        stats("gpu.util_pct", "gpu0", 70.0, 100.0),
                        stats("gpu.temp_c", "gpu0", 60.0, 80.0),
                    ],
                },
            ],
            fleet_cpu: (0..30)
                .map(|i| Point { time: 1_795_553_600 + i * 1440, value: f64::from(i % 7) * 10.0 })
                .collect(),
            fleet_cpu_bucket_s: 1440,
            tasks: vec![TaskResources {
                task_id: "t1".into(),
                attempt: 1,
                name: EVIL.into(),
                test_type: "unit".into(),
                worker_id: "w1".into(),
                hardware_class: format!("cpu:{EVIL}"),
                status: "failed".into(),
                finished_at: 1_795_600_000,
                duration_s: 12.5,
                cpu_peak_pct: 99.0,
                cpu_avg_pct: 50.0,
                memory_peak_mb: 2048,
                gpu_memory_peak_mb: 0,
            }],
            slowest: vec![SlowTest {
                name: EVIL.into(),
                test_type: "unit".into(),
                hardware_class: "cpu:x86".into(),
                runs: 2,
                p50_s: 10.0,
                p95_s: 12.0,
                max_s: 12.5,
            }],
            hardware: vec![
                HardwareDurations {
                    hardware_class: format!("cpu:{EVIL}"),
                    runs: 2,
                    p50_s: 10.0,
                    p95_s: 12.0,
                    max_s: 12.5,
                    total_s: 25.0,
                },
                HardwareDurations {
                    hardware_class: "gpu:h100".into(),
                    runs: 1,
                    p50_s: 70.5,
                    p95_s: 70.5,
                    max_s: 70.5,
                    total_s: 70.5,
                },
            ],
            failures: vec![Failure {
                task_id: "t1".into(),
                attempt: 1,
                name: EVIL.into(),
                test_type: "unit".into(),
                worker_id: "w1".into(),
                hardware_class: "cpu:x86".into(),
                status: "failed".into(),
                exit_code: 1,
                finished_at: 1_795_600_000,
                duration_s: 12.5,
                error: format!("exit 1: {EVIL}"),
            }],
            alerts: vec![AlertEntry {
                fingerprint: "f1".into(),
                rule: format!("HighCpu{EVIL}"),
                severity: "warning".into(),
                worker_id: "w1".into(),
                device: "cpu".into(),
                metric: "cpu.util_pct".into(),
                state: "resolved".into(),
                starts_at: 1_795_600_000,
                ends_at: 1_795_600_300,
                value: 95.0,
                threshold: 90.0,
                summary: format!("CPU high {EVIL}"),
                muted_by: String::new(),
            }],
        }
    }

    /// Checks the basics of well-formed XML in every `<svg>...</svg>` of
    /// `html`: tags nest and close, attribute values are quoted, and every
    /// `&` starts an entity.
    fn check_svgs(html: &str) -> usize {
        let mut count = 0;
        let mut rest = html;
        while let Some(start) = rest.find("<svg") {
            let end = rest[start..].find("</svg>").expect("an <svg> is closed") + start + "</svg>".len();
            check_xml(&rest[start..end]);
            count += 1;
            rest = &rest[end..];
        }
        count
    }

    fn check_xml(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        let mut stack: Vec<&str> = Vec::new();
        let mut i = 0;
        while let Some(open) = svg[i..].find('<') {
            let text = &svg[i..i + open];
            check_text(text);
            let tag_start = i + open + 1;
            let close = svg[tag_start..].find('>').expect("a tag ends") + tag_start;
            let tag = &svg[tag_start..close];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.trim()), "closing </{name}> in {svg}");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().expect("a tag name");
                check_attributes(body[name.len()..].trim());
                if !self_closing {
                    stack.push(name);
                }
            }
            i = close + 1;
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
    }

    fn check_text(text: &str) {
        for (k, _) in text.match_indices('&') {
            let after = &text[k..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|e| after.starts_with(e)),
                "bare & in {text:?}"
            );
        }
    }

    fn check_attributes(mut attrs: &str) {
        while !attrs.is_empty() {
            let eq = attrs.find('=').expect("attribute has a value");
            let name = attrs[..eq].trim();
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'), "attribute {name:?}");
            let after = &attrs[eq + 1..];
            assert!(after.starts_with('"'), "unquoted value of {name}: {after}");
            let end = after[1..].find('"').expect("closing quote") + 1;
            check_text(&after[1..end]);
            attrs = after[end + 1..].trim_start();
        }
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(esc(EVIL), EVIL_ESCAPED);
        assert_eq!(esc("it's"), "it&#39;s");
        assert_eq!(esc("a\u{1}b"), "a\u{FFFD}b");
        assert_eq!(esc("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn data_appears_only_escaped_including_inside_svg() {
        let html = render_html(&sample());
        assert!(!html.contains("<script"), "raw script tag in the page");
        assert!(!html.contains(EVIL));
        assert!(!html.contains("alert(1)</script>"));
        assert!(html.contains(EVIL_ESCAPED), "escaped name missing");
        // inside SVG too: the worker label of the CPU chart and the hardware class of the duration chart
        let svgs: Vec<&str> = html.split("<svg").skip(1).collect();
        assert!(svgs.iter().any(|s| s.contains(&format!("w1 {EVIL_ESCAPED}"))), "escaped worker id in a chart");
        assert!(svgs.iter().any(|s| s.contains(&format!("cpu:{}", esc(&clip(EVIL, 30))))), "hardware class label");
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn svgs_are_well_formed() {
        let html = render_html(&sample());
        // CPU, memory, fleet CPU line, durations per hardware class
        assert_eq!(check_svgs(&html), 4);
        assert!(html.contains("<polyline"));
        assert!(!html.contains("NaN"), "non-finite numbers in the page");
        assert!(!html.contains("<script") && !html.contains("http-equiv") && !html.contains("src="));
    }

    #[test]
    fn charts_survive_odd_values() {
        let mut r = sample();
        r.utilization[0].metrics[0].avg = f64::NAN;
        r.utilization[0].metrics[0].p95 = f64::INFINITY;
        r.hardware[0].p50_s = -3.0;
        r.fleet_cpu.truncate(1);
        let html = render_html(&r);
        assert_eq!(check_svgs(&html), 3, "no line for a single point");
        assert!(!html.contains("NaN"));
        let one = sparkline("t", &r.fleet_cpu, "%");
        check_xml(&one);
        assert!(one.contains("not enough samples"));
    }

    #[test]
    fn an_empty_window_renders_a_sensible_page() {
        let r = Report {
            generated_at: 1_795_640_000,
            window_s: 1800,
            from: 1_795_638_200,
            database: "hwsched".into(),
            server_version: "24.8".into(),
            limit: 500,
            ..Default::default()
        };
        let html = render_html(&r);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        assert!(html.contains("hwsched report: last 30m"));
        assert!(html.contains("No CPU, memory or GPU metrics in this window."));
        assert!(html.contains("No task runs in this window."));
        assert!(html.contains("No failed, timed-out or errored task runs in this window."));
        assert!(html.contains("No alerts in this window."));
        assert_eq!(check_svgs(&html), 0);
        assert!(html.contains("<div class=\"k\">success rate</div><div class=\"v\">-</div>"));
        // and the JSON of it round-trips
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(back, r);
    }

    #[test]
    fn since_parses_units() {
        assert_eq!(parse_since("30m"), Ok(1800));
        assert_eq!(parse_since("24h"), Ok(86_400));
        assert_eq!(parse_since("7d"), Ok(604_800));
        assert_eq!(parse_since("90s"), Ok(90));
        assert_eq!(parse_since("2w"), Ok(1_209_600));
        for bad in ["", "h", "24", "0h", "1y", "-1h", "1.5h", "99999999999999d"] {
            assert!(parse_since(bad).is_err(), "{bad:?}");
        }
        assert_eq!(fmt_window(1800), "30m");
        assert_eq!(fmt_window(86_400), "24h");
        assert_eq!(fmt_window(604_800), "7d");
        assert_eq!(fmt_window(90), "90s");
        assert_eq!(fmt_window(7200), "2h");
    }

    #[test]
    fn times_and_numbers_format() {
        assert_eq!(fmt_time(0), "-");
        assert_eq!(fmt_time(1), "1970-01-01 00:00:01");
        assert_eq!(fmt_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(fmt_time(1_795_640_374), "2026-11-25 20:59:34");
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(100.0), 100.0);
        assert_eq!(nice_ceil(101.0), 200.0);
        assert_eq!(nice_ceil(3.2), 5.0);
        assert_eq!(fmt_secs(4.21), "4.2s");
        assert_eq!(fmt_secs(750.0), "12.5m");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
