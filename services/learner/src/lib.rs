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
    /// How often a changed model is published (ms); results are acknowledged when it is (so at most 10 s).
    #[arg(long = "publish-interval-ms", env = "HWSCHED_LEARNER_PUBLISH_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=10_000))]
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
    let mut results = streams::durable(&bus, &Durable::new(Stream::Results, "learner").max_ack_pending(50_000))
        .await?
        .messages()
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.publish_interval_ms.max(100)));
    let mut published = model.version();
    let mut unacked: Vec<async_nats::jetstream::Message> = Vec::new();
    telemetry.set_ready(true);
    tracing::info!(pairs = model.len(), "learner ready");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            m = results.next() => match m {
                Some(Ok(msg)) => {
                    match hwsched_bus::decode::<ExecutionResult>(msg.headers.as_ref(), &msg.payload) {
                        // acknowledged once a snapshot that includes it is stored
                        Ok(r) if model.observe(&r) => { observed.inc(); unacked.push(msg); }
                        Ok(_) => { let _ = msg.ack_with(AckKind::Ack).await; }
                        Err(e) => {
                            tracing::warn!(error = %e, "undecodable result skipped");
                            let _ = msg.ack_with(AckKind::Term).await;
                        }
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e, "result stream error"),
                None => anyhow::bail!("result consumer closed"),
            },
            _ = tick.tick() => {
                if model.version() != published && publish(&bucket, &model, &mut unacked).await {
                    published = model.version();
                }
            }
        }
    }
    // Publish what was learned since the last tick before stopping; what is not stored is redelivered.
    if model.version() != published {
        publish(&bucket, &model, &mut unacked).await;
    }
    tracing::info!("learner stopped");
    Ok(())
}

/// Stores the snapshot, then acknowledges the results it includes. False when it was not stored.
async fn publish(
    bucket: &async_nats::jetstream::kv::Store,
    model: &Model,
    unacked: &mut Vec<async_nats::jetstream::Message>,
) -> bool {
    let snap = model.snapshot(now_ms());
    match bucket.put(SNAPSHOT_KEY, snap.encode_to_vec().into()).await {
        Ok(_) => {
            tracing::debug!(version = snap.version, pairs = snap.entries.len(), "model published");
            for m in unacked.drain(..) {
                let _ = m.ack().await;
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "model not published; its results stay unacknowledged");
            false
        }
    }
}
