//! The versioned ClickHouse schema on the real server `make test` starts
//! (18.16, the plain variant): migrations apply once and are recorded, and the
//! one-minute rollup is filled by its materialized view as metrics arrive.

use hwsched_proto::v1::{MetricSample, MetricsBatch};
use hwsched_store::{schema, Store};
use hwsched_testkit::TestDb;

fn batch(worker: &str, at_ms: i64, value: f64) -> MetricsBatch {
    MetricsBatch {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        worker_id: worker.into(),
        timestamp_ms: at_ms,
        samples: vec![MetricSample { metric: "cpu.util_pct".into(), device: "cpu".into(), value }],
    }
}

#[tokio::test]
async fn migrations_apply_once_and_the_rollup_follows_the_metrics() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = Store::connect(&db.config).await?;
    let all: Vec<u32> = schema::migrations(store.version(), &db.config.database).iter().map(|m| m.version).collect();
    assert_eq!(store.migrate(&db.config).await?, all, "a new database gets every migration");
    assert!(store.migrate(&db.config).await?.is_empty(), "a second run applies nothing");
    let recorded: Vec<u32> = store.applied_migrations().await?.into_iter().map(|(v, _)| v).collect();
    assert_eq!(recorded, all);

    // one minute of samples from two workers, then the next minute
    let minute = 1_795_600_000_000i64 / 60_000 * 60_000;
    let mut batches: Vec<MetricsBatch> = (0..6).map(|i| batch("w1", minute + i * 10_000, 10.0 * i as f64)).collect();
    batches.push(batch("w2", minute + 5_000, 99.0));
    batches.push(batch("w1", minute + 60_000, 7.0));
    store.insert_metrics(&batches).await?;
    let rows: Vec<(String, u32, f64, f64, f64)> = db
        .client()
        .query(
            "SELECT worker_id, toUInt32(time), minMerge(min_value), maxMerge(max_value), avgMerge(avg_value) \
             FROM hw_metrics_1m WHERE metric = 'cpu.util_pct' GROUP BY worker_id, time ORDER BY worker_id, time",
        )
        .fetch_all()
        .await?;
    let at = (minute / 1000) as u32;
    assert_eq!(
        rows,
        [
            ("w1".to_string(), at, 0.0, 50.0, 25.0),
            ("w1".to_string(), at + 60, 7.0, 7.0, 7.0),
            ("w2".to_string(), at, 99.0, 99.0, 99.0),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn the_rollup_migration_backfills_metrics_stored_before_it() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = Store::connect(&db.config).await?;
    // a database at migration 3: metrics stored, no rollup yet
    for m in schema::migrations(store.version(), &db.config.database).into_iter().filter(|m| m.version < 4) {
        for ddl in m.statements {
            db.client().query(&ddl).execute().await?;
        }
    }
    store.insert_metrics(&[batch("w1", 1_795_600_000_000, 40.0), batch("w1", 1_795_600_001_000, 60.0)]).await?;
    store.migrate(&db.config).await?;
    let avg: f64 = db.client().query("SELECT avgMerge(avg_value) FROM hw_metrics_1m").fetch_one().await?;
    assert_eq!(avg, 50.0);
    Ok(())
}

/// ClickHouse 18.16 has no TTL: the recorder drops the partitions whose rows
/// are all past the retention, and keeps the rest.
#[tokio::test]
async fn expired_partitions_are_dropped_on_a_server_without_ttl() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let store = Store::connect(&db.config).await?;
    anyhow::ensure!(!store.version().is_modern(), "this test needs the old server `make test` starts");
    store.migrate(&db.config).await?;
    let day = 86_400_000i64;
    let today = hwsched_bus::now_ms().div_euclid(day);
    let old = (today - i64::from(schema::METRICS_RETENTION_DAYS) - 2) * day + 3_600_000;
    let recent = (today - 1) * day + 3_600_000;
    store.insert_metrics(&[batch("w1", old, 1.0), batch("w1", recent, 2.0)]).await?;
    let dropped = store.drop_expired_partitions(today).await?;
    assert!(dropped.iter().any(|(t, _)| t == "hw_metrics"), "{dropped:?}");
    let left: Vec<f64> = db.client().query("SELECT value FROM hw_metrics").fetch_all().await?;
    assert_eq!(left, [2.0], "the old day is gone, yesterday stays");
    // the rollup keeps the old minute: its retention is longer
    let minutes: u64 =
        db.client().query("SELECT count() FROM (SELECT time FROM hw_metrics_1m GROUP BY time)").fetch_one().await?;
    assert_eq!(minutes, 2);
    assert!(store.drop_expired_partitions(today).await?.is_empty(), "nothing more to drop");
    Ok(())
}
