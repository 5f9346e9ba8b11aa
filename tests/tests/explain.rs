//! `hwsched queue` and `hwsched explain` ask the active scheduler: waiting
//! tasks come with the reason they wait, placed ones with why they went there.

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{TaskEvent, TaskEventKind, TaskRequest},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, monitor, scheduler, submit};

fn cli(url: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = hwsched_tests::cli(url, args)?;
    Ok((out.code, out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_explain_say_why() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w-one", 1).await?;
    let b = bus(&nats.url()).await?;
    let mut events = b.client().subscribe("hws.events.>").await?;
    let sleeper = |id: &str| TaskRequest {
        task_id: id.into(),
        name: id.into(),
        command: vec!["sleep".into(), "4".into()],
        ..Default::default()
    };
    submit(&b, &sleeper("running")).await?;
    // wait until it runs, then queue one behind it
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), events.next()).await?.expect("event");
        if TaskEvent::decode(m.payload.as_ref())?.kind() == TaskEventKind::Started {
            break;
        }
    }
    submit(&b, &TaskRequest { priority: 1, ..sleeper("waiting") }).await?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), events.next()).await?.expect("event");
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        if ev.task_id == "waiting" && ev.kind() == TaskEventKind::Queued {
            break;
        }
    }
    let url = nats.url();
    let (code, out) = tokio::task::spawn_blocking(move || cli(&url, &["queue"])).await??;
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("waiting")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("no free slot"), "{line}");
    assert!(!out.contains("running "), "{out}");

    let url = nats.url();
    let (code, out) = tokio::task::spawn_blocking(move || cli(&url, &["explain", "running"])).await??;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("state      assigned, attempt 1"), "{out}");
    assert!(out.contains("worker     w-one"), "{out}");
    assert!(out.contains("cost") && out.contains("completion") && out.contains("load"), "{out}");
    assert!(out.contains("decision   hwsched policy"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("w-one")), "candidates table names the winner: {out}");

    let url = nats.url();
    let (code, out) = tokio::task::spawn_blocking(move || cli(&url, &["explain", "never-submitted"])).await??;
    assert_eq!(code, 1, "{out}");
    mon.stop().await?;
    sched.stop().await
}
