//! The walking skeleton end to end, with the real binaries: a JSON task
//! published by a plain NATS client is placed by `hwsched all`, run by a real
//! `hwsched monitor` process, its protobuf result arrives on
//! `hws.results.<task_id>`, and the run and the worker's metrics are in
//! ClickHouse. Both processes then stop cleanly on SIGTERM.

use std::time::Duration;

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskStatus},
    Message,
};
use hwsched_testkit::{eventually, NatsServer, TestDb};
use hwsched_tests::{http_get, Proc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_task_runs_on_a_real_monitor_and_lands_in_clickhouse() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let db = TestDb::create().await?;
    let ch_env = [
        ("HWSCHED_CLICKHOUSE_URL", db.config.url.clone().unwrap_or_default()),
        ("HWSCHED_CLICKHOUSE_DATABASE", db.config.database.clone()),
        ("HWSCHED_RECORDER_FLUSH_MS", "200".to_string()),
    ];
    let metrics_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let mut all = Proc::spawn("hwsched all", &nats.url(), &["all", "--metrics-listen", &metrics_addr], &ch_env)?;
    all.wait_for_log("scheduler ready", Duration::from_secs(30)).await?;
    let mut monitor = Proc::spawn(
        "hwsched monitor",
        &nats.url(),
        &["monitor", "--worker-id", "e2e-worker", "--interval-ms", "200"],
        &[],
    )?;
    monitor.wait_for_log("monitor ready", Duration::from_secs(30)).await?;

    // A producer in any language: plain NATS, JSON, no hwsched library.
    let client = async_nats::connect(nats.url()).await?;
    let mut results = client.subscribe("hws.results.*.e2e-1").await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    let task = serde_json::json!({
        "task_id": "e2e-1",
        "name": "echo test",
        "command": ["sh", "-c", "echo hello-from-task; sleep 0.3"],
        "test_type": "unit",
        "priority": 2,
        "requirements": {"cpu_cores": 1, "memory_mb": 64}
    });
    client.publish_with_headers("hws.tasks.submit", headers, task.to_string().into()).await?;

    let msg = tokio::time::timeout(Duration::from_secs(30), results.next()).await?.expect("result");
    let r = ExecutionResult::decode(msg.payload.as_ref())?;
    assert_eq!(r.status(), TaskStatus::Succeeded, "{r:?}");
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.worker_id, "e2e-worker");
    assert!(r.duration_s >= 0.3 && r.duration_s < 10.0, "duration {}", r.duration_s);
    assert!(r.stdout_tail.contains("hello-from-task"), "{:?}", r.stdout_tail);
    assert!(r.hardware_class.starts_with("cpu:"), "{}", r.hardware_class);

    let ch = db.client();
    let run: (String, f64) = eventually(Duration::from_secs(20), || {
        let ch = ch.clone();
        async move {
            let rows = ch
                .query("SELECT status, duration_s FROM task_runs WHERE task_id = ?")
                .bind("e2e-1")
                .fetch_all::<(String, f64)>()
                .await?;
            Ok(rows.into_iter().next())
        }
    })
    .await?;
    assert_eq!(run.0, "succeeded");
    assert!((run.1 - r.duration_s).abs() < 1e-9);
    // The placement decision is recorded, its chosen candidate the worker that ran it.
    let decision: (String, String, u8, String) = eventually(Duration::from_secs(20), || {
        let ch = ch.clone();
        async move {
            let rows = ch
                .query("SELECT policy, worker_id, chosen, components FROM scheduler_decisions WHERE task_id = ? AND rank = 0")
                .bind("e2e-1")
                .fetch_all::<(String, String, u8, String)>()
                .await?;
            Ok(rows.into_iter().next())
        }
    })
    .await?;
    assert_eq!(decision.0, "hwsched");
    assert_eq!(decision.1, "e2e-worker");
    assert_eq!(decision.2, 1);
    assert!(decision.3.contains("\"completion\""), "{}", decision.3);
    let cpu_rows: u64 = eventually(Duration::from_secs(20), || {
        let ch = ch.clone();
        async move {
            let n: u64 = ch
                .query("SELECT count() FROM hw_metrics WHERE worker_id = 'e2e-worker' AND metric = 'cpu.util_pct' AND device = 'cpu'")
                .fetch_one()
                .await?;
            Ok((n >= 2).then_some(n))
        }
    })
    .await?;
    assert!(cpu_rows >= 2);

    // The operational endpoint reports what happened.
    assert!(http_get(&metrics_addr, "/readyz").await?.starts_with("HTTP/1.1 200"));
    let metrics = http_get(&metrics_addr, "/metrics").await?;
    assert!(metrics.contains("hwsched_scheduler_tasks_accepted_total 1"), "{metrics}");
    assert!(metrics.contains("hwsched_scheduler_tasks_succeeded_total 1"), "{metrics}");

    // One shutdown path: SIGTERM drains and exits 0.
    let status = monitor.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "monitor exit {status}; log:\n{}", monitor.log());
    let status = all.terminate(Duration::from_secs(30)).await?;
    assert!(status.success(), "all exit {status}; log:\n{}", all.log());
    Ok(())
}
