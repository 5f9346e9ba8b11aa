//! ClickHouse storage of hwsched: connection, server-version detection, the
//! version-aware schema and its migration, and the row types written by the
//! recorder.
#![forbid(unsafe_code)]

pub mod schema;

use clickhouse::Client;
use hwsched_config::ClickHouseConfig;
use hwsched_proto::v1::{
    Alert, AlertState, CandidateScore, ExecutionResult, MetricsBatch, TaskEvent, TaskEventKind, TaskStatus,
};
pub use schema::ServerVersion;
use serde::Serialize;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// ClickHouse is not configured.
    #[error("ClickHouse is not configured (set HWSCHED_CLICKHOUSE_URL)")]
    NotConfigured,
    /// The server answered with an error or could not be reached.
    #[error("ClickHouse {what}: {source}{}", tls_hint(source))]
    Server {
        /// What was being done.
        what: &'static str,
        /// Client error.
        source: clickhouse::error::Error,
    },
    /// `version()` returned something unparseable.
    #[error("unrecognised ClickHouse version {0:?}")]
    Version(String),
}

/// What to do about a server certificate from an unknown CA.
fn tls_hint(e: &clickhouse::error::Error) -> &'static str {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    let mut unknown_issuer = false;
    while let Some(c) = cause {
        unknown_issuer |= c.to_string().contains("UnknownIssuer");
        cause = c.source();
    }
    if unknown_issuer {
        " (a private CA? point SSL_CERT_FILE at its PEM certificate)"
    } else {
        ""
    }
}

/// A connected store: the client (bound to the database) and the server version.
#[derive(Clone)]
pub struct Store {
    client: Client,
    version: ServerVersion,
    database: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("version", &self.version).field("database", &self.database).finish()
    }
}

/// A client for `cfg` without a database (validation off: old servers lack
/// the metadata queries it needs).
fn base_client(cfg: &ClickHouseConfig) -> Result<Client, StoreError> {
    let url = cfg.url.as_ref().ok_or(StoreError::NotConfigured)?;
    let mut c = Client::default().with_url(url).with_validation(false);
    if let Some(u) = &cfg.user {
        c = c.with_user(u);
    }
    if let Some(p) = &cfg.password {
        c = c.with_password(p);
    }
    Ok(c)
}

impl Store {
    /// Connects and detects the server version; changes nothing on the server
    /// (readers such as the learner need no DDL rights).
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<Self, StoreError> {
        let base = base_client(cfg)?;
        let raw: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|source| StoreError::Server { what: "version()", source })?;
        let version = ServerVersion::parse(&raw).ok_or(StoreError::Version(raw))?;
        Ok(Self { client: base.with_database(&cfg.database), version, database: cfg.database.clone() })
    }

    /// Connects, detects the server version and applies the migrations not
    /// yet recorded in `schema_migrations`, in order.
    pub async fn connect_and_migrate(cfg: &ClickHouseConfig) -> Result<Self, StoreError> {
        let store = Self::connect(cfg).await?;
        let applied = store.migrate(cfg).await?;
        tracing::info!(
            version = %store.version,
            database = %cfg.database,
            modern = store.version.is_modern(),
            applied = ?applied,
            "ClickHouse schema ready"
        );
        Ok(store)
    }

    /// Applies the migrations not yet applied; returns their versions.
    pub async fn migrate(&self, cfg: &ClickHouseConfig) -> Result<Vec<u32>, StoreError> {
        let base = base_client(cfg)?;
        let err = |source| StoreError::Server { what: "migration", source };
        for ddl in schema::migrations_table(&cfg.database) {
            base.query(&ddl).execute().await.map_err(err)?;
        }
        let done: Vec<u32> =
            self.client.query("SELECT DISTINCT version FROM schema_migrations").fetch_all().await.map_err(err)?;
        let mut applied = Vec::new();
        for m in schema::migrations(self.version, &cfg.database) {
            if done.contains(&m.version) {
                continue;
            }
            for ddl in &m.statements {
                base.query(ddl).execute().await.map_err(err)?;
            }
            let row = MigrationRow {
                version: m.version,
                description: m.description.to_string(),
                applied_at: secs(now_ms()),
                server_version: self.version.to_string(),
            };
            let mut insert = self.client.insert::<MigrationRow>("schema_migrations").await.map_err(err)?;
            insert.write(&row).await.map_err(err)?;
            insert.end().await.map_err(err)?;
            tracing::info!(version = m.version, description = m.description, "ClickHouse migration applied");
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// On servers without TTL, drops the partitions of [`schema::RETENTION`]'s
    /// tables that hold only expired rows; returns the (table, partition)
    /// dropped. Modern servers expire rows themselves (TTL): nothing to do.
    pub async fn drop_expired_partitions(&self, today_days: i64) -> Result<Vec<(String, String)>, StoreError> {
        if self.version.is_modern() {
            return Ok(Vec::new());
        }
        let err = |source| StoreError::Server { what: "retention", source };
        let parts: Vec<(String, String)> = self
            .client
            .query("SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active")
            .bind(&self.database)
            .fetch_all()
            .await
            .map_err(err)?;
        let mut dropped = Vec::new();
        for (table, partition) in parts {
            let Some((_, days)) = schema::RETENTION.iter().find(|(t, _)| *t == table) else { continue };
            if !schema::partition_expired(&partition, *days, today_days) {
                continue;
            }
            let literal = if partition.starts_with('\'') || partition.chars().all(|c| c.is_ascii_digit()) {
                partition.clone()
            } else {
                format!("'{partition}'")
            };
            self.client
                .query(&format!("ALTER TABLE {}.{table} DROP PARTITION {literal}", self.database))
                .execute()
                .await
                .map_err(err)?;
            dropped.push((table, partition));
        }
        Ok(dropped)
    }

    /// The migrations recorded as applied: (version, description).
    pub async fn applied_migrations(&self) -> Result<Vec<(u32, String)>, StoreError> {
        self.client
            .query("SELECT version, any(description) FROM schema_migrations GROUP BY version ORDER BY version")
            .fetch_all()
            .await
            .map_err(|source| StoreError::Server { what: "schema_migrations", source })
    }

    /// Server version.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The client, bound to the hwsched database.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Inserts metric rows in one statement.
    pub async fn insert_metrics(&self, batches: &[MetricsBatch]) -> Result<usize, StoreError> {
        if self.version.is_modern() {
            self.insert_all("hw_metrics", batches.iter().flat_map(|b| metric_rows(b, |ms| ms))).await
        } else {
            self.insert_all("hw_metrics", batches.iter().flat_map(|b| metric_rows(b, secs))).await
        }
    }

    /// Inserts task-run rows in one statement.
    pub async fn insert_runs(&self, results: &[ExecutionResult]) -> Result<usize, StoreError> {
        if self.version.is_modern() {
            self.insert_all("task_runs", results.iter().map(|r| run_row(r, |ms| ms))).await
        } else {
            self.insert_all("task_runs", results.iter().map(|r| run_row(r, secs))).await
        }
    }

    /// Inserts one row per candidate of each ASSIGNED event's decision (other
    /// events carry none and add no rows).
    pub async fn insert_decisions(&self, events: &[TaskEvent]) -> Result<usize, StoreError> {
        let assigned: Vec<&TaskEvent> = events.iter().filter(|e| e.kind() == TaskEventKind::Assigned).collect();
        if self.version.is_modern() {
            let rows: Vec<DecisionRow<i64>> = assigned.iter().flat_map(|e| decision_rows(e, |ms| ms)).collect();
            self.insert_all("scheduler_decisions", rows.into_iter()).await
        } else {
            let rows: Vec<DecisionRow<u32>> = assigned.iter().flat_map(|e| decision_rows(e, secs)).collect();
            self.insert_all("scheduler_decisions", rows.into_iter()).await
        }
    }

    /// Inserts `workers` rows (the latest per worker wins).
    pub async fn insert_workers(&self, rows: &[WorkerRow]) -> Result<usize, StoreError> {
        self.insert_all("workers", rows.iter().cloned()).await
    }

    /// When each worker was first seen (unix seconds), as recorded so far.
    pub async fn workers_first_seen(&self) -> Result<Vec<(String, u32)>, StoreError> {
        self.client
            .query("SELECT worker_id, toUInt32(min(first_seen)) FROM workers GROUP BY worker_id")
            .fetch_all()
            .await
            .map_err(|source| StoreError::Server { what: "workers", source })
    }

    /// Inserts one `alerts` row per alert transition (a redelivered one
    /// collapses with its first copy under `FINAL`).
    pub async fn insert_alerts(&self, alerts: &[Alert]) -> Result<usize, StoreError> {
        if self.version.is_modern() {
            self.insert_all("alerts", alerts.iter().map(|a| alert_row(a, |ms| ms))).await
        } else {
            self.insert_all("alerts", alerts.iter().map(|a| alert_row(a, secs))).await
        }
    }

    async fn insert_all<R>(&self, table: &str, rows: impl Iterator<Item = R>) -> Result<usize, StoreError>
    where
        R: clickhouse::Row + Serialize,
        for<'a> R: clickhouse::RowWrite<Value<'a> = R>,
    {
        let err = |source| StoreError::Server { what: "insert", source };
        let mut insert = self.client.insert::<R>(table).await.map_err(err)?;
        let mut n = 0;
        for row in rows {
            insert.write(&row).await.map_err(err)?;
            n += 1;
        }
        insert.end().await.map_err(err)?;
        Ok(n)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One `schema_migrations` row.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
struct MigrationRow {
    version: u32,
    description: String,
    applied_at: u32,
    server_version: String,
}

fn secs(ms: i64) -> u32 {
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

fn metric_rows<T: Copy + 'static>(
    b: &MetricsBatch,
    time: impl Fn(i64) -> T,
) -> impl Iterator<Item = MetricRow<T>> + '_ {
    let t = time(b.timestamp_ms);
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

fn decision_rows<T>(e: &TaskEvent, time: impl Fn(i64) -> T) -> Vec<DecisionRow<T>> {
    e.candidates.iter().enumerate().map(|(rank, c)| decision_row(e, rank, c, &time)).collect()
}

fn decision_row<T>(e: &TaskEvent, rank: usize, c: &CandidateScore, time: impl Fn(i64) -> T) -> DecisionRow<T> {
    let components: std::collections::BTreeMap<&str, f64> =
        c.components.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    DecisionRow {
        time: time(e.timestamp_ms),
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
    pub fn from_capabilities(c: &hwsched_proto::v1::WorkerCapabilities) -> Self {
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

fn alert_row<T>(a: &Alert, time: impl Fn(i64) -> T) -> AlertRow<T> {
    // sorted, so a transition always stores the same arrays
    let labels: std::collections::BTreeMap<&String, &String> = a.labels.iter().collect();
    AlertRow {
        time: time(alert_time_ms(a)),
        fingerprint: a.fingerprint.clone(),
        rule: a.rule.clone(),
        severity: a.severity.clone(),
        state: alert_state_name(a.state()).to_string(),
        worker_id: a.worker_id.clone(),
        device: a.device.clone(),
        metric: a.metric.clone(),
        value: a.value,
        threshold: a.threshold,
        starts_at: time(a.starts_at_ms),
        ends_at: time(a.ends_at_ms),
        summary: a.summary.clone(),
        label_keys: labels.keys().map(|k| (*k).clone()).collect(),
        label_values: labels.values().map(|v| (*v).clone()).collect(),
        muted_by: a.muted_by.clone(),
    }
}

/// What the learner relearns from: one attempt of `task_runs`.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct HistoryRow {
    task_id: String,
    attempt: u32,
    name: String,
    test_type: String,
    model_family: String,
    model_id: String,
    worker_id: String,
    hardware_class: String,
    status: String,
    duration_s: f64,
    memory_peak_mb: u64,
    finished_s: u32,
}

impl Store {
    /// The latest `limit` attempts of `task_runs` (one row per attempt,
    /// duplicates from redelivery merged), oldest first, as results: the
    /// learner's history when it starts without a snapshot.
    pub async fn run_history(&self, limit: u64) -> Result<Vec<ExecutionResult>, StoreError> {
        let sql = "SELECT task_id, attempt, name, toString(test_type), toString(model_family), toString(model_id), \
                   toString(worker_id), toString(hardware_class), toString(status), duration_s, memory_peak_mb, \
                   toUInt32(toUnixTimestamp(finished_at)) AS finished_s \
                   FROM (SELECT * FROM task_runs FINAL ORDER BY finished_at DESC LIMIT ?) ORDER BY finished_s";
        let rows: Vec<HistoryRow> = self
            .client
            .query(sql)
            .bind(limit)
            .fetch_all()
            .await
            .map_err(|source| StoreError::Server { what: "read task_runs", source })?;
        Ok(rows
            .into_iter()
            .map(|r| ExecutionResult {
                task_id: r.task_id,
                attempt: r.attempt,
                name: r.name,
                test_type: r.test_type,
                model_family: r.model_family,
                model_id: r.model_id,
                worker_id: r.worker_id,
                hardware_class: r.hardware_class,
                status: status_of(&r.status) as i32,
                duration_s: r.duration_s,
                finished_at_ms: i64::from(r.finished_s) * 1000,
                resources: Some(hwsched_proto::v1::ResourceUsage {
                    memory_peak_mb: r.memory_peak_mb,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect())
    }
}

/// The status stored as `name` ([`status_name`]).
pub fn status_of(name: &str) -> TaskStatus {
    [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::TimedOut, TaskStatus::Error, TaskStatus::Cancelled]
        .into_iter()
        .find(|s| status_name(*s) == name)
        .unwrap_or(TaskStatus::Unspecified)
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

fn run_row<T>(r: &ExecutionResult, time: impl Fn(i64) -> T) -> RunRow<T> {
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
        queued_at: time(r.queued_at_ms),
        assigned_at: time(r.assigned_at_ms),
        started_at: time(r.started_at_ms),
        finished_at: time(r.finished_at_ms),
        duration_s: r.duration_s,
        predicted_duration_s: r.predicted_duration_s,
        cpu_peak_pct: u.cpu_peak_pct,
        cpu_avg_pct: u.cpu_avg_pct,
        memory_peak_mb: u.memory_peak_mb,
        gpu_memory_peak_mb: u.gpu_memory_peak_mb,
        error: r.error.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let firing = alert_row(&alert(AlertState::Firing), |ms| ms);
        assert_eq!((firing.time, firing.starts_at, firing.ends_at), (1_000, 1_000, 0));
        assert_eq!(firing.state, "firing");
        assert_eq!(firing.label_keys, ["a", "b"]);
        assert_eq!(firing.label_values, ["1", "2"]);
        let resolved = Alert { ends_at_ms: 5_000, ..alert(AlertState::Resolved) };
        let row = alert_row(&resolved, secs);
        assert_eq!((row.time, row.starts_at, row.ends_at), (5, 1, 5));
        assert_eq!(row.state, "resolved");
        let stamped = Alert { at_ms: 7_000, ..resolved };
        assert_eq!(alert_row(&stamped, |ms| ms).time, 7_000);
    }
}
