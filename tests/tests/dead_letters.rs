//! Garbage on the durable subjects (a result, a metrics batch, an assignment)
//! is never dropped silently: each service that consumes it keeps it on
//! `hws.deadletter.<who>` (stream `HWS_DEADLETTER`) with the reason and the
//! subject it came on, terminates it, and goes on with the good messages.
//! Real binaries (`hwsched all` with ClickHouse, a real monitor), a real
//! nats-server.

use std::{collections::BTreeSet, time::Duration};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use hwsched_bus::{DEAD_REASON, DEAD_SUBJECT};
use hwsched_proto::v1::{ExecutionResult, TaskStatus};
use hwsched_testkit::{NatsServer, TestDb};
use hwsched_tests::{bus, sh_task, submit, Proc};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_messages_become_dead_letters_with_reasons_and_work_goes_on() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let db = TestDb::create().await?;
    let env = [
        ("HWSCHED_CLICKHOUSE_URL", db.config.url.clone().unwrap_or_default()),
        ("HWSCHED_CLICKHOUSE_DATABASE", db.config.database.clone()),
    ];
    let all = Proc::spawn("hwsched all", &nats.url(), &["all"], &env)?;
    all.wait_for_log("scheduler ready", WAIT).await?;
    all.wait_for_log("ClickHouse schema ready", WAIT).await?;
    let monitor = Proc::spawn("monitor", &nats.url(), &["monitor", "--worker-id", "dl-w"], &[])?;
    monitor.wait_for_log("monitor ready", WAIT).await?;
    let b = bus(&nats.url()).await?;
    let js = b.jetstream();

    // not protobuf (a field with wire type 7 does not exist), not JSON either
    let garbage = || bytes::Bytes::from_static(b"\x0f\xff\xff\xff garbage");
    js.publish("hws.results.dl-w.no-such-task", garbage()).await?.await?;
    js.publish("hws.metrics.dl-w", garbage()).await?.await?;
    js.publish("hws.assign.dl-w", garbage()).await?.await?;

    // every consumer of those subjects keeps its own dead letter
    let want: BTreeSet<(String, String)> = [
        ("hws.deadletter.scheduler", "hws.results.dl-w.no-such-task"),
        ("hws.deadletter.learner", "hws.results.dl-w.no-such-task"),
        ("hws.deadletter.recorder", "hws.results.dl-w.no-such-task"),
        ("hws.deadletter.recorder", "hws.metrics.dl-w"),
        ("hws.deadletter.dl-w", "hws.assign.dl-w"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let stream = js.get_stream("HWS_DEADLETTER").await?;
    let consumer =
        stream.create_consumer(OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() }).await?;
    let mut letters = consumer.messages().await?;
    let mut got = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < want.len() {
        let m = tokio::time::timeout_at(deadline, letters.next())
            .await
            .map_err(|_| anyhow::anyhow!("dead letters so far: {got:?}\n{}\n{}", all.log(), monitor.log()))?
            .ok_or_else(|| anyhow::anyhow!("dead letters closed"))??;
        let h = m.headers.clone().unwrap_or_default();
        let reason = h.get(DEAD_REASON).map(|v| v.to_string()).unwrap_or_default();
        let came_on = h.get(DEAD_SUBJECT).map(|v| v.to_string()).unwrap_or_default();
        assert!(reason.contains("undecodable"), "{}: reason {reason:?}", m.subject);
        assert_eq!(m.payload, garbage(), "the payload is kept as it came");
        got.insert((m.subject.to_string(), came_on));
    }
    assert_eq!(got, want);

    // and the work goes on: a task submitted afterwards runs on that monitor
    let mut results = b.client().subscribe("hws.results.dl-w.dl-after").await?;
    submit(&b, &sh_task("dl-after", "exit 0")).await?;
    let m = tokio::time::timeout(WAIT, results.next()).await?.ok_or_else(|| anyhow::anyhow!("no result"))?;
    let r: ExecutionResult = hwsched_bus::decode(m.headers.as_ref(), &m.payload)?;
    assert_eq!(r.status(), TaskStatus::Succeeded);
    Ok(())
}
