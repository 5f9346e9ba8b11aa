//! What a monitor reports for the ways a test can end: exit codes, a command
//! that does not exist, a timeout (the whole process group is killed), and
//! the per-task resource usage it measured.

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, monitor, scheduler, sh_task, submit};

async fn run_one(task: TaskRequest) -> anyhow::Result<ExecutionResult> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let mon = monitor(&nats.url(), "w-exec", 2).await?;
    let b = bus(&nats.url()).await?;
    let mut results = b.client().subscribe(format!("hws.results.*.{}", task.task_id)).await?;
    submit(&b, &TaskRequest { max_attempts: 1, ..task }).await?;
    let m = tokio::time::timeout(Duration::from_secs(30), results.next()).await?.expect("result");
    mon.stop().await?;
    sched.stop().await?;
    Ok(ExecutionResult::decode(m.payload.as_ref())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_is_a_failure_with_its_code_and_output() -> anyhow::Result<()> {
    let r = run_one(sh_task("exit-7", "echo to-stdout; echo to-stderr >&2; exit 7")).await?;
    assert_eq!(r.status(), TaskStatus::Failed);
    assert_eq!(r.exit_code, 7);
    assert_eq!(r.stdout_tail, "to-stdout\n");
    assert_eq!(r.stderr_tail, "to-stderr\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_command_is_an_error_not_a_crash() -> anyhow::Result<()> {
    let t = TaskRequest { task_id: "nope".into(), command: vec!["/nonexistent/binary".into()], ..Default::default() };
    let r = run_one(t).await?;
    assert_eq!(r.status(), TaskStatus::Error);
    assert!(r.error.contains("cannot start") && r.error.contains("/nonexistent/binary"), "{}", r.error);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_process_group() -> anyhow::Result<()> {
    // a background child and a foreground one, both far longer than the timeout
    let marker = format!("{}.{}", 200 + std::process::id() % 500, 25);
    let mut t = sh_task("slow", &format!("sleep {marker} & sleep {marker}"));
    t.timeout_s = 1;
    let started = std::time::Instant::now();
    let r = run_one(t).await?;
    assert_eq!(r.status(), TaskStatus::TimedOut);
    assert!(r.error.contains("timed out after 1s"), "{}", r.error);
    assert!(started.elapsed() < Duration::from_secs(15));
    let left = std::process::Command::new("pgrep").args(["-f", &format!("sleep {marker}")]).output()?;
    assert!(left.stdout.is_empty(), "processes left behind: {}", String::from_utf8_lossy(&left.stdout));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_usage_of_the_task_tree_is_measured() -> anyhow::Result<()> {
    let t = TaskRequest {
        task_id: "mem".into(),
        command: vec!["python3".into(), "-c".into(), "import time; b = bytearray(200 << 20); time.sleep(1.2)".into()],
        ..Default::default()
    };
    let r = run_one(t).await?;
    assert_eq!(r.status(), TaskStatus::Succeeded);
    let u = r.resources.expect("resources");
    assert!(u.samples >= 3, "{u:?}");
    assert!((200..600).contains(&u.memory_peak_mb), "{u:?}");
    Ok(())
}
