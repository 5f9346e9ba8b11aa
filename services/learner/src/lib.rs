//! The hwsched learner: learns runtime and success per (workload, hardware)
//! from execution results, and which tests are flaky (passed and failed at one
//! revision, not counting the failures of workers the scheduler quarantined
//! for them: `hws.health.quarantined`), and publishes its model snapshot in the JetStream KV bucket
//! `hws_model` (key `snapshot`) for the scheduler and `hwsched model flaky`.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::AckKind;
use clap::Args;
use futures::StreamExt;
use hwsched_bus::{
    now_ms,
    streams::{self, Durable},
    Bus, Stream,
};
use hwsched_config::ClickHouseConfig;
use hwsched_proto::{
    v1::{ExecutionResult, MetricSample, MetricsBatch, ModelSnapshot, ModelUpdate, QuarantinedWorker},
    Message,
};
use hwsched_telemetry::{
    prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge},
    Telemetry,
};
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;

pub use hwsched_model::Model;

pub use hwsched_model::SNAPSHOT_KEY;

/// Default of `--publish-interval-ms` (ms).
pub const DEFAULT_PUBLISH_INTERVAL_MS: u64 = 2000;

/// Learner settings.
#[derive(Debug, Clone, Args)]
pub struct LearnerConfig {
    /// How often a changed model is published (ms); results are acknowledged when it is (so at most 10 s).
    #[arg(long = "publish-interval-ms", env = "HWSCHED_LEARNER_PUBLISH_MS", default_value_t = DEFAULT_PUBLISH_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(100..=10_000))]
    pub publish_interval_ms: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self { publish_interval_ms: DEFAULT_PUBLISH_INTERVAL_MS }
    }
}

/// The learner's metrics (for alerting and dashboards).
#[derive(Clone, Default)]
struct Metrics {
    observed: Counter<u64>,
    /// Model prediction error (MAPE, a share) by pair age.
    mape: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    /// How much slower each compared worker runs than its class's peers (1.0: as fast).
    slowdown: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    degraded: Gauge,
    pairs: Gauge,
    flaky: Gauge,
    snapshot_bytes: Gauge,
}

impl Metrics {
    fn register(&self, telemetry: &Telemetry) {
        let m = self.clone();
        telemetry.register(|r| {
            r.register("hwsched_learner_results", "Results learned from", m.observed);
            r.register(
                "hwsched_learner_prediction_mape",
                "Mean absolute percentage error (a share) of runtime predictions before each result, by how many runs the pair had",
                m.mape,
            );
            r.register(
                "hwsched_learner_worker_slowdown_ratio",
                "Runtime of a worker relative to its hardware class's peers on the same workloads",
                m.slowdown,
            );
            r.register("hwsched_learner_degraded_workers", "Workers flagged slower or failing more than their peers", m.degraded);
            r.register("hwsched_learner_pairs", "Learned (workload, hardware) pairs", m.pairs);
            r.register(
                "hwsched_learner_flaky_tests",
                "Tests that both passed and failed at one of their recent revisions",
                m.flaky,
            );
            r.register("hwsched_learner_snapshot_bytes", "Size of the last published model snapshot", m.snapshot_bytes);
        });
    }

    fn update(&self, model: &Model, snap: &ModelSnapshot, snapshot_bytes: usize) {
        for e in model.errors() {
            self.mape.get_or_create(&vec![("age".into(), e.age.clone())]).set(e.mape);
        }
        let mut degraded = 0;
        for h in model.workers() {
            let labels = vec![("worker_id".into(), h.worker_id.clone()), ("hardware".into(), h.hardware_key.clone())];
            self.slowdown.get_or_create(&labels).set(h.log_slowdown.exp());
            degraded += i64::from(h.degraded);
        }
        self.degraded.set(degraded);
        self.pairs.set(i64::try_from(model.len()).unwrap_or(i64::MAX));
        self.flaky.set(i64::try_from(snap.flaky_tests.len()).unwrap_or(i64::MAX));
        self.snapshot_bytes.set(i64::try_from(snapshot_bytes).unwrap_or(i64::MAX));
    }
}

/// Runs the learner until `shutdown` is cancelled.
pub async fn run(
    cfg: LearnerConfig,
    clickhouse: ClickHouseConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    streams::provision(&bus).await?;
    let bucket = streams::bucket(&bus, &bus.subjects().model_bucket()).await?;
    let durable = Durable::new(Stream::Results, "learner").max_ack_pending(50_000);
    let stored = match bucket.get(SNAPSHOT_KEY).await.context("read model snapshot")? {
        Some(b) => ModelSnapshot::decode(b.as_ref())
            .map_err(|e| tracing::warn!(error = %e, "stored model snapshot unreadable: relearning"))
            .ok(),
        None => None,
    };
    // Without a snapshot: relearn from ClickHouse's history when configured,
    // then from what the results stream still holds (results already in the
    // history are skipped).
    let (mut model, history_until_ms) = match stored {
        Some(snap) => (Model::from_snapshot(snap), 0),
        None => {
            let mut model = Model::default();
            let until = if clickhouse.enabled() { relearn_from_clickhouse(&clickhouse, &mut model).await } else { 0 };
            replay_results(&bus, &durable.name).await?;
            (model, until)
        }
    };
    let metrics = Metrics::default();
    metrics.register(&telemetry);
    let mut results = streams::consume(&bus, &durable).await?;
    let mut quarantines =
        bus.client().subscribe(bus.subjects().health_quarantined()).await.context("subscribe to quarantines")?;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.publish_interval_ms.max(100)));
    // a model relearned from history is published at the first tick
    let mut published = if history_until_ms > 0 { 0 } else { model.version() };
    let mut unacked: Vec<async_nats::jetstream::Message> = Vec::new();
    telemetry.set_ready(true);
    tracing::info!(pairs = model.len(), workers = model.workers().count(), "learner ready");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            m = results.next() => match m {
                Some(Ok(msg)) => {
                    match hwsched_bus::decode::<ExecutionResult>(msg.headers.as_ref(), &msg.payload) {
                        // already learned from ClickHouse's history
                        Ok(r) if r.finished_at_ms > 0 && r.finished_at_ms <= history_until_ms => {
                            let _ = msg.ack_with(AckKind::Ack).await;
                        }
                        // acknowledged once a snapshot that includes it is stored
                        Ok(r) if model.observe(&r) => { metrics.observed.inc(); unacked.push(msg); }
                        Ok(_) => { let _ = msg.ack_with(AckKind::Ack).await; }
                        Err(e) => bus.reject_message("learner", &msg, &format!("undecodable result: {e}")).await,
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "result stream error"),
                None => anyhow::bail!("result consumer closed"),
            },
            Some(m) = quarantines.next() => match QuarantinedWorker::decode(m.payload.as_ref()) {
                Ok(q) => {
                    let taken_back = model.blame_worker(&q.worker_id, q.evidence_from_ms, q.since_ms);
                    tracing::info!(worker_id = %q.worker_id, taken_back, "worker quarantined: its failures in the window are not the tests'");
                }
                Err(e) => tracing::warn!(error = %e, "undecodable quarantine announcement ignored"),
            },
            _ = tick.tick() => {
                if model.version() != published && publish(&bus, &bucket, &mut model, &metrics, &mut unacked).await {
                    published = model.version();
                }
            }
        }
    }
    // Publish what was learned since the last tick before stopping; what is not stored is redelivered.
    if model.version() != published {
        publish(&bus, &bucket, &mut model, &metrics, &mut unacked).await;
    }
    tracing::info!("learner stopped");
    Ok(())
}

/// The id under which the learner's own metrics are recorded (`hw_metrics.worker_id`).
pub const METRICS_ID: &str = "hwsched-learner";

/// Publishes the model's error and health on the metrics stream, which the
/// recorder writes to ClickHouse's `hw_metrics`: under [`METRICS_ID`],
/// `learner.prediction_mape` by pair age (the device column), pairs,
/// degraded workers and flaky tests; under each compared worker's own id,
/// `learner.slowdown_ratio` and `learner.degraded` (device `model`), so its
/// panels and alert rules select it like its other metrics.
async fn record_metrics(bus: &Bus, model: &Model, flaky_tests: usize, now_ms: i64) {
    let sample =
        |metric: &str, device: &str, value: f64| MetricSample { metric: metric.into(), device: device.into(), value };
    let mut own: Vec<MetricSample> =
        model.errors().map(|e| sample("learner.prediction_mape", &e.age, e.mape)).collect();
    own.push(sample("learner.pairs", "model", model.len() as f64));
    own.push(sample("learner.degraded_workers", "model", model.workers().filter(|h| h.degraded).count() as f64));
    own.push(sample("learner.flaky_tests", "model", flaky_tests as f64));
    let batches = std::iter::once(MetricsBatch {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        worker_id: METRICS_ID.into(),
        timestamp_ms: now_ms,
        samples: own,
    })
    .chain(model.workers().map(|h| MetricsBatch {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        worker_id: h.worker_id.clone(),
        timestamp_ms: now_ms,
        samples: vec![
            sample("learner.slowdown_ratio", "model", h.log_slowdown.exp()),
            sample("learner.degraded", "model", f64::from(u8::from(h.degraded))),
        ],
    }));
    for b in batches {
        let subject = bus.subjects().metrics(&b.worker_id);
        let sent = match bus.jetstream().publish(subject, b.encode_to_vec().into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::warn!(error = e, worker_id = b.worker_id, "learner metrics not recorded");
            return;
        }
    }
}

/// Most attempts read back from ClickHouse when relearning.
const HISTORY_LIMIT: u64 = 1_000_000;

/// Learns from the latest attempts in ClickHouse's `task_runs`. Returns the
/// time (ms) up to which results are in that history, 0 when none could be read.
async fn relearn_from_clickhouse(cfg: &ClickHouseConfig, model: &mut Model) -> i64 {
    let started = std::time::Instant::now();
    let history = match hwsched_store::Store::connect(cfg).await {
        Ok(store) => store.run_history(HISTORY_LIMIT).await,
        Err(e) => Err(e),
    };
    match history {
        Ok(runs) => {
            let learned = runs.iter().filter(|r| model.observe(r)).count();
            model.refit();
            // stored with second precision: the whole last second counts as learned
            let until = runs.last().map_or(0, |r| r.finished_at_ms + 999);
            tracing::info!(
                attempts = runs.len(),
                learned,
                pairs = model.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "relearned from ClickHouse's task_runs"
            );
            until
        }
        Err(e) => {
            tracing::warn!(error = %e, "ClickHouse history unreadable: relearning from the results stream only");
            0
        }
    }
}

/// Removes the learner's durable consumer, so that the next one starts at the
/// beginning of the results stream (its retention is the history relearned).
async fn replay_results(bus: &Bus, consumer: &str) -> anyhow::Result<()> {
    let name = bus.subjects().stream(Stream::Results);
    let stream = bus.jetstream().get_stream(&name).await.with_context(|| format!("open stream {name}"))?;
    match stream.delete_consumer(consumer).await {
        Ok(_) => tracing::info!(stream = name, "no stored model: relearning from the results stream"),
        Err(e) if e.to_string().contains("not found") => {}
        Err(e) => return Err(e).with_context(|| format!("reset consumer {consumer} on {name}")),
    }
    Ok(())
}

/// Refits the factor model, stores the snapshot, then acknowledges the results
/// it includes and announces it ([`announce`]). False when it was not stored.
async fn publish(
    bus: &Bus,
    bucket: &async_nats::jetstream::kv::Store,
    model: &mut Model,
    metrics: &Metrics,
    unacked: &mut Vec<async_nats::jetstream::Message>,
) -> bool {
    let started = std::time::Instant::now();
    model.refit();
    // the server refuses a message over its max_payload
    let max = match bus.client().server_info().max_payload {
        0 => 1 << 20,
        n => n,
    }
    .saturating_sub(4096);
    let (snap, dropped) = model.snapshot_within(now_ms(), max);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            kept = snap.entries.len(),
            max_bytes = max,
            "model snapshot too large: oldest pairs left out"
        );
    }
    if snap.test_revisions.len() < model.tests_tracked() {
        tracing::warn!(
            left_out = model.tests_tracked() - snap.test_revisions.len(),
            kept = snap.test_revisions.len(),
            max_bytes = max,
            "model snapshot too large: revision histories of the tests seen longest ago left out"
        );
    }
    let bytes = snap.encode_to_vec();
    let size = bytes.len();
    match bucket.put(SNAPSHOT_KEY, bytes.into()).await {
        Ok(_) => {
            for m in unacked.drain(..) {
                let _ = m.ack().await;
            }
            tracing::debug!(
                version = snap.version,
                pairs = snap.entries.len(),
                flaky_tests = snap.flaky_tests.len(),
                bytes = size,
                took_ms = started.elapsed().as_millis() as u64,
                "model published"
            );
            metrics.update(model, &snap, size);
            announce(bus, model, &snap, size).await;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "model not published; its results stay unacknowledged");
            false
        }
    }
}

/// Announces a stored snapshot (`hws.model.updated`), records the learner's
/// metrics, logs the tests that became flaky, and announces each worker whose
/// health changed.
async fn announce(bus: &Bus, model: &mut Model, snap: &ModelSnapshot, size: usize) {
    let degraded = snap.workers.iter().filter(|w| w.degraded).count();
    let update = ModelUpdate {
        version: snap.version,
        generated_at_ms: snap.generated_at_ms,
        pairs: u32::try_from(snap.entries.len()).unwrap_or(u32::MAX),
        degraded_workers: u32::try_from(degraded).unwrap_or(u32::MAX),
        snapshot_bytes: size as u64,
        flaky_tests: u32::try_from(snap.flaky_tests.len()).unwrap_or(u32::MAX),
    };
    let subjects = bus.subjects();
    let _ = bus.client().publish(subjects.model_updated(), update.encode_to_vec().into()).await;
    record_metrics(bus, model, snap.flaky_tests.len(), snap.generated_at_ms).await;
    for t in model.take_new_flaky() {
        tracing::info!(
            workload = t.workload_key,
            revision = t.last_revision,
            flake_rate = t.flake_rate,
            "test flaky: passed and failed at one revision"
        );
    }
    for h in model.take_health_changes() {
        if h.degraded {
            tracing::warn!(
                worker_id = h.worker_id,
                hardware = h.hardware_key,
                slowdown = h.log_slowdown.exp(),
                failure_excess = h.failure_excess,
                "worker degraded: slower or failing more than its peers"
            );
        } else {
            tracing::info!(worker_id = h.worker_id, "worker no longer degraded");
        }
        let _ = bus.client().publish(subjects.worker_health(&h.worker_id), h.encode_to_vec().into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_equals_the_flag_defaults() {
        hwsched_config::check_flag_defaults(&LearnerConfig::default()).expect("one set of defaults");
    }
}
