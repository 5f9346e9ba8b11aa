//! The hwsched alerting service: evaluates threshold rules over live telemetry
//! and publishes firing/resolved alerts on `hws.alerts.<severity>` (JetStream).
#![forbid(unsafe_code)]

pub mod derived;
pub mod dispatch;
pub mod notify;
pub mod rule;
pub mod rules;

use std::time::Duration;

use anyhow::Context as _;

use clap::Args;
use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus, Stream};
use hwsched_proto::{
    v1::{Alert, AlertState, ExecutionResult, MetricsBatch, Silence, WorkerHeartbeat},
    Message, SCHEMA_VERSION,
};
use hwsched_telemetry::{prometheus_client::metrics::counter::Counter, Telemetry};
use tokio_util::sync::CancellationToken;

pub use rule::{Evaluator, Op, Rule, RuleSet, Transition};

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

impl AlertingConfig {
    /// Reads and checks the rules file, before connecting: an error names the
    /// file and every problem in it.
    pub fn validate(&self) -> Result<(), String> {
        Rules::load(self.rules.clone()).map(|_| ()).map_err(|e| format!("{e:#}"))
    }
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

/// Silences that ended this long ago are deleted from the bucket.
const SILENCE_KEEP_MS: i64 = 24 * 3_600_000;

/// The rules in force and where they come from.
struct Rules {
    path: Option<std::path::PathBuf>,
    modified: Option<std::time::SystemTime>,
    set: rule::RuleSet,
    route: dispatch::Route,
    inhibits: Vec<dispatch::Inhibit>,
}

impl Rules {
    /// Loads the file (or the built-in rules). An error names every problem.
    fn load(path: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let mut r = Rules {
            path,
            modified: None,
            set: rule::RuleSet::default(),
            route: dispatch::Route::default(),
            inhibits: Vec::new(),
        };
        r.reload()?;
        Ok(r)
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.path.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }

    /// Reads the rules again. Rules that did not change keep their state
    /// (pending and firing series); on any error nothing changes. Returns the
    /// evaluators of rules that are gone (their firing alerts must resolve).
    fn reload(&mut self) -> anyhow::Result<Vec<Evaluator>> {
        let modified = self.modified();
        let parsed = match &self.path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("read rules file {}", p.display()))?;
                rules::parse(&text).map_err(|e| anyhow::anyhow!("rules file {}:\n{e}", p.display()))?
            }
            None => rules::parse(rules::DEFAULTS).map_err(|e| anyhow::anyhow!("built-in rules: {e}"))?,
        };
        let mut old = std::mem::take(&mut self.set).into_evaluators();
        self.set = rule::RuleSet::new(
            parsed
                .rules
                .into_iter()
                .map(|rule| match old.iter().position(|e| e.rule == rule) {
                    Some(i) => old.swap_remove(i),
                    None => Evaluator::new(rule),
                })
                .collect(),
        );
        self.route = parsed.route;
        self.inhibits = parsed.inhibits;
        self.modified = modified;
        Ok(old)
    }

    /// Reloads when the file changed since the last load; errors are logged and the rules kept.
    fn reload_if_changed(&mut self) -> Vec<Evaluator> {
        if self.path.is_some() && self.modified() != self.modified {
            return self.reload_logged();
        }
        Vec::new()
    }

    fn reload_logged(&mut self) -> Vec<Evaluator> {
        match self.reload() {
            Ok(gone) => {
                tracing::info!(rules = self.set.len(), removed = gone.len(), "alert rules reloaded");
                gone
            }
            Err(e) => {
                // do not retry the same broken file on every check
                self.modified = self.modified();
                tracing::error!(error = %format!("{e:#}"), "alert rules not reloaded: the previous rules stay in force");
                Vec::new()
            }
        }
    }
}

/// What the service holds between events.
struct Service {
    bus: Bus,
    rules: Rules,
    dispatcher: dispatch::Dispatcher,
    notifier: notify::Notifier,
    firing: async_nats::jetstream::kv::Store,
    sent: Counter<u64>,
    muted: Counter<u64>,
}

impl Service {
    /// Publishes one transition, stores the firing state and hands it to the
    /// dispatcher (webhooks) and to Alertmanager unless it is muted.
    async fn transition(&mut self, mut alert: Alert, now: i64) {
        alert.muted_by = self.dispatcher.ingest(alert.clone(), now).unwrap_or_default();
        tracing::info!(
            rule = %alert.rule,
            worker_id = %alert.worker_id,
            device = %alert.device,
            state = alert.state().as_str_name(),
            value = alert.value,
            muted_by = %alert.muted_by,
            "alert"
        );
        let subject = self.bus.subjects().alerts(&alert.severity);
        match self.bus.publish_durable(subject, &alert, None, None).await {
            Ok(()) => {
                self.sent.inc();
            }
            Err(e) => tracing::warn!(error = %e, "alert not stored"),
        }
        remember(&self.firing, &alert).await;
        if alert.muted_by.is_empty() {
            self.notifier.alertmanager(vec![alert], now);
        } else {
            self.muted.inc();
        }
    }

    /// Resolves the alerts of rules that were removed, and regroups.
    async fn reloaded(&mut self, gone: Vec<Evaluator>) {
        let now = now_ms();
        self.dispatcher.configure(self.rules.route.clone(), self.rules.inhibits.clone(), now);
        for mut ev in gone {
            for t in ev.resolve_all() {
                let mut alert = to_alert(&ev.rule, &t, now);
                alert.summary = format!("{}: the rule was removed", alert.summary);
                self.transition(alert, now).await;
            }
        }
    }

    /// Feeds one metrics batch to every rule.
    async fn observe(&mut self, batch: &MetricsBatch) {
        let samples =
            batch.samples.iter().map(|s| (batch.worker_id.as_str(), s.device.as_str(), s.metric.as_str(), s.value));
        self.observe_all(samples).await;
    }

    /// Feeds derived samples to every rule.
    async fn observe_derived(&mut self, samples: &[derived::Sample]) {
        self.observe_all(samples.iter().map(|(w, d, m, v)| (w.as_str(), d.as_str(), *m, *v))).await;
    }

    async fn observe_all<'a>(&mut self, samples: impl Iterator<Item = (&'a str, &'a str, &'a str, f64)>) {
        let now = now_ms();
        let mut out = Vec::new();
        for (worker_id, device, metric, value) in samples {
            for (rule, t) in self.rules.set.observe(worker_id, device, metric, value, now) {
                out.push(to_alert(rule, &t, now));
            }
        }
        for alert in out {
            self.transition(alert, now).await;
        }
    }

    /// Sends the group notifications that are due.
    fn flush(&mut self) {
        for n in self.dispatcher.due(now_ms()) {
            tracing::debug!(group = %n.group_key, alerts = n.alerts.len(), repeat = n.repeat, "notification");
            self.notifier.notify(n);
        }
    }

    /// Applies one change of the silences bucket.
    fn silence_changed(&mut self, entry: async_nats::jetstream::kv::Entry) {
        use async_nats::jetstream::kv::Operation;
        match entry.operation {
            Operation::Put => match Silence::decode(entry.value.as_ref()) {
                Ok(s) => {
                    tracing::info!(id = %s.id, ends_at_ms = s.ends_at_ms, "silence");
                    self.dispatcher.set_silence(s);
                }
                Err(e) => tracing::warn!(key = %entry.key, error = %e, "undecodable silence ignored"),
            },
            Operation::Delete | Operation::Purge => self.dispatcher.remove_silence(&entry.key),
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
    let rules = Rules::load(cfg.rules.clone())?;
    let firing = streams::bucket(&bus, &bus.subjects().alerts_bucket()).await?;
    let silences = streams::bucket(&bus, &bus.subjects().silences_bucket()).await?;
    let silence_updates = silences.watch_with_history(">").await.context("watch silences")?;
    let notifier =
        notify::Notifier::start(cfg.webhooks.clone(), cfg.alertmanager.clone()).context("start notifications")?;
    let sent = Counter::<u64>::default();
    let muted = Counter::<u64>::default();
    telemetry.register(|r| {
        r.register("hwsched_alerting_notifications", "Alert transitions published", sent.clone());
        r.register("hwsched_alerting_muted", "Alert transitions muted by a silence or an inhibit rule", muted.clone());
    });
    let dispatcher = dispatch::Dispatcher::new(rules.route.clone(), rules.inhibits.clone());
    let mut svc = Service { bus: bus.clone(), rules, dispatcher, notifier, firing, sent, muted };
    let restored = restore(&mut svc).await?;
    let inputs = Inputs::open(&bus, silence_updates).await?;
    telemetry.set_ready(true);
    tracing::info!(
        rules = svc.rules.set.len(),
        file = %cfg.rules.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
        webhooks = cfg.webhooks.len(),
        alertmanager = cfg.alertmanager.is_some(),
        firing = restored,
        "alerting ready"
    );
    svc.serve(inputs, &silences, &shutdown).await?;
    tracing::info!("alerting stopped");
    Ok(())
}

/// What the service waits on: the bus subscriptions, the silences watch, SIGHUP and its timers.
struct Inputs {
    silence_updates: async_nats::jetstream::kv::Watch,
    metrics: async_nats::Subscriber,
    heartbeats: async_nats::Subscriber,
    results: async_nats::Subscriber,
    ages: tokio::time::Interval,
    lag: tokio::time::Interval,
    hangup: tokio::signal::unix::Signal,
    check: tokio::time::Interval,
    resend: tokio::time::Interval,
}

impl Inputs {
    /// Subscribes to metrics, heartbeats and results, and starts the timers.
    async fn open(bus: &Bus, silence_updates: async_nats::jetstream::kv::Watch) -> anyhow::Result<Self> {
        Ok(Inputs {
            silence_updates,
            metrics: bus.client().subscribe(bus.subjects().metrics_all()).await?,
            heartbeats: bus.client().subscribe(bus.subjects().workers_heartbeat_all()).await?,
            results: bus.client().subscribe(bus.subjects().results_all()).await?,
            ages: tokio::time::interval(LIVENESS_EVERY),
            lag: tokio::time::interval(RECORDER_LAG_EVERY),
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
            check: tokio::time::interval(RELOAD_CHECK),
            resend: tokio::time::interval(notify::ALERTMANAGER_RESEND),
        })
    }
}

impl Service {
    /// Handles events until `shutdown` is cancelled; an error when an input it cannot do without ends.
    async fn serve(
        &mut self,
        inputs: Inputs,
        silences: &async_nats::jetstream::kv::Store,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let Inputs {
            mut silence_updates,
            mut metrics,
            mut heartbeats,
            mut results,
            mut ages,
            mut lag,
            mut hangup,
            mut check,
            mut resend,
        } = inputs;
        let mut liveness = derived::Liveness::default();
        let mut outcomes = derived::Outcomes::default();
        loop {
            let due = self.dispatcher.next_due_ms().map(|at| {
                tokio::time::Instant::now() + Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0))
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = async { tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)).await }, if due.is_some() => {
                    self.flush();
                }
                _ = hangup.recv() => {
                    let gone = self.rules.reload_logged();
                    self.reloaded(gone).await;
                }
                _ = check.tick() => {
                    let gone = self.rules.reload_if_changed();
                    self.reloaded(gone).await;
                    purge_silences(silences).await;
                }
                _ = resend.tick() => {
                    let now = now_ms();
                    self.notifier.alertmanager(self.dispatcher.unmuted_firing(now), now);
                }
                e = silence_updates.next() => match e {
                    Some(Ok(entry)) => self.silence_changed(entry),
                    Some(Err(e)) => tracing::warn!(error = %e, "silence watch"),
                    None => anyhow::bail!("silence watch closed"),
                },
                Some(m) = heartbeats.next() => {
                    if let Ok(hb) = WorkerHeartbeat::decode(m.payload.as_ref()) {
                        let s = liveness.heartbeat(&hb.worker_id, hb.state(), now_ms());
                        self.observe_derived(&[s]).await;
                    }
                }
                Some(m) = results.next() => {
                    if let Ok(r) = ExecutionResult::decode(m.payload.as_ref()) {
                        let s = outcomes.record(&r);
                        self.observe_derived(&s).await;
                    }
                }
                _ = ages.tick() => {
                    let s = liveness.samples(now_ms());
                    self.observe_derived(&s).await;
                }
                _ = lag.tick() => {
                    let s = recorder_lag(&self.bus).await;
                    self.observe_derived(&s).await;
                }
                m = metrics.next() => {
                    let Some(msg) = m else { anyhow::bail!("metrics subscription closed") };
                    match MetricsBatch::decode(msg.payload.as_ref()) {
                        Ok(batch) => self.observe(&batch).await,
                        Err(_) => tracing::debug!(subject = %msg.subject, "undecodable metrics batch ignored"),
                    }
                }
            }
        }
        Ok(())
    }
}

/// How often worker heartbeat ages are evaluated.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);
/// How often the recorder's consumers are looked at.
const RECORDER_LAG_EVERY: Duration = Duration::from_secs(10);

/// The recorder's lag on each stream it writes (none when it has never run:
/// ClickHouse not configured).
async fn recorder_lag(bus: &Bus) -> Vec<derived::Sample> {
    let mut out = Vec::new();
    for stream in [Stream::Metrics, Stream::Results, Stream::Events, Stream::Alerts] {
        let name = bus.subjects().stream(stream);
        let Some(info) = streams::recorder_consumer(bus, stream).await else { continue };
        let ms = |t: async_nats::datetime::DateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
        let pending = streams::backlog(&info);
        let (created, last_ack) = (ms(info.created), info.ack_floor.last_active.map(ms));
        out.extend(derived::recorder_lag(&name, pending, last_ack, created, now_ms()));
    }
    out
}

/// Deletes silences that ended more than a day ago (expired ones stay a day
/// so that `hwsched silence list --all` shows them).
async fn purge_silences(silences: &async_nats::jetstream::kv::Store) {
    let Ok(mut keys) = silences.keys().await else { return };
    let now = now_ms();
    while let Some(Ok(k)) = keys.next().await {
        let Ok(Some(bytes)) = silences.get(&k).await else { continue };
        if Silence::decode(bytes.as_ref()).is_ok_and(|s| s.ends_at_ms + SILENCE_KEEP_MS < now) {
            if let Err(e) = silences.delete(&k).await {
                tracing::debug!(key = k, error = %e, "old silence not deleted");
            }
        }
    }
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
/// or resolve them. Alerts of rules that no longer exist are resolved now.
/// Returns how many were restored.
async fn restore(svc: &mut Service) -> anyhow::Result<usize> {
    let mut keys = svc.firing.keys().await.context("list firing alerts")?;
    let mut alerts = Vec::new();
    while let Some(k) = keys.next().await {
        let Ok(k) = k else { continue };
        let Ok(Some(bytes)) = svc.firing.get(&k).await else { continue };
        if let Ok(alert) = Alert::decode(bytes.as_ref()) {
            alerts.push(alert);
        }
    }
    let now = now_ms();
    let mut n = 0;
    for alert in alerts {
        svc.dispatcher.restore(alert.clone(), now);
        match svc.rules.set.get_mut(&alert.rule) {
            Some(ev) => {
                ev.restore(&alert.worker_id, &alert.device, alert.starts_at_ms);
                n += 1;
            }
            None => {
                let resolved = Alert {
                    state: AlertState::Resolved as i32,
                    ends_at_ms: now,
                    at_ms: now,
                    value: f64::NAN,
                    summary: format!("{}: the rule was removed", alert.summary),
                    muted_by: String::new(),
                    ..alert
                };
                svc.transition(resolved, now).await;
            }
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
