//! A monitor's policy on a real worker: commands outside its allowlist and
//! workdirs outside its sandbox are refused and reported, never started; the
//! allowed ones run as the configured unprivileged user in a fresh sandbox
//! directory that is removed afterwards, and never see the monitor's own
//! credentials. A refused task is never sent back to the worker that refused it.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use hwsched_proto::v1::{ExecutionResult, FailureCategory, TaskRequest, TaskStatus};
use hwsched_testkit::{eventually, NatsServer};
use hwsched_tests::{bus, cli_async, scheduler, submit, Proc};

fn task(id: &str, argv: &[&str]) -> TaskRequest {
    TaskRequest {
        task_id: id.into(),
        command: argv.iter().map(|s| s.to_string()).collect(),
        max_attempts: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_refuses_what_it_must_and_confines_the_rest() -> anyhow::Result<()> {
    let root = nix::unistd::geteuid().is_root();
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let sandbox = tempfile::tempdir()?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o711))?;
    }
    let sandbox_path = sandbox.path().display().to_string();
    let mut args = vec![
        "monitor",
        "--worker-id",
        "w-pol",
        "--interval-ms",
        "200",
        "--allow-command",
        "sh -c",
        "--allow-command",
        "re:^true$",
        "--sandbox-dir",
        &sandbox_path,
    ];
    if root {
        args.extend(["--run-as", "nobody"]);
    } else {
        eprintln!("not root: the run-as part of this test is not exercised");
    }
    let mon = Proc::spawn("monitor", &url, &args, &[("HWSCHED_CLICKHOUSE_PASSWORD", "leak-me".into())])?;
    mon.wait_for_log("monitor ready", Duration::from_secs(30)).await?;

    let b = bus(&url).await?;
    let mut results = b.client().subscribe("hws.results.>").await?;
    let outside = tempfile::tempdir()?;
    let mut escape = task("escape", &["sh", "-c", "pwd"]);
    escape.workdir = outside.path().display().to_string();
    for t in [
        task("confined", &["sh", "-c", "id -u; pwd; env | grep -c HWSCHED_CLICKHOUSE_PASSWORD; echo done > here.txt"]),
        task("plain-true", &["true"]),
        task("not-allowed", &["python3", "-c", "print('ran')"]),
        task("true-with-args", &["true", "x"]),
        escape,
    ] {
        submit(&b, &t).await?;
    }
    let mut by_task: HashMap<String, ExecutionResult> = HashMap::new();
    while by_task.len() < 5 {
        let m = tokio::time::timeout(Duration::from_secs(30), results.next())
            .await
            .map_err(|_| anyhow::anyhow!("results so far: {:?}\nmonitor:\n{}", by_task.keys(), mon.log()))?
            .expect("subscription");
        let r: ExecutionResult = prost::Message::decode(m.payload.as_ref())?;
        by_task.insert(r.task_id.clone(), r);
    }

    let ok = &by_task["confined"];
    assert_eq!(ok.status(), TaskStatus::Succeeded, "{ok:?}");
    let lines: Vec<&str> = ok.stdout_tail.lines().collect();
    if root {
        assert_eq!(lines[0], "65534", "runs as nobody: {lines:?}");
    }
    assert!(lines[1].starts_with(&sandbox_path) && lines[1].ends_with("/confined-1"), "in its sandbox: {lines:?}");
    assert_eq!(lines[2], "0", "the monitor's credentials leaked into the task: {lines:?}");
    assert!(!sandbox.path().join("confined-1").exists(), "the sandbox was not removed");
    assert_eq!(by_task["plain-true"].status(), TaskStatus::Succeeded);

    for (id, why) in [
        ("not-allowed", "not in its allowlist"),
        ("true-with-args", "not in its allowlist"),
        ("escape", "outside its sandbox"),
    ] {
        let r = &by_task[id];
        assert_eq!(r.status(), TaskStatus::Error, "{id}: {r:?}");
        assert!(r.error.contains(why), "{id}: {}", r.error);
        assert!(r.stdout_tail.is_empty(), "{id} ran: {}", r.stdout_tail);
    }
    assert!(mon.log().contains("task refused"), "{}", mon.log());
    // a refusal says so, and the task never goes back to the worker that refused it:
    // with no other worker, it ends rejected, saying why
    for id in ["not-allowed", "true-with-args", "escape"] {
        assert_eq!(by_task[id].category(), FailureCategory::Refused, "{id}");
    }
    assert_eq!(by_task["confined"].category(), FailureCategory::Unspecified);
    let ended = eventually(Duration::from_secs(20), || async {
        let out = cli_async(&url, &["explain", "not-allowed"]).await?;
        Ok(out.stdout.contains("state      rejected").then_some(out.stdout))
    })
    .await?;
    assert!(ended.contains("refused by the worker's policy on w-pol"), "{ended}");
    assert!(ended.contains("refused") && ended.contains("retry, never on this worker"), "{ended}");
    assert!(!ended.contains("\n    2 "), "sent back to the refusing worker: {ended}");
    sched.stop().await
}

#[test]
fn an_invalid_policy_stops_the_monitor_before_it_connects() -> anyhow::Result<()> {
    for (args, needle) in [
        (&["--allow-command", "re:("][..], "HWSCHED_MONITOR_ALLOW_COMMANDS"),
        (&["--run-as", "no-such-user-here"], "no such user"),
    ] {
        let out = std::process::Command::new(hwsched_tests::hwsched_bin()?)
            .args([&["--nats-url", "nats://127.0.0.1:1", "monitor"][..], args].concat())
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
    }
    Ok(())
}
