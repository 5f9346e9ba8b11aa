//! Alert rules from a file, live: a real monitor's CPU samples cross a rule
//! with `for: 0s` and the alert is published; a broken edit of the file is
//! refused and the rules in force keep working; a valid edit is taken (the
//! test sends SIGHUP; the file check every 2 s would take it as well).

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{v1::Alert, Message};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_file_fires_on_real_samples_and_a_bad_edit_keeps_the_old_rules() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, ALWAYS)?;
    let b = hwsched_tests::bus(&nats.url()).await?;
    let mut alerts = b.client().subscribe("hws.alerts.>").await?;
    let mut alerting =
        Proc::spawn("alerting", &nats.url(), &["alerting", "--rules", file.to_str().unwrap_or_default()], &[])?;
    alerting.wait_for_log("alerting ready", WAIT).await?;
    let _monitor = Proc::spawn("monitor", &nats.url(), &["monitor", "--worker-id", "m1", "--interval-ms", "200"], &[])?;
    let m = tokio::time::timeout(WAIT, alerts.next()).await?.expect("an alert");
    let alert = Alert::decode(m.payload.as_ref())?;
    assert_eq!((alert.rule.as_str(), alert.worker_id.as_str(), alert.device.as_str()), ("CpuSeen", "m1", "cpu"));
    assert_eq!(m.subject.as_str(), "hws.alerts.warning");
    assert!(alert.summary.starts_with("m1 cpu at "), "{}", alert.summary);
    assert_eq!(alert.labels.get("team").map(String::as_str), Some("infra"));
    // fired once: no repeat while it keeps firing
    assert!(tokio::time::timeout(Duration::from_millis(800), alerts.next()).await.is_err(), "repeated");

    // a broken edit: refused, named, the old rule stays in force
    std::fs::write(&file, "rules: [{name: CpuSeen, metric: cpu.util_pct, threshold: 0, severity: loud}]")?;
    alerting.wait_for_log("field `severity`", WAIT).await?;
    assert!(alerting.log().contains("the previous rules stay in force"));
    let _second =
        Proc::spawn("monitor 2", &nats.url(), &["monitor", "--worker-id", "m2", "--interval-ms", "200"], &[])?;
    let m = tokio::time::timeout(WAIT, alerts.next()).await?.expect("an alert for m2");
    assert_eq!(Alert::decode(m.payload.as_ref())?.worker_id, "m2");

    // a valid edit is taken: the new rule fires at critical
    std::fs::write(&file, ALWAYS.replace("CpuSeen", "CpuSeenAgain").replace("warning", "critical"))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(alerting.pid()).unwrap_or_default());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)?;
    alerting.wait_for_log("alert rules reloaded", WAIT).await?;
    let mut critical = b.client().subscribe("hws.alerts.critical").await?;
    let m = tokio::time::timeout(WAIT, critical.next()).await?.expect("a critical alert");
    assert_eq!(Alert::decode(m.payload.as_ref())?.rule, "CpuSeenAgain");
    alerting.terminate(WAIT).await?;
    Ok(())
}
