//! One shutdown path, also when nobody sent a signal: a long-lived component
//! that ends stops its whole service, which drains as on SIGTERM, exits
//! non-zero within a bounded time and names the component.

use std::time::Duration;

use futures::StreamExt;
use hwsched_bus::{streams, Stream};
use hwsched_monitor::telemetry::LoopError;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEvent, TaskEventKind, TaskStatus, WorkerHeartbeat, WorkerState},
    Message,
};
use hwsched_testkit::{NatsServer, TestDb};
use hwsched_tests::{bus, sleep_task, submit, Proc};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// Deleting a recorder consumer ends that sink's message stream: before, the
/// other sinks went on and `/readyz` said ready until someone sent SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_sink_whose_consumer_is_deleted_stops_the_recorder() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    let env = [
        ("HWSCHED_CLICKHOUSE_URL", db.config.url.clone().unwrap_or_default()),
        ("HWSCHED_CLICKHOUSE_DATABASE", db.config.database.clone()),
    ];
    let mut recorder = Proc::spawn("recorder", &nats.url(), &["recorder"], &env)?;
    recorder.wait_for_log("recorder ready", WAIT).await?;
    // the sinks create their consumers once running
    hwsched_testkit::eventually(WAIT, || async { Ok(streams::recorder_consumer(&b, Stream::Results).await) }).await?;

    let results = b.jetstream().get_stream(b.subjects().stream(Stream::Results)).await?;
    results.delete_consumer(streams::RECORDER_DURABLE).await?;
    let started = std::time::Instant::now();
    let status = recorder.wait_exit(WAIT).await?;
    let log = recorder.log();
    assert!(!status.success(), "exit {status}\n{log}");
    assert!(log.contains("results sink"), "the log names the sink:\n{log}");
    assert!(log.contains("results consumer closed"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    Ok(())
}

/// A consumer deleted before its first pull (or between two pulls) is only
/// reported as "no responders" and then as missed heartbeats: async-nats
/// never ends that stream, so a service reading it looked healthy and read
/// nothing. The race made the recorder test above fail once in CI; this
/// makes it certain by deleting the consumer before the stream is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_deleted_between_pulls_ends_its_message_stream() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    streams::provision(&b).await?;
    let durable = streams::Durable::new(Stream::Results, "gone-early");
    let consumer = streams::durable(&b, &durable).await?;
    let results = b.jetstream().get_stream(b.subjects().stream(Stream::Results)).await?;
    results.delete_consumer("gone-early").await?;

    let mut messages = hwsched_bus::consume::messages(consumer).await?;
    let mut errors = 0;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(item) = messages.next().await {
            assert!(item.is_err(), "a deleted consumer delivered a message");
            errors += 1;
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a deleted consumer did not end within {WAIT:?}");
    assert!(errors <= 1, "{errors} errors before the end");
    // a reader that saw the end (the scheduler's batch reader) may poll once more
    assert!(messages.next().await.is_none(), "an ended stream yielded again");

    // a consumer that exists goes on delivering
    let mut alive = streams::consume(&b, &streams::Durable::new(Stream::Results, "alive")).await?;
    let subject = b.subjects().results("w-1", "t-1");
    b.jetstream().publish(subject.clone(), "x".into()).await?.await?;
    let got = tokio::time::timeout(WAIT, alive.next()).await?;
    assert!(matches!(got, Some(Ok(ref m)) if m.subject.as_str() == subject), "{got:?}");
    Ok(())
}

/// Nothing outside the process can end the monitor's telemetry loop (it ends
/// only when the host's statistics cannot be read or sampling panics), so the
/// test wraps the real loop and ends it while a task runs: the monitor must
/// stop taking work, let the task finish, say it went offline, and return an
/// error naming the loop. Before, it kept running without heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_whose_telemetry_loop_ends_drains_and_stops() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let scheduler = hwsched_tests::scheduler(&nats.url()).await?;
    let b = bus(&nats.url()).await?;
    let mut events = b.client().subscribe("hws.events.tele-1").await?;
    let mut results = b.client().subscribe("hws.results.*.tele-1").await?;
    let mut heartbeats = b.client().subscribe("hws.workers.w-tele.heartbeat").await?;

    let mut cfg = hwsched_monitor::MonitorConfig::for_tests();
    cfg.worker_id = Some("w-tele".into());
    cfg.slots = Some(1);
    cfg.interval_ms = 200;
    let (end, ended) = tokio::sync::oneshot::channel::<()>();
    let connection = bus(&nats.url()).await?;
    let monitor = tokio::spawn(hwsched_monitor::run_with(
        cfg,
        connection.clone(),
        hwsched_telemetry::Telemetry::new(),
        CancellationToken::new(),
        move |ticker, stop| async move {
            tokio::select! {
                r = ticker.run(stop) => r,
                _ = ended => Err(LoopError::SamplingPanicked),
            }
        },
    ));
    submit(&b, &sleep_task("tele-1", "1.5")).await?;
    loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        if TaskEvent::decode(m.payload.as_ref())?.kind() == TaskEventKind::Started {
            break;
        }
    }
    let _ = end.send(());
    let stopped = tokio::time::timeout(WAIT, monitor)
        .await
        .map_err(|_| anyhow::anyhow!("the monitor went on without its telemetry loop for {WAIT:?}"))??;
    let err = stopped.expect_err("a monitor whose telemetry loop ended stops with an error");
    connection.client().flush().await?; // as the binary drains its connection
    assert!(format!("{err:#}").contains("telemetry failed: host sampling panicked"), "{err:#}");

    // the running task was let finish, as on SIGTERM
    let m = tokio::time::timeout(Duration::from_secs(1), results.next()).await?.expect("result");
    let r = ExecutionResult::decode(m.payload.as_ref())?;
    assert_eq!(r.status(), TaskStatus::Succeeded, "{}", r.error);
    assert!(r.duration_s >= 1.5, "{}", r.duration_s);
    // and the worker said it left
    let mut last = None;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), heartbeats.next()).await {
        last = Some(WorkerHeartbeat::decode(m.payload.as_ref())?.state());
    }
    assert_eq!(last, Some(WorkerState::Offline));
    scheduler.stop().await
}

/// The metrics endpoint is a component too: when it cannot serve (its port is
/// taken), the service stops and says so instead of running without
/// `/metrics` and `/readyz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_endpoint_that_cannot_serve_stops_the_service() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?.to_string();
    let mut alerting = Proc::spawn("alerting", &nats.url(), &["alerting"], &[("HWSCHED_METRICS_LISTEN", addr)])?;
    let status = alerting.wait_exit(WAIT).await?;
    let log = alerting.log();
    assert!(!status.success(), "exit {status}\n{log}");
    assert!(log.contains("metrics endpoint"), "the log names the endpoint:\n{log}");
    Ok(())
}
