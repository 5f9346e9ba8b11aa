//! Running services: one shutdown path (signals -> token), the metrics
//! endpoint, and the rule that when one component dies the process stops
//! cleanly and says why.

use std::{future::Future, time::Duration};

use anyhow::Context;
use clap::Args;
use hwsched_bus::{Bus, CONNECT_DEADLINE};
use hwsched_config::{ClickHouseConfig, NatsConfig, TelemetryConfig};
use hwsched_shutdown::{install_signal_handlers, CancellationToken, Components, DEFAULT_GRACE};
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

impl AllConfig {
    /// Checks the file-based configuration (alert rules) before connecting.
    pub fn validate(&self) -> Result<(), String> {
        self.alerting.validate()
    }
}

/// How long a service may take to stop once shutdown is requested (its own
/// components have shorter graces: the monitor's task drain is the longest).
const SERVICE_GRACE: Duration = Duration::from_secs(60);

/// Connects, serves telemetry and runs one service until a signal arrives or
/// it fails, or its metrics endpoint does.
pub async fn serve<F, Fut>(
    nats: &NatsConfig,
    telemetry: &TelemetryConfig,
    name: &'static str,
    run: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Bus, Telemetry, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let shutdown = install_signal_handlers();
    let bus = Bus::connect(nats, &format!("hwsched-{name}"), CONNECT_DEADLINE).await?;
    let t = Telemetry::new();
    let mut components = Components::<anyhow::Error>::new(shutdown.clone()).grace(SERVICE_GRACE);
    add_endpoint(&mut components, telemetry, &t, &shutdown);
    components.add(name, supervised(tokio::spawn(run(bus.clone(), t, shutdown.clone()))));
    let result = components.run().await;
    shutdown.cancel();
    bus.drain().await;
    Ok(result?)
}

/// A spawned component's end: its own result, or that it panicked.
async fn supervised(handle: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    handle.await.context("panicked")?
}

/// Serves `/metrics`, `/healthz` and `/readyz` when an address is configured.
fn add_endpoint(
    components: &mut Components<'_, anyhow::Error>,
    cfg: &TelemetryConfig,
    t: &Telemetry,
    shutdown: &CancellationToken,
) {
    let Some(addr) = cfg.metrics_listen else { return };
    let (t, s) = (t.clone(), shutdown.clone());
    let endpoint = tokio::spawn(async move { t.serve(addr, s).await.with_context(|| format!("serve {addr}")) });
    components.add("metrics endpoint", supervised(endpoint));
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
    let mut components = Components::<anyhow::Error>::new(shutdown.clone()).grace(DEFAULT_GRACE);
    add_endpoint(&mut components, telemetry, &t, &shutdown);
    let AllConfig { scheduler, learner, alerting, recorder } = cfg;
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    components.add("scheduler", supervised(tokio::spawn(hwsched_scheduler::run(scheduler, b, tt, s))));
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    let history = clickhouse.clone();
    components.add("learner", supervised(tokio::spawn(hwsched_learner::run(learner, history, b, tt, s))));
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    components.add("alerting", supervised(tokio::spawn(hwsched_alerting::run(alerting, b, tt, s))));
    let (b, tt, s) = (bus.clone(), t.clone(), shutdown.clone());
    components.add("recorder", supervised(tokio::spawn(hwsched_recorder::run(recorder, clickhouse, b, tt, s))));
    // The first service to end stops the others; they get the grace period to drain.
    let result = components.run().await;
    shutdown.cancel();
    bus.drain().await;
    Ok(result?)
}
