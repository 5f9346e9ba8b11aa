//! Delivery of alert transitions to webhooks: a generic JSON webhook (the
//! shape of Alertmanager's own webhook receiver payload) and the Alertmanager
//! API v2 (`POST <url>/api/v2/alerts`), so hwsched plugs into an existing
//! Alertmanager. Each delivery is retried with exponential backoff in the
//! background; the evaluation loop never waits on a receiver. Every transition
//! is also stored in JetStream (`hws.alerts.<severity>`), so a receiver down
//! longer than the retries can still be fed from the stream.

use std::time::Duration;

use std::collections::BTreeMap;

use hwsched_proto::v1::{Alert, AlertState};
use hwsched_shutdown::Backoff;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::dispatch::{labels, Notification};

/// Attempts per delivery (the first and its retries).
pub const ATTEMPTS: u32 = 6;
/// The first retry waits this long; each next one twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A receiver must answer within this.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Notifications waiting for delivery, beyond which new ones are dropped (logged).
const QUEUE: usize = 10_000;

/// Alertmanager forgets a firing alert that is not sent again before its
/// `endsAt`: firing alerts are re-sent this often, valid for four times as long
/// (what Prometheus does), so an alerting service that dies leaves no alert
/// firing forever.
pub const ALERTMANAGER_RESEND: Duration = Duration::from_secs(60);

/// Where notifications go.
#[derive(Debug, Clone, PartialEq)]
enum Delivery {
    /// A group notification for every webhook.
    Group(Notification),
    /// Alerts for Alertmanager, which groups, silences and inhibits itself.
    Alertmanager(Vec<Alert>, i64),
}

fn alertmanager_url(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim_end_matches('/'))
}

/// One alert as Alertmanager API v2 takes it (`postableAlert`). A resolved
/// alert carries its end time, which tells Alertmanager it is over; a firing
/// one is valid until `valid_until_ms` unless sent again.
pub fn alertmanager_alert(a: &Alert, valid_until_ms: i64) -> Value {
    let ends = if a.state() == AlertState::Resolved { a.ends_at_ms } else { valid_until_ms };
    json!({
        "labels": labels(a),
        "annotations": annotations(a),
        "startsAt": rfc3339(a.starts_at_ms),
        "endsAt": rfc3339(ends),
    })
}

fn annotations(a: &Alert) -> BTreeMap<String, String> {
    [
        ("summary".to_string(), a.summary.clone()),
        ("value".to_string(), format!("{}", a.value)),
        ("threshold".to_string(), format!("{}", a.threshold)),
    ]
    .into()
}

/// The labels (or annotations) every map shares, with the same values.
fn common(maps: &[BTreeMap<String, String>]) -> BTreeMap<String, String> {
    let Some((first, rest)) = maps.split_first() else { return BTreeMap::new() };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Alertmanager's fingerprint of a label set (Prometheus `LabelSet.Fingerprint`):
/// FNV-1a 64 over the sorted names and values, each followed by a 0xff byte,
/// as 16 hex digits. The same alert has the same fingerprint in our webhook
/// payload and in Alertmanager's.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h = (h ^ u64::from(b)).wrapping_mul(PRIME);
        }
    }
    format!("{h:016x}")
}

/// Alertmanager's group key for a group of its root route:
/// `{}:{alertname="HotGpu", worker_id="w1"}`.
fn group_key(group_labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = group_labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", inner.join(", "))
}

/// The generic webhook payload: the shape of Alertmanager's webhook receiver
/// (version 4), one group per notification. `tests/python/test_alertmanager.py`
/// compares it with a real Alertmanager's.
pub fn webhook_payload(n: &Notification) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            let resolved = a.state() == AlertState::Resolved;
            let labels = labels(a);
            json!({
                "status": if resolved { "resolved" } else { "firing" },
                "fingerprint": fingerprint(&labels),
                "labels": labels,
                "annotations": annotations(a),
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": if resolved { rfc3339(a.ends_at_ms) } else { "0001-01-01T00:00:00Z".into() },
                "generatorURL": "",
            })
        })
        .collect();
    let all_labels: Vec<_> = n.alerts.iter().map(labels).collect();
    let all_annotations: Vec<_> = n.alerts.iter().map(annotations).collect();
    json!({
        "version": "4",
        "receiver": "hwsched",
        "status": n.status(),
        "groupKey": group_key(&n.group_labels),
        "truncatedAlerts": 0,
        "groupLabels": n.group_labels,
        "commonLabels": common(&all_labels),
        "commonAnnotations": common(&all_annotations),
        "externalURL": "",
        "alerts": alerts,
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
    tx: Option<mpsc::Sender<Delivery>>,
    webhooks: bool,
    alertmanager: bool,
}

impl Notifier {
    /// Starts delivery to `webhooks` and to `alertmanager` (none: notifications
    /// go nowhere but the stream). Fails when the HTTP client cannot be built;
    /// once started, delivery runs until the notifier is dropped.
    pub fn start(webhooks: Vec<String>, alertmanager: Option<String>) -> Result<Self, reqwest::Error> {
        let (has_webhooks, has_am) = (!webhooks.is_empty(), alertmanager.is_some());
        if !has_webhooks && !has_am {
            return Ok(Self { tx: None, webhooks: false, alertmanager: false });
        }
        hwsched_telemetry::install_crypto_provider();
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let (tx, mut rx) = mpsc::channel::<Delivery>(QUEUE);
        tokio::spawn(async move {
            while let Some(d) = rx.recv().await {
                match d {
                    Delivery::Group(n) => {
                        let body = webhook_payload(&n).to_string();
                        for url in &webhooks {
                            tokio::spawn(deliver(client.clone(), url.clone(), body.clone(), n.group_key.clone()));
                        }
                    }
                    Delivery::Alertmanager(alerts, valid_until_ms) => {
                        let Some(base) = &alertmanager else { continue };
                        let body: Vec<Value> = alerts.iter().map(|a| alertmanager_alert(a, valid_until_ms)).collect();
                        let what = format!("{} alerts", alerts.len());
                        tokio::spawn(deliver(
                            client.clone(),
                            alertmanager_url(base),
                            Value::Array(body).to_string(),
                            what,
                        ));
                    }
                }
            }
        });
        Ok(Self { tx: Some(tx), webhooks: has_webhooks, alertmanager: has_am })
    }

    fn queue(&self, d: Delivery) {
        if let Some(tx) = &self.tx {
            if tx.try_send(d).is_err() {
                tracing::warn!("notification queue full: a notification was not sent");
            }
        }
    }

    /// Queues a group notification for every webhook.
    pub fn notify(&self, n: Notification) {
        if self.webhooks {
            self.queue(Delivery::Group(n));
        }
    }

    /// Queues alerts for Alertmanager (firing ones valid for four resend periods).
    pub fn alertmanager(&self, alerts: Vec<Alert>, now_ms: i64) {
        if self.alertmanager && !alerts.is_empty() {
            let valid_until = now_ms + 4 * ALERTMANAGER_RESEND.as_millis() as i64;
            self.queue(Delivery::Alertmanager(alerts, valid_until));
        }
    }
}

/// POSTs one notification, retrying on errors and 5xx/429 answers.
async fn deliver(client: reqwest::Client, url: String, body: String, what: String) {
    // No cap: the attempts bound the longest wait.
    let mut backoff = Backoff::doubling(FIRST_BACKOFF, Duration::MAX);
    for attempt in 1..=ATTEMPTS {
        let sent = client.post(&url).header("Content-Type", "application/json").body(body.clone()).send().await;
        let why = match sent {
            Ok(r) if r.status().is_success() => {
                tracing::debug!(url, what, attempt, "notification delivered");
                return;
            }
            // the receiver refused the payload: retrying will not help
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                tracing::error!(url, status = r.status().as_u16(), what, "notification refused");
                return;
            }
            Ok(r) => format!("HTTP {}", r.status().as_u16()),
            Err(e) => e.to_string(),
        };
        if attempt == ATTEMPTS {
            tracing::error!(url, what, error = why, "notification not delivered, giving up");
            return;
        }
        tracing::warn!(
            url,
            attempt,
            error = why,
            retry_in_ms = backoff.peek().as_millis() as u64,
            "notification not delivered"
        );
        tokio::time::sleep(backoff.next()).await;
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
    fn alertmanager_payload_has_labels_and_an_end() {
        let firing = alertmanager_alert(&alert(AlertState::Firing), 1_795_631_700_000);
        assert_eq!(firing["labels"]["alertname"], "HotGpu");
        assert_eq!(firing["labels"]["worker_id"], "w1");
        assert_eq!(firing["labels"]["team"], "ml");
        assert_eq!(firing["annotations"]["summary"], "w1/gpu0 at 91 °C");
        assert_eq!(firing["startsAt"], "2026-11-25T18:30:00.123Z");
        assert_eq!(firing["endsAt"], "2026-11-25T18:35:00.000Z", "valid until re-sent");
        let resolved = alertmanager_alert(&alert(AlertState::Resolved), 1_795_631_700_000);
        assert_eq!(resolved["endsAt"], "2026-11-25T18:31:00.000Z");
        assert_eq!(alertmanager_url("http://am:9093/"), "http://am:9093/api/v2/alerts");
    }

    #[test]
    fn webhook_payload_carries_the_group_and_what_its_alerts_share() {
        let mut other = alert(AlertState::Resolved);
        other.worker_id = "w2".into();
        other.fingerprint = "HotGpu:w2:gpu0".into();
        let n = Notification {
            group_key: "{alertname=\"HotGpu\"}".into(),
            group_labels: [("alertname".to_string(), "HotGpu".to_string())].into(),
            alerts: vec![alert(AlertState::Firing), other],
            repeat: false,
        };
        let p = webhook_payload(&n);
        assert_eq!(p["status"], "firing");
        assert_eq!(p["groupLabels"]["alertname"], "HotGpu");
        assert_eq!(p["commonLabels"]["team"], "ml");
        assert!(p["commonLabels"].get("worker_id").is_none(), "differs between the alerts");
        assert_eq!(
            (p["alerts"][0]["status"].as_str(), p["alerts"][1]["status"].as_str()),
            (Some("firing"), Some("resolved"))
        );
        assert_eq!(p["groupKey"], "{}:{alertname=\"HotGpu\"}");
        // what Alertmanager 0.25 computes for these labels
        assert_eq!(p["alerts"][0]["fingerprint"], "d3b7968e3f8aa7da");
        assert_eq!(p["alerts"][1]["fingerprint"], "d3ad968e3f825355");
        assert_eq!(p["alerts"][0]["generatorURL"], "");
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325", "FNV-1a's offset basis");
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(p["alerts"][1]["endsAt"], "2026-11-25T18:31:00.000Z");
    }
}
