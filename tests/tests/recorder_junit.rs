//! Per-test results reach ClickHouse: a result that lists a JUnit report among
//! its artifacts (`Artifact.junit`) becomes one `test_cases` row per case, read
//! by the recorder from the real `hws_artifacts` Object Store; a report that is
//! missing or malformed is logged and skipped, and its result row still lands;
//! and the whole chain with a real monitor running a test that writes a report.

use std::time::Duration;

use hwsched_proto::v1::{Artifact, ExecutionResult, TaskStatus};
use hwsched_testkit::{eventually, NatsServer, TestDb};
use hwsched_tests::bus;

const WAIT: Duration = Duration::from_secs(30);

const REPORT: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" tests="5" time="0.5">
<testcase classname="tests.test_model" name="test_load" time="0.25"/>
<testcase classname="tests.test_model" name="test_forward" time="0.125"><failure message="assert 0.5 == 1&#10;more">trace</failure></testcase>
<testcase classname="tests.test_model" name="test_gpu" time="0"><skipped message="no CUDA device"/></testcase>
<testcase classname="tests.test_io" name="test_open" time="0.01"><error message="FileNotFoundError: data.bin"/></testcase>
<testcase classname="tests.test_io" name="test_flaky" time="0.03"><rerunFailure message="once"/></testcase>
</testsuite></testsuites>"#;

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Case {
    task_id: String,
    worker_id: String,
    hardware_class: String,
    suite: String,
    classname: String,
    name: String,
    status: String,
    duration_s: f64,
    message: String,
    time_s: u32,
}

fn result(task_id: &str, artifact: Option<(&str, &str)>, finished_at_ms: i64) -> ExecutionResult {
    ExecutionResult {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        task_id: task_id.into(),
        attempt: 1,
        worker_id: "w-junit".into(),
        hardware_class: "gpu:nvidia-h100".into(),
        status: TaskStatus::Failed as i32,
        exit_code: 1,
        finished_at_ms,
        artifacts: artifact
            .map(|(path, object)| Artifact {
                path: path.into(),
                object: object.into(),
                junit: true,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// Every `test_cases` row, deduplicated, in case order.
async fn cases(ch: &clickhouse::Client) -> anyhow::Result<Vec<Case>> {
    Ok(ch
        .query(
            "SELECT task_id, toString(worker_id) AS worker_id, toString(hardware_class) AS hardware_class, suite, \
             classname, name, toString(status) AS status, duration_s, message, \
             toUInt32(toUnixTimestamp(time)) AS time_s FROM test_cases FINAL ORDER BY case_index",
        )
        .fetch_all()
        .await?)
}

async fn count(ch: &clickhouse::Client, sql: &str) -> anyhow::Result<u64> {
    Ok(ch.query(sql).fetch_one().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_junit_artifact_becomes_test_case_rows_and_a_bad_one_never_blocks_its_result() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let nats = NatsServer::start()?;
    let b = bus(&nats.url()).await?;
    hwsched_bus::streams::provision(&b).await?;
    let recorder = hwsched_tests::recorder(&nats.url(), &db)?;
    recorder.wait_for_log("recorder ready", WAIT).await?;
    let ch = db.client();

    let artifacts = hwsched_bus::streams::object_store(&b, &b.subjects().artifacts_bucket()).await?;
    artifacts.put("t-junit/1/report.xml", &mut REPORT.as_bytes()).await?;
    artifacts.put("t-garbage/1/report.xml", &mut &b"\x00\x9f binary, not XML"[..]).await?;
    // whole seconds: the 18.16 server stores DateTime in seconds
    let now = hwsched_bus::now_ms() / 1000 * 1000;
    let results = [
        result("t-junit", Some(("report.xml", "t-junit/1/report.xml")), now),
        result("t-missing", Some(("out/report.xml", "t-missing/1/out/report.xml")), now),
        result("t-garbage", Some(("report.xml", "t-garbage/1/report.xml")), now),
        result("t-plain", None, now),
    ];
    for r in &results {
        b.publish_durable(b.subjects().results(&r.worker_id, &r.task_id), r, None, None).await?;
    }
    let ctx = || format!("\n{}", recorder.log());
    eventually(WAIT, || {
        let ch = ch.clone();
        async move {
            let runs = count(&ch, "SELECT count() FROM task_runs").await?;
            let cases = count(&ch, "SELECT count() FROM test_cases").await?;
            Ok((runs == 4 && cases == 5).then_some(()))
        }
    })
    .await
    .map_err(|e| e.context(ctx()))?;

    let rows = cases(&ch).await?;
    let got: Vec<_> = rows.iter().map(|c| (c.name.as_str(), c.status.as_str(), c.message.as_str())).collect();
    assert_eq!(
        got,
        [
            ("test_load", "passed", ""),
            ("test_forward", "failed", "assert 0.5 == 1"),
            ("test_gpu", "skipped", "no CUDA device"),
            ("test_open", "error", "FileNotFoundError: data.bin"),
            ("test_flaky", "passed", ""),
        ]
    );
    let first = &rows[0];
    assert_eq!((first.task_id.as_str(), first.worker_id.as_str()), ("t-junit", "w-junit"), "{first:?}");
    assert_eq!((first.hardware_class.as_str(), first.suite.as_str()), ("gpu:nvidia-h100", "pytest"), "{first:?}");
    assert_eq!((first.classname.as_str(), first.duration_s), ("tests.test_model", 0.25), "{first:?}");
    assert_eq!(first.time_s, u32::try_from(now / 1000)?, "{first:?}");

    // the two bad reports were named in a warning, not stored
    let log = recorder.log();
    for needle in ["t-missing", "out/report.xml", "t-garbage", "junit report not recorded"] {
        assert!(log.contains(needle), "{needle} not in the recorder's log:\n{log}");
    }

    // the same result again (a redelivery): its rows collapse with the first copy's
    b.publish_durable(b.subjects().results("w-junit", "t-junit"), &results[0], None, None).await?;
    eventually(WAIT, || {
        let ch = ch.clone();
        async move { Ok((count(&ch, "SELECT count() FROM test_cases").await? == 10).then_some(())) }
    })
    .await
    .map_err(|e| e.context(ctx()))?;
    assert_eq!(count(&ch, "SELECT count() FROM test_cases FINAL").await?, 5);
    Ok(())
}

/// The whole chain with a real monitor: the test writes a JUnit report, the
/// monitor parses it into the result's counts and stores it, the recorder reads
/// it back and writes one `test_cases` row per case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_a_test_writes_becomes_result_counts_and_rows_through_a_real_monitor() -> anyhow::Result<()> {
    use futures::StreamExt;
    use hwsched_proto::Message;

    let db = TestDb::create().await?;
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = hwsched_tests::scheduler(&url).await?;
    let mon = hwsched_tests::monitor(&url, "w-chain", 1).await?;
    let recorder = hwsched_tests::recorder(&url, &db)?;
    recorder.wait_for_log("recorder ready", WAIT).await?;
    let b = bus(&url).await?;
    let mut results = b.client().subscribe("hws.results.*.chain").await?;

    let dir = tempfile::tempdir()?;
    let report = r#"<testsuite name="unit"><testcase classname="m" name="test_ok" time="0.5"/><testcase classname="m" name="test_bad" time="0.25"><failure message="boom: 1 != 2">trace</failure></testcase></testsuite>"#;
    let mut t = hwsched_tests::sh_task("chain", &format!("printf '%s' '{report}' > reports/unit.xml; exit 1"));
    t.workdir = dir.path().display().to_string();
    t.junit = "reports/*.xml".into();
    t.max_attempts = 1;
    std::fs::create_dir(dir.path().join("reports"))?;
    hwsched_tests::submit(&b, &t).await?;

    let msg = tokio::time::timeout(WAIT, results.next()).await?.ok_or_else(|| anyhow::anyhow!("no result"))?;
    let r = ExecutionResult::decode(msg.payload.as_ref())?;
    let tests = r.tests.clone().unwrap_or_default();
    assert_eq!((tests.passed, tests.failed, tests.error.as_str()), (1, 1, ""), "{r:?}");
    assert_eq!(tests.failures.first().map(|c| c.message.as_str()), Some("boom: 1 != 2"), "{r:?}");
    assert!(r.artifacts.iter().any(|a| a.junit && a.path == "reports/unit.xml"), "{:?}", r.artifacts);

    let ch = db.client();
    let ctx = || format!("\n{}", recorder.log());
    eventually(WAIT, || {
        let ch = ch.clone();
        async move { Ok((count(&ch, "SELECT count() FROM test_cases WHERE task_id = 'chain'").await? == 2).then_some(())) }
    })
    .await
    .map_err(|e| e.context(ctx()))?;
    let rows = cases(&ch).await?;
    let got: Vec<_> = rows.iter().map(|c| (c.worker_id.as_str(), c.name.as_str(), c.status.as_str())).collect();
    assert_eq!(got, [("w-chain", "test_ok", "passed"), ("w-chain", "test_bad", "failed")]);
    assert!(rows.iter().all(|c| c.hardware_class == r.hardware_class && !c.hardware_class.is_empty()), "{rows:?}");
    mon.stop().await?;
    sched.stop().await
}
