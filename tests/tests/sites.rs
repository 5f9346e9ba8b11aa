//! A worker site behind a leaf node: the scheduler runs on the hub, the
//! site's monitor connects to its local leaf server (no JetStream of its
//! own; it names the hub's JetStream domain), and placement, results and
//! metrics cross the leaf link. The link is
//! cut while the site's tests run and restored: every result those tests
//! produced during the cut, and every metrics batch sampled during it,
//! reaches the hub's streams; nothing runs twice; new work flows again. With
//! `hwsched nats-auth`'s users, the leaf logs in to the hub as its site's leaf
//! user: the site's tests run through it, and what a monitor may not send does
//! not cross.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::StreamExt;
use hwsched_bus::{now_ms, Bus, Stream};
use hwsched_proto::{
    v1::{ExecutionResult, MetricsBatch, Requirements, TaskEvent, TaskEventKind, TaskStatus},
    Message,
};
use hwsched_testkit::{Site, SiteAuth, HUB_DOMAIN};
use hwsched_tests::{bus, sleep_task, stored, submit, Proc};

const WAIT: Duration = Duration::from_secs(60);
const WORKER: &str = "lab1";

/// The site's results by task id, once `n` tasks have one.
async fn results(b: &Bus, n: usize) -> anyhow::Result<HashMap<String, Vec<ExecutionResult>>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut by_task: HashMap<String, Vec<ExecutionResult>> = HashMap::new();
        for r in stored::<ExecutionResult>(b, Stream::Results, b.subjects().results_all()).await? {
            by_task.entry(r.task_id.clone()).or_default().push(r);
        }
        if by_task.len() >= n || Instant::now() > deadline {
            return Ok(by_task);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn link_cut_loses_nothing(cut: Duration) -> anyhow::Result<()> {
    let site = Site::start()?;
    // the site is not given up for lost while its link is down
    let timeout_ms = (cut + Duration::from_secs(60)).as_millis().to_string();
    let sched = Proc::spawn(
        "scheduler",
        &site.hub_url(),
        &["scheduler", "--startup-grace-s", "0"],
        &[("HWSCHED_WORKER_TIMEOUT_MS", timeout_ms)],
    )?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let args = ["monitor", "--worker-id", WORKER, "--slots", "4", "--level", "basic", "--interval-ms", "1000"];
    let monitor = Proc::spawn(WORKER, &site.leaf_url(), &args, &[("HWSCHED_JS_DOMAIN", HUB_DOMAIN.to_string())])?;
    monitor.wait_for_log("monitor ready", WAIT).await?;
    sched.wait_for_log(&format!("worker joined worker_id=\"{WORKER}\""), WAIT).await?;
    let logs = || format!("----- scheduler -----\n{}\n----- {WORKER} -----\n{}", sched.log(), monitor.log());

    let b = bus(&site.hub_url()).await?;
    let mut events = b.client().subscribe(b.subjects().events_all()).await?;
    // they end while the link is down
    let during = 4;
    for i in 0..during {
        // a quarter of a core each: all four run at once on the 4 slots
        let mut t = sleep_task(&format!("during-{i}"), "4");
        t.requirements = Some(Requirements { cpu_cores: 0.25, ..Default::default() });
        submit(&b, &t).await?;
    }
    let mut started = 0;
    while started < during {
        let m = tokio::time::timeout(WAIT, events.next()).await.with_context(logs)?.context("events")?;
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        started += usize::from(ev.kind() == TaskEventKind::Started);
    }
    let cut_at = now_ms();
    site.link.cut();
    tokio::time::sleep(cut).await;
    let restored_at = now_ms();
    site.link.restore();
    site.wait_linked()?;

    // new work reaches the site again
    let after = 4;
    for i in 0..after {
        submit(&b, &sleep_task(&format!("after-{i}"), "0")).await?;
    }
    let by_task = results(&b, during + after).await?;
    assert_eq!(by_task.len(), during + after, "{by_task:?}\n{}", logs());
    for (id, rs) in &by_task {
        assert_eq!(rs.len(), 1, "{id} ran once: {rs:?}");
        let r = &rs[0];
        assert_eq!((r.status(), r.worker_id.as_str(), r.attempt), (TaskStatus::Succeeded, WORKER, 1), "{r:?}");
        if id.starts_with("during-") {
            assert!(
                (cut_at..restored_at).contains(&r.finished_at_ms),
                "{id} finished during the cut ({cut_at}..{restored_at}): {r:?}"
            );
        }
    }

    // every metrics batch sampled while the link was down reached the hub
    let batches = stored::<MetricsBatch>(&b, Stream::Metrics, b.subjects().metrics(WORKER)).await?;
    let mut stamps: Vec<i64> = batches.iter().map(|m| m.timestamp_ms).collect();
    stamps.sort_unstable();
    let window: Vec<i64> =
        stamps.iter().copied().filter(|t| (cut_at - 2_000..restored_at + 2_000).contains(t)).collect();
    let gaps: Vec<i64> = window.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 2_500).collect();
    assert!(
        gaps.is_empty()
            && window.first().is_some_and(|t| *t <= cut_at)
            && window.last().is_some_and(|t| *t >= restored_at),
        "batches around the cut ({cut_at}..{restored_at}): {window:?}, gaps {gaps:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_link_cut_for_seconds_loses_no_result_and_no_metrics() -> anyhow::Result<()> {
    link_cut_loses_nothing(Duration::from_secs(15)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: make test-chaos"]
async fn a_leaf_link_cut_for_a_minute_loses_no_result_and_no_metrics() -> anyhow::Result<()> {
    link_cut_loses_nothing(Duration::from_secs(60)).await
}

/// Users of `hwsched nats-auth --shared-monitor --leaf-site lab --js-domain hub`.
const USERS: [&str; 8] =
    ["scheduler", "learner", "alerting", "recorder", "producer", "operator", "monitor", "leaf-lab"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_behind_its_leaf_user_runs_tests_and_sends_nothing_else() -> anyhow::Result<()> {
    let out = std::process::Command::new(hwsched_tests::hwsched_bin()?)
        .args(["nats-auth", "--shared-monitor", "--leaf-site", "lab", "--js-domain", HUB_DOMAIN])
        .output()?;
    anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pw = |u: &str| format!("pw-{u}-{}", std::process::id());
    let auth = SiteAuth {
        hub_authorization: String::from_utf8(out.stdout)?,
        hub_env: USERS
            .iter()
            .map(|u| (format!("HWSCHED_NATS_PASSWORD_{}", u.to_uppercase().replace('-', "_")), pw(u)))
            .collect(),
        leaf_user: ("leaf-lab".into(), pw("leaf-lab")),
        // the site's monitors log in to their leaf server as `monitor` (inboxes `_INBOX_monitor.*`)
        local_users: vec![("monitor".into(), "local-pw".into())],
    };
    let site = Site::start_with(Some(&auth))?;
    let login = |u: &str, p: String| vec![("HWSCHED_NATS_USER", u.to_string()), ("HWSCHED_NATS_PASSWORD", p)];
    let sched = Proc::spawn(
        "scheduler",
        &site.hub_url(),
        &["scheduler", "--startup-grace-s", "0"],
        &login("scheduler", pw("scheduler")),
    )?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let monitor_env =
        [login("monitor", "local-pw".into()), vec![("HWSCHED_JS_DOMAIN", HUB_DOMAIN.to_string())]].concat();
    let monitor =
        Proc::spawn(WORKER, &site.leaf_url(), &["monitor", "--worker-id", WORKER, "--level", "basic"], &monitor_env)?;
    monitor.wait_for_log("monitor ready", WAIT).await?;
    sched.wait_for_log(&format!("worker joined worker_id=\"{WORKER}\""), WAIT).await?;

    // an operator at the hub sees what arrives; a client at the site tries what a monitor may not
    let mut ops = hwsched_config::NatsConfig::new(site.hub_url());
    (ops.user, ops.password) = (Some("operator".into()), Some(pw("operator")));
    let b = Bus::connect(&ops, "test", Duration::from_secs(10)).await?;
    let mut submits = b.client().subscribe(b.subjects().tasks_submit()).await?;
    b.client().flush().await?;
    let intruder = async_nats::ConnectOptions::new()
        .user_and_password("monitor".into(), "local-pw".into())
        .connect(site.leaf_url())
        .await?;
    intruder.publish(b.subjects().tasks_submit(), "not a monitor's to send".into()).await?;
    intruder.flush().await?;
    let crossed = tokio::time::timeout(Duration::from_secs(2), submits.next()).await;
    assert!(crossed.is_err(), "a submission crossed the leaf link: {crossed:?}");

    // a test placed at the hub runs at the site and its result comes back
    submit(&b, &sleep_task("through-the-leaf", "0")).await?;
    let by_task = results(&b, 1).await?;
    let r = by_task.get("through-the-leaf").and_then(|rs| rs.first()).with_context(|| {
        format!("no result\n----- scheduler -----\n{}\n----- {WORKER} -----\n{}", sched.log(), monitor.log())
    })?;
    assert_eq!((r.status(), r.worker_id.as_str()), (TaskStatus::Succeeded, WORKER), "{r:?}");
    // every write the site needs crossed: journal, result, metrics
    let log = monitor.log();
    let refused: Vec<&str> = log.lines().filter(|l| l.contains("not written") || l.contains("not stored")).collect();
    assert!(refused.is_empty(), "{refused:#?}");
    Ok(())
}
