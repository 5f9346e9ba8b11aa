//! The hwsched recorder: durable JetStream consumers for metrics (`hw_metrics`),
//! results (`task_runs`), placement decisions (`scheduler_decisions`) and alert
//! transitions (`alerts`), batched inserts into ClickHouse, and acknowledgement
//! only after ClickHouse confirmed the insert, so a ClickHouse outage loses
//! nothing (the backlog waits in JetStream). The worker inventory (`workers`)
//! comes from registrations and heartbeats (`inventory.rs`). The one-minute
//! rollup `hw_metrics_1m` is filled by ClickHouse itself (a materialized view).
//! The test cases of results that carry a JUnit report go to `test_cases`
//! with their result's batch (`junit.rs`).
#![forbid(unsafe_code)]

pub mod inventory;
mod junit;

use std::{convert::Infallible, time::Duration};

use async_nats::jetstream::{self, AckKind};
use clap::Args;
use futures::StreamExt;
use hwsched_bus::{
    streams::{self, Durable},
    Bus, Stream,
};
use hwsched_proto::v1::{Alert, ExecutionResult, MetricsBatch, TaskEvent};
use hwsched_shutdown::{Backoff, Components};
use hwsched_store::{Store, StoreError};
use hwsched_telemetry::{
    prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge},
    Telemetry,
};
use tokio_util::sync::CancellationToken;

/// Default values, shared by the flags and `Default`.
pub mod defaults {
    /// Rows per insert.
    pub const BATCH_ROWS: usize = 50_000;
    /// Messages per insert at most.
    pub const BATCH_MESSAGES: usize = 10_000;
    /// Longest a message waits for its batch (ms).
    pub const FLUSH_MS: u64 = 1000;
    /// Insert confirmation timeout (ms).
    pub const INSERT_TIMEOUT_MS: u64 = 20_000;
}

/// Recorder settings.
#[derive(Debug, Clone, Args)]
pub struct RecorderConfig {
    /// Rows per insert: a batch is inserted once it holds this many rows
    /// (ClickHouse prefers few large inserts), or after `flush-ms`.
    #[arg(long = "batch-rows", env = "HWSCHED_RECORDER_BATCH_ROWS", default_value_t = defaults::BATCH_ROWS)]
    pub batch_rows: usize,
    /// Messages per insert at most (bounds memory when messages hold few rows).
    #[arg(long = "batch-messages", env = "HWSCHED_RECORDER_BATCH", default_value_t = defaults::BATCH_MESSAGES)]
    pub batch_messages: usize,
    /// Longest a message waits for its batch (ms).
    #[arg(long = "flush-ms", env = "HWSCHED_RECORDER_FLUSH_MS", default_value_t = defaults::FLUSH_MS)]
    pub flush_ms: u64,
    /// An insert ClickHouse has not confirmed after this long (ms) counts as
    /// failed and is retried: a frozen or overloaded server must not hold a
    /// batch forever. A retried insert that did land collapses at merge.
    #[arg(long = "insert-timeout-ms", env = "HWSCHED_RECORDER_INSERT_TIMEOUT_MS", default_value_t = defaults::INSERT_TIMEOUT_MS)]
    pub insert_timeout_ms: u64,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            batch_rows: defaults::BATCH_ROWS,
            batch_messages: defaults::BATCH_MESSAGES,
            flush_ms: defaults::FLUSH_MS,
            insert_timeout_ms: defaults::INSERT_TIMEOUT_MS,
        }
    }
}

/// Runs the recorder until `shutdown` is cancelled. Returns at once (with a log
/// line) when ClickHouse is not configured.
pub async fn run(
    cfg: RecorderConfig,
    clickhouse: hwsched_config::ClickHouseConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !clickhouse.enabled() {
        tracing::info!("ClickHouse not configured (HWSCHED_CLICKHOUSE_URL unset): recorder idle");
        shutdown.cancelled().await;
        return Ok(());
    }
    let store = connect(&clickhouse, &shutdown).await?;
    let Some(store) = store else { return Ok(()) };
    streams::provision(&bus).await?;
    let rows = Counter::<u64>::default();
    let lag = Lag::default();
    let failures = Failures::default();
    telemetry.register(|r| {
        r.register("hwsched_recorder_rows", "Rows inserted into ClickHouse", rows.clone());
        r.register("hwsched_recorder_pending", "Messages waiting to be written to ClickHouse", lag.clone());
        r.register(
            "hwsched_recorder_insert_failures",
            "Inserts ClickHouse refused or did not confirm in time (each is retried)",
            failures.clone(),
        );
    });
    let sink = |name: &'static str, stream| Sink {
        name,
        stream,
        cfg: cfg.clone(),
        rows: rows.clone(),
        failures: failures.get_or_create(&vec![("sink".to_string(), name.to_string())]).clone(),
    };
    let (metrics, results) = (sink("metrics", Stream::Metrics), sink("results", Stream::Results));
    let (decisions, alerts) = (sink("decisions", Stream::Events), sink("alerts", Stream::Alerts));
    telemetry.set_ready(true);
    // after provisioning: whoever waits for this line may publish to every stream
    tracing::info!(database = %clickhouse.database, "recorder ready");
    let sinks = [
        ("metrics", Stream::Metrics),
        ("results", Stream::Results),
        ("decisions", Stream::Events),
        ("alerts", Stream::Alerts),
    ];
    // The first component to end before shutdown stops the recorder: a sink
    // whose consumer is gone must not leave a process that says it is ready.
    let mut components = Components::<anyhow::Error>::new(shutdown.clone());
    add_sinks(&mut components, [metrics, results, decisions, alerts], &bus, &store, &shutdown);
    components.add("inventory", inventory::run(&bus, &store, &shutdown));
    components.add("retention", retention(&store, &shutdown));
    components.add("backlog reporter", report_backlog(&bus, &sinks, &lag, &shutdown));
    components.add("readiness", not_ready_on_shutdown(&telemetry, &shutdown));
    components.run().await?;
    tracing::info!("recorder stopped");
    Ok(())
}

/// One component per sink: metrics, results, decisions, alerts.
fn add_sinks<'a>(
    components: &mut Components<'a, anyhow::Error>,
    [metrics, results, decisions, alerts]: [Sink; 4],
    bus: &'a Bus,
    store: &'a Store,
    shutdown: &'a CancellationToken,
) {
    components.add(
        "metrics sink",
        metrics.run(
            bus,
            shutdown,
            |m: &MetricsBatch| m.samples.len(),
            |batch: Vec<MetricsBatch>| {
                let store = store.clone();
                async move { store.insert_metrics(&batch).await }
            },
        ),
    );
    components.add(
        "results sink",
        results.run(
            bus,
            shutdown,
            |_: &ExecutionResult| 1,
            move |batch: Vec<ExecutionResult>| async move { junit::insert_results(store, bus, &batch).await },
        ),
    );
    components.add(
        "decisions sink",
        decisions.run(
            bus,
            shutdown,
            |e: &TaskEvent| e.candidates.len().max(1),
            |batch: Vec<TaskEvent>| {
                let store = store.clone();
                async move { store.insert_decisions(&batch).await }
            },
        ),
    );
    components.add(
        "alerts sink",
        alerts.run(
            bus,
            shutdown,
            |_: &Alert| 1,
            |batch: Vec<Alert>| {
                let store = store.clone();
                async move { store.insert_alerts(&batch).await }
            },
        ),
    );
}

/// Keeps `hwsched_recorder_pending` current from the consumers' info, apart
/// from the sinks: a sink retrying an insert while ClickHouse is down is not
/// reading messages, and that is when its backlog matters.
async fn report_backlog(
    bus: &Bus,
    sinks: &[(&str, Stream)],
    lag: &Lag,
    shutdown: &CancellationToken,
) -> Result<(), Infallible> {
    let mut tick = tokio::time::interval(LAG_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        for (name, stream) in sinks {
            if let Some(info) = streams::recorder_consumer(bus, *stream).await {
                let pending = streams::backlog(&info);
                lag.get_or_create(&vec![("sink".to_string(), name.to_string())]).set(pending as i64);
            }
        }
    }
}

/// Says ready until shutdown is requested, by a signal or by a component that ended.
async fn not_ready_on_shutdown(telemetry: &Telemetry, shutdown: &CancellationToken) -> Result<(), Infallible> {
    shutdown.cancelled().await;
    telemetry.set_ready(false);
    Ok(())
}

/// How often expired partitions are looked for (servers without TTL).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// On servers without TTL, drops expired partitions at start and every hour
/// (`Store::drop_expired_partitions`); modern servers expire rows by TTL (it
/// then only waits for shutdown).
async fn retention(store: &Store, shutdown: &CancellationToken) -> anyhow::Result<()> {
    if store.version().is_modern() {
        shutdown.cancelled().await;
        return Ok(());
    }
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match store.drop_expired_partitions(hwsched_bus::now_ms().div_euclid(86_400_000)).await {
            Ok(dropped) => {
                for (table, partition) in dropped {
                    tracing::info!(table, partition, "expired partition dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "expired partitions not dropped, retrying in an hour"),
        }
    }
}

/// First wait before retrying a ClickHouse connect or insert; it doubles up to [`RETRY_BACKOFF_CAP`].
const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between ClickHouse connect or insert attempts.
const RETRY_BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Connects, retrying while ClickHouse is down; `None` if shutdown came first.
async fn connect(
    cfg: &hwsched_config::ClickHouseConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Store>> {
    let mut backoff = Backoff::doubling(RETRY_BACKOFF, RETRY_BACKOFF_CAP);
    loop {
        match Store::connect_and_migrate(cfg).await {
            Ok(s) => return Ok(Some(s)),
            Err(e @ StoreError::Server { .. }) => {
                let url = cfg.url.as_deref().map(hwsched_config::redact_url).unwrap_or_default();
                tracing::warn!(url, error = %e, "ClickHouse not ready, retrying");
                if !backoff.wait(shutdown).await {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

struct Sink {
    name: &'static str,
    stream: Stream,
    cfg: RecorderConfig,
    rows: Counter,
    failures: Counter,
}

/// `hwsched_recorder_insert_failures{sink}`.
type Failures = Family<Vec<(String, String)>, Counter>;

/// How often the messages of a batch being inserted are marked in progress
/// (well inside the consumers' 30 s ack wait).
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// `hwsched_recorder_pending{sink}`: messages waiting to be written (the
/// consumer's pending and unacknowledged ones), refreshed every few seconds,
/// so the backlog after a ClickHouse outage shows while it drains.
type Lag = Family<Vec<(String, String)>, Gauge>;

/// How often the consumers' backlog is read.
const LAG_EVERY: Duration = Duration::from_secs(5);

impl Sink {
    /// Consumes, batches, inserts, then acks. An insert that fails is retried
    /// with backoff while the batch's messages are kept in progress.
    async fn run<M, F, Fut>(
        self,
        bus: &Bus,
        shutdown: &CancellationToken,
        rows_of: fn(&M) -> usize,
        insert: F,
    ) -> anyhow::Result<()>
    where
        M: hwsched_proto::Message + Default + Clone + serde::de::DeserializeOwned,
        F: Fn(Vec<M>) -> Fut,
        Fut: std::future::Future<Output = Result<usize, StoreError>>,
    {
        let durable =
            Durable::new(self.stream, streams::RECORDER_DURABLE).max_ack_pending(self.cfg.batch_messages as i64 * 4);
        let mut messages = streams::consume(bus, &durable).await?;
        let flush = Duration::from_millis(self.cfg.flush_ms.max(10));
        let mut held: Vec<jetstream::Message> = Vec::new();
        let mut decoded: Vec<M> = Vec::new();
        let mut rows = 0;
        let mut deadline = tokio::time::Instant::now() + flush;
        loop {
            let full = held.len() >= self.cfg.batch_messages || rows >= self.cfg.batch_rows;
            if full || (!held.is_empty() && tokio::time::Instant::now() >= deadline) {
                self.flush(&mut held, &mut decoded, &insert, shutdown).await;
                rows = 0;
                deadline = tokio::time::Instant::now() + flush;
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    if !held.is_empty() {
                        self.flush(&mut held, &mut decoded, &insert, shutdown).await;
                    }
                    return Ok(());
                }
                _ = tokio::time::sleep_until(deadline), if !held.is_empty() => {}
                m = messages.next() => match m {
                    Some(Ok(msg)) => match hwsched_bus::decode::<M>(msg.headers.as_ref(), &msg.payload) {
                        Ok(v) => {
                            if held.is_empty() {
                                deadline = tokio::time::Instant::now() + flush;
                            }
                            rows += rows_of(&v);
                            decoded.push(v);
                            held.push(msg);
                        }
                        Err(e) => bus.reject_message("recorder", &msg, &format!("undecodable on the {} sink: {e}", self.name)).await,
                    },
                    Some(Err(e)) => tracing::warn!(sink = self.name, error = %e, "consumer error"),
                    None => anyhow::bail!("{} consumer closed", self.name),
                },
            }
        }
    }

    async fn flush<M, F, Fut>(
        &self,
        held: &mut Vec<jetstream::Message>,
        decoded: &mut Vec<M>,
        insert: &F,
        shutdown: &CancellationToken,
    ) where
        F: Fn(Vec<M>) -> Fut,
        Fut: std::future::Future<Output = Result<usize, StoreError>>,
        M: Clone,
    {
        let mut backoff = Backoff::doubling(RETRY_BACKOFF, RETRY_BACKOFF_CAP);
        let timeout = Duration::from_millis(self.cfg.insert_timeout_ms.max(1));
        loop {
            // A batch stays in progress while its insert is outstanding, so
            // JetStream redelivers nothing that is still being written.
            let attempt = tokio::time::timeout(timeout, insert(decoded.clone()));
            tokio::pin!(attempt);
            let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
            let outcome = loop {
                tokio::select! {
                    r = &mut attempt => break r,
                    _ = progress.tick() => in_progress(held).await,
                }
            };
            let error = match outcome {
                Ok(Ok(n)) => {
                    self.rows.inc_by(n as u64);
                    for m in held.drain(..) {
                        let _ = m.ack().await;
                    }
                    decoded.clear();
                    tracing::debug!(sink = self.name, rows = n, "batch stored");
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("ClickHouse did not confirm the insert within {} ms", timeout.as_millis()),
            };
            self.failures.inc();
            tracing::warn!(
                sink = self.name,
                error,
                messages = held.len(),
                retry_in_ms = backoff.peek().as_millis() as u64,
                "insert failed, batch kept for retry"
            );
            in_progress(held).await;
            if !backoff.wait(shutdown).await {
                // Unacked messages are redelivered to the next recorder.
                held.clear();
                decoded.clear();
                return;
            }
        }
    }
}

/// Marks every held message in progress (resets its ack wait).
async fn in_progress(held: &[jetstream::Message]) {
    for m in held {
        let _ = m.ack_with(AckKind::Progress).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_equals_the_flag_defaults() {
        hwsched_config::check_flag_defaults(&RecorderConfig::default()).expect("one set of defaults");
    }
}
