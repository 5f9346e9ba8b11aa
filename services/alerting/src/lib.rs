//! The hwsched alerting service: evaluates threshold rules over live telemetry
//! and publishes firing/resolved alerts on `hws.alerts.<severity>` (JetStream).
#![forbid(unsafe_code)]

pub mod notify;
pub mod rule;
pub mod rules;

use std::time::Duration;

use anyhow::Context as _;

use clap::Args;
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_proto::{
    v1::{Alert, AlertState, MetricsBatch},
    Message, SCHEMA_VERSION,
};
use hwsched_telemetry::{prometheus_client::metrics::counter::Counter, Telemetry};
use tokio_util::sync::CancellationToken;

pub use rule::{Evaluator, Op, Rule, Transition};

/// Alerting settings.
#[derive(Debug, Clone, Default, Args)]
pub struct AlertingConfig {
    /// Rules file (YAML, see `services/alerting/src/rules.rs`); without it the built-in
    /// rules. Reloaded on SIGHUP and when the file changes; a file with errors is
    /// refused and the rules in force are kept.
    #[arg(long = "rules", env = "HWSCHED_ALERT_RULES", value_name = "FILE")]
    pub rules: Option<std::path::PathBuf>,
    /// Webhooks notified of each transition (JSON in the shape of Alertmanager's webhook
    /// payload), retried with backoff; comma-separated in the environment.
    #[arg(long = "webhook", env = "HWSCHED_ALERT_WEBHOOKS", value_delimiter = ',', value_name = "URL",
          value_parser = parse_url)]
    pub webhooks: Vec<String>,
    /// An Alertmanager to post alerts to (its API v2, `<URL>/api/v2/alerts`).
    #[arg(long = "alertmanager", env = "HWSCHED_ALERTMANAGER_URL", value_name = "URL", value_parser = parse_url)]
    pub alertmanager: Option<String>,
}

fn parse_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    match reqwest::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not an http(s) URL")),
    }
}

/// How often the rules file is checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The rules in force and where they come from.
struct Rules {
    path: Option<std::path::PathBuf>,
    modified: Option<std::time::SystemTime>,
    evaluators: Vec<Evaluator>,
}

impl Rules {
    /// Loads the file (or the built-in rules). An error names every problem.
    fn load(path: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let mut r = Rules { path, modified: None, evaluators: Vec::new() };
        r.reload()?;
        Ok(r)
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.path.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }

    /// Reads the rules again. Rules that did not change keep their state
    /// (pending and firing series); on any error nothing changes.
    fn reload(&mut self) -> anyhow::Result<()> {
        let modified = self.modified();
        let parsed = match &self.path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("read rules file {}", p.display()))?;
                rules::parse(&text).map_err(|e| anyhow::anyhow!("rules file {}:\n{e}", p.display()))?
            }
            None => rules::parse(rules::DEFAULTS).map_err(|e| anyhow::anyhow!("built-in rules: {e}"))?,
        };
        let mut old = std::mem::take(&mut self.evaluators);
        self.evaluators = parsed
            .into_iter()
            .map(|rule| match old.iter().position(|e| e.rule == rule) {
                Some(i) => old.swap_remove(i),
                None => Evaluator::new(rule),
            })
            .collect();
        self.modified = modified;
        Ok(())
    }

    /// Reloads when the file changed since the last load; errors are logged and the rules kept.
    fn reload_if_changed(&mut self) {
        if self.path.is_some() && self.modified() != self.modified {
            self.reload_logged();
        }
    }

    fn reload_logged(&mut self) {
        match self.reload() {
            Ok(()) => tracing::info!(rules = self.evaluators.len(), "alert rules reloaded"),
            Err(e) => {
                // do not retry the same broken file on every check
                self.modified = self.modified();
                tracing::error!(error = %format!("{e:#}"), "alert rules not reloaded: the previous rules stay in force");
            }
        }
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
    let mut rules = Rules::load(cfg.rules.clone())?;
    let firing = streams::bucket(&bus, &bus.subjects().alerts_bucket()).await?;
    let restored = restore(&firing, &mut rules.evaluators).await?;
    let receivers: Vec<notify::Receiver> = cfg
        .webhooks
        .iter()
        .cloned()
        .map(notify::Receiver::Webhook)
        .chain(cfg.alertmanager.iter().cloned().map(notify::Receiver::Alertmanager))
        .collect();
    let notifier = notify::Notifier::start(receivers.clone());
    let sent = Counter::<u64>::default();
    telemetry.register(|r| r.register("hwsched_alerting_notifications", "Alert transitions published", sent.clone()));
    let mut metrics = bus.client().subscribe(bus.subjects().metrics_all()).await?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut check = tokio::time::interval(RELOAD_CHECK);
    telemetry.set_ready(true);
    tracing::info!(
        rules = rules.evaluators.len(),
        file = %cfg.rules.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
        receivers = receivers.len(),
        firing = restored,
        "alerting ready"
    );
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hangup.recv() => { rules.reload_logged(); continue; }
            _ = check.tick() => { rules.reload_if_changed(); continue; }
            m = metrics.next() => match m { Some(m) => m, None => anyhow::bail!("metrics subscription closed") },
        };
        let Ok(batch) = MetricsBatch::decode(msg.payload.as_ref()) else {
            tracing::debug!(subject = %msg.subject, "undecodable metrics batch ignored");
            continue;
        };
        let now = now_ms();
        for s in &batch.samples {
            for ev in rules.evaluators.iter_mut() {
                if let Some(t) = ev.observe(&batch.worker_id, &s.device, &s.metric, s.value, now) {
                    let alert = to_alert(&ev.rule, &t, now);
                    tracing::info!(rule = %alert.rule, worker_id = %alert.worker_id, state = alert.state().as_str_name(), value = alert.value, "alert");
                    let subject = bus.subjects().alerts(&alert.severity);
                    match bus.publish_durable(subject, &alert, None, None).await {
                        Ok(()) => {
                            sent.inc();
                        }
                        Err(e) => tracing::warn!(error = %e, "alert not stored"),
                    };
                    remember(&firing, &alert).await;
                    notifier.send(&alert);
                }
            }
        }
    }
    tracing::info!("alerting stopped");
    Ok(())
}

/// The KV key of an alert (fingerprints hold characters keys may not).
fn key(fingerprint: &str) -> String {
    fingerprint.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Keeps the firing alerts in KV (a resolved one is removed), so that a
/// restarted service knows what it already notified.
async fn remember(firing: &async_nats::jetstream::kv::Store, alert: &Alert) {
    let k = key(&alert.fingerprint);
    let stored = if alert.state() == AlertState::Firing {
        firing.put(&k, alert.encode_to_vec().into()).await.map(|_| ()).map_err(|e| e.to_string())
    } else {
        firing.delete(&k).await.map_err(|e| e.to_string())
    };
    if let Err(e) = stored {
        tracing::warn!(
            error = e,
            fingerprint = alert.fingerprint,
            "firing state not stored: a restart may notify it again"
        );
    }
}

/// Marks the alerts that were firing when the service last stopped as firing
/// again, without notifying them: the next samples keep them firing silently
/// or resolve them. Returns how many were restored.
async fn restore(firing: &async_nats::jetstream::kv::Store, evaluators: &mut [Evaluator]) -> anyhow::Result<usize> {
    let mut keys = firing.keys().await.context("list firing alerts")?;
    let mut n = 0;
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(Some(bytes)) = firing.get(&k).await else { continue };
        let Ok(alert) = Alert::decode(bytes.as_ref()) else { continue };
        if let Some(ev) = evaluators.iter_mut().find(|e| e.rule.name == alert.rule) {
            ev.restore(&alert.worker_id, &alert.device, alert.starts_at_ms);
            n += 1;
        }
    }
    Ok(n)
}

fn to_alert(rule: &Rule, t: &Transition, now: i64) -> Alert {
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
        metric: rule.metric.clone(),
        value,
        threshold: rule.threshold,
        starts_at_ms: since,
        ends_at_ms: ends,
        summary: rule.render(worker_id, device, value),
        labels: rule.labels.clone().into_iter().collect(),
        muted_by: String::new(),
        at_ms: now,
    }
}
