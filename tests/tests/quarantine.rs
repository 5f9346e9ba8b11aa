//! Bad hardware told from bad tests, with real monitors: a worker whose
//! attempts fail (the monitor's test-only fault injection switch) while the
//! same tests pass on its peers is quarantined, gets only probes, and is
//! restored once they pass; three of five workers going bad at once open the
//! breaker (no more quarantines) and raise the `QuarantineBreakerOpen` alert.

use std::{path::Path, time::Duration};

use hwsched_client::Client;
use hwsched_config::NatsConfig;
use hwsched_proto::v1::QuarantineReply;
use hwsched_testkit::{eventually, NatsServer};
use hwsched_tests::{bus, cli_async, monitor_config, monitor_with, sh_task, submit, InProcess, Proc, ResultCount};

const WAIT: Duration = Duration::from_secs(60);

/// A scheduler that probes every second and restores after two passes.
async fn scheduler(url: &str) -> anyhow::Result<InProcess> {
    hwsched_bus::streams::provision(&bus(url).await?).await?;
    let cfg = hwsched_scheduler::SchedulerConfig {
        worker_timeout_ms: 5_000,
        startup_grace_s: 0,
        quarantine: "probe_interval_s=1,probe_passes=2".parse().map_err(anyhow::Error::msg)?,
        ..Default::default()
    };
    InProcess::start(url, |b, t, s| hwsched_scheduler::run(cfg, b, t, s)).await
}

/// Five 2-slot workers `w0..w4`, each failing every attempt while its file
/// `w<i>.bad` exists, warmed up by a healthy burst (the history a farm has when
/// something goes wrong); then those in `bad` go bad.
async fn fleet(url: &str, b: &hwsched_bus::Bus, dir: &Path, bad: &[usize]) -> anyhow::Result<Vec<InProcess>> {
    let mut out = Vec::new();
    for i in 0..5 {
        let mut cfg = monitor_config(&format!("w{i}"), 2);
        cfg.test_only_fail_while = Some(dir.join(format!("w{i}.bad")));
        out.push(monitor_with(url, cfg).await?);
    }
    let mut results = ResultCount::subscribe(b).await?;
    burst(b, "warm", 20).await?;
    results.until(20, WAIT, || "warm-up".into()).await?;
    for i in bad {
        std::fs::write(dir.join(format!("w{i}.bad")), "")?;
    }
    Ok(out)
}

/// Submits `n` short tests of 4 workloads, ids `<prefix>-<i>`.
async fn burst(b: &hwsched_bus::Bus, prefix: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        let mut t = sh_task(&format!("{prefix}-{i}"), "sleep 0.1");
        t.name = format!("suite-test-{}", i % 4);
        // one revision: a test failing on the bad worker and passing elsewhere would look flaky
        t.revision = "rev-1".into();
        submit(b, &t).await?;
    }
    Ok(())
}

async fn until_quarantine(
    client: &Client,
    b: &hwsched_bus::Bus,
    prefix: &str,
    done: impl Fn(&QuarantineReply) -> bool,
) -> anyhow::Result<QuarantineReply> {
    let mut round = 0;
    let done = &done;
    eventually(WAIT, || {
        round += 1;
        let prefix = format!("{prefix}{round}");
        async move {
            burst(b, &prefix, 10).await?;
            tokio::time::sleep(Duration::from_millis(700)).await;
            let q = client.quarantine(None).await?;
            Ok(done(&q).then_some(q))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_worker_is_quarantined_probed_and_restored() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let dir = tempfile::tempdir()?;
    let sched = scheduler(&url).await?;
    let learner = Proc::spawn("learner", &url, &["learner"], &[("HWSCHED_LEARNER_PUBLISH_MS", "200".into())])?;
    learner.wait_for_log("learner ready", WAIT).await?;
    let b = bus(&url).await?;
    let _monitors = fleet(&url, &b, dir.path(), &[3]).await?;
    let client = Client::connect(&NatsConfig::new(&url)).await?;

    let q = until_quarantine(&client, &b, "a", |q| !q.workers.is_empty()).await?;
    let ids: Vec<&str> = q.workers.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["w3"], "only the bad worker: {q:?}");
    // the learner took w3's failures back from the tests: none is flaky for them
    learner.wait_for_log("its failures in the window are not the tests'", WAIT).await?;
    let taken_back: u64 = learner
        .log()
        .split("taken_back=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0);
    assert!(taken_back >= 3, "at least the failures that quarantined it:\n{}", learner.log());
    // every model published from then on lists no flaky test (before it, w3's failures did)
    let flaky_names = || async {
        let out = cli_async(&url, &["model", "flaky", "-o", "json"]).await?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        let names: Vec<String> = v["flaky_tests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(String::from))
            .collect();
        anyhow::Ok((v["version"].as_u64().unwrap_or(0), names))
    };
    let none = eventually(WAIT, || async { Ok(flaky_names().await.ok().filter(|(v, n)| *v > 0 && n.is_empty())) });
    if let Err(e) = none.await {
        anyhow::bail!("{e}: flaky for a bad worker's failures: {:?}\n{}", flaky_names().await?, learner.log());
    }
    assert!(q.workers[0].reason.contains("attempts failed") && !q.breaker_open, "{q:?}");
    let listed = cli_async(&url, &["quarantine", "list"]).await?;
    assert!(listed.stdout.contains("w3") && listed.stdout.contains("/2"), "{}", listed.stdout);

    // while quarantined it gets probes only: a burst of work all goes elsewhere
    let mut results = b.client().subscribe("hws.results.>").await?;
    burst(&b, "after", 12).await?;
    let mut seen = 0;
    while seen < 12 {
        let m = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut results))
            .await?
            .ok_or_else(|| anyhow::anyhow!("results ended"))?;
        let r: hwsched_proto::v1::ExecutionResult = prost::Message::decode(m.payload.as_ref())?;
        if r.task_id.starts_with("hws-probe-") {
            assert_eq!(r.worker_id, "w3", "probes go to the quarantined worker only");
            assert!(r.error.contains("fault injected"), "it still fails: {r:?}");
            continue;
        }
        if r.task_id.starts_with("after-") {
            assert_ne!(r.worker_id, "w3", "{} went to the quarantined worker", r.task_id);
            seen += 1;
        }
    }

    // the fault gone, two passing probes in a row bring it back
    std::fs::remove_file(dir.path().join("w3.bad"))?;
    eventually(WAIT, || async { Ok(client.quarantine(None).await?.workers.is_empty().then_some(())) }).await?;
    let out = cli_async(&url, &["quarantine", "release", "w3"]).await?;
    assert_eq!(out.code, 1, "no longer quarantined: {}", out.stderr);
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_five_workers_going_bad_open_the_breaker_and_raise_the_alert() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let dir = tempfile::tempdir()?;
    let sched = scheduler(&url).await?;
    let mut alerting = Proc::spawn("alerting", &url, &["alerting"], &[])?;
    alerting.wait_for_log("alerting ready", WAIT).await?;
    let b = bus(&url).await?;
    let _monitors = fleet(&url, &b, dir.path(), &[0, 1, 2]).await?;
    let client = Client::connect(&NatsConfig::new(&url)).await?;

    let q = until_quarantine(&client, &b, "b", |q| q.breaker_open).await?;
    assert_eq!(q.workers.len(), 1, "one of five at most (20 % of the fleet): {q:?}");
    assert!(!q.suspects.is_empty() && q.breaker_reason.contains("of 5 workers"), "{q:?}");
    let alert = eventually(WAIT, || async {
        let out = cli_async(&url, &["alerts"]).await?;
        Ok(out.stdout.contains("QuarantineBreakerOpen").then_some(out.stdout))
    })
    .await?;
    assert!(alert.contains("critical"), "{alert}");
    let listed = cli_async(&url, &["quarantine", "list"]).await?;
    assert!(listed.stdout.starts_with("BREAKER OPEN"), "{}", listed.stdout);
    alerting.terminate(WAIT).await?;
    sched.stop().await
}
