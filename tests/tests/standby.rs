//! Two schedulers: one active (it holds the lease), one standby. Killing the
//! active with SIGKILL under load hands over within seconds and loses no task;
//! stopping it cleanly hands over at once; a successor finishes an attempt
//! whose result its predecessor took but never recorded.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hwsched_proto::{
    v1::{TaskRecord, TaskState},
    Message,
};
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

/// What a cluster node's restart can leave behind: the scheduler took a result
/// but could not save the record of its outcome (the task bucket unavailable
/// past its retries), so the attempt is still recorded as running, and the
/// monitor's ack of the assignment was lost, so it comes back. The monitor
/// sees the attempt's result stored and reports nothing new (no false
/// "interrupted"); the successor scheduler finds that result and finishes the
/// task at once, rather than waiting the attempt out as lost and running the
/// test again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successor_applies_a_stored_result_whose_record_was_not_saved() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut first = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    first.wait_for_log("scheduler ready", WAIT).await?;
    let mon = Proc::spawn("monitor", &nats.url(), &["monitor", "--worker-id", "w", "--interval-ms", "200"], &[])?;
    mon.wait_for_log("monitor ready", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let records = hwsched_bus::streams::bucket(&b, &b.subjects().tasks_bucket()).await?;
    let mut watch = records.watch("once").await?;
    let mut sent = b.client().subscribe(b.subjects().assign("w")).await?;
    submit(&b, &sleep_task("once", "0.1")).await?;
    let assignment = tokio::time::timeout(WAIT, sent.next()).await?.context("no assignment")?;
    // the record as it stood while the attempt ran, then as it ended
    let mut assigned = None;
    loop {
        let entry = tokio::time::timeout(WAIT, watch.next()).await?.context("watch ended")??;
        let rec = TaskRecord::decode(entry.value.as_ref())?;
        match rec.state() {
            TaskState::Assigned => assigned = Some(rec),
            TaskState::Succeeded => break,
            _ => {}
        }
    }
    let assigned = assigned.context("the attempt was never recorded as running")?;
    first.kill();
    // what a save of the outcome that failed leaves behind
    records.put("once", assigned.encode_to_vec().into()).await?;
    let mut results = b.client().subscribe(b.subjects().results_of("once")).await?;
    let mut again = assignment.headers.clone().context("assignment headers")?;
    again.insert(hwsched_bus::MSG_ID, "once:redelivered");
    b.jetstream().publish_with_headers(assignment.subject.clone(), again, assignment.payload.clone()).await?.await?;
    mon.wait_for_log("attempt already ended and its result stored", WAIT).await?;
    let extra = tokio::time::timeout(Duration::from_secs(1), results.next()).await;
    assert!(extra.is_err(), "a second result of the attempt: {extra:?}\n{}", mon.log());

    let second = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    second.wait_for_log("stored result of a running attempt applied", WAIT).await?;
    let stored = TaskRecord::decode(records.get("once").await?.context("record")?.as_ref())?;
    assert_eq!(stored.state(), TaskState::Succeeded, "{stored:?}\n{}", second.log());
    assert_eq!(stored.attempt, assigned.attempt);
    assert!(!second.log().contains("task assigned"), "ran again:\n{}", second.log());
    assert_eq!(mon.log().matches("task started").count(), 1, "{}", mon.log());
    Ok(())
}
