//! ClickHouse failing under ingest: killed (SIGKILL) and restarted, frozen
//! (SIGSTOP, a server that accepts connections and answers nothing), its disk
//! full, and down for minutes. In every case the backlog waits in JetStream,
//! the recorder's memory stays bounded, the `RecorderLagging` alert fires, and
//! afterwards every row arrives, exactly once after deduplication. Each test
//! runs its own ClickHouse server (Debian's, through `scripts/clickhouse.sh`,
//! as `make test` does) so that it can break it without disturbing the others.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use futures::StreamExt;
use hwsched_proto::{
    v1::{Alert, AlertState, MetricSample, MetricsBatch},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, free_port, http_get, ClickHouse, Proc};

const WAIT: Duration = Duration::from_secs(90);
const SAMPLES: usize = 10;

/// The lag rule made quick for tests: fires once the recorder has confirmed
/// nothing for 3 s while messages wait (the alerting service reads the lag
/// every 10 s).
const LAG_RULE: &str =
    "rules:\n  - {name: RecorderLagging, metric: recorder.lag_s, threshold: 3, clear: 1, for: 0s, severity: warning}\n";

/// A nats-server, a ClickHouse, a recorder and an alerting service; a
/// subscription to the alerts.
struct Rig {
    _nats: NatsServer,
    ch: ClickHouse,
    recorder: Proc,
    _alerting: Proc,
    _rules: tempfile::TempDir,
    metrics: String,
    bus: hwsched_bus::Bus,
    alerts: async_nats::Subscriber,
    database: &'static str,
}

impl Rig {
    async fn start(ch: ClickHouse, database: &'static str, recorder_args: &[&str]) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let env = [("HWSCHED_CLICKHOUSE_URL", ch.url()), ("HWSCHED_CLICKHOUSE_DATABASE", database.to_string())];
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let args = [&["recorder", "--flush-ms", "100", "--metrics-listen", &metrics][..], recorder_args].concat();
        let recorder = Proc::spawn("recorder", &nats.url(), &args, &env)?;
        // "recorder ready" comes after the streams exist ("ClickHouse schema ready" comes before:
        // publishing on it failed once under load with "no stream found for given subject")
        recorder.wait_for_log("recorder ready", WAIT).await?;
        let rules = tempfile::tempdir()?;
        let file = rules.path().join("rules.yaml");
        std::fs::write(&file, LAG_RULE)?;
        let alerting = Proc::spawn("alerting", &nats.url(), &["alerting", "--rules", &file.to_string_lossy()], &[])?;
        alerting.wait_for_log("alerting ready", WAIT).await?;
        let bus = bus(&nats.url()).await?;
        let alerts = bus.client().subscribe("hws.alerts.>").await?;
        Ok(Self { _nats: nats, ch, recorder, _alerting: alerting, _rules: rules, metrics, bus, alerts, database })
    }

    /// Publishes batch `i`: one worker per batch (distinct series, so nothing
    /// collapses but a duplicate), `samples` samples.
    async fn publish(&self, i: usize, samples: usize) -> anyhow::Result<()> {
        publish(&self.bus, i, samples).await
    }

    /// Publishes batches every `every` from another task until the returned
    /// flag is set; the counter says how many were acknowledged.
    fn publish_steadily(&self, samples: usize, every: Duration) -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
        let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (b, stop2, sent2) = (self.bus.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !stop2.load(Ordering::SeqCst) {
                tick.tick().await;
                let i = sent2.load(Ordering::SeqCst);
                if publish(&b, i, samples).await.is_ok() {
                    sent2.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        (stop, sent)
    }

    fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(self.ch.url()).with_database(self.database).with_validation(false)
    }

    /// Waits until ClickHouse holds `want` rows after dedup, then checks that
    /// every sample is there and that merging leaves exactly `want`.
    async fn all_stored_exactly_once(&self, want: u64) -> anyhow::Result<()> {
        let client = self.client();
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        let stored = loop {
            let n: u64 = client.query("SELECT count() FROM hw_metrics FINAL").fetch_one().await.unwrap_or(0);
            if n >= want || tokio::time::Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let ctx = || format!("\n{}", tail(&self.recorder.log(), 30));
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
        Ok(())
    }

    /// Polls `hwsched_recorder_pending{sink="metrics"}` until `want` holds.
    async fn pending(&self, want: impl Fn(i64) -> bool) -> anyhow::Result<i64> {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        loop {
            let n = self.gauge("hwsched_recorder_pending{sink=\"metrics\"}").await?;
            if let Some(n) = n.filter(|n| want(*n)) {
                return Ok(n);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "pending never as wanted: {n:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One series' value on the recorder's /metrics page.
    async fn gauge(&self, series: &str) -> anyhow::Result<Option<i64>> {
        let page = http_get(&self.metrics, "/metrics").await?;
        Ok(page
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as i64))
    }

    /// Waits for a `RecorderLagging` transition to `state` on the metrics stream.
    async fn lag_alert(&mut self, state: AlertState) -> anyhow::Result<Alert> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.alerts.next())
                .await
                .with_context(|| format!("no RecorderLagging {state:?} alert"))?
                .context("alert subscription closed")?;
            let a = Alert::decode(m.payload.as_ref())?;
            if a.rule == "RecorderLagging" && a.device.contains("METRICS") && a.state() == state {
                return Ok(a);
            }
        }
    }
}

async fn publish(b: &hwsched_bus::Bus, i: usize, samples: usize) -> anyhow::Result<()> {
    let worker = format!("w{i:06}");
    let batch = MetricsBatch {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        worker_id: worker.clone(),
        timestamp_ms: hwsched_bus::now_ms(),
        samples: (0..samples)
            .map(|s| MetricSample { metric: format!("m.{s}"), device: "cpu".into(), value: (i * samples + s) as f64 })
            .collect(),
    };
    b.jetstream().publish(b.subjects().metrics(&worker), batch.encode_to_vec().into()).await?.await?;
    Ok(())
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_during_ingest_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    const BATCHES: usize = 300;
    let rig = Rig::start(ClickHouse::start()?, "outage", &[]).await?;
    // published over about 3 s; ClickHouse dies a third of the way in
    for i in 0..BATCHES {
        rig.publish(i, SAMPLES).await?;
        if i == BATCHES / 3 {
            rig.ch.kill()?;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rig.recorder.wait_for_log("insert failed, batch kept for retry", WAIT).await?;
    // the backlog shows on /metrics while ClickHouse is down
    assert!(rig.pending(|n| n > 0).await? > 0);
    rig.ch.up()?;
    rig.all_stored_exactly_once((BATCHES * SAMPLES) as u64).await?;
    assert_eq!(rig.pending(|n| n == 0).await?, 0, "backlog drained");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_clickhouse_times_inserts_out_raises_the_lag_alert_and_loses_nothing() -> anyhow::Result<()> {
    let mut rig = Rig::start(ClickHouse::start()?, "frozen", &["--insert-timeout-ms", "1000"]).await?;
    let (stop, sent) = rig.publish_steadily(SAMPLES, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.ch.freeze()?;
    rig.recorder.wait_for_log("ClickHouse did not confirm the insert within 1000 ms", WAIT).await?;
    let fired = rig.lag_alert(AlertState::Firing).await?;
    assert!(fired.value > 3.0, "lag {} s", fired.value);
    let failures = rig.gauge("hwsched_recorder_insert_failures_total{sink=\"metrics\"}").await?;
    assert!(failures.unwrap_or(0) > 0, "insert failures counted: {failures:?}");
    let waiting = rig.pending(|n| n > 50).await?;
    rig.ch.thaw()?;
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batches = sent.load(Ordering::SeqCst);
    assert!(batches as i64 >= waiting, "{batches} published, {waiting} waited");
    rig.all_stored_exactly_once((batches * SAMPLES) as u64).await?;
    rig.lag_alert(AlertState::Resolved).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_clickhouse_disk_holds_the_backlog_raises_the_lag_alert_and_loses_nothing() -> anyhow::Result<()> {
    let mut rig = Rig::start(ClickHouse::start_on_small_disk(64)?, "diskfull", &[]).await?;
    const BEFORE: usize = 50;
    for i in 0..BEFORE {
        rig.publish(i, SAMPLES).await?;
    }
    rig.pending(|n| n == 0).await?;
    rig.ch.fill_disk()?;
    let mut batches = BEFORE;
    // ingest goes on while the disk is full: ClickHouse refuses every insert
    let refused = async {
        loop {
            rig.publish(batches, SAMPLES).await?;
            batches += 1;
            if rig.recorder.log().contains("insert failed, batch kept for retry") {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, refused).await.context("no insert refused on a full disk")??;
    let log = rig.recorder.log();
    let refusal = log.lines().find(|l| l.contains("insert failed")).unwrap_or_default();
    assert!(refusal.contains("space") || refusal.contains("errno: 28"), "the reason names the disk: {refusal}");
    for _ in 0..100 {
        rig.publish(batches, SAMPLES).await?;
        batches += 1;
    }
    let fired = rig.lag_alert(AlertState::Firing).await?;
    assert!(fired.value > 3.0, "lag {} s", fired.value);
    assert!(rig.pending(|n| n >= 100).await? >= 100, "the backlog waits in JetStream");
    rig.ch.free_disk()?;
    rig.all_stored_exactly_once((batches * SAMPLES) as u64).await?;
    rig.lag_alert(AlertState::Resolved).await?;
    Ok(())
}

/// `make test-chaos`: ClickHouse down for minutes (HWSCHED_CHAOS_OUTAGE_S,
/// default 180, at least 60) while about 200 batches a second arrive. The
/// backlog waits in JetStream, not in the recorder: its memory stays flat
/// while thousands of messages pile up; then every row arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long: make test-chaos"]
async fn clickhouse_down_for_minutes_keeps_the_recorders_memory_flat_and_loses_nothing() -> anyhow::Result<()> {
    let outage =
        Duration::from_secs(std::env::var("HWSCHED_CHAOS_OUTAGE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(180));
    anyhow::ensure!(
        outage >= Duration::from_secs(60),
        "HWSCHED_CHAOS_OUTAGE_S: at least 60 s, to build a real backlog"
    );
    const WIDE: usize = 20;
    let mut rig = Rig::start(ClickHouse::start()?, "longoutage", &[]).await?;
    let (stop, sent) = rig.publish_steadily(WIDE, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.ch.kill()?;
    let down_at = tokio::time::Instant::now();
    let pid = rig.recorder.pid();
    // RSS every 5 s; the first 30 s let the recorder reach its steady state
    let mut samples = Vec::new();
    while down_at.elapsed() < outage {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push((down_at.elapsed().as_secs(), rss_kib(pid)?));
    }
    let waiting = rig.pending(|_| true).await?;
    rig.ch.up()?;
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batches = sent.load(Ordering::SeqCst);
    let settled: Vec<u64> = samples.iter().filter(|(s, _)| *s >= 30).map(|(_, kib)| *kib).collect();
    let (first, peak) = (settled.first().copied().unwrap_or(0), settled.iter().copied().max().unwrap_or(0));
    eprintln!(
        "outage {} s: {batches} batches published, {waiting} waiting in JetStream at the end; \
         recorder RSS {first} KiB at 30 s, peak {peak} KiB after; samples {samples:?}",
        outage.as_secs()
    );
    assert!(waiting > 5_000, "a real backlog: {waiting}");
    assert!(peak <= first + 8 * 1024, "recorder memory flat while the backlog grew: {first} → {peak} KiB");
    rig.lag_alert(AlertState::Firing).await?;
    let caught_up = tokio::time::Instant::now();
    rig.all_stored_exactly_once((batches * WIDE) as u64).await?;
    eprintln!("caught up in {:.1} s", caught_up.elapsed().as_secs_f64());
    rig.lag_alert(AlertState::Resolved).await?;
    Ok(())
}
