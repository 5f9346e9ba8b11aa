//! The hwsched alerting service: evaluates threshold rules over live telemetry
//! and publishes firing/resolved alerts on `hws.alerts.<severity>` (JetStream).
#![forbid(unsafe_code)]

pub mod rule;

use clap::Args;
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_proto::{
    v1::{Alert, AlertState, MetricsBatch},
    Message, SCHEMA_VERSION,
};
use hwsched_telemetry::{prometheus_client::metrics::counter::Counter, Telemetry};
use tokio_util::sync::CancellationToken;

pub use rule::{Evaluator, Rule, Transition};

/// Alerting settings (the built-in CPU rule).
#[derive(Debug, Clone, Args)]
pub struct AlertingConfig {
    /// CPU utilisation (percent) above which a worker alerts.
    #[arg(long = "alert-cpu-pct", env = "HWSCHED_ALERT_CPU_PCT", default_value_t = 90.0)]
    pub cpu_pct: f64,
    /// How long CPU must stay above the threshold before the alert fires (s).
    #[arg(long = "alert-for-s", env = "HWSCHED_ALERT_FOR_S", default_value_t = 30)]
    pub for_s: u64,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self { cpu_pct: 90.0, for_s: 30 }
    }
}

/// Runs alerting until `shutdown` is cancelled.
pub async fn run(
    cfg: AlertingConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    streams::provision(&bus).await?;
    let mut rules = [Evaluator::new(Rule {
        name: "HighCpuUtilization".into(),
        metric: "cpu.util_pct".into(),
        threshold: cfg.cpu_pct,
        for_ms: (cfg.for_s * 1000) as i64,
        severity: "warning".into(),
    })];
    let sent = Counter::<u64>::default();
    telemetry.register(|r| r.register("hwsched_alerting_notifications", "Alert transitions published", sent.clone()));
    let mut metrics = bus.client().subscribe(bus.subjects().metrics_all()).await?;
    telemetry.set_ready(true);
    tracing::info!(rules = rules.len(), "alerting ready");
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = metrics.next() => match m { Some(m) => m, None => anyhow::bail!("metrics subscription closed") },
        };
        let Ok(batch) = MetricsBatch::decode(msg.payload.as_ref()) else {
            tracing::debug!(subject = %msg.subject, "undecodable metrics batch ignored");
            continue;
        };
        let now = now_ms();
        for s in &batch.samples {
            for ev in rules.iter_mut() {
                if let Some(t) = ev.observe(&batch.worker_id, &s.device, &s.metric, s.value, now) {
                    let alert = to_alert(&ev.rule, &t, s.metric.clone(), now);
                    tracing::info!(rule = %alert.rule, worker_id = %alert.worker_id, state = alert.state().as_str_name(), value = alert.value, "alert");
                    let subject = bus.subjects().alerts(&alert.severity);
                    match bus.publish_durable(subject, &alert, None, None).await {
                        Ok(()) => {
                            sent.inc();
                        }
                        Err(e) => tracing::warn!(error = %e, "alert not stored"),
                    };
                }
            }
        }
    }
    tracing::info!("alerting stopped");
    Ok(())
}

fn to_alert(rule: &Rule, t: &Transition, metric: String, now: i64) -> Alert {
    let (state, worker_id, device, value, since, ends) = match t {
        Transition::Firing { worker_id, device, value, since_ms } => {
            (AlertState::Firing, worker_id, device, *value, *since_ms, 0)
        }
        Transition::Resolved { worker_id, device, value, since_ms } => {
            (AlertState::Resolved, worker_id, device, *value, *since_ms, now)
        }
    };
    Alert {
        schema_version: SCHEMA_VERSION,
        fingerprint: format!("{}:{worker_id}:{device}", rule.name),
        rule: rule.name.clone(),
        severity: rule.severity.clone(),
        state: state as i32,
        worker_id: worker_id.clone(),
        device: device.clone(),
        metric,
        value,
        threshold: rule.threshold,
        starts_at_ms: since,
        ends_at_ms: ends,
        summary: format!("{} on {worker_id}/{device}: {value:.1} > {}", rule.name, rule.threshold),
        labels: Default::default(),
    }
}
