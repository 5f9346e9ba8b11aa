//! Submissions against the real scheduler and monitor (in-process) on a real
//! nats-server: invalid ones are rejected with reasons on `hws.tasks.rejected`
//! and to the producer's reply inbox, never blocking the queue; a duplicate
//! task_id never runs twice.

use std::time::Duration;

use futures::StreamExt;
use hwsched_bus::{MSG_ID, REPLY_TO};
use hwsched_proto::{
    v1::{ExecutionResult, SubmitReply, TaskEvent, TaskEventKind, TaskRejection, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, monitor, scheduler};

const WAIT: Duration = Duration::from_secs(20);

fn json_headers(reply: Option<&str>) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Content-Type", "application/json");
    if let Some(r) = reply {
        h.insert(REPLY_TO, r);
    }
    h
}

async fn next<T: Message + Default>(sub: &mut async_nats::Subscriber) -> anyhow::Result<T> {
    let m = tokio::time::timeout(WAIT, sub.next()).await?.ok_or_else(|| anyhow::anyhow!("subscription closed"))?;
    Ok(T::decode(m.payload.as_ref())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_are_rejected_with_reasons_and_the_queue_keeps_moving() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w1", 2).await?;
    let client = async_nats::connect(nats.url()).await?;
    let mut rejected = client.subscribe("hws.tasks.rejected").await?;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    let mut results = client.subscribe("hws.results.*.good-1").await?;
    // streams are provisioned by the services; wait until the scheduler consumes
    hwsched_testkit::eventually(WAIT, || {
        let js = async_nats::jetstream::new(client.clone());
        async move { Ok(js.get_stream("HWS_TASKS").await.ok().map(|_| ())) }
    })
    .await?;

    let cases: Vec<(&str, String, &str)> = vec![
        ("bad-json", "{not json".into(), "payload"),
        ("no-command", r#"{"task_id":"no-command"}"#.into(), "command"),
        (
            "neg-mem",
            r#"{"task_id":"neg-mem","command":["true"],"requirements":{"memory_mb":-512}}"#.into(),
            "requirements.memory_mb",
        ),
        ("prio", r#"{"task_id":"prio","command":["true"],"priority":9}"#.into(), "priority"),
        (
            "accel",
            r#"{"task_id":"accel","command":["true"],"requirements":{"accelerators":{"warp-drive":1}}}"#.into(),
            "requirements.accelerators",
        ),
        ("typo", r#"{"task_id":"typo","command":["true"],"memroy_mb":5}"#.into(), "memroy_mb"),
        ("wrong-type", r#"{"task_id":"wrong-type","command":"true"}"#.into(), "payload"),
        (
            "absurd-mem",
            r#"{"task_id":"absurd-mem","command":["true"],"requirements":{"memory_mb":1000000000000}}"#.into(),
            "requirements.memory_mb",
        ),
        (
            "absurd-cpu",
            r#"{"task_id":"absurd-cpu","command":["true"],"requirements":{"cpu_cores":1e9}}"#.into(),
            "requirements.cpu_cores",
        ),
        // ids become NATS subject tokens and KV keys: dots and wildcards would route elsewhere
        ("a.b.>", r#"{"task_id":"a.b.>","command":["true"]}"#.into(), "task_id"),
        ("tâche-ü", r#"{"task_id":"tâche-ü","command":["true"]}"#.into(), "task_id"),
        // a terminal escape in a name shown by `hwsched tasks` and in reports
        ("esc-name", r#"{"task_id":"esc-name","command":["true"],"name":"\u001b[2J\u001b[31mred"}"#.into(), "name"),
    ];
    for (id, body, _) in &cases {
        let mut h = json_headers(Some(&inbox));
        h.insert(MSG_ID, *id);
        client.publish_with_headers("hws.tasks.submit", h, body.clone().into()).await?;
    }
    // a valid task after all the bad ones still runs
    let good = r#"{"task_id":"good-1","command":["sh","-c","exit 0"]}"#;
    client.publish_with_headers("hws.tasks.submit", json_headers(None), good.into()).await?;

    for (id, _, field) in &cases {
        let r: TaskRejection = next(&mut rejected).await?;
        assert_eq!(&r.task_id, id, "rejections arrive in order with the original task_id");
        assert!(r.reasons.iter().any(|l| l.contains(field)), "{id}: expected {field} in {:?}", r.reasons);
        // JSON submissions get JSON replies
        let m = tokio::time::timeout(WAIT, replies.next()).await?.expect("reply");
        let reply: SubmitReply = serde_json::from_slice(&m.payload)?;
        assert_eq!(&reply.task_id, id);
        assert!(!reply.accepted && !reply.reasons.is_empty());
    }
    let res: ExecutionResult = next(&mut results).await?;
    assert_eq!(res.status(), TaskStatus::Succeeded);

    // unicode and shell syntax in a name are only text: accepted, run, and stored verbatim
    let name = "测试 ✓ $(rm -rf /); DROP TABLE task_runs; --";
    let body = serde_json::json!({"task_id": "text-name", "command": ["true"], "name": name}).to_string();
    let mut results = client.subscribe("hws.results.*.text-name").await?;
    client.publish_with_headers("hws.tasks.submit", json_headers(None), body.into()).await?;
    let res: ExecutionResult = next(&mut results).await?;
    assert_eq!((res.status(), res.name.as_str()), (TaskStatus::Succeeded, name));

    mon.stop().await?;
    sched.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_submissions_get_a_precise_error_and_the_queue_keeps_moving() -> anyhow::Result<()> {
    // a server that lets 4 MB messages through, so the task stream's own 1 MiB limit is what refuses
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 4MB\n")?;
    let nats = NatsServer::start_with_config(&conf, &[])?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w1", 2).await?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    let client = b.client().clone();
    let mut rejected = client.subscribe("hws.tasks.rejected").await?;
    let mut results = client.subscribe("hws.results.*.small").await?;
    let task = |id: &str, arg_bytes: usize| {
        serde_json::json!({"task_id": id, "command": ["echo", "x".repeat(arg_bytes)]}).to_string()
    };

    // 1.5 MB: JetStream refuses it at the stream, and says why
    let err = b
        .jetstream()
        .publish_with_headers("hws.tasks.submit", json_headers(None), task("big", 1_500_000).into())
        .await?
        .await
        .expect_err("a message over the stream's limit is refused");
    assert!(err.to_string().contains("maximum"), "{err}");
    // 5 MB: over the server's max_payload, the client refuses before sending
    let err = client
        .publish("hws.tasks.submit", task("huge", 5_000_000).into())
        .await
        .expect_err("a message over max_payload is refused");
    assert!(err.to_string().contains("payload"), "{err}");
    // 600 KB: stored, then refused by validation naming the field and the limit
    let ack = b.jetstream().publish_with_headers("hws.tasks.submit", json_headers(None), task("mid", 600_000).into());
    ack.await?.await?;
    let r: TaskRejection = next(&mut rejected).await?;
    assert_eq!(r.task_id, "mid");
    assert!(r.reasons.iter().any(|l| l.contains("command") && l.contains("at most 131072")), "{:?}", r.reasons);
    // and a small task after them all runs
    b.jetstream().publish_with_headers("hws.tasks.submit", json_headers(None), task("small", 10).into()).await?.await?;
    let res: ExecutionResult = next(&mut results).await?;
    assert_eq!(res.status(), TaskStatus::Succeeded);
    mon.stop().await?;
    sched.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_task_id_is_not_run_twice() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w1", 2).await?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    let client = b.client().clone();
    let mut events = client.subscribe("hws.events.dup-1").await?;
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;

    let task = TaskRequest {
        task_id: "dup-1".into(),
        command: vec!["sh".into(), "-c".into(), "sleep 0.2".into()],
        ..Default::default()
    };
    // 1) same Nats-Msg-Id: JetStream drops the copy
    for _ in 0..2 {
        let mut h = hwsched_bus::proto_headers(None);
        h.insert(MSG_ID, "dup-1");
        h.insert(REPLY_TO, inbox.as_str());
        let ack = b.jetstream().publish_with_headers("hws.tasks.submit", h, task.encode_to_vec().into()).await?.await?;
        let _ = ack;
    }
    let first: SubmitReply = next(&mut replies).await?;
    assert!(first.accepted && !first.finished, "{first:?}");
    // the final reply comes when the run has finished
    let done: SubmitReply = next(&mut replies).await?;
    assert!(done.finished, "{done:?}");
    assert_eq!(done.status(), TaskStatus::Succeeded);
    assert_eq!((done.worker_id.as_str(), done.attempts), ("w1", 1));
    loop {
        let ev: TaskEvent = next(&mut events).await?;
        if ev.kind() == TaskEventKind::Finished {
            break;
        }
    }
    // 2) no Nats-Msg-Id (or a different one) after the run: the scheduler's record catches it
    let mut h = hwsched_bus::proto_headers(None);
    h.insert(MSG_ID, "another-id");
    h.insert(REPLY_TO, inbox.as_str());
    b.jetstream().publish_with_headers("hws.tasks.submit", h, task.encode_to_vec().into()).await?.await?;
    let second: SubmitReply = next(&mut replies).await?;
    assert!(second.duplicate && !second.accepted, "{second:?}");

    // Exactly one attempt started: count STARTED events stored for the task.
    let stream = b.jetstream().get_stream("HWS_EVENTS").await?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: "hws.events.dup-1".into(),
            ..Default::default()
        })
        .await?;
    let mut msgs = consumer.fetch().max_messages(100).expires(Duration::from_millis(500)).messages().await?;
    let mut kinds = Vec::new();
    while let Some(Ok(m)) = msgs.next().await {
        kinds.push(TaskEvent::decode(m.payload.as_ref())?.kind());
    }
    assert_eq!(kinds.iter().filter(|k| **k == TaskEventKind::Started).count(), 1, "ran exactly once: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == TaskEventKind::Queued).count(), 1, "{kinds:?}");

    mon.stop().await?;
    sched.stop().await?;
    Ok(())
}
