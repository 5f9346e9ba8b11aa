//! ClickHouse killed (SIGKILL) while the recorder ingests metrics, then
//! restarted: every row arrives, exactly once after deduplication. The test
//! runs its own ClickHouse server (Debian's, through `scripts/clickhouse.sh`,
//! as `make test` does) so that it can kill it without disturbing the others.

use std::time::Duration;

use anyhow::Context as _;
use hwsched_proto::{
    v1::{MetricSample, MetricsBatch},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, free_port, http_get, ClickHouse, Proc};

const WAIT: Duration = Duration::from_secs(90);
const BATCHES: usize = 300;
const SAMPLES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_during_ingest_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let ch = ClickHouse::start()?;
    let env = [("HWSCHED_CLICKHOUSE_URL", ch.url()), ("HWSCHED_CLICKHOUSE_DATABASE", "outage".to_string())];
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let recorder =
        Proc::spawn("recorder", &nats.url(), &["recorder", "--flush-ms", "100", "--metrics-listen", &metrics], &env)?;
    recorder.wait_for_log("ClickHouse schema ready", WAIT).await?;
    let b = bus(&nats.url()).await?;

    // one batch per worker (distinct series: nothing collapses but a duplicate),
    // published over about 3 s; ClickHouse dies a third of the way in
    let base = hwsched_bus::now_ms();
    for i in 0..BATCHES {
        let worker = format!("w{i:04}");
        let batch = MetricsBatch {
            schema_version: hwsched_proto::SCHEMA_VERSION,
            worker_id: worker.clone(),
            timestamp_ms: base,
            samples: (0..SAMPLES)
                .map(|s| MetricSample {
                    metric: format!("m.{s}"),
                    device: "cpu".into(),
                    value: (i * SAMPLES + s) as f64,
                })
                .collect(),
        };
        b.jetstream().publish(b.subjects().metrics(&worker), batch.encode_to_vec().into()).await?.await?;
        if i == BATCHES / 3 {
            ch.kill()?;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    recorder.wait_for_log("insert failed, batch kept for retry", WAIT).await?;
    // the backlog shows on /metrics while ClickHouse is down
    let backlog = pending(&metrics, |n| n > 0).await?;
    assert!(backlog > 0);
    ch.up()?;

    let client = clickhouse::Client::default().with_url(ch.url()).with_database("outage").with_validation(false);
    let want = (BATCHES * SAMPLES) as u64;
    let deadline = tokio::time::Instant::now() + WAIT;
    let stored = loop {
        let n: u64 = client.query("SELECT count() FROM hw_metrics FINAL").fetch_one().await.unwrap_or(0);
        if n >= want || tokio::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ctx = || format!("\n{}", recorder.log());
    assert_eq!(stored, want, "rows after dedup{}", ctx());
    let distinct: u64 = client
        .query("SELECT uniqExact(worker_id, metric, value) FROM hw_metrics")
        .fetch_one()
        .await
        .context("distinct rows")?;
    assert_eq!(distinct, want, "every sample present{}", ctx());
    // duplicates (a batch ClickHouse stored but the recorder never heard of) collapse at merge
    client.query("OPTIMIZE TABLE hw_metrics FINAL").execute().await?;
    let raw: u64 = client.query("SELECT count() FROM hw_metrics").fetch_one().await?;
    assert_eq!(raw, want, "exactly once after merging{}", ctx());
    assert_eq!(pending(&metrics, |n| n == 0).await?, 0, "backlog drained");
    Ok(())
}

/// Polls the recorder's `hwsched_recorder_pending{sink="metrics"}` until `want` holds.
async fn pending(addr: &str, want: impl Fn(i64) -> bool) -> anyhow::Result<i64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = http_get(addr, "/metrics").await?;
        let n = page
            .lines()
            .find(|l| l.starts_with("hwsched_recorder_pending{sink=\"metrics\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok());
        if let Some(n) = n.filter(|n| want(*n)) {
            return Ok(n);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "pending never as wanted: {n:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
