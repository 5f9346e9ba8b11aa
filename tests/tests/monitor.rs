//! The monitor on this machine's real hardware, against a real nats-server:
//! telemetry at 1 Hz, per-task CPU of concurrent tasks, cancel, and a monitor
//! killed mid-task that, restarted, neither loses nor re-runs the attempt.

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{CancelReply, CancelTask, ExecutionResult, MetricsBatch, TaskEvent, TaskEventKind, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, monitor, scheduler, sh_task, submit, Proc};

const WAIT: Duration = Duration::from_secs(30);

async fn result_of(sub: &mut async_nats::Subscriber) -> anyhow::Result<ExecutionResult> {
    let m = tokio::time::timeout(WAIT, sub.next()).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    Ok(ExecutionResult::decode(m.payload.as_ref())?)
}

async fn until_started(events: &mut async_nats::Subscriber) -> anyhow::Result<TaskEvent> {
    loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Started {
            return Ok(ev);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_arrives_every_second() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut cfg = hwsched_monitor::MonitorConfig::for_tests();
    cfg.worker_id = Some("hz".into());
    let mon = hwsched_tests::InProcess::start(&nats.url(), |b, t, s| hwsched_monitor::run(cfg, b, t, s)).await?;
    let client = async_nats::connect(nats.url()).await?;
    let mut sub = client.subscribe("hws.metrics.hz").await?;
    let mut stamps = Vec::new();
    while stamps.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await?.expect("batch");
        let b = MetricsBatch::decode(m.payload.as_ref())?;
        assert!(b.samples.iter().any(|s| s.metric == "cpu.util_pct" && s.device == "cpu"));
        stamps.push(b.timestamp_ms);
    }
    for w in stamps.windows(2) {
        let gap = w[1] - w[0];
        // 1 Hz, with room for a loaded CI machine delaying a tick
        assert!((500..=1500).contains(&gap), "batches {gap} ms apart: {stamps:?}");
    }
    mon.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_tasks_get_their_own_cpu_numbers() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w-cpu", 2).await?;
    let b = bus(&nats.url()).await?;
    let mut burn_r = b.client().subscribe("hws.results.*.burn").await?;
    let mut idle_r = b.client().subscribe("hws.results.*.idle").await?;
    let burn = TaskRequest {
        task_id: "burn".into(),
        command: vec![
            "python3".into(),
            "-c".into(),
            "import time\nt = time.time()\nwhile time.time() - t < 2: pass".into(),
        ],
        ..Default::default()
    };
    submit(&b, &burn).await?;
    submit(
        &b,
        &TaskRequest { task_id: "idle".into(), command: vec!["sleep".into(), "2".into()], ..Default::default() },
    )
    .await?;
    let (burn, idle) = (result_of(&mut burn_r).await?, result_of(&mut idle_r).await?);
    assert_eq!(burn.worker_id, idle.worker_id, "ran side by side on one worker");
    let (bu, iu) = (burn.resources.expect("burn usage"), idle.resources.expect("idle usage"));
    assert!(bu.samples >= 4 && iu.samples >= 4, "{bu:?} {iu:?}");
    assert!(bu.cpu_avg_pct > 40.0, "burner: {bu:?}");
    assert!(iu.cpu_peak_pct < 10.0, "idle: {iu:?}");
    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_task_and_a_queued_one() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w-cancel", 1).await?;
    let b = bus(&nats.url()).await?;
    let mut events = b.client().subscribe("hws.events.long").await?;
    let mut results = b.client().subscribe("hws.results.*.long").await?;
    submit(&b, &sh_task("long", "sleep 30")).await?;
    submit(&b, &sh_task("behind", "sleep 30")).await?; // one slot: waits in the queue
    until_started(&mut events).await?;
    let cancel = |id: &str| {
        let req = CancelTask { task_id: id.into(), reason: "test".into(), ..Default::default() };
        let client = b.client().clone();
        async move {
            let m = client.request("hws.control.cancel", req.encode_to_vec().into()).await?;
            anyhow::Ok(CancelReply::decode(m.payload.as_ref())?)
        }
    };
    let started = std::time::Instant::now();
    let r = cancel("long").await?;
    assert!(r.found && r.detail.contains("on w-cancel"), "{r:?}");
    let res = result_of(&mut results).await?;
    assert_eq!(res.status(), TaskStatus::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(10));
    let r = cancel("behind").await?;
    assert!(r.found, "{r:?}");
    let r = cancel("nope").await?;
    assert!(!r.found);
    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_monitor_neither_loses_nor_reruns_an_attempt() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let dir = tempfile::tempdir()?;
    let log = dir.path().join("attempts.log");
    let sched = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let args = ["monitor", "--worker-id", "w-restart", "--slots", "1", "--ack-wait-s", "3", "--interval-ms", "200"];
    let mut first = Proc::spawn("monitor #1", &nats.url(), &args, &[])?;
    first.wait_for_log("monitor ready", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let mut events = b.client().subscribe("hws.events.once").await?;
    let mut results = b.client().subscribe("hws.results.*.once").await?;
    let marker = format!("{}.125", 400 + std::process::id() % 500);
    let script =
        format!("echo $HWSCHED_ATTEMPT >> {}; if [ $HWSCHED_ATTEMPT = 1 ]; then sleep {marker}; fi", log.display());
    let mut t = sh_task("once", &script);
    t.max_attempts = 2;
    submit(&b, &t).await?;
    until_started(&mut events).await?;
    first.kill(); // SIGKILL: no drain; the attempt's process group outlives it

    let second = Proc::spawn("monitor #2", &nats.url(), &args, &[])?;
    second.wait_for_log("monitor ready", WAIT).await?;
    // attempt 1 comes back to the new monitor: reported interrupted, its orphan killed, not run again
    let r1 = result_of(&mut results)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nmonitor #2:\n{}\nscheduler:\n{}", second.log(), sched.log()))?;
    assert_eq!((r1.attempt, r1.status()), (1, TaskStatus::Error), "{r1:?}");
    assert!(r1.error.contains("interrupted"), "{}", r1.error);
    // the sleep itself (anchored: the retry's `sh -c` carries the same words in its script)
    let left = std::process::Command::new("pgrep").args(["-f", &format!("^sleep {marker}$")]).output()?;
    assert!(left.stdout.is_empty(), "orphan of attempt 1 still running: {}", String::from_utf8_lossy(&left.stdout));
    second.wait_for_log("attempt was started before this monitor restarted", WAIT).await?;
    // the retry runs once
    let r2 = result_of(&mut results)
        .await
        .map_err(|e| anyhow::anyhow!("{e}\nmonitor #2:\n{}\nscheduler:\n{}", second.log(), sched.log()))?;
    assert_eq!((r2.attempt, r2.status()), (2, TaskStatus::Succeeded), "{r2:?}");
    assert_eq!(std::fs::read_to_string(&log)?, "1\n2\n", "each attempt ran exactly once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_taken_while_nats_is_down_arrive_after_it_is_back() -> anyhow::Result<()> {
    let mut nats = NatsServer::start()?;
    let mut cfg = hwsched_monitor::MonitorConfig::for_tests();
    cfg.worker_id = Some("buffered".into());
    cfg.interval_ms = 250;
    let mon = hwsched_tests::InProcess::start(&nats.url(), |b, t, s| hwsched_monitor::run(cfg, b, t, s)).await?;
    let b = bus(&nats.url()).await?;
    let mut live = b.client().subscribe("hws.metrics.buffered").await?;
    tokio::time::timeout(WAIT, live.next()).await?.expect("flowing");
    drop(live);
    drop(b);
    nats.kill();
    let down_from = hwsched_bus::now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down_to = hwsched_bus::now_ms();
    nats.restart()?;

    // read the stream until batches from after the outage are there
    let b = bus(&nats.url()).await?;
    let stream = b.jetstream().get_stream("HWS_METRICS").await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: "hws.metrics.buffered".into(),
            ..Default::default()
        })
        .await?;
    let mut stamps: Vec<i64> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !stamps.iter().any(|t| *t > down_to + 500) && tokio::time::Instant::now() < deadline {
        let mut batch = consumer.fetch().max_messages(500).expires(Duration::from_millis(500)).messages().await?;
        while let Some(Ok(m)) = batch.next().await {
            stamps.push(MetricsBatch::decode(m.payload.as_ref())?.timestamp_ms);
            let _ = m.ack().await;
        }
    }
    let during = stamps.iter().filter(|t| **t > down_from + 250 && **t < down_to - 250).count();
    assert!(during >= 6, "{during} batches from the 3 s outage were delivered: {stamps:?}");
    let mut sorted = stamps.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), stamps.len(), "no batch stored twice");
    mon.stop().await
}
