//! Sharded and replicated tasks over a spawned nats-server with the real
//! scheduler and monitors: each shard is told its index and the total, each
//! replica runs on its hardware class, the producer gets one verdict for the
//! whole task with every part, and a split task recorded without its parts
//! (a scheduler crash in between) gets them after a restart.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use hwsched_bus::{MSG_ID, REPLY_TO};
use hwsched_proto::{
    v1::{
        ExecutionResult, Placement, SubmitReply, TaskEvent, TaskEventKind, TaskRecord, TaskRequest, TaskState,
        TaskStatus,
    },
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, sh_task, Proc};

const WAIT: Duration = Duration::from_secs(45);

fn monitor(nats: &NatsServer, id: &str, extra: &[&str]) -> anyhow::Result<Proc> {
    let mut args = vec!["monitor", "--worker-id", id, "--slots", "2", "--interval-ms", "200"];
    args.extend_from_slice(extra);
    Proc::spawn(id, &nats.url(), &args, &[])
}

/// A scheduler and monitors (id, extra flags), once the scheduler knows them all.
async fn cluster(nats: &NatsServer, workers: &[(&str, &[&str])]) -> anyhow::Result<(Proc, Vec<Proc>)> {
    let sched = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let mut procs = Vec::new();
    for (id, extra) in workers {
        procs.push(monitor(nats, id, extra)?);
    }
    for (id, _) in workers {
        sched.wait_for_log(&format!("worker joined worker_id=\"{id}\""), WAIT).await?;
    }
    Ok((sched, procs))
}

/// The next `n` results on `sub`, by task id.
async fn results_by_task(
    sub: &mut async_nats::Subscriber,
    n: usize,
    logs: impl Fn() -> String,
) -> anyhow::Result<BTreeMap<String, ExecutionResult>> {
    let mut by_task = BTreeMap::new();
    while by_task.len() < n {
        let Ok(Some(m)) = tokio::time::timeout(WAIT, sub.next()).await else {
            anyhow::bail!("{} of {n} results\n{}", by_task.len(), logs());
        };
        let r = ExecutionResult::decode(m.payload.as_ref())?;
        by_task.insert(r.task_id.clone(), r);
    }
    Ok(by_task)
}

/// Runs the CLI: (exit code, stdout).
fn cli(url: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = hwsched_tests::cli(url, args)?;
    Ok((out.code, out.stdout))
}

/// Submits `t` asking for verdicts on `inbox`.
async fn submit_with_reply(b: &hwsched_bus::Bus, t: &TaskRequest, inbox: &str) -> anyhow::Result<()> {
    let mut h = hwsched_bus::proto_headers(None);
    h.insert(MSG_ID, t.task_id.as_str());
    h.insert(REPLY_TO, inbox);
    b.jetstream().publish_with_headers(b.subjects().tasks_submit(), h, t.encode_to_vec().into()).await?.await?;
    Ok(())
}

/// The final verdict on `inbox` (skipping the acceptance).
async fn finished(replies: &mut async_nats::Subscriber, logs: impl Fn() -> String) -> anyhow::Result<SubmitReply> {
    loop {
        let Ok(Some(m)) = tokio::time::timeout(WAIT, replies.next()).await else {
            anyhow::bail!("no final verdict\n{}", logs());
        };
        let r = SubmitReply::decode(m.payload.as_ref())?;
        if r.finished {
            return Ok(r);
        }
        assert!(r.accepted, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_know_their_index_and_the_task_fails_if_one_does() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let (sched, workers) = cluster(&nats, &[("w-a", &[]), ("w-b", &[])]).await?;

    let bus = bus(&nats.url()).await?;
    let mut results = bus.client().subscribe("hws.results.>").await?;
    let mut events = bus.client().subscribe("hws.events.shardy").await?;
    let inbox = bus.client().new_inbox();
    let mut replies = bus.client().subscribe(inbox.clone()).await?;
    let task = TaskRequest {
        placement: Some(Placement { strategy: "sharded".into(), shards: 3, ..Default::default() }),
        max_attempts: 1,
        ..sh_task(
            "shardy",
            "echo \"shard $HWSCHED_SHARD_INDEX of $HWSCHED_SHARD_TOTAL\"; test \"$HWSCHED_SHARD_INDEX\" != 1 || exit 3",
        )
    };
    submit_with_reply(&bus, &task, &inbox).await?;

    let logs = || format!("scheduler:\n{}\nw-a:\n{}\nw-b:\n{}", sched.log(), workers[0].log(), workers[1].log());
    let by_part = results_by_task(&mut results, 3, logs).await?;
    assert_eq!(by_part.keys().collect::<Vec<_>>(), ["shardy--s0", "shardy--s1", "shardy--s2"]);
    for (i, r) in by_part.values().enumerate() {
        assert_eq!(r.stdout_tail.trim(), format!("shard {i} of 3"), "{r:?}");
    }
    assert_eq!(by_part["shardy--s1"].status(), TaskStatus::Failed);
    assert_eq!(by_part["shardy--s1"].exit_code, 3);

    let verdict = finished(&mut replies, logs).await?;
    assert_eq!(verdict.task_id, "shardy");
    assert_eq!((verdict.status(), verdict.exit_code), (TaskStatus::Failed, 3), "{verdict:?}");
    let states: Vec<TaskState> = verdict.parts.iter().map(|p| p.state()).collect();
    assert_eq!(states, [TaskState::Succeeded, TaskState::Failed, TaskState::Succeeded]);
    assert!(verdict.reasons[0].starts_with("2 of 3 shards succeeded; shardy--s1:"), "{:?}", verdict.reasons);
    // the parent's own lifecycle: queued (split), then finished once
    let mut kinds = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        kinds.push((ev.kind(), ev.reason));
    }
    assert_eq!(
        kinds,
        [
            (TaskEventKind::Queued, "running as 3 shard(s)".to_string()),
            (TaskEventKind::Finished, TaskStatus::Failed.as_str_name().to_string())
        ]
    );
    let (code, out) = cli(&nats.url(), &["explain", "shardy"])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("state      failed"), "{out}");
    let failed_line = out.lines().find(|l| l.trim_start().starts_with("shardy--s1")).unwrap_or_default();
    assert!(failed_line.contains("failed"), "{out}");
    let (_, out) = cli(&nats.url(), &["explain", "shardy--s2"])?;
    assert!(out.contains("part of    shardy (shard 2 of 3)"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_once_on_each_hardware_class() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    // two CPU workers (one would do) and one with an NPU
    let (sched, workers) =
        cluster(&nats, &[("w-cpu1", &[]), ("w-cpu2", &[]), ("w-npu", &["--accelerator", "npu=1"])]).await?;
    let bus = bus(&nats.url()).await?;
    let mut results = bus.client().subscribe("hws.results.>").await?;
    let inbox = bus.client().new_inbox();
    let mut replies = bus.client().subscribe(inbox.clone()).await?;
    let task = TaskRequest {
        placement: Some(Placement {
            strategy: "replicated".into(),
            hardware_classes: vec!["cpu".into(), "accel:npu".into()],
            ..Default::default()
        }),
        ..sh_task("everywhere", "echo ran")
    };
    submit_with_reply(&bus, &task, &inbox).await?;
    let logs = || format!("scheduler:\n{}", sched.log());
    let by_part = results_by_task(&mut results, 2, logs).await?;
    let cpu = &by_part["everywhere--r0"];
    assert!(cpu.hardware_class.starts_with("cpu:") && cpu.worker_id.starts_with("w-cpu"), "{cpu:?}");
    let on_npu = &by_part["everywhere--r1"];
    assert_eq!((on_npu.hardware_class.as_str(), on_npu.worker_id.as_str()), ("accel:npu", "w-npu"));
    let verdict = finished(&mut replies, logs).await?;
    assert_eq!(verdict.status(), TaskStatus::Succeeded, "{verdict:?}");
    assert_eq!(verdict.worker_id, format!("{},w-npu", cpu.worker_id));
    assert_eq!(verdict.parts.iter().map(|p| p.hardware_class.as_str()).collect::<Vec<_>>(), ["cpu", "accel:npu"]);

    // the same from the command line: one verdict, each part listed
    let (code, out) =
        cli(&nats.url(), &["submit", "--id", "cli-rep", "--replicate", "cpu,accel:npu", "--wait", "--", "true"])?;
    assert_eq!(code, 0, "{out}");
    let npu_line = out.lines().find(|l| l.contains("cli-rep--r1") && l.contains("[accel:npu]")).unwrap_or_default();
    assert!(npu_line.contains("succeeded on w-npu"), "{out}");
    assert!(out.contains("finished succeeded: 2 of 2 replicas succeeded"), "{out}");
    assert!(out.contains("1 task(s): 1 succeeded, 0 failed"), "{out}");
    drop(workers);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_task_recorded_without_its_parts_gets_them_after_a_restart() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let mut first = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    first.wait_for_log("scheduler ready", WAIT).await?;
    first.kill();

    // What a scheduler that crashed right after recording the split task leaves behind.
    let bus = bus(&nats.url()).await?;
    let inbox = bus.client().new_inbox();
    let mut replies = bus.client().subscribe(inbox.clone()).await?;
    let task = TaskRequest {
        placement: Some(Placement { strategy: "sharded".into(), shards: 2, ..Default::default() }),
        ..sh_task("orphan", "true")
    };
    let queued = TaskRecord {
        task: Some(task),
        state: TaskState::Queued as i32,
        queued_at_ms: hwsched_bus::now_ms(),
        reply_to: inbox.clone(),
        ..Default::default()
    };
    let (parent, _) = hwsched_placement::group::split(&queued, hwsched_bus::now_ms());
    let records = hwsched_bus::streams::bucket(&bus, &bus.subjects().tasks_bucket()).await?;
    records.create("orphan", parent.encode_to_vec().into()).await?;
    assert!(records.get("orphan--s0").await?.is_none());

    let second = Proc::spawn("scheduler", &nats.url(), &["scheduler"], &[])?;
    second.wait_for_log("resumed unfinished tasks", WAIT).await?;
    let mon = monitor(&nats, "w", &[])?;
    let verdict = finished(&mut replies, || format!("scheduler:\n{}\nmonitor:\n{}", second.log(), mon.log())).await?;
    assert_eq!(verdict.status(), TaskStatus::Succeeded, "{verdict:?}");
    assert_eq!(verdict.parts.len(), 2);
    assert!(verdict.parts.iter().all(|p| p.state() == TaskState::Succeeded && p.worker_id == "w"), "{verdict:?}");
    let stored = TaskRecord::decode(records.get("orphan").await?.expect("record").as_ref())?;
    assert_eq!(stored.state(), TaskState::Succeeded);
    Ok(())
}
