//! Why attempts failed reaches ClickHouse: the recorder stores each result's
//! failure category and its cgroup's CPU time, OOM kills and memory limit in
//! `task_runs` (a result from a monitor older than the category gets the one
//! its status implies), and a database created before those columns gains
//! them by migration, its old rows reading the category of their status.

use std::time::Duration;

use hwsched_proto::v1::{ExecutionResult, FailureCategory, ResourceUsage, TaskStatus};
use hwsched_store::{schema, Store};
use hwsched_testkit::{eventually, NatsServer, TestDb};
use hwsched_tests::bus;

const WAIT: Duration = Duration::from_secs(30);

/// What the new columns hold for one attempt.
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct Failure {
    task_id: String,
    status: String,
    category: String,
    cpu_time_s: f64,
    oom_kills: u32,
    memory_limit_mb: u64,
}

/// Every `task_runs` row's failure columns, by task id.
async fn failures(ch: &clickhouse::Client) -> anyhow::Result<Vec<Failure>> {
    Ok(ch
        .query(
            "SELECT task_id, toString(status) AS status, toString(category) AS category, cpu_time_s, oom_kills, \
             memory_limit_mb FROM task_runs FINAL ORDER BY task_id",
        )
        .fetch_all()
        .await?)
}

fn result(task_id: &str, status: TaskStatus, category: FailureCategory, resources: ResourceUsage) -> ExecutionResult {
    ExecutionResult {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        task_id: task_id.into(),
        attempt: 1,
        worker_id: "w-fail".into(),
        hardware_class: "cpu:x86_64".into(),
        status: status as i32,
        category: category as i32,
        exit_code: -1,
        // whole seconds: the 18.16 server stores DateTime in seconds
        finished_at_ms: hwsched_bus::now_ms() / 1000 * 1000,
        resources: Some(resources),
        ..Default::default()
    }
}

fn failure(
    task_id: &str,
    status: &str,
    category: &str,
    cpu_time_s: f64,
    oom_kills: u32,
    memory_limit_mb: u64,
) -> Failure {
    Failure {
        task_id: task_id.into(),
        status: status.into(),
        category: category.into(),
        cpu_time_s,
        oom_kills,
        memory_limit_mb,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_stores_the_failure_category_and_the_cgroup_usage() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    let recorder = hwsched_tests::recorder(&nats.url(), &db)?;
    recorder.wait_for_log("recorder ready", WAIT).await?;

    let cgroup =
        ResourceUsage { cpu_time_s: 1.5, oom_kills: 1, memory_limit_mb: 64, cgroup: true, ..Default::default() };
    let results = [
        result("t-oom", TaskStatus::Failed, FailureCategory::OutOfMemory, cgroup),
        // from a monitor older than the category: its status says it
        result("t-old-timeout", TaskStatus::TimedOut, FailureCategory::Unspecified, ResourceUsage::default()),
        result("t-ok", TaskStatus::Succeeded, FailureCategory::Unspecified, ResourceUsage::default()),
    ];
    for r in &results {
        b.publish_durable(b.subjects().results(&r.worker_id, &r.task_id), r, None, None).await?;
    }
    let (ch, n) = (db.client(), results.len());
    let rows = eventually(WAIT, || {
        let ch = ch.clone();
        async move {
            let rows = failures(&ch).await?;
            Ok((rows.len() == n).then_some(rows))
        }
    })
    .await
    .map_err(|e| e.context(format!("\n{}", recorder.log())))?;
    assert_eq!(
        rows,
        [
            failure("t-ok", "succeeded", "", 0.0, 0, 0),
            failure("t-old-timeout", "timed_out", "timeout", 0.0, 0, 0),
            failure("t-oom", "failed", "out_of_memory", 1.5, 1, 64),
        ]
    );
    Ok(())
}

/// The `task_runs` row of an attempt stored before migration 6, as the
/// previous recorder wrote it (no failure columns).
#[derive(Debug, clickhouse::Row, serde::Serialize)]
struct OldRun {
    task_id: String,
    attempt: u32,
    status: String,
    finished_at: u32,
}

/// A database at migration 5, recorded as such: what the previous recorder left.
async fn at_migration_5(db: &TestDb, store: &Store) -> anyhow::Result<()> {
    for ddl in schema::migrations_table(&db.config.database) {
        db.client().query(&ddl).execute().await?;
    }
    for m in schema::migrations(store.version(), &db.config.database).into_iter().filter(|m| m.version < 6) {
        for ddl in &m.statements {
            db.client().query(ddl).execute().await?;
        }
        db.client()
            .query("INSERT INTO schema_migrations (version, description) VALUES (?, ?)")
            .bind(m.version)
            .bind(m.description)
            .execute()
            .await?;
    }
    Ok(())
}

/// The names of `task_runs`' columns.
async fn columns(db: &TestDb) -> anyhow::Result<Vec<String>> {
    Ok(db
        .client()
        .query("SELECT name FROM system.columns WHERE database = ? AND table = 'task_runs' ORDER BY name")
        .bind(&db.config.database)
        .fetch_all()
        .await?)
}

fn assert_has_failure_columns(columns: &[String]) {
    for c in ["category", "cpu_time_s", "oom_kills", "memory_limit_mb"] {
        assert!(columns.iter().any(|n| n == c), "{c} not in {columns:?}");
    }
}

#[tokio::test]
async fn a_database_from_before_the_failure_columns_gains_them() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = Store::connect(&db.config).await?;
    at_migration_5(&db, &store).await?;
    let old = |task_id: &str, status: &str| OldRun {
        task_id: task_id.into(),
        attempt: 1,
        status: status.into(),
        finished_at: 1_795_600_000,
    };
    let mut insert = db.client().insert::<OldRun>("task_runs").await?;
    for row in [old("t-old-timeout", "timed_out"), old("t-old-error", "error"), old("t-old-ok", "succeeded")] {
        insert.write(&row).await?;
    }
    insert.end().await?;

    assert_eq!(store.migrate(&db.config).await?, [6], "only the failure columns are new");
    assert_has_failure_columns(&columns(&db).await?);
    // the rows stored before read the category their status implies
    assert_eq!(
        failures(&db.client()).await?,
        [
            failure("t-old-error", "error", "infrastructure", 0.0, 0, 0),
            failure("t-old-ok", "succeeded", "", 0.0, 0, 0),
            failure("t-old-timeout", "timed_out", "timeout", 0.0, 0, 0),
        ]
    );
    // and new ones land with theirs
    let cgroup = ResourceUsage { oom_kills: 2, memory_limit_mb: 128, ..Default::default() };
    store.insert_runs(&[result("t-new", TaskStatus::Failed, FailureCategory::OutOfMemory, cgroup)]).await?;
    let new = failures(&db.client()).await?.into_iter().find(|f| f.task_id == "t-new");
    assert_eq!(new, Some(failure("t-new", "failed", "out_of_memory", 0.0, 2, 128)));
    Ok(())
}

/// 18.16 has no `ADD COLUMN IF NOT EXISTS`: a migration interrupted after
/// adding a column (or run by two recorders at once) must still complete.
#[tokio::test]
async fn an_interrupted_failure_columns_migration_completes_when_rerun() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = Store::connect(&db.config).await?;
    at_migration_5(&db, &store).await?;
    let six = schema::migrations(store.version(), &db.config.database)
        .into_iter()
        .find(|m| m.version == 6)
        .ok_or_else(|| anyhow::anyhow!("no migration 6"))?;
    for ddl in &six.statements[..2] {
        db.client().query(ddl).execute().await?;
    }
    assert_eq!(store.migrate(&db.config).await?, [6]);
    assert_has_failure_columns(&columns(&db).await?);
    Ok(())
}
