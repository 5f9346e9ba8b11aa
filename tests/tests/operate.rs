//! The operator commands against real services: `workers`, `drain`/`undrain`
//! (a drained worker gets nothing new, keeps its drain across a monitor
//! restart, and an unknown worker is named), `tasks` (live list and one
//! task's history), `watch`, and the NATS services API (`$SRV.PING`/`INFO`)
//! that `nats micro ls` reads.

use std::time::Duration;

use futures::StreamExt;
use hwsched_client::{Client, Update};
use hwsched_config::NatsConfig;
use hwsched_proto::v1::{TaskEvent, TaskEventKind};
use hwsched_testkit::{eventually, NatsServer};
use hwsched_tests::{cli_async, monitor, scheduler, sleep_task};

const WAIT: Duration = Duration::from_secs(30);

/// Every answer to a `$SRV` request within `window`.
async fn srv(client: &async_nats::Client, subject: &str, window: Duration) -> anyhow::Result<Vec<serde_json::Value>> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client.publish_with_reply(subject.to_string(), inbox, Default::default()).await?;
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload)?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_new_work_off_a_worker_until_undrained() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let mut mon = monitor(&url, "w-ops", 1).await?;
    let client = Client::connect(&NatsConfig::new(&url)).await?;

    // workers: table and JSON
    let out = cli_async(&url, &["workers"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out.stdout.lines().find(|l| l.starts_with("w-ops")).unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.contains("0/1") && line.contains("active"), "{line}");
    let out = cli_async(&url, &["workers", "-o", "json"]).await?;
    let json: serde_json::Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(json[0]["workerId"], "w-ops", "{json}");
    assert_eq!(json[0]["heartbeat"]["slotsTotal"], 1, "{json}");
    assert!(json[0]["hardwareClass"].as_str().is_some_and(|c| c.starts_with("cpu:")), "{json}");

    // the services API sees both services and the scheduler's endpoints
    let pings = srv(client.bus().client(), "$SRV.PING", Duration::from_millis(700)).await?;
    let names: Vec<&str> = pings.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(names.contains(&"hwsched-scheduler") && names.contains(&"hwsched-monitor"), "{pings:?}");
    let info = srv(client.bus().client(), "$SRV.INFO.hwsched-scheduler", Duration::from_millis(700)).await?;
    assert_eq!(info.len(), 1, "only the active scheduler answers: {info:?}");
    let subjects: Vec<&str> =
        info[0]["endpoints"].as_array().into_iter().flatten().filter_map(|e| e["subject"].as_str()).collect();
    for s in ["hws.control.queue", "hws.control.tasks", "hws.control.explain", "hws.control.cancel"] {
        assert!(subjects.contains(&s), "{s} not in {subjects:?}");
    }

    // drain: nothing new goes there
    let out = cli_async(&url, &["drain", "w-ops", "--reason", "kernel upgrade"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("w-ops drained (kernel upgrade)"), "{}", out.stdout);
    let mut events = client.bus().client().subscribe("hws.events.parked").await?;
    let mut run = client.submit(vec![sleep_task("parked", "0.2")]).await?;
    loop {
        match run.next().await? {
            Some(Update::Accepted { .. }) => break,
            Some(Update::Event(_)) => continue,
            other => panic!("expected the verdict, got {other:?}"),
        }
    }
    // the scheduler sees the DRAINING heartbeat within a period: the task waits
    let queued = eventually(WAIT, || async {
        let out = cli_async(&url, &["tasks", "--state", "queued"]).await?;
        Ok(out.stdout.lines().find(|l| l.starts_with("parked")).map(str::to_string))
    })
    .await?;
    assert!(queued.contains("queued"), "{queued}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = cli_async(&url, &["tasks", "parked"]).await?;
    assert!(!out.stdout.contains("started on"), "a drained worker ran it:\n{}", out.stdout);
    let out = cli_async(&url, &["workers"]).await?;
    let line = out.stdout.lines().find(|l| l.starts_with("w-ops")).unwrap_or_default();
    assert!(line.contains("draining") && line.contains("drained: kernel upgrade"), "{}", out.stdout);

    // the drain survives a monitor restart
    mon.stop().await?;
    mon = monitor(&url, "w-ops", 1).await?;
    // its last heartbeat said offline; the new monitor's say draining
    eventually(WAIT, || async {
        let out = cli_async(&url, &["workers"]).await?;
        Ok(out.stdout.lines().any(|l| l.starts_with("w-ops") && l.contains(" draining ")).then_some(()))
    })
    .await?;

    // undrain: the waiting task runs there
    let out = cli_async(&url, &["undrain", "w-ops"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("w-ops active"), "{}", out.stdout);
    loop {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        let ev: TaskEvent = prost::Message::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Finished {
            break;
        }
    }
    let history = eventually(WAIT, || async {
        let out = cli_async(&url, &["tasks", "parked"]).await?;
        let done = out.stdout.lines().any(|l| l.contains(" succeeded ") && l.contains(" w-ops "));
        Ok(done.then_some(out.stdout))
    })
    .await?;
    assert!(history.contains("started on w-ops (attempt 1)"), "{history}");
    assert!(history.contains("queued"), "{history}");

    // unknown worker: named, exit 3
    let out = cli_async(&url, &["drain", "w-nope"]).await?;
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("no live worker is called \"w-nope\""), "{}", out.stderr);
    // no history: exit 1
    let out = cli_async(&url, &["tasks", "never-was"]).await?;
    assert_eq!(out.code, 1, "{}", out.stdout);

    // watch: one frame with the worker and the task table
    let out = cli_async(&url, &["watch", "-n", "1", "--interval-s", "1"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("hwsched watch") && out.stdout.contains("w-ops"), "{}", out.stdout);
    assert!(out.stdout.contains("0 queued, 0 placed"), "{}", out.stdout);

    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_without_a_scheduler_say_which_service_is_missing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    for args in [&["queue"][..], &["tasks"], &["explain", "t-1"], &["cancel", "t-1"]] {
        let out = cli_async(&nats.url(), args).await?;
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("no scheduler answers on hws.control."), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("hwsched scheduler"), "{}", out.stderr);
    }
    Ok(())
}
