//! Running services: one shutdown path (signals -> token), the metrics
//! endpoint, and the rule that when one component dies the process stops
//! cleanly and says why.

use std::future::Future;

use anyhow::Context;
use clap::Args;
use hwsched_bus::{Bus, CONNECT_DEADLINE};
use hwsched_config::{ClickHouseConfig, NatsConfig, TelemetryConfig};
use hwsched_shutdown::{install_signal_handlers, CancellationToken, DEFAULT_GRACE};
use hwsched_telemetry::Telemetry;

/// Settings of `hwsched all`.
#[derive(Debug, Args)]
pub struct AllConfig {
    #[command(flatten)]
    scheduler: hwsched_scheduler::SchedulerConfig,
    #[command(flatten)]
    learner: hwsched_learner::LearnerConfig,
    #[command(flatten)]
    alerting: hwsched_alerting::AlertingConfig,
    #[command(flatten)]
    recorder: hwsched_recorder::RecorderConfig,
}

/// Connects, serves telemetry and runs one service until a signal arrives or it fails.
pub async fn serve<F, Fut>(nats: &NatsConfig, telemetry: &TelemetryConfig, name: &str, run: F) -> anyhow::Result<()>
where
    F: FnOnce(Bus, Telemetry, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let shutdown = install_signal_handlers();
    let bus = Bus::connect(nats, &format!("hwsched-{name}"), CONNECT_DEADLINE).await?;
    let t = Telemetry::new();
    let endpoint = spawn_endpoint(telemetry, &t, &shutdown);
    let result = tokio::spawn(run(bus.clone(), t, shutdown.clone())).await.context("service task panicked")?;
    if let Err(e) = &result {
        tracing::error!(service = name, error = %format!("{e:#}"), "service failed, stopping");
    }
    shutdown.cancel();
    bus.drain().await;
    if let Some(h) = endpoint {
        let _ = h.await;
    }
    result
}

fn spawn_endpoint(
    cfg: &TelemetryConfig,
    t: &Telemetry,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let addr = cfg.metrics_listen?;
    let (t, s) = (t.clone(), shutdown.clone());
    Some(tokio::spawn(async move {
        if let Err(e) = t.serve(addr, s).await {
            tracing::error!(%addr, error = %e, "metrics endpoint failed");
        }
    }))
}

/// `hwsched all`: scheduler, learner, alerting and recorder on one connection.
pub async fn all(
    cfg: AllConfig,
    nats: &NatsConfig,
    clickhouse: ClickHouseConfig,
    telemetry: &TelemetryConfig,
) -> anyhow::Result<()> {
    let shutdown = install_signal_handlers();
    let bus = Bus::connect(nats, "hwsched-all", CONNECT_DEADLINE).await?;
    let t = Telemetry::new();
    let endpoint = spawn_endpoint(telemetry, &t, &shutdown);
    let mut set = tokio::task::JoinSet::new();
    let AllConfig { scheduler, learner, alerting, recorder } = cfg;
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    set.spawn(async move { ("scheduler", hwsched_scheduler::run(scheduler, b, tt, s).await) });
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    let history = clickhouse.clone();
    set.spawn(async move { ("learner", hwsched_learner::run(learner, history, b, tt, s).await) });
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    set.spawn(async move { ("alerting", hwsched_alerting::run(alerting, b, tt, s).await) });
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    set.spawn(async move { ("recorder", hwsched_recorder::run(recorder, clickhouse, b, tt, s).await) });

    let mut failure = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((name, Err(e))) => {
                tracing::error!(service = name, error = %format!("{e:#}"), "service failed, stopping the others");
                failure.get_or_insert(e.context(format!("{name} failed")));
            }
            Ok((name, Ok(()))) if !shutdown.is_cancelled() => {
                tracing::error!(service = name, "service ended unexpectedly, stopping the others");
                failure.get_or_insert(anyhow::anyhow!("{name} ended unexpectedly"));
            }
            Ok(_) => {}
            Err(e) => {
                failure.get_or_insert(anyhow::anyhow!("a service panicked: {e}"));
            }
        }
        if !shutdown.is_cancelled() {
            shutdown.cancel();
            // The others get the grace period to drain; then we stop waiting.
            let rest = async { while set.join_next().await.is_some() {} };
            if tokio::time::timeout(DEFAULT_GRACE, rest).await.is_err() {
                tracing::warn!("services did not stop within the grace period");
            }
            break;
        }
    }
    bus.drain().await;
    if let Some(h) = endpoint {
        let _ = h.await;
    }
    failure.map_or(Ok(()), Err)
}
