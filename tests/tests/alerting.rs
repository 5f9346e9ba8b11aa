//! Alert rules from a file, live: a real monitor's CPU samples cross a rule
//! with `for: 0s` and the alert is published; a broken edit of the file is
//! refused and the rules in force keep working; a valid edit is taken (the
//! test sends SIGHUP; the file check every 2 s would take it as well).

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use hwsched_proto::{
    v1::{Alert, AlertState},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::Proc;

const WAIT: Duration = Duration::from_secs(30);

const ALWAYS: &str = r#"
rules:
  - name: CpuSeen
    metric: cpu.util_pct
    op: ">="
    threshold: 0
    for: 0s
    severity: warning
    labels: {team: infra}
    summary: "{worker_id} cpu at {value}"
"#;

/// A nats-server, a rules file holding `rules`, and a subscription to every alert.
struct Setup {
    nats: NatsServer,
    _dir: tempfile::TempDir,
    file: std::path::PathBuf,
    bus: hwsched_bus::Bus,
    alerts: async_nats::Subscriber,
}

impl Setup {
    async fn new(rules: &str) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("rules.yaml");
        std::fs::write(&file, rules)?;
        let bus = hwsched_tests::bus(&nats.url()).await?;
        let alerts = bus.client().subscribe("hws.alerts.>").await?;
        Ok(Self { nats, _dir: dir, file, bus, alerts })
    }

    /// `hwsched alerting --rules <file> <extra>`.
    fn alerting(&self, name: &str, extra: &[&str]) -> anyhow::Result<Proc> {
        let file = self.file.to_str().unwrap_or_default();
        Proc::spawn(name, &self.nats.url(), &[&["alerting", "--rules", file][..], extra].concat(), &[])
    }

    /// A real monitor sampling every 200 ms.
    fn monitor(&self, id: &str) -> anyhow::Result<Proc> {
        Proc::spawn(id, &self.nats.url(), &["monitor", "--worker-id", id, "--interval-ms", "200"], &[])
    }

    /// Runs an `hwsched` command against this server; its stdout.
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(hwsched_tests::hwsched_bin()?)
            .args([&["--nats-url", &self.nats.url()][..], args].concat())
            .output()?;
        anyhow::ensure!(out.status.success(), "hwsched {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn next_alert(&mut self) -> anyhow::Result<(String, Alert)> {
        let m = tokio::time::timeout(WAIT, self.alerts.next()).await?.context("alert subscription closed")?;
        Ok((m.subject.to_string(), Alert::decode(m.payload.as_ref())?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_file_fires_on_real_samples_and_a_bad_edit_keeps_the_old_rules() -> anyhow::Result<()> {
    let mut t = Setup::new(ALWAYS).await?;
    let mut alerting = t.alerting("alerting", &[])?;
    alerting.wait_for_log("alerting ready", WAIT).await?;
    let _monitor = t.monitor("m1")?;
    let (subject, alert) = t.next_alert().await?;
    assert_eq!((alert.rule.as_str(), alert.worker_id.as_str(), alert.device.as_str()), ("CpuSeen", "m1", "cpu"));
    assert_eq!(subject, "hws.alerts.warning");
    assert!(alert.summary.starts_with("m1 cpu at "), "{}", alert.summary);
    assert_eq!(alert.labels.get("team").map(String::as_str), Some("infra"));
    // fired once: no repeat while it keeps firing
    assert!(tokio::time::timeout(Duration::from_millis(800), t.alerts.next()).await.is_err(), "repeated");

    // a broken edit: refused, named, the old rule stays in force
    std::fs::write(&t.file, "rules: [{name: CpuSeen, metric: cpu.util_pct, threshold: 0, severity: loud}]")?;
    alerting.wait_for_log("field `severity`", WAIT).await?;
    assert!(alerting.log().contains("the previous rules stay in force"));
    let _second = t.monitor("m2")?;
    assert_eq!(t.next_alert().await?.1.worker_id, "m2");

    // a valid edit is taken: the new rule fires at critical
    std::fs::write(&t.file, ALWAYS.replace("CpuSeen", "CpuSeenAgain").replace("warning", "critical"))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(alerting.pid()).unwrap_or_default());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)?;
    alerting.wait_for_log("alert rules reloaded", WAIT).await?;
    let mut critical = t.bus.client().subscribe("hws.alerts.critical").await?;
    let m = tokio::time::timeout(WAIT, critical.next()).await?.expect("a critical alert");
    assert_eq!(Alert::decode(m.payload.as_ref())?.rule, "CpuSeenAgain");
    alerting.terminate(WAIT).await?;
    Ok(())
}

/// A webhook receiver for the test: records (path, JSON body) of each POST and
/// answers 500 to the first `fail_first` requests, 200 after.
async fn receiver(
    fail_first: usize,
) -> anyhow::Result<(String, tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut served = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // headers, then Content-Length bytes of body
            let (head_end, length) = loop {
                let Ok(n) = conn.read(&mut chunk).await else { break (0, 0) };
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
                        .unwrap_or(0);
                    break (i + 4, length);
                }
            };
            if head_end == 0 {
                continue;
            }
            while buf.len() < head_end + length {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let path = String::from_utf8_lossy(&buf[..head_end]).split_whitespace().nth(1).unwrap_or("").to_string();
            let body = serde_json::from_slice(&buf[head_end..]).unwrap_or(serde_json::Value::Null);
            served += 1;
            let status = if served <= fail_first { "500 Internal Server Error" } else { "200 OK" };
            let _ = conn
                .write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())
                .await;
            if served > fail_first {
                let _ = tx.send((path, body));
            }
        }
    });
    Ok((url, rx))
}

/// The issue's acceptance path: a real monitor's samples cross a `for: 0s`
/// rule, and a webhook receiver gets the notification (after a failed first
/// attempt: delivery is retried), as does an Alertmanager's API v2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_monitor_crossing_a_rule_reaches_the_webhook_and_alertmanager() -> anyhow::Result<()> {
    let t = Setup::new(ALWAYS).await?;
    let (hook, mut hooked) = receiver(1).await?;
    let (am, mut posted) = receiver(0).await?;
    let webhook = format!("{hook}/hook");
    let _alerting = t.alerting("alerting", &["--webhook", &webhook, "--alertmanager", &am])?;
    let _monitor = t.monitor("m1")?;
    let (path, body) = tokio::time::timeout(WAIT, hooked.recv()).await?.expect("webhook called");
    assert_eq!(path, "/hook");
    assert_eq!(body["status"], "firing", "{body}");
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "CpuSeen");
    assert_eq!(body["alerts"][0]["labels"]["worker_id"], "m1");
    assert_eq!(body["alerts"][0]["labels"]["team"], "infra");
    let (path, body) = tokio::time::timeout(WAIT, posted.recv()).await?.expect("alertmanager called");
    assert_eq!(path, "/api/v2/alerts");
    assert_eq!(body[0]["labels"]["alertname"], "CpuSeen", "{body}");
    assert_eq!(body[0]["labels"]["severity"], "warning");
    assert!(body[0]["startsAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{body}");
    Ok(())
}

/// A restarted alerting service does not notify again what was firing when it
/// stopped (the firing state is in KV; that a restored alert still resolves is
/// `rule.rs`'s unit test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_notify_firing_alerts_again() -> anyhow::Result<()> {
    let mut t = Setup::new(ALWAYS).await?;
    let (hook, mut hooked) = receiver(0).await?;
    let mut first = t.alerting("alerting", &["--webhook", &hook])?;
    first.wait_for_log("alerting ready", WAIT).await?;
    let _monitor = t.monitor("m1")?;
    t.next_alert().await?;
    tokio::time::timeout(WAIT, hooked.recv()).await?.expect("notified once");
    first.terminate(WAIT).await?;

    let mut second = t.alerting("alerting again", &["--webhook", &hook])?;
    second.wait_for_log("firing=1", WAIT).await?;
    // samples keep coming every 200 ms, still above the threshold: no new
    // transition, and no webhook call past the group wait and a group interval
    assert!(tokio::time::timeout(Duration::from_secs(2), t.alerts.next()).await.is_err(), "notified again");
    assert!(tokio::time::timeout(Duration::from_secs(5), hooked.recv()).await.is_err(), "webhook called again");
    second.terminate(WAIT).await?;
    Ok(())
}

/// Webhook notifications until one satisfies `want` (earlier ones are skipped).
async fn webhook_until(
    hooked: &mut tokio::sync::mpsc::UnboundedReceiver<(String, serde_json::Value)>,
    want: impl Fn(&serde_json::Value) -> bool,
) -> anyhow::Result<serde_json::Value> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = tokio::time::timeout_at(deadline, hooked.recv()).await?.context("receiver closed")?;
        if want(&body) {
            return Ok(body);
        }
    }
}

/// (worker, status) of each alert of a webhook notification.
fn sent(body: &serde_json::Value) -> Vec<(String, String)> {
    body["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    (a["labels"]["worker_id"].as_str().unwrap_or("").into(), a["status"].as_str().unwrap_or("").into())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A silence added with `hwsched silence add` (stored in KV, watched by the
/// service) mutes one worker's alert: it is published with `muted_by` and not
/// sent to the webhook, while the other worker's is; `hwsched silence expire`
/// ends it and the still-firing alert goes out at the group's next look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silence_from_the_cli_mutes_one_worker_until_it_is_expired() -> anyhow::Result<()> {
    let mut t = Setup::new(ALWAYS).await?;
    let (hook, mut hooked) = receiver(0).await?;
    let id = t.cli(&[
        "silence",
        "add",
        "--match",
        "alertname=CpuSeen",
        "--match",
        "worker_id=m1",
        "--for",
        "1h",
        "--comment",
        "maintenance",
    ])?;
    let id = id.trim().to_string();
    assert_eq!(id.len(), 12, "{id}");
    let listed = t.cli(&["silence", "list"])?;
    assert!(listed.contains(&id) && listed.contains("worker_id=m1") && listed.contains("maintenance"), "{listed}");

    let mut alerting = t.alerting("alerting", &["--webhook", &hook])?;
    alerting.wait_for_log("alerting ready", WAIT).await?;
    let _m1 = t.monitor("m1")?;
    let (_, muted) = t.next_alert().await?;
    assert_eq!((muted.worker_id.as_str(), muted.muted_by.clone()), ("m1", format!("silence:{id}")));
    let _m2 = t.monitor("m2")?;
    let body = webhook_until(&mut hooked, |b| !sent(b).is_empty()).await?;
    assert_eq!(sent(&body), [("m2".to_string(), "firing".to_string())], "m1 is silenced: {body}");
    let firing = t.cli(&["alerts"])?;
    assert!(firing.contains("m1") && firing.contains(&format!("silence:{id}")), "{firing}");

    t.cli(&["silence", "expire", &id])?;
    let body = webhook_until(&mut hooked, |b| sent(b).iter().any(|(w, _)| w == "m1")).await?;
    assert!(sent(&body).contains(&("m1".to_string(), "firing".to_string())), "{body}");
    assert!(t.cli(&["silence", "list"])?.lines().count() == 1, "an ended silence is listed only with --all");
    assert!(t.cli(&["silence", "list", "--all"])?.contains(&id));
    alerting.terminate(WAIT).await?;
    Ok(())
}

/// A killed monitor stops its heartbeats: the derived `worker.heartbeat_age_s`
/// crosses the rule and `WorkerOffline` reaches the webhook; the worker coming
/// back resolves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_monitor_raises_worker_offline_and_its_return_resolves_it() -> anyhow::Result<()> {
    let rules = r#"
rules:
  - {name: WorkerOffline, metric: worker.heartbeat_age_s, threshold: 2, for: 0s, severity: critical}
"#;
    let mut t = Setup::new(rules).await?;
    let (hook, mut hooked) = receiver(0).await?;
    let mut alerting = t.alerting("alerting", &["--webhook", &hook])?;
    alerting.wait_for_log("alerting ready", WAIT).await?;
    let mut monitor = t.monitor("m1")?;
    monitor.wait_for_log("monitor ready", WAIT).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(hooked.try_recv().is_err(), "a live worker is not offline");
    monitor.kill();
    let (_, alert) = t.next_alert().await?;
    assert_eq!(
        (alert.rule.as_str(), alert.worker_id.as_str(), alert.state()),
        ("WorkerOffline", "m1", AlertState::Firing)
    );
    let body = webhook_until(&mut hooked, |b| b["status"] == "firing").await?;
    assert_eq!(body["alerts"][0]["labels"]["alertname"], "WorkerOffline");
    let _back = t.monitor("m1")?;
    let body = webhook_until(&mut hooked, |b| b["status"] == "resolved").await?;
    assert_eq!(sent(&body), [("m1".to_string(), "resolved".to_string())]);
    alerting.terminate(WAIT).await?;
    Ok(())
}

/// README: configuration is checked before connecting. A rules file with an
/// error fails `hwsched alerting` with the configuration status (2), naming
/// the file and the field, even when NATS cannot be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rules_file_fails_before_connecting() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "rules:\n  - {name: Hot, metric: gpu.temp_c, threshold: 85, severity: loud}\n")?;
    let path = file.to_string_lossy().into_owned();
    for command in ["alerting", "all"] {
        let out = hwsched_tests::cli_async("nats://127.0.0.1:1", &[command, "--rules", &path]).await?;
        assert_eq!(out.code, 2, "{command}: {}", out.stderr);
        assert!(out.stderr.contains(&path), "{command}: {}", out.stderr);
        assert!(out.stderr.contains("rule 1 (Hot): field `severity`"), "{command}: {}", out.stderr);
        assert!(!out.stderr.contains("127.0.0.1:1"), "{command}: no connection was tried: {}", out.stderr);
    }
    Ok(())
}
