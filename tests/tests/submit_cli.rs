//! `hwsched submit` against real services: a YAML suite waited for (where
//! each task ran, how it ended, exit 1 when one failed), the same as JSON
//! lines for scripts, and Ctrl-C with `--cancel-on-interrupt` cancelling what
//! is still running (exit 130).

use std::{process::Stdio, time::Duration};

use futures::StreamExt;
use hwsched_proto::v1::{TaskEvent, TaskEventKind};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, cli_async, hwsched_bin, monitor, scheduler};

const SUITE: &str = r#"
tasks:
  - task_id: s-ok
    name: quick
    command: [sh, -c, "sleep 0.3"]
  - task_id: s-bad
    name: broken
    command: [sh, -c, "exit 3"]
    max_attempts: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_suite_is_followed_to_its_end_in_lines_or_json() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-sub", 2).await?;
    let dir = tempfile::tempdir()?;
    let suite = dir.path().join("suite.yaml");
    std::fs::write(&suite, SUITE)?;
    let path = suite.to_str().unwrap_or_default();

    let out = cli_async(&url, &["submit", "-f", path, "--wait"]).await?;
    assert_eq!(out.code, 1, "one task failed:\n{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("s-ok") && l.contains("[quick] finished succeeded on w-sub")),
        "{}",
        out.stdout
    );
    assert!(
        lines.iter().any(|l| l.starts_with("s-bad") && l.contains("finished failed on w-sub") && l.contains("exit 3")),
        "{}",
        out.stdout
    );
    assert_eq!(lines.last().copied(), Some("2 task(s): 1 succeeded, 1 failed"), "{}", out.stdout);

    // the same suite again as new tasks, for a script
    let out = cli_async(&url, &["submit", "-f", path, "--wait", "--id-suffix", "-json", "-o", "json"]).await?;
    assert_eq!(out.code, 1, "{}", out.stderr);
    let updates: Vec<serde_json::Value> = out.stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let finished: Vec<&serde_json::Value> = updates.iter().filter(|u| u["update"] == "finished").collect();
    assert_eq!(finished.len(), 2, "{}", out.stdout);
    let bad = finished.iter().find(|u| u["taskId"] == "s-bad-json").expect("s-bad-json finished");
    assert_eq!((bad["succeeded"].as_bool(), bad["exitCode"].as_i64()), (Some(false), Some(3)), "{bad}");
    assert_eq!(bad["result"]["workerId"], "w-sub", "{bad}");
    assert!(updates.iter().any(|u| u["update"] == "event" && u["event"]["kind"] == "TASK_EVENT_KIND_STARTED"));

    // submitted again under the same ids: duplicates, nothing runs, exit 0
    let out = cli_async(&url, &["submit", "-f", path]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.matches("duplicate").count(), 2, "{}", out.stdout);

    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_wait_with_cancel_on_interrupt_cancels_the_running_task() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-int", 1).await?;
    let b = bus(&url).await?;
    let mut events = b.client().subscribe("hws.events.long-one").await?;
    let child = std::process::Command::new(hwsched_bin()?)
        .args(["submit", "--id", "long-one", "--wait", "--cancel-on-interrupt", "--", "sleep", "60"])
        .env("HWSCHED_NATS_URL", &url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), events.next()).await?.expect("event");
        let ev: TaskEvent = prost::Message::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Started {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)?;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("long-one         cancel: stopping attempt 1 on w-int"), "{stdout}");
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), events.next()).await?.expect("event");
        let ev: TaskEvent = prost::Message::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Cancelled {
            break;
        }
    }
    // nothing left running or waiting
    let out = cli_async(&url, &["tasks"]).await?;
    assert!(out.stdout.contains("holds no task"), "{}", out.stdout);
    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_task_and_cancel_takes_it_out_of_the_queue() -> anyhow::Result<()> {
    use std::io::BufRead;

    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-ev", 1).await?;
    let mut follower = std::process::Command::new(hwsched_bin()?)
        .args(["events", "-o", "json"])
        .env("HWSCHED_NATS_URL", &url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = follower.stdout.take().expect("piped");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            let (id, kind) = (ev["taskId"].as_str().unwrap_or_default(), ev["kind"].as_str().unwrap_or_default());
            if tx.send((id.to_string(), kind.to_string())).is_err() {
                return;
            }
        }
    });
    // it follows once it prints a probe event published after it started
    let b = bus(&url).await?;
    let probe = hwsched_bus::task_event(None, TaskEventKind::Queued, 0, "", "probe");
    let probe = TaskEvent { task_id: "probe".into(), ..probe };
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            b.publish_event(&probe, None).await;
            if let Ok(Some((id, _))) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
                if id == "probe" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "hwsched events printed nothing");
    let out = cli_async(&url, &["submit", "--id", "ev-1", "--", "sleep", "3"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    // while ev-1 holds the only slot, a second task waits: cancel takes it out
    let out = cli_async(&url, &["submit", "--id", "ev-2", "--", "true"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = cli_async(&url, &["cancel", "ev-2", "--reason", "not needed"]).await?;
    assert_eq!((out.code, out.stdout.trim()), (0, "ev-2: removed from the queue"), "{}", out.stderr);
    let out = cli_async(&url, &["cancel", "ev-2"]).await?;
    assert_eq!(out.code, 1, "cancelled already: {}", out.stdout);

    let mut kinds = Vec::new();
    while kinds.last().is_none_or(|k: &String| !k.ends_with("FINISHED")) {
        let (id, kind) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await?.expect("hwsched events ended");
        if id == "ev-1" {
            kinds.push(kind);
        }
    }
    for k in ["QUEUED", "ASSIGNED", "STARTED", "FINISHED"] {
        assert!(kinds.iter().any(|x| x.ends_with(k)), "{k} missing from {kinds:?}");
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(follower.id() as i32), nix::sys::signal::Signal::SIGTERM)?;
    let status = tokio::task::spawn_blocking(move || follower.wait()).await??;
    assert_eq!(status.code(), Some(0));
    mon.stop().await?;
    sched.stop().await
}
