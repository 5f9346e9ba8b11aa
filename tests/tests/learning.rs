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
    // a snapshot with both cells (the workload on each worker's hardware) loaded by the scheduler
    all.wait_for_log("pairs=2", WAIT).await?;

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

fn result(task: &str, name: &str, worker: &str, hardware: &str, secs: f64) -> ExecutionResult {
    ExecutionResult {
        task_id: task.into(),
        attempt: 1,
        worker_id: worker.into(),
        hardware_class: hardware.into(),
        name: name.into(),
        test_type: "train".into(),
        status: hwsched_proto::v1::TaskStatus::Succeeded as i32,
        duration_s: secs,
        ..Default::default()
    }
}

/// One cell of `hwsched model -o json`: (workload, hardware, source, runtime, runs).
type Cell = (String, String, String, f64, u64);

/// Runs `hwsched model -o json` and returns its cells.
fn model_cells(url: &str) -> anyhow::Result<Vec<Cell>> {
    let out = std::process::Command::new(hwsched_tests::hwsched_bin()?)
        .args(["model", "-o", "json"])
        .env("HWSCHED_NATS_URL", url)
        .output()?;
    anyhow::ensure!(out.status.success(), "hwsched model: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let cells = v["cells"].as_array().cloned().unwrap_or_default();
    Ok(cells
        .iter()
        .map(|c| {
            (
                c["workload"].as_str().unwrap_or("").to_string(),
                c["hardware"].as_str().unwrap_or("").to_string(),
                c["source"].as_str().unwrap_or("").to_string(),
                c["runtime_s"].as_f64().unwrap_or(0.0),
                c["runs"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Results in → snapshot in KV with a prediction for the pair never run; a
/// restarted learner keeps what it learned (no ClickHouse); one whose snapshot
/// is gone relearns it from the results stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learner_predicts_unseen_pairs_and_survives_restarts() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    // "a" ran on both classes (the gpu 10x faster), "b" only on the cpu
    let mut n = 0;
    for (name, hw, secs) in [("a", "cpu", 100.0), ("a", "gpu", 10.0), ("b", "cpu", 60.0)] {
        for _ in 0..5 {
            n += 1;
            let r = result(&format!("t{n}"), name, &format!("w-{hw}"), hw, secs);
            b.jetstream()
                .publish(b.subjects().results(&r.worker_id, &r.task_id), r.encode_to_vec().into())
                .await?
                .await?;
        }
    }
    let env = [("HWSCHED_LEARNER_PUBLISH_MS", "200".to_string())];
    let mut own_metrics = b.client().subscribe("hws.metrics.hwsched-learner").await?;
    let mut learner = Proc::spawn("learner", &nats.url(), &["learner"], &env)?;
    learner.wait_for_log("learner ready", WAIT).await?;
    // its error and size go to the metrics stream (and so to ClickHouse's hw_metrics)
    let batch = loop {
        let m = tokio::time::timeout(WAIT, own_metrics.next()).await?.expect("learner metrics");
        let batch = hwsched_proto::v1::MetricsBatch::decode(m.payload.as_ref())?;
        // snapshots may be published while the stream is still being read
        if batch.samples.iter().any(|s| s.metric == "learner.pairs" && s.value == 3.0) {
            break batch;
        }
    };
    assert!(batch.samples.iter().any(|s| s.metric == "learner.prediction_mape" && s.device == "1-4"), "{batch:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let cells = loop {
        let cells = model_cells(&nats.url()).unwrap_or_default();
        if cells.iter().filter(|c| c.2 == "observed").count() == 3 || tokio::time::Instant::now() > deadline {
            break cells;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let unseen = cells.iter().find(|c| c.0 == "train/-/b" && c.1 == "gpu").expect("b on the gpu predicted");
    assert_eq!(unseen.2, "factor", "{cells:?}");
    assert!((4.0..9.0).contains(&unseen.3), "b on the gpu: about 6 s, got {}", unseen.3);

    // restart: the snapshot is read back, nothing relearned
    learner.terminate(WAIT).await?;
    let mut learner = Proc::spawn("learner", &nats.url(), &["learner"], &env)?;
    learner.wait_for_log("learner ready pairs=3", WAIT).await?;
    learner.terminate(WAIT).await?;

    // the snapshot lost: relearned from the results stream
    let kv = hwsched_bus::streams::bucket(&b, "hws_model").await?;
    kv.purge(hwsched_model::SNAPSHOT_KEY).await?;
    let learner = Proc::spawn("learner", &nats.url(), &["learner"], &env)?;
    learner.wait_for_log("relearning from the results stream", WAIT).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cells = model_cells(&nats.url()).unwrap_or_default();
        if cells.iter().filter(|c| c.2 == "observed").count() == 3 {
            let a = cells.iter().find(|c| c.0 == "train/-/a" && c.1 == "gpu").expect("a on the gpu");
            assert!((a.3 - 10.0).abs() < 0.5, "{cells:?}");
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not relearned: {cells:?}\n{}", learner.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A learner without a snapshot relearns from ClickHouse's task_runs, and does
/// not learn twice the results the stream still holds that are in that history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_without_snapshot_relearns_from_clickhouse() -> anyhow::Result<()> {
    let db = hwsched_testkit::TestDb::create().await?;
    let store = hwsched_store::Store::connect_and_migrate(&db.config).await?;
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    let now = hwsched_bus::now_ms();
    let history: Vec<ExecutionResult> = (0..10)
        .map(|i| ExecutionResult {
            finished_at_ms: now - 60_000 + i * 1000,
            ..result(&format!("h{i}"), "a", "w1", "cpu", 30.0)
        })
        .collect();
    store.insert_runs(&history).await?;
    // the stream still holds the same results, and one the history does not have
    let newer = ExecutionResult { finished_at_ms: now, ..result("n1", "b", "w2", "gpu", 5.0) };
    for r in history.iter().chain([&newer]) {
        b.jetstream().publish(b.subjects().results(&r.worker_id, &r.task_id), r.encode_to_vec().into()).await?.await?;
    }
    let env = [
        ("HWSCHED_LEARNER_PUBLISH_MS", "200".to_string()),
        ("HWSCHED_CLICKHOUSE_URL", db.config.url.clone().unwrap_or_default()),
        ("HWSCHED_CLICKHOUSE_DATABASE", db.config.database.clone()),
    ];
    let learner = Proc::spawn("learner", &nats.url(), &["learner"], &env)?;
    learner.wait_for_log("relearned from ClickHouse", WAIT).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cells = model_cells(&nats.url()).unwrap_or_default();
        let observed: Vec<_> = cells.iter().filter(|c| c.2 == "observed").collect();
        if observed.len() == 2 {
            let a = observed.iter().find(|c| c.0 == "train/-/a").expect("a from the history");
            assert_eq!(a.4, 10, "each attempt learned once: {cells:?}");
            assert!((a.3 - 30.0).abs() < 0.5, "{cells:?}");
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "not learned: {cells:?}\n{}", learner.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // its prediction error reaches ClickHouse through the recorder, like any metric
    let _recorder = Proc::spawn("recorder", &nats.url(), &["recorder"], &env)?;
    let ch = db.client();
    let rows: u64 = hwsched_testkit::eventually(WAIT, || {
        let ch = ch.clone();
        async move {
            let n: u64 = ch
                .query("SELECT count() FROM hw_metrics WHERE worker_id = 'hwsched-learner' AND metric = 'learner.prediction_mape'")
                .fetch_one()
                .await?;
            Ok((n > 0).then_some(n))
        }
    })
    .await?;
    assert!(rows > 0);
    Ok(())
}
