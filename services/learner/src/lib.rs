//! The hwsched learner: learns runtime and success per (workload, hardware)
//! from execution results and publishes its model snapshot in the JetStream
//! KV bucket `hws_model` (key `snapshot`) for the scheduler.
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
use hwsched_proto::{
    v1::{ExecutionResult, ModelSnapshot},
    Message,
};
use hwsched_telemetry::{prometheus_client::metrics::counter::Counter, Telemetry};
use tokio_util::sync::CancellationToken;

pub use hwsched_model::Model;

pub use hwsched_model::SNAPSHOT_KEY;

/// Learner settings.
#[derive(Debug, Clone, Args)]
pub struct LearnerConfig {
    /// How often a changed model is published (ms).
    #[arg(long = "publish-interval-ms", env = "HWSCHED_LEARNER_PUBLISH_MS", default_value_t = 2000)]
    pub publish_interval_ms: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self { publish_interval_ms: 2000 }
    }
}

/// Runs the learner until `shutdown` is cancelled.
pub async fn run(
    cfg: LearnerConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    streams::provision(&bus).await?;
    let bucket = streams::bucket(&bus, &bus.subjects().model_bucket()).await?;
    let mut model = match bucket.get(SNAPSHOT_KEY).await.context("read model snapshot")? {
        Some(b) => Model::from_snapshot(ModelSnapshot::decode(b.as_ref()).unwrap_or_default()),
        None => Model::default(),
    };
    let observed = Counter::<u64>::default();
    telemetry.register(|r| r.register("hwsched_learner_results", "Results learned from", observed.clone()));
    let mut results = streams::durable(&bus, &Durable::new(Stream::Results, "learner")).await?.messages().await?;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.publish_interval_ms.max(100)));
    let mut published = model.version();
    telemetry.set_ready(true);
    tracing::info!(pairs = model.len(), "learner ready");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            m = results.next() => match m {
                Some(Ok(msg)) => {
                    match hwsched_bus::decode::<ExecutionResult>(msg.headers.as_ref(), &msg.payload) {
                        Ok(r) => { if model.observe(&r) { observed.inc(); } }
                        Err(e) => tracing::warn!(error = %e, "undecodable result skipped"),
                    }
                    let _ = msg.ack_with(AckKind::Ack).await;
                }
                Some(Err(e)) => tracing::warn!(error = %e, "result stream error"),
                None => anyhow::bail!("result consumer closed"),
            },
            _ = tick.tick() => {
                if model.version() != published {
                    let snap = model.snapshot(now_ms());
                    match bucket.put(SNAPSHOT_KEY, snap.encode_to_vec().into()).await {
                        Ok(_) => { published = snap.version; tracing::debug!(version = snap.version, pairs = snap.entries.len(), "model published"); }
                        Err(e) => tracing::warn!(error = %e, "model not published"),
                    }
                }
            }
        }
    }
    // Publish what was learned since the last tick before stopping.
    if model.version() != published {
        let _ = bucket.put(SNAPSHOT_KEY, model.snapshot(now_ms()).encode_to_vec().into()).await;
    }
    tracing::info!("learner stopped");
    Ok(())
}
