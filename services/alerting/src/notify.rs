//! Delivery of alert transitions to webhooks: a generic JSON webhook (the
//! shape of Alertmanager's own webhook receiver payload) and the Alertmanager
//! API v2 (`POST <url>/api/v2/alerts`), so hwsched plugs into an existing
//! Alertmanager. Each delivery is retried with exponential backoff in the
//! background; the evaluation loop never waits on a receiver. Every transition
//! is also stored in JetStream (`hws.alerts.<severity>`), so a receiver down
//! longer than the retries can still be fed from the stream.

use std::time::Duration;

use hwsched_proto::v1::{Alert, AlertState};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Attempts per delivery (the first and its retries).
pub const ATTEMPTS: u32 = 6;
/// The first retry waits this long; each next one twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A receiver must answer within this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications waiting for delivery, beyond which new ones are dropped (logged).
const QUEUE: usize = 10_000;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq)]
pub enum Receiver {
    /// POST the webhook payload to this URL.
    Webhook(String),
    /// POST to `<url>/api/v2/alerts` (Alertmanager API v2).
    Alertmanager(String),
}

impl Receiver {
    fn url(&self) -> String {
        match self {
            Receiver::Webhook(u) => u.clone(),
            Receiver::Alertmanager(u) => format!("{}/api/v2/alerts", u.trim_end_matches('/')),
        }
    }

    fn body(&self, alert: &Alert) -> Value {
        match self {
            Receiver::Webhook(_) => webhook_payload(alert),
            Receiver::Alertmanager(_) => Value::Array(vec![alertmanager_alert(alert)]),
        }
    }
}

/// The labels identifying an alert: `alertname`, `severity`, `worker_id`,
/// `device`, `metric` and the rule's own labels.
fn labels(a: &Alert) -> serde_json::Map<String, Value> {
    let mut l = serde_json::Map::new();
    for (k, v) in &a.labels {
        l.insert(k.clone(), Value::String(v.clone()));
    }
    for (k, v) in [
        ("alertname", &a.rule),
        ("severity", &a.severity),
        ("worker_id", &a.worker_id),
        ("device", &a.device),
        ("metric", &a.metric),
    ] {
        l.insert(k.into(), Value::String(v.clone()));
    }
    l
}

/// One alert as Alertmanager API v2 takes it (`postableAlert`). A resolved
/// alert carries its end time, which tells Alertmanager it is over.
pub fn alertmanager_alert(a: &Alert) -> Value {
    let mut v = json!({
        "labels": labels(a),
        "annotations": {
            "summary": a.summary,
            "value": format!("{}", a.value),
            "threshold": format!("{}", a.threshold),
        },
        "startsAt": rfc3339(a.starts_at_ms),
    });
    if a.state() == AlertState::Resolved {
        v["endsAt"] = Value::String(rfc3339(a.ends_at_ms));
    }
    v
}

/// The generic webhook payload: the shape of Alertmanager's webhook receiver
/// (version 4), one alert per notification.
pub fn webhook_payload(a: &Alert) -> Value {
    let status = if a.state() == AlertState::Resolved { "resolved" } else { "firing" };
    let mut alert = alertmanager_alert(a);
    alert["status"] = Value::String(status.into());
    alert["fingerprint"] = Value::String(a.fingerprint.clone());
    if a.state() != AlertState::Resolved {
        alert["endsAt"] = Value::String("0001-01-01T00:00:00Z".into());
    }
    json!({
        "version": "4",
        "receiver": "hwsched",
        "status": status,
        "groupKey": a.fingerprint,
        "groupLabels": {"alertname": a.rule},
        "commonLabels": labels(a),
        "commonAnnotations": {"summary": a.summary},
        "alerts": [alert],
    })
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-25T18:30:00.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Sends notifications to the receivers in the background.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Alert>>,
}

impl Notifier {
    /// Starts delivery to `receivers` (none: notifications go nowhere but the stream).
    pub fn start(receivers: Vec<Receiver>) -> Self {
        if receivers.is_empty() {
            return Self { tx: None };
        }
        hwsched_telemetry::install_crypto_provider();
        let (tx, mut rx) = mpsc::channel::<Alert>(QUEUE);
        tokio::spawn(async move {
            let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "webhook client not created: no notification will be delivered");
                    return;
                }
            };
            while let Some(alert) = rx.recv().await {
                for r in &receivers {
                    tokio::spawn(deliver(client.clone(), r.clone(), alert.clone()));
                }
            }
        });
        Self { tx: Some(tx) }
    }

    /// Queues one transition for every receiver.
    pub fn send(&self, alert: &Alert) {
        if let Some(tx) = &self.tx {
            if tx.try_send(alert.clone()).is_err() {
                tracing::warn!(fingerprint = alert.fingerprint, "notification queue full: not sent to webhooks");
            }
        }
    }
}

/// POSTs one notification, retrying on errors and 5xx/429 answers.
async fn deliver(client: reqwest::Client, receiver: Receiver, alert: Alert) {
    let (url, body) = (receiver.url(), receiver.body(&alert).to_string());
    let mut wait = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let sent = client.post(&url).header("Content-Type", "application/json").body(body.clone()).send().await;
        let why = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(url, fingerprint = alert.fingerprint, attempt, "notification delivered");
                return;
            }
            // the receiver refused the payload: retrying will not help
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::error!(
                    url,
                    status = r.status().as_u16(),
                    fingerprint = alert.fingerprint,
                    "notification refused"
                );
                return;
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::error!(url, fingerprint = alert.fingerprint, error = why, "notification not delivered, giving up");
            return;
        }
        tracing::warn!(url, attempt, error = why, retry_in_ms = wait.as_millis() as u64, "notification not delivered");
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(state: AlertState) -> Alert {
        Alert {
            fingerprint: "HotGpu:w1:gpu0".into(),
            rule: "HotGpu".into(),
            severity: "warning".into(),
            state: state as i32,
            worker_id: "w1".into(),
            device: "gpu0".into(),
            metric: "gpu.temp_c".into(),
            value: 91.0,
            threshold: 85.0,
            starts_at_ms: 1_795_631_400_123,
            ends_at_ms: if state == AlertState::Resolved { 1_795_631_460_000 } else { 0 },
            summary: "w1/gpu0 at 91 °C".into(),
            labels: [("team".to_string(), "ml".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_631_400_123), "2026-11-25T18:30:00.123Z");
    }

    #[test]
    fn alertmanager_payload_has_labels_and_an_end_only_when_resolved() {
        let firing = alertmanager_alert(&alert(AlertState::Firing));
        assert_eq!(firing["labels"]["alertname"], "HotGpu");
        assert_eq!(firing["labels"]["worker_id"], "w1");
        assert_eq!(firing["labels"]["team"], "ml");
        assert_eq!(firing["annotations"]["summary"], "w1/gpu0 at 91 °C");
        assert_eq!(firing["startsAt"], "2026-11-25T18:30:00.123Z");
        assert!(firing.get("endsAt").is_none());
        let resolved = alertmanager_alert(&alert(AlertState::Resolved));
        assert_eq!(resolved["endsAt"], "2026-11-25T18:31:00.000Z");
        assert_eq!(Receiver::Alertmanager("http://am:9093/".into()).url(), "http://am:9093/api/v2/alerts");
    }

    #[test]
    fn webhook_payload_says_firing_or_resolved() {
        let p = webhook_payload(&alert(AlertState::Firing));
        assert_eq!((p["status"].as_str(), p["alerts"][0]["status"].as_str()), (Some("firing"), Some("firing")));
        assert_eq!(p["alerts"][0]["fingerprint"], "HotGpu:w1:gpu0");
        let p = webhook_payload(&alert(AlertState::Resolved));
        assert_eq!(p["status"], "resolved");
        assert_eq!(p["alerts"][0]["endsAt"], "2026-11-25T18:31:00.000Z");
    }
}
