//! Learned preferences are live: the learner learns from real results that a
//! workload runs faster on one worker's hardware, publishes its model in KV, and
//! the scheduler then places that workload there.

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEvent, TaskEventKind, TaskRequest},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, submit, Proc};

const WAIT: Duration = Duration::from_secs(30);

fn workload(id: &str) -> TaskRequest {
    // 1.5 s on the plain worker, 0.1 s on the accelerated one
    let script = r#"if [ "$HWSCHED_WORKER_ID" = plain ]; then sleep 1.5; else sleep 0.1; fi"#;
    TaskRequest {
        task_id: id.into(),
        name: "kernel-bench".into(),
        test_type: "inference".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_places_by_what_the_learner_learned() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let all = Proc::spawn("hwsched all", &nats.url(), &["all"], &[("HWSCHED_LEARNER_PUBLISH_MS", "200".into())])?;
    all.wait_for_log("scheduler ready", WAIT).await?;
    let common = ["--slots", "1", "--interval-ms", "200"];
    let plain = Proc::spawn("plain", &nats.url(), &[&["monitor", "--worker-id", "plain"][..], &common].concat(), &[])?;
    let accel = Proc::spawn(
        "accel",
        &nats.url(),
        &[&["monitor", "--worker-id", "accel", "--accelerator", "x-fast=1"][..], &common].concat(),
        &[],
    )?;
    plain.wait_for_log("monitor ready", WAIT).await?;
    accel.wait_for_log("monitor ready", WAIT).await?;
    all.wait_for_log("worker joined worker_id=\"plain\"", WAIT).await?;
    all.wait_for_log("worker joined worker_id=\"accel\"", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let mut results = b.client().subscribe("hws.results.>").await?;
    let mut warm_events = b.client().subscribe("hws.events.>").await?;

    // Phase 1: both workers run the workload (one slot each), so both cells get observed.
    for i in 0..4 {
        submit(&b, &workload(&format!("warm-{i}"))).await?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let m = tokio::time::timeout(WAIT, results.next()).await?.expect("result");
        seen.insert(ExecutionResult::decode(m.payload.as_ref())?.worker_id);
    }
    assert_eq!(seen.len(), 2, "both workers ran it: {seen:?}");
    let mut finished = 0;
    while finished < 4 {
        let m = tokio::time::timeout(WAIT, warm_events.next()).await?.expect("event");
        if TaskEvent::decode(m.payload.as_ref())?.kind() == TaskEventKind::Finished {
            finished += 1;
        }
    }
    drop(warm_events);
    all.wait_for_log("model loaded", WAIT).await?;
    // let a snapshot with both cells reach the scheduler
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Phase 2: one at a time, both workers free: the learned runtime decides.
    for i in 0..3 {
        let id = format!("learned-{i}");
        let mut events = b.client().subscribe(format!("hws.events.{id}")).await?;
        submit(&b, &workload(&id)).await?;
        let m = tokio::time::timeout(WAIT, results.next()).await?.expect("result");
        let r = ExecutionResult::decode(m.payload.as_ref())?;
        // the next one only once the scheduler has processed this result (its slot is free again)
        loop {
            let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
            if TaskEvent::decode(m.payload.as_ref())?.kind() == TaskEventKind::Finished {
                break;
            }
        }
        assert_eq!(
            r.worker_id,
            "accel",
            "task {} went to {} ({:?})\n{}",
            r.task_id,
            r.worker_id,
            r.predicted_duration_s,
            all.log()
        );
        assert!(
            r.predicted_duration_s > 0.0 && r.predicted_duration_s < 1.0,
            "prediction carried: {}",
            r.predicted_duration_s
        );
    }
    Ok(())
}
