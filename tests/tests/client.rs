//! `hwsched-client` as another Rust tool embeds it: submit and follow tasks
//! as a stream, and run a worker's assignments as an external executor beside
//! an observe-only monitor.

use std::time::Duration;

use futures::StreamExt;
use hwsched_client::{Client, Error, Outcome, Update};
use hwsched_config::NatsConfig;
use hwsched_proto::v1::{TaskEventKind, TaskStatus};
use hwsched_testkit::NatsServer;
use hwsched_tests::{scheduler, InProcess};

async fn observe_only_monitor(url: &str, worker_id: &str) -> anyhow::Result<InProcess> {
    let mut cfg = hwsched_monitor::MonitorConfig::for_tests();
    cfg.worker_id = Some(worker_id.into());
    cfg.slots = Some(2);
    cfg.interval_ms = 200;
    cfg.observe_only = true;
    InProcess::start(url, |b, t, s| hwsched_monitor::run(cfg, b, t, s)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_executor_runs_what_the_scheduler_assigns_its_worker() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let mon = observe_only_monitor(&url, "farm-1").await?;
    let client = Client::connect(&NatsConfig::new(&url)).await?;

    // the executor: "runs" a task by echoing its argv back as output
    let mut exec = client.executor("farm-1", 2).await?;
    let runner = tokio::spawn(async move {
        let mut ran = 0;
        while let Some(a) = exec.next().await? {
            a.started().await;
            let argv = a.task.command.join(" ");
            let outcome = if argv.contains("fail") {
                Outcome::failed(2, "the device said no")
            } else {
                Outcome { stdout_tail: format!("ran {argv}"), ..Outcome::succeeded() }
            };
            a.finish(outcome).await?;
            ran += 1;
            if ran == 2 {
                return Ok::<_, Error>(ran);
            }
        }
        Ok(ran)
    });

    let good = hwsched_client::task(["flash", "firmware.bin"]);
    let mut bad = hwsched_client::task(["fail", "now"]);
    bad.max_attempts = 1;
    let (good_id, bad_id) = (good.task_id.clone(), bad.task_id.clone());
    let updates: Vec<Update> = client
        .submit(vec![good, bad])
        .await?
        .into_stream()
        .take_while(|u| futures::future::ready(u.is_ok()))
        .filter_map(|u| async move { u.ok() })
        .collect::<Vec<_>>()
        .await;
    let finished = |id: &str| {
        updates.iter().find_map(|u| match u {
            Update::Finished(f) if f.task_id == id => Some(f.clone()),
            _ => None,
        })
    };
    let ok = finished(&good_id).expect("the good task finished");
    assert_eq!(ok.status, TaskStatus::Succeeded, "{ok:?}");
    assert_eq!(ok.worker_id, "farm-1");
    let result = ok.result.expect("its result");
    assert_eq!(result.stdout_tail, "ran flash firmware.bin");
    assert!(result.hardware_class.starts_with("cpu:"), "the monitor's class: {}", result.hardware_class);
    let failed = finished(&bad_id).expect("the bad task finished");
    assert_eq!((failed.status, failed.exit_code), (TaskStatus::Failed, 2), "{failed:?}");
    assert!(updates
        .iter()
        .any(|u| matches!(u, Update::Event(e) if e.task_id == good_id && e.kind() == TaskEventKind::Started)));
    assert_eq!(tokio::time::timeout(Duration::from_secs(10), runner).await???, 2);

    // no monitor for that worker: the error says what to start
    match client.executor("ghost", 1).await {
        Err(Error::NoResponder { hint, .. }) => assert!(hint.contains("--observe-only --worker-id ghost"), "{hint}"),
        other => panic!("expected NoResponder, got {other:?}"),
    }
    mon.stop().await?;
    sched.stop().await
}
