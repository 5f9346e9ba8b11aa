//! Faults the system survives: a worker killed with SIGKILL (its task is
//! placed again elsewhere), a test that fails on one kind of hardware (retried
//! on another kind), and a nats-server restart (every service reconnects and
//! the next task still runs).

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEvent, TaskEventKind, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, sh_task, submit, Proc};

const WAIT: Duration = Duration::from_secs(30);

fn monitor(nats: &NatsServer, id: &str) -> anyhow::Result<Proc> {
    Proc::spawn(id, &nats.url(), &["monitor", "--worker-id", id, "--slots", "1", "--interval-ms", "200"], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_of_a_killed_worker_is_placed_on_another() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[("HWSCHED_WORKER_TIMEOUT_MS", "1500".into())])?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let mut a = monitor(&nats, "w-a")?;
    let mut b = monitor(&nats, "w-b")?;
    a.wait_for_log("monitor ready", WAIT).await?;
    b.wait_for_log("monitor ready", WAIT).await?;
    sched.wait_for_log("worker joined worker_id=\"w-b\"", WAIT).await?;
    sched.wait_for_log("worker joined worker_id=\"w-a\"", WAIT).await?;

    let bus = bus(&nats.url()).await?;
    let mut events = bus.client().subscribe("hws.events.survivor").await?;
    let mut results = bus.client().subscribe("hws.results.*.survivor").await?;
    let task =
        TaskRequest { task_id: "survivor".into(), command: vec!["sleep".into(), "1".into()], ..Default::default() };
    submit(&bus, &task).await?;
    let victim = loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Started {
            break ev.worker_id;
        }
    };
    let lost_at = std::time::Instant::now();
    if victim == "w-a" {
        a.kill()
    } else {
        b.kill()
    };

    let m = tokio::time::timeout(WAIT, results.next()).await?.expect("result");
    let r = ExecutionResult::decode(m.payload.as_ref())?;
    assert_ne!(r.worker_id, victim, "re-placed on the survivor");
    assert_eq!(r.attempt, 2);
    assert_eq!(r.status(), TaskStatus::Succeeded);
    // detection (1.5 s timeout) + 1 s run, with slack for a loaded machine
    assert!(lost_at.elapsed() < Duration::from_secs(10), "took {:?}", lost_at.elapsed());
    let log = sched.log();
    assert!(log.contains("attempt lost, task queued again") && log.contains(&format!("worker {victim} lost")), "{log}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_on_other_hardware() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let cpu1 = monitor(&nats, "w-cpu1")?;
    sched.wait_for_log("worker joined worker_id=\"w-cpu1\"", WAIT).await?;

    // The first attempt can only go to w-cpu1; it fails after a second, once.
    let dir = tempfile::tempdir()?;
    let mark = dir.path().join("failed-once");
    let script = format!("sleep 1; test -f {m} || {{ touch {m}; exit 3; }}", m = mark.display());
    let bus = bus(&nats.url()).await?;
    let mut results = bus.client().subscribe("hws.results.*.flaky-kernel").await?;
    submit(&bus, &sh_task("flaky-kernel", &script)).await?;
    // Meanwhile a second worker of the same hardware and one with an NPU join.
    let cpu2 = monitor(&nats, "w-cpu2")?;
    let npu = Proc::spawn(
        "w-npu",
        &nats.url(),
        &["monitor", "--worker-id", "w-npu", "--slots", "1", "--interval-ms", "200", "--accelerator", "npu=1"],
        &[],
    )?;
    sched.wait_for_log("worker joined worker_id=\"w-cpu2\"", WAIT).await?;
    sched.wait_for_log("worker joined worker_id=\"w-npu\"", WAIT).await?;

    let first =
        ExecutionResult::decode(tokio::time::timeout(WAIT, results.next()).await?.expect("first").payload.as_ref())?;
    assert_eq!((first.worker_id.as_str(), first.attempt, first.status()), ("w-cpu1", 1, TaskStatus::Failed));
    let second =
        ExecutionResult::decode(tokio::time::timeout(WAIT, results.next()).await?.expect("second").payload.as_ref())?;
    assert_eq!(second.attempt, 2);
    assert_eq!(second.status(), TaskStatus::Succeeded);
    // not the idle worker of the same hardware: the one of another kind
    assert_eq!(second.worker_id, "w-npu", "{second:?}");
    assert_ne!(second.hardware_class, first.hardware_class);
    assert_eq!(second.hardware_class, "accel:npu");
    drop((cpu1, cpu2, npu));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reconnect_after_a_nats_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start()?;
    let all = Proc::spawn("hwsched all", &nats.url(), &["all"], &[])?;
    all.wait_for_log("scheduler ready", WAIT).await?;
    let mon = monitor(&nats, "w-r")?;
    mon.wait_for_log("monitor ready", WAIT).await?;
    {
        let b = bus(&nats.url()).await?;
        let mut results = b.client().subscribe("hws.results.*.before").await?;
        submit(&b, &TaskRequest { task_id: "before".into(), command: vec!["true".into()], ..Default::default() })
            .await?;
        tokio::time::timeout(WAIT, results.next()).await?.expect("result before restart");
    }

    nats.restart()?;

    let b = bus(&nats.url()).await?;
    let mut results = b.client().subscribe("hws.results.*.after").await?;
    submit(&b, &TaskRequest { task_id: "after".into(), command: vec!["true".into()], ..Default::default() }).await?;
    let m = tokio::time::timeout(Duration::from_secs(60), results.next())
        .await
        .map_err(|_| anyhow::anyhow!("no result after restart\nall:\n{}\nmonitor:\n{}", all.log(), mon.log()))?
        .expect("result");
    assert_eq!(ExecutionResult::decode(m.payload.as_ref())?.status(), TaskStatus::Succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_forged_on_another_workers_subject_is_ignored() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = hwsched_tests::scheduler(&nats.url()).await?;
    let mon = hwsched_tests::monitor(&nats.url(), "w-real", 1).await?;
    let b = bus(&nats.url()).await?;
    let mut events = b.client().subscribe("hws.events.victim").await?;
    submit(&b, &sh_task("victim", "sleep 3; exit 0")).await?;
    loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        if TaskEvent::decode(m.payload.as_ref())?.kind() == TaskEventKind::Started {
            break;
        }
    }
    // a result claiming to be w-real's, sent on another worker's subject
    let forged = ExecutionResult {
        task_id: "victim".into(),
        attempt: 1,
        worker_id: "w-real".into(),
        status: TaskStatus::Failed as i32,
        exit_code: 66,
        ..Default::default()
    };
    let ack =
        b.jetstream().publish(b.subjects().results("w-evil", "victim"), forged.encode_to_vec().into()).await?.await?;
    // once the scheduler has acknowledged it, the task is still running
    let results = b.jetstream().get_stream("HWS_RESULTS").await?;
    hwsched_testkit::eventually(WAIT, || {
        let results = results.clone();
        async move {
            let c = results.consumer_info("scheduler").await?;
            Ok((c.ack_floor.stream_sequence >= ack.sequence).then_some(()))
        }
    })
    .await?;
    let out = hwsched_tests::cli_async(&nats.url(), &["explain", "victim"]).await?;
    assert!(out.stdout.contains("state      assigned, attempt 1"), "{}", out.stdout);
    // and the real result ends it
    let ended = loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Finished {
            break ev;
        }
    };
    assert_eq!(ended.reason, TaskStatus::Succeeded.as_str_name());
    mon.stop().await?;
    sched.stop().await
}
