//! Two schedulers: one active (it holds the lease), one standby. Killing the
//! active with SIGKILL under load hands over within seconds and loses no task;
//! stopping it cleanly hands over at once.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, submit, Proc};

const WAIT: Duration = Duration::from_secs(45);

fn sleep_task(id: String) -> TaskRequest {
    TaskRequest { task_id: id, command: vec!["sleep".into(), "0.1".into()], ..Default::default() }
}

/// Starts two schedulers; returns (active, standby).
async fn pair(nats: &NatsServer) -> anyhow::Result<(Proc, Proc)> {
    let a = Proc::spawn("scheduler a", &nats.url(), &["scheduler"], &[])?;
    a.wait_for_log("became the active scheduler", WAIT).await?;
    let b = Proc::spawn("scheduler b", &nats.url(), &["scheduler"], &[])?;
    b.wait_for_log("standby: another scheduler is active", WAIT).await?;
    Ok((a, b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_from_a_killed_active_scheduler_and_loses_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (mut active, standby) = pair(&nats).await?;
    let mon = Proc::spawn(
        "monitor",
        &nats.url(),
        &["monitor", "--worker-id", "w", "--slots", "2", "--interval-ms", "200"],
        &[],
    )?;
    mon.wait_for_log("monitor ready", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let mut results = b.client().subscribe("hws.results.>").await?;
    const N: usize = 40;
    for i in 0..N {
        submit(&b, &sleep_task(format!("s-{i}"))).await?;
    }
    let mut done: HashMap<String, usize> = HashMap::new();
    while done.len() < 5 {
        let m = tokio::time::timeout(WAIT, results.next()).await?.expect("result");
        *done.entry(ExecutionResult::decode(m.payload.as_ref())?.task_id).or_default() += 1;
    }
    active.kill();
    let killed_at = std::time::Instant::now();
    standby.wait_for_log("became the active scheduler", WAIT).await?;
    let took_over = killed_at.elapsed();
    assert!(took_over < Duration::from_secs(10), "takeover took {took_over:?}");
    while done.len() < N {
        let Ok(Some(m)) = tokio::time::timeout(WAIT, results.next()).await else {
            panic!("{} of {N} finished; standby log:\n{}", done.len(), standby.log());
        };
        let r = ExecutionResult::decode(m.payload.as_ref())?;
        assert_eq!(r.status(), TaskStatus::Succeeded);
        *done.entry(r.task_id).or_default() += 1;
    }
    let duplicates: usize = done.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "{done:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_active_hands_over_at_once() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (mut active, standby) = pair(&nats).await?;
    let status = active.terminate(WAIT).await?;
    assert!(status.success());
    let stopped_at = std::time::Instant::now();
    standby.wait_for_log("became the active scheduler", WAIT).await?;
    // released, not expired: no waiting out the lease TTL
    assert!(stopped_at.elapsed() < Duration::from_secs(3), "{:?}", stopped_at.elapsed());
    Ok(())
}
