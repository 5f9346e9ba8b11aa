//! `hwsched bench assign` against a real scheduler: its simulated workers get
//! every submitted task and it reports throughput and latency.

use hwsched_testkit::NatsServer;
use hwsched_tests::{cli_async, scheduler};

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
