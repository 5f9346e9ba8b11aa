//! `hwsched bench assign` against a real scheduler: its simulated workers get
//! every submitted task and it reports throughput and latency; `hwsched bench
//! e2e` against a scheduler and a real monitor.

use hwsched_testkit::NatsServer;
use std::time::Duration;

use hwsched_tests::{cli_async, scheduler, Proc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_assign_reports_every_task_assigned() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let out = cli_async(
        &nats.url(),
        &["bench", "assign", "--workers", "10", "--slots", "4", "--tasks", "300", "--timeout-s", "60"],
    )
    .await?;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("assigned 300 of 300 in"), "{}", out.stdout);
    let p99 = out
        .stdout
        .lines()
        .find_map(|l| l.split("p99 ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(p99.is_some(), "a p99 latency: {}", out.stdout);
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_e2e_runs_every_task_on_a_real_monitor_and_samples_memory() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let sched = scheduler(&nats.url()).await?;
    let monitor = Proc::spawn("monitor", &nats.url(), &["monitor", "--worker-id", "e2e-m", "--slots", "4"], &[])?;
    monitor.wait_for_log("monitor ready", Duration::from_secs(30)).await?;
    let pid = format!("monitor={}", monitor.pid());
    let out = cli_async(
        &nats.url(),
        &["bench", "e2e", "--tasks", "200", "--window", "32", "--warmup-s", "0", "--pid", &pid, "--timeout-s", "60"],
    )
    .await?;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("finished 200 of 200 in"), "{}", out.stdout);
    assert!(out.stdout.contains("failed 0, duplicate results 0"), "{}", out.stdout);
    let resident = out.stdout.lines().find(|l| l.starts_with("monitor (pid")).unwrap_or_default();
    assert!(resident.contains("MB at the end"), "the monitor's memory sampled: {}", out.stdout);

    // a failing command counts as failed, and the bench says so
    let out =
        cli_async(&nats.url(), &["bench", "e2e", "--tasks", "5", "--command", "false", "--timeout-s", "60"]).await?;
    assert!(out.stdout.contains("finished 5 of 5") && out.stdout.contains("failed 5,"), "{}", out.stdout);
    sched.stop().await
}
