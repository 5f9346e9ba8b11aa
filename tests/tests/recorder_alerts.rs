//! Alert transitions reach ClickHouse: the recorder stores each one published
//! on the alerts stream as a row of `alerts`, and a redelivered transition
//! collapses with its first copy.

use std::time::Duration;

use hwsched_proto::v1::{Alert, AlertState};
use hwsched_testkit::{eventually, NatsServer, TestDb};
use hwsched_tests::bus;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Stored {
    state: String,
    severity: String,
    worker_id: String,
    value: f64,
    threshold: f64,
    starts_s: u32,
    ends_s: u32,
    time_s: u32,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    muted_by: String,
}

async fn raw_rows(ch: &clickhouse::Client) -> anyhow::Result<u64> {
    Ok(ch.query("SELECT count() FROM alerts").fetch_one().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_stores_alert_transitions_once() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    let recorder = hwsched_tests::recorder(&nats.url(), &db)?;
    // the recorder creates the table
    recorder.wait_for_log("ClickHouse schema ready", WAIT).await?;
    let ch = db.client();

    // whole seconds: the 18.16 server stores DateTime in seconds
    let now = hwsched_bus::now_ms() / 1000 * 1000;
    let firing = Alert {
        fingerprint: "fp-gpu-hot-w1".into(),
        rule: "gpu_hot".into(),
        severity: "critical".into(),
        state: AlertState::Firing as i32,
        worker_id: "w1".into(),
        device: "gpu0".into(),
        metric: "gpu.temp_c".into(),
        value: 91.5,
        threshold: 85.0,
        starts_at_ms: now - 60_000,
        summary: "gpu0 on w1 at 91.5 C".into(),
        labels: [("alertname", "gpu_hot"), ("team", "ml")].map(|(k, v)| (k.to_string(), v.to_string())).into(),
        at_ms: now - 60_000,
        ..Default::default()
    };
    let resolved = Alert {
        state: AlertState::Resolved as i32,
        value: 70.0,
        ends_at_ms: now,
        muted_by: "silence:s1".into(),
        at_ms: now,
        ..firing.clone()
    };
    for a in [&firing, &resolved] {
        b.publish_durable(b.subjects().alerts(&a.severity), a, None, None).await?;
    }
    let ctx = || format!("\n{}", recorder.log());
    eventually(WAIT, || {
        let ch = ch.clone();
        async move { Ok((raw_rows(&ch).await? == 2).then_some(())) }
    })
    .await
    .map_err(|e| e.context(ctx()))?;
    // the resolved transition again (a redelivery), in its own insert
    b.publish_durable(b.subjects().alerts(&resolved.severity), &resolved, None, None).await?;
    eventually(WAIT, || {
        let ch = ch.clone();
        async move { Ok((raw_rows(&ch).await? == 3).then_some(())) }
    })
    .await
    .map_err(|e| e.context(ctx()))?;

    let rows: Vec<Stored> = ch
        .query(
            "SELECT toString(state) AS state, toString(severity) AS severity, toString(worker_id) AS worker_id, \
             value, threshold, toUInt32(toUnixTimestamp(starts_at)) AS starts_s, \
             toUInt32(toUnixTimestamp(ends_at)) AS ends_s, toUInt32(toUnixTimestamp(time)) AS time_s, \
             label_keys, label_values, muted_by \
             FROM alerts FINAL WHERE fingerprint = 'fp-gpu-hot-w1' ORDER BY time",
        )
        .fetch_all()
        .await?;
    assert_eq!(rows.len(), 2, "one row per transition: {rows:?}");
    let secs = |ms: i64| u32::try_from(ms / 1000).expect("time fits");
    let (f, r) = (&rows[0], &rows[1]);
    assert_eq!((f.state.as_str(), f.value, f.muted_by.as_str()), ("firing", 91.5, ""), "{f:?}");
    assert_eq!((f.severity.as_str(), f.worker_id.as_str(), f.threshold), ("critical", "w1", 85.0), "{f:?}");
    assert_eq!((f.time_s, f.starts_s, f.ends_s), (secs(now - 60_000), secs(now - 60_000), 0), "{f:?}");
    assert_eq!(f.label_keys, ["alertname", "team"]);
    assert_eq!(f.label_values, ["gpu_hot", "ml"]);
    assert_eq!((r.state.as_str(), r.value, r.muted_by.as_str()), ("resolved", 70.0, "silence:s1"), "{r:?}");
    assert_eq!((r.time_s, r.starts_s, r.ends_s), (secs(now), secs(now - 60_000), secs(now)), "{r:?}");
    assert_eq!(r.label_keys, f.label_keys);
    assert_eq!(r.label_values, f.label_values);
    Ok(())
}
