//! Shutdown and restart: SIGTERM lets a monitor finish what it runs, a
//! scheduler killed with SIGKILL mid-run loses no task it acknowledged, and a
//! service whose NATS server is gone still stops on one SIGTERM.

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEvent, TaskEventKind, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, sleep_task, submit, Proc, ResultCount};

const WAIT: Duration = Duration::from_secs(45);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_monitor_finish_its_running_task() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let all = Proc::spawn("hwsched all", &nats.url(), &["all"], &[])?;
    all.wait_for_log("scheduler ready", WAIT).await?;
    let mut mon = Proc::spawn("hwsched monitor", &nats.url(), &["monitor", "--worker-id", "w-term"], &[])?;
    mon.wait_for_log("monitor ready", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let mut events = b.client().subscribe("hws.events.long-1").await?;
    let mut results = b.client().subscribe("hws.results.*.long-1").await?;
    let mut heartbeats = b.client().subscribe("hws.workers.w-term.heartbeat").await?;
    submit(&b, &sleep_task("long-1", "1.5")).await?;
    loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        if TaskEvent::decode(m.payload.as_ref())?.kind() == TaskEventKind::Started {
            break;
        }
    }
    let status = mon.terminate(WAIT).await?;
    assert!(status.success(), "exit {status}\n{}", mon.log());
    // it said it was leaving while it drained, and that it left
    let mut states = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), heartbeats.next()).await {
        states.push(hwsched_proto::v1::WorkerHeartbeat::decode(m.payload.as_ref())?.state());
    }
    use hwsched_proto::v1::WorkerState;
    assert!(states.contains(&WorkerState::Draining), "{states:?}");
    assert_eq!(states.last(), Some(&WorkerState::Offline), "{states:?}");
    // The result was published before the monitor exited.
    let m = tokio::time::timeout(Duration::from_secs(1), results.next()).await?.expect("result");
    let r = ExecutionResult::decode(m.payload.as_ref())?;
    assert_eq!(r.status(), TaskStatus::Succeeded);
    assert!(r.duration_s >= 1.5, "{}", r.duration_s);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_killed_mid_run_loses_no_accepted_task() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut sched = Proc::spawn("scheduler #1", &nats.url(), &["scheduler"], &[])?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let mon = Proc::spawn(
        "monitor",
        &nats.url(),
        &["monitor", "--worker-id", "w-1", "--slots", "2", "--interval-ms", "200"],
        &[],
    )?;
    mon.wait_for_log("monitor ready", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let mut results = ResultCount::subscribe(&b).await?;
    const N: usize = 30;
    for i in 0..N {
        submit(&b, &sleep_task(&format!("k-{i}"), "0.1")).await?;
    }
    // Let some finish, then kill -9 the scheduler while the rest is queued or running.
    results.until(5, WAIT, String::new).await?;
    sched.kill();
    let sched2 = Proc::spawn("scheduler #2", &nats.url(), &["scheduler"], &[])?;
    sched2.wait_for_log("scheduler ready", WAIT).await?;
    results.until(N, WAIT, || format!("scheduler #2 log:\n{}", sched2.log())).await?;
    // At-least-once: a kill between sending an assignment and recording it may rerun one attempt.
    assert!(results.duplicates() <= 2, "{} duplicate runs: {:?}", results.duplicates(), results.done);
    Ok(())
}

/// With the NATS server gone, draining the connection can never finish, and a
/// request (the scheduler's lease renewal, its takeover) waits out its timeout:
/// one SIGTERM must still stop the service, after a bounded wait.
async fn stops_with_its_nats_server_gone(service: &str, ready: &str) -> anyhow::Result<()> {
    let mut nats = NatsServer::start()?;
    let mut proc = Proc::spawn(&format!("hwsched {service}"), &nats.url(), &[service], &[])?;
    proc.wait_for_log(ready, WAIT).await?;
    nats.kill();
    proc.wait_for_log("NATS connection lost", WAIT).await?;
    let started = std::time::Instant::now();
    let status = proc.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "exit {status}\n{}", proc.log());
    assert!(proc.log().contains("not drained in time"), "{}", proc.log());
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}\n{}", started.elapsed(), proc.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_service_whose_nats_server_is_gone() -> anyhow::Result<()> {
    stops_with_its_nats_server_gone("alerting", "alerting ready").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_active_scheduler_whose_nats_server_is_gone() -> anyhow::Result<()> {
    stops_with_its_nats_server_gone("scheduler", "became the active scheduler").await
}
