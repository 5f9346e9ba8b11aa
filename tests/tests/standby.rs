//! Two schedulers: one active (it holds the lease), one standby. Killing the
//! active with SIGKILL under load hands over within seconds and loses no task;
//! stopping it cleanly hands over at once.

use std::time::Duration;

use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, sleep_task, submit, Proc, ResultCount};

const WAIT: Duration = Duration::from_secs(45);

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
    let mut results = ResultCount::subscribe(&b).await?;
    const N: usize = 40;
    for i in 0..N {
        submit(&b, &sleep_task(&format!("s-{i}"), "0.1")).await?;
    }
    results.until(5, WAIT, String::new).await?;
    active.kill();
    let killed_at = std::time::Instant::now();
    standby.wait_for_log("became the active scheduler", WAIT).await?;
    let took_over = killed_at.elapsed();
    assert!(took_over < Duration::from_secs(10), "takeover took {took_over:?}");
    results.until(N, WAIT, || format!("standby log:\n{}", standby.log())).await?;
    assert_eq!(results.duplicates(), 0, "{:?}", results.done);
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
