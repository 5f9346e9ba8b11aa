//! Version-aware DDL. Modern servers (>= 23.8) get DateTime64, LowCardinality,
//! codecs and TTL retention; old ones (the 18.16 this project tests against)
//! get the plain equivalents with the same column names, so queries and
//! dashboards work on both.

use std::fmt;

use hwsched_proto::v1::ExecutionResult;

use crate::rows::{category_of, status_name, STATUSES};

/// A ClickHouse server version (major.minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl ServerVersion {
    /// Parses "23.8.2.7" or "18.16.1".
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('.');
        Some(Self { major: it.next()?.parse().ok()?, minor: it.next().unwrap_or("0").parse().ok()? })
    }

    /// DateTime64, LowCardinality without settings, codecs and TTL are all
    /// available from 20.x; we render the modern schema from 23.8 (the oldest
    /// version we support as "modern") and the plain one below it.
    pub fn is_modern(self) -> bool {
        self >= ServerVersion { major: 23, minor: 8 }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

// Sample values: plain ZSTD(3). Telemetry is mostly rounded decimals (one
// decimal place), which Gorilla's XOR encoding handles poorly: on the mixed
// fleet data of `tests/python/test_schema_chdb.py` ZSTD(3) stores 1.25 bytes
// per value where Gorilla + ZSTD(1) needs 1.72 (BENCHMARKS.md).

/// Default raw-metrics retention on modern servers (TTL), days.
pub const METRICS_RETENTION_DAYS: u32 = 30;

/// Decision retention on modern servers (TTL), days.
pub const DECISIONS_RETENTION_DAYS: u32 = 90;

/// Alert-transition retention on modern servers (TTL), days.
pub const ALERTS_RETENTION_DAYS: u32 = 180;

/// Rollup retention on modern servers (TTL), days.
pub const ROLLUP_RETENTION_DAYS: u32 = 400;

/// Per-test-case retention on modern servers (TTL), days.
pub const TEST_CASES_RETENTION_DAYS: u32 = 90;

/// The tables with a retention, and its days: TTL on modern servers; on old
/// ones (no TTL) the recorder drops their expired partitions
/// ([`partition_expired`]).
pub const RETENTION: &[(&str, u32)] = &[
    ("hw_metrics", METRICS_RETENTION_DAYS),
    ("scheduler_decisions", DECISIONS_RETENTION_DAYS),
    ("alerts", ALERTS_RETENTION_DAYS),
    ("hw_metrics_1m", ROLLUP_RETENTION_DAYS),
    ("test_cases", TEST_CASES_RETENTION_DAYS),
];

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    // Howard Hinnant's algorithm
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whether a partition (as `system.parts` names it: `2026-11-25` for a day,
/// `202611` for a month) holds only rows older than `keep_days` before
/// `today` (days since 1970). Unknown forms are never expired.
pub fn partition_expired(partition: &str, keep_days: u32, today: i64) -> bool {
    let p = partition.trim_matches('\'');
    let last_day = match p.len() {
        10 => {
            let (Ok(y), Ok(m), Ok(d)) = (p[0..4].parse(), p[5..7].parse(), p[8..10].parse()) else { return false };
            days_from_civil(y, m, d)
        }
        6 => {
            let (Ok(y), Ok(m)) = (p[0..4].parse::<i64>(), p[4..6].parse::<u32>()) else { return false };
            if !(1..=12).contains(&m) {
                return false;
            }
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            days_from_civil(ny, nm, 1) - 1
        }
        _ => return false,
    };
    last_day < today - i64::from(keep_days)
}

/// One schema migration: a version, what it does, and its statements.
/// Every statement is idempotent (`IF NOT EXISTS`, or on old servers an
/// `ADD COLUMN` whose "already exists" counts as done, [`already_done`]), so
/// applying a migration twice (two processes migrating at once) is harmless,
/// except a rollup backfill, which would count the old rows twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// Applied in increasing order; recorded in `schema_migrations`.
    pub version: u32,
    /// One line.
    pub description: &'static str,
    /// The statements, in order.
    pub statements: Vec<String>,
}

/// The table recording the migrations applied to `database` (created before any migration).
pub fn migrations_table(database: &str) -> [String; 2] {
    [
        format!("CREATE DATABASE IF NOT EXISTS {database}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.schema_migrations (\n  \
             version UInt32,\n  description String,\n  applied_at DateTime,\n  server_version String\n\
             ) ENGINE = ReplacingMergeTree\nORDER BY version"
        ),
    ]
}

/// Every statement of every migration, in order, for `database` on a server
/// of `version` (what `hwsched schema print` shows).
pub fn render(version: ServerVersion, database: &str) -> Vec<String> {
    let mut out = migrations_table(database).to_vec();
    out.extend(migrations(version, database).into_iter().flat_map(|m| m.statements));
    out
}

/// The migrations, in order, for `database` on a server of `version`.
pub fn migrations(version: ServerVersion, database: &str) -> Vec<Migration> {
    let modern = version.is_modern();
    let (time, lc, time_codec, value_codec) = if modern {
        ("DateTime64(3)", "LowCardinality(String)", " CODEC(DoubleDelta, ZSTD(1))", " CODEC(ZSTD(3))")
    } else {
        ("DateTime", "String", "", "")
    };
    let ttl_days = |col: &str, days: u32| {
        if modern {
            format!("\nTTL toDateTime({col}) + INTERVAL {days} DAY")
        } else {
            String::new()
        }
    };
    let ttl = |col: &str| ttl_days(col, METRICS_RETENTION_DAYS);
    let m = |version, description, statements| Migration { version, description, statements };
    vec![
        // A sample is identified by its series and time: a batch the recorder
        // inserted but could not acknowledge (ClickHouse answered too late) is
        // redelivered and its rows collapse with the first copy at merge (or
        // under FINAL). Without DateTime64 (old servers), samples of one series
        // within the same second collapse too.
        m(1, "metrics, task runs and placement decisions", vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.hw_metrics (\n  \
             time {time}{time_codec},\n  \
             worker_id {lc},\n  \
             device {lc},\n  \
             metric {lc},\n  \
             value Float64{value_codec}\n\
             ) ENGINE = ReplacingMergeTree\nPARTITION BY toDate(time)\nORDER BY (worker_id, metric, device, time){}",
            ttl("time")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.task_runs (\n  \
             task_id String,\n  attempt UInt32,\n  name String,\n  producer {lc},\n  test_type {lc},\n  \
             model_family {lc},\n  model_id {lc},\n  worker_id {lc},\n  hardware_class {lc},\n  status {lc},\n  \
             exit_code Int32,\n  queued_at {time},\n  assigned_at {time},\n  started_at {time},\n  finished_at {time},\n  \
             duration_s Float64,\n  predicted_duration_s Float64,\n  cpu_peak_pct Float64,\n  cpu_avg_pct Float64,\n  \
             memory_peak_mb UInt64,\n  gpu_memory_peak_mb UInt64,\n  error String\n\
             ) ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(finished_at)\nORDER BY (task_id, attempt)"
        ),
        // One row per candidate of each placement decision; rank 0 is the chosen worker.
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.scheduler_decisions (\n  \
             time {time},\n  task_id String,\n  attempt UInt32,\n  name String,\n  producer {lc},\n  \
             test_type {lc},\n  policy {lc},\n  rank UInt8,\n  chosen UInt8,\n  worker_id {lc},\n  \
             hardware_class {lc},\n  cost Float64,\n  wait_s Float64,\n  completion_s Float64,\n  \
             predicted_runtime_s Float64,\n  candidates_total UInt32,\n  components String\n\
             ) ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(time)\nORDER BY (task_id, attempt, rank){}",
            ttl_days("time", DECISIONS_RETENTION_DAYS)
        ),
        ]),
        m(2, "alert transitions", vec![
        // One row per alert transition (firing, resolved); a redelivered
        // transition has the same key and collapses. Labels as two parallel
        // arrays: 18.16 has no Map type.
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.alerts (\n  \
             time {time},\n  fingerprint String,\n  rule {lc},\n  severity {lc},\n  state {lc},\n  \
             worker_id {lc},\n  device {lc},\n  metric {lc},\n  value Float64,\n  threshold Float64,\n  \
             starts_at {time},\n  ends_at {time},\n  summary String,\n  label_keys Array(String),\n  \
             label_values Array(String),\n  muted_by String\n\
             ) ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(time)\nORDER BY (fingerprint, starts_at, state){}",
            ttl_days("time", ALERTS_RETENTION_DAYS)
        ),
        ]),
        m(3, "worker inventory", vec![
        // One row per worker and sighting; the latest (by last_seen) wins.
        // first_seen is carried forward by the recorder.
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.workers (\n  \
             worker_id String,\n  hostname String,\n  hardware_class {lc},\n  cpu_model String,\n  \
             logical_cores UInt32,\n  memory_mb UInt64,\n  slots UInt32,\n  gpu_count UInt32,\n  \
             gpu_models Array(String),\n  accelerators Array(String),\n  labels Array(String),\n  \
             state {lc},\n  first_seen DateTime,\n  last_seen DateTime\n\
             ) ENGINE = ReplacingMergeTree(last_seen)\nORDER BY worker_id"
        ),
        ]),
        m(4, "one-minute rollup of hw_metrics (min, max, avg), filled by a materialized view", vec![
        // Aggregate states, read with minMerge/maxMerge/avgMerge: both servers have them.
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.hw_metrics_1m (\n  \
             time DateTime,\n  worker_id {lc},\n  device {lc},\n  metric {lc},\n  \
             min_value AggregateFunction(min, Float64),\n  max_value AggregateFunction(max, Float64),\n  \
             avg_value AggregateFunction(avg, Float64)\n\
             ) ENGINE = AggregatingMergeTree\nPARTITION BY toYYYYMM(time)\nORDER BY (worker_id, metric, device, time){}",
            ttl_days("time", ROLLUP_RETENTION_DAYS)
        ),
        // the rows already there, once (this migration runs once per database)
        format!(
            "INSERT INTO {database}.hw_metrics_1m {}",
            rollup_select(&format!("{database}.hw_metrics"))
        ),
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.hw_metrics_1m_mv TO {database}.hw_metrics_1m AS {}",
            rollup_select(&format!("{database}.hw_metrics"))
        ),
        ]),
        m(5, "per-test results from the JUnit reports of task attempts", vec![
        // One row per test case of an attempt's JUnit report(s); `case_index`
        // is its position in the report(s), so a redelivered result collapses
        // with its first copy and two cases of the same name do not. `time` is
        // when the attempt finished.
        format!(
            "CREATE TABLE IF NOT EXISTS {database}.test_cases (\n  \
             time {time},\n  task_id String,\n  attempt UInt32,\n  worker_id {lc},\n  hardware_class {lc},\n  \
             suite String,\n  classname String,\n  name String,\n  case_index UInt32,\n  status {lc},\n  \
             duration_s Float64,\n  message String\n\
             ) ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMM(time)\nORDER BY (task_id, attempt, case_index){}",
            ttl_days("time", TEST_CASES_RETENTION_DAYS)
        ),
        ]),
        m(6, "failure category, CPU time, OOM kills and memory limit of task runs", failure_columns(modern, database)),
    ]
}

/// Migration 6: `task_runs` gains the attempt's failure category and its
/// cgroup's CPU time, OOM kills and memory limit, one `ALTER` per column (old
/// servers have no `IF NOT EXISTS` there: [`already_done`] makes a rerun
/// harmless). Rows stored before it read the category their status implies
/// (the column's DEFAULT, [`category_from_status`]); the others read 0.
fn failure_columns(modern: bool, database: &str) -> Vec<String> {
    let (lc, if_not_exists) = if modern { ("LowCardinality(String)", "IF NOT EXISTS ") } else { ("String", "") };
    [
        format!("category {lc} DEFAULT {}", category_from_status()),
        "cpu_time_s Float64".to_string(),
        "oom_kills UInt32".to_string(),
        "memory_limit_mb UInt64".to_string(),
    ]
    .into_iter()
    .map(|column| format!("ALTER TABLE {database}.task_runs ADD COLUMN {if_not_exists}{column}"))
    .collect()
}

/// The category a `task_runs` row's status implies, as SQL: what the recorder
/// stores for a result without one (`hwsched_proto::failure::category` of a
/// result with only that status), so rows stored before the column existed,
/// or by an older recorder, read the same category a new recorder would write.
pub fn category_from_status() -> String {
    let arms: Vec<String> = STATUSES
        .into_iter()
        .map(|s| {
            let r = ExecutionResult { status: s as i32, ..Default::default() };
            format!("status = '{}', '{}'", status_name(s), category_of(&r))
        })
        .collect();
    format!("multiIf({}, '')", arms.join(", "))
}

/// Whether `error`, from running `statement`, says its work is already done:
/// an `ADD COLUMN` (without `IF NOT EXISTS` on old servers) of a column that
/// exists, after a migration interrupted past it or run by two processes at once.
pub fn already_done(statement: &str, error: &str) -> bool {
    statement.contains(" ADD COLUMN ") && error.contains("Code: 44") && error.contains("already exists")
}

/// The rollup of `source` rows into one-minute aggregate states, in the
/// rollup table's column order (an `INSERT ... SELECT` maps by position, the
/// view by name).
fn rollup_select(source: &str) -> String {
    format!(
        "SELECT toStartOfMinute(time) AS time, worker_id, device, metric, \
         minState(value) AS min_value, maxState(value) AS max_value, avgState(value) AS avg_value \
         FROM {source} GROUP BY time, worker_id, device, metric"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parsing_and_modernity() {
        assert_eq!(ServerVersion::parse("18.16.1"), Some(ServerVersion { major: 18, minor: 16 }));
        assert!(!ServerVersion::parse("18.16.1").expect("v").is_modern());
        assert!(ServerVersion::parse("23.8.2.7").expect("v").is_modern());
        assert!(ServerVersion::parse("26.1").expect("v").is_modern());
        assert_eq!(ServerVersion::parse("x"), None);
    }

    #[test]
    fn legacy_schema_has_no_modern_features_and_same_columns() {
        let legacy = render(ServerVersion { major: 18, minor: 16 }, "db").join("\n");
        let modern = render(ServerVersion { major: 24, minor: 8 }, "db").join("\n");
        for word in ["DateTime64", "LowCardinality", "CODEC", "TTL"] {
            assert!(!legacy.contains(word), "{word} in legacy DDL");
            assert!(modern.contains(word), "{word} missing from modern DDL");
        }
        for col in [
            "worker_id",
            "metric",
            "device",
            "value",
            "task_id",
            "hardware_class",
            "duration_s",
            "completion_s",
            "rank",
            "fingerprint",
            "severity",
            "threshold",
            "starts_at",
            "ends_at",
            "label_keys",
            "label_values",
            "muted_by",
            "classname",
            "case_index",
            "category",
            "oom_kills",
            "memory_limit_mb",
            "cpu_time_s",
        ] {
            assert!(legacy.contains(col) && modern.contains(col), "{col}");
        }
    }

    #[test]
    fn partitions_expire_when_their_last_day_is_past_the_retention() {
        let today = days_from_civil(2026, 11, 25);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert!(partition_expired("2026-10-25", 30, today));
        assert!(!partition_expired("2026-10-26", 30, today));
        assert!(partition_expired("'2026-10-01'", 30, today), "quoted, as old servers print it");
        // a month goes when its last day does
        assert!(partition_expired("202607", 90, today) && !partition_expired("202608", 90, today));
        // 2026-02-28 is 270 days before 2026-11-25
        assert!(partition_expired("202602", 269, today) && !partition_expired("202602", 270, today));
        assert!(!partition_expired("tuple()", 1, today) && !partition_expired("202613", 1, today));
    }

    #[test]
    fn migrations_are_numbered_in_order_and_render_covers_them_all() {
        for v in [ServerVersion { major: 18, minor: 16 }, ServerVersion { major: 24, minor: 8 }] {
            let ms = migrations(v, "db");
            let versions: Vec<u32> = ms.iter().map(|m| m.version).collect();
            assert_eq!(versions, (1..=ms.len() as u32).collect::<Vec<_>>());
            let all = render(v, "db");
            assert!(all[1].contains("db.schema_migrations"));
            assert_eq!(all.len(), 2 + ms.iter().map(|m| m.statements.len()).sum::<usize>());
            for table in
                ["hw_metrics", "task_runs", "scheduler_decisions", "alerts", "workers", "hw_metrics_1m", "test_cases"]
            {
                assert!(all.iter().any(|s| s.contains(&format!("TABLE IF NOT EXISTS db.{table} ("))), "{table}");
            }
            let view = all.iter().find(|s| s.contains("MATERIALIZED VIEW")).expect("rollup view");
            assert!(view.contains("TO db.hw_metrics_1m") && view.contains("FROM db.hw_metrics GROUP BY"), "{view}");
        }
    }

    #[test]
    fn task_runs_gain_the_failure_columns_idempotently_on_both_schemas() {
        let old = failure_columns(false, "db");
        assert_eq!(
            old[0],
            format!("ALTER TABLE db.task_runs ADD COLUMN category String DEFAULT {}", category_from_status())
        );
        assert_eq!(old[2], "ALTER TABLE db.task_runs ADD COLUMN oom_kills UInt32");
        let modern = failure_columns(true, "db");
        assert!(modern[0].starts_with(
            "ALTER TABLE db.task_runs ADD COLUMN IF NOT EXISTS category LowCardinality(String) DEFAULT multiIf("
        ));
        assert_eq!(modern[3], "ALTER TABLE db.task_runs ADD COLUMN IF NOT EXISTS memory_limit_mb UInt64");
        // a rerun on an old server: the column is there
        let exists = "bad response: Code: 44, e.displayText() = DB::Exception: Cannot add column oom_kills: \
                      column with this name already exists, e.what() = DB::Exception";
        assert!(already_done(&old[2], exists));
        assert!(!already_done(&old[2], "Code: 60, e.displayText() = DB::Exception: Table db.task_runs doesn't exist"));
        assert!(!already_done("CREATE TABLE IF NOT EXISTS db.x (a UInt8) ENGINE = Log", exists));
    }

    #[test]
    fn rows_without_a_category_read_the_one_their_status_implies() {
        assert_eq!(
            category_from_status(),
            "multiIf(status = 'succeeded', '', status = 'failed', 'test_failed', status = 'timed_out', 'timeout', \
             status = 'error', 'infrastructure', status = 'cancelled', 'cancelled', status = 'unknown', 'test_failed', '')"
        );
    }

    #[test]
    fn alerts_collapse_redelivered_transitions_on_both_schemas() {
        for v in [ServerVersion { major: 18, minor: 16 }, ServerVersion { major: 24, minor: 8 }] {
            let ddl = render(v, "db");
            let alerts = ddl.iter().find(|s| s.contains("db.alerts (")).expect("alerts table");
            assert!(alerts.contains("ReplacingMergeTree"), "{alerts}");
            assert!(alerts.contains("ORDER BY (fingerprint, starts_at, state)"), "{alerts}");
            assert!(alerts.contains("label_keys Array(String)") && alerts.contains("label_values Array(String)"));
            assert_eq!(alerts.contains(&format!("INTERVAL {ALERTS_RETENTION_DAYS} DAY")), v.is_modern(), "{alerts}");
        }
    }
}
