//! What a task brings back, on a real nats-server with real monitors: live
//! output reaches a follower while the task still runs; the stored logs and
//! artifacts come back byte for byte (digests checked) through the real
//! `hwsched logs` / `hwsched artifacts --get` after the monitor restarted;
//! hostile output globs are refused at submission and a symlink out of the
//! sandbox is never stored; binary output, a 10 MB line without a newline and
//! output over the cap end in a marked truncation, never a crash.

use std::{path::Path, time::Duration};

use futures::StreamExt;
use hwsched_client::{Client, Update};
use hwsched_proto::{
    v1::{ExecutionResult, OutputStream, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, cli_async, scheduler, sh_task, submit, InProcess};

const WAIT: Duration = Duration::from_secs(60);

/// A monitor whose tasks run in sandboxes under `sandbox`, keeping `log_cap` bytes per stream.
async fn monitor(url: &str, worker: &str, sandbox: &Path, log_cap: u64) -> anyhow::Result<InProcess> {
    let mut cfg = hwsched_monitor::MonitorConfig::for_tests();
    cfg.worker_id = Some(worker.into());
    cfg.slots = Some(2);
    cfg.interval_ms = 200;
    cfg.policy.sandbox_dir = Some(sandbox.to_path_buf());
    cfg.output.log_cap = log_cap;
    InProcess::start(url, |b, t, s| hwsched_monitor::run(cfg, b, t, s)).await
}

async fn client(url: &str) -> anyhow::Result<Client> {
    Ok(Client::from_bus(bus(url).await?))
}

/// Subscribes to `task_id`'s results; call before submitting.
async fn results(url: &str, task_id: &str) -> anyhow::Result<async_nats::Subscriber> {
    let b = bus(url).await?;
    Ok(b.client().subscribe(format!("hws.results.*.{task_id}")).await?)
}

async fn next_result(sub: &mut async_nats::Subscriber) -> anyhow::Result<ExecutionResult> {
    let m = tokio::time::timeout(WAIT, sub.next()).await?.ok_or_else(|| anyhow::anyhow!("results closed"))?;
    Ok(ExecutionResult::decode(m.payload.as_ref())?)
}

async fn stored(c: &Client, r: &ExecutionResult, stream: OutputStream) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    c.stored_log(r, stream, &mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_lines_reach_a_follower_before_the_task_ends() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sandbox = tempfile::tempdir()?;
    let gate = tempfile::tempdir()?;
    let go = gate.path().join("go");
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-live", sandbox.path(), 1 << 20).await?;
    let c = client(&url).await?;
    let mut follow = c.follow_logs("live-1", None).await?;
    let mut task = sh_task("live-1", "echo ready-line; while [ ! -e \"$GO\" ]; do sleep 0.02; done; echo after >&2");
    task.env.insert("GO".into(), go.to_string_lossy().into_owned());
    task.max_attempts = 1;
    let mut res = results(&url, "live-1").await?;
    submit(&bus(&url).await?, &task).await?;

    // the first line arrives while the task waits for the file only this test creates
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("ready-line\n") {
        let chunk = tokio::time::timeout(WAIT, follow.next()).await??.expect("the task has not ended");
        assert_eq!(chunk.stream(), OutputStream::Stdout, "{chunk:?}");
        seen.extend_from_slice(&chunk.data);
    }
    std::fs::write(&go, "")?;
    let mut err = Vec::new();
    let mut eofs = 0;
    while let Some(chunk) = tokio::time::timeout(WAIT, follow.next()).await?? {
        if chunk.stream() == OutputStream::Stderr {
            err.extend_from_slice(&chunk.data);
        }
        eofs += usize::from(chunk.eof);
    }
    assert_eq!((String::from_utf8_lossy(&err).as_ref(), eofs), ("after\n", 2));
    let r = next_result(&mut res).await?;
    assert_eq!(r.status(), TaskStatus::Succeeded, "{}", r.error);
    assert!(r.logs_stored, "{}", r.error);
    assert_eq!((r.stdout_bytes, r.stderr_bytes), (11, 6));
    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_stream_is_not_stored_and_reads_back_empty() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sandbox = tempfile::tempdir()?;
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-quiet", sandbox.path(), 1 << 20).await?;
    let mut task = sh_task("quiet-1", "echo only-stdout");
    task.max_attempts = 1;
    let mut res = results(&url, "quiet-1").await?;
    submit(&bus(&url).await?, &task).await?;
    let r = next_result(&mut res).await?;
    assert_eq!(r.status(), TaskStatus::Succeeded, "{}", r.error);
    assert!(r.logs_stored, "{}", r.error);
    assert_eq!((r.stdout_bytes, r.stderr_bytes), (12, 0));
    // the store holds stdout only
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let store = js.get_object_store("hws_logs").await?;
    assert!(store.info("quiet-1/1/stdout").await.is_ok());
    assert!(store.info("quiet-1/1/stderr").await.is_err(), "an empty stream has no object");
    // and `hwsched logs` prints what was written, nothing for the empty one, and succeeds
    let logs = cli_async(&url, &["logs", "quiet-1"]).await?;
    assert_eq!((logs.code, logs.stdout.as_str(), logs.stderr.as_str()), (0, "only-stdout\n", ""));
    mon.stop().await?;
    sched.stop().await
}

/// What the round-trip task writes: known bytes, so the test can check what comes back.
const ROUND_TRIP: &str = r#"
mkdir -p out/deep reports
seq 1 20000 > out/deep/nums.txt
printf '\000\001\377binary' > out/bin.dat
printf '<testsuite name="s" tests="1"><testcase classname="c" name="n"/></testsuite>' > reports/junit.xml
ln -s /etc/passwd out.txt
ln -s /etc out/etc
echo "to stdout"; printf 'no newline at the end' >&2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_logs_and_artifacts_round_trip_after_a_monitor_restart() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sandbox = tempfile::tempdir()?;
    let sched = scheduler(&url).await?;
    let mon = monitor(&url, "w-store", sandbox.path(), 1 << 20).await?;
    let mut task = sh_task("store-1", ROUND_TRIP);
    task.outputs = vec!["out/**".into(), "out.txt".into()];
    task.junit = "reports/*.xml".into();
    task.max_attempts = 1;
    let mut res = results(&url, "store-1").await?;
    submit(&bus(&url).await?, &task).await?;
    let r = next_result(&mut res).await?;
    assert_eq!(r.status(), TaskStatus::Succeeded, "{}", r.error);
    let listed: Vec<(&str, bool)> = r.artifacts.iter().map(|a| (a.path.as_str(), a.junit)).collect();
    assert_eq!(listed, vec![("out/bin.dat", false), ("out/deep/nums.txt", false), ("reports/junit.xml", true)]);
    assert!(r.error.contains("out.txt skipped: a symbolic link"), "{}", r.error);
    assert!(r.error.contains("out/etc skipped: a symbolic link"), "{}", r.error);
    assert!(!r.artifacts.iter().any(|a| a.path.contains("passwd")), "{:?}", r.artifacts);
    assert!(std::fs::read_dir(sandbox.path())?.next().is_none(), "the sandbox is removed before the result");
    let tests = r.tests.clone().unwrap_or_default();
    assert_eq!((tests.passed, tests.failed, tests.error.as_str()), (1, 0, ""), "{tests:?}");

    // the monitor restarts: what it stored stays readable
    mon.stop().await?;
    let mon = monitor(&url, "w-store", sandbox.path(), 1 << 20).await?;
    let logs = cli_async(&url, &["logs", "store-1"]).await?;
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert_eq!((logs.stdout.as_str(), logs.stderr.as_str()), ("to stdout\n", "no newline at the end"));
    let get = tempfile::tempdir()?;
    let dir = get.path().join("got");
    let arts = cli_async(&url, &["artifacts", "store-1", "--get", &dir.to_string_lossy()]).await?;
    assert_eq!(arts.code, 0, "{}{}", arts.stdout, arts.stderr);
    assert!(arts.stdout.contains("reports/junit.xml") && arts.stdout.contains("junit"), "{}", arts.stdout);
    let nums: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    assert_eq!(std::fs::read_to_string(dir.join("out/deep/nums.txt"))?, nums);
    assert_eq!(std::fs::read(dir.join("out/bin.dat"))?, b"\x00\x01\xffbinary");
    for a in &r.artifacts {
        let bytes = std::fs::read(dir.join(&a.path))?;
        assert_eq!(hwsched_bus::objects::digest_of(&bytes), a.digest, "{}", a.path);
    }
    assert!(!dir.join("out.txt").exists());
    mon.stop().await?;
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_globs_are_refused_at_submission() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let c = client(&url).await?;
    let hostile = [
        ("glob-abs", vec!["/etc/passwd".to_string()], ""),
        ("glob-up", vec!["out/../../etc/*".to_string()], ""),
        ("glob-junit", vec![], "../report.xml"),
    ];
    let tasks: Vec<TaskRequest> = hostile
        .iter()
        .map(|(id, outputs, junit)| TaskRequest {
            outputs: outputs.clone(),
            junit: junit.to_string(),
            ..sh_task(id, "true")
        })
        .collect();
    let mut run = c.submit(tasks).await?;
    let mut rejected = Vec::new();
    while let Some(u) = tokio::time::timeout(WAIT, run.next()).await?? {
        match u {
            Update::Rejected { task_id, reasons } => rejected.push((task_id, reasons.join("; "))),
            Update::Event(_) => {}
            other => anyhow::bail!("a hostile glob got through: {other:?}"),
        }
    }
    rejected.sort();
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    assert!(rejected[0].1.contains("outputs") && rejected[0].1.contains("relative"), "{rejected:?}");
    assert!(rejected[1].1.contains("junit") && rejected[1].1.contains(".."), "{rejected:?}");
    assert!(rejected[2].1.contains("outputs") && rejected[2].1.contains(".."), "{rejected:?}");
    sched.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_output_a_10_mb_line_and_output_over_the_cap_are_marked_not_crashing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sandbox = tempfile::tempdir()?;
    let sched = scheduler(&url).await?;
    let cap = 4u64 << 20;
    let mon = monitor(&url, "w-big", sandbox.path(), cap).await?;
    // a 10 MiB line with no newline on stdout, 300 KB of binary on stderr
    let mut task = sh_task("big-1", "head -c 10485760 /dev/zero | tr '\\0' x; head -c 300000 /dev/urandom >&2");
    task.max_attempts = 1;
    let mut res = results(&url, "big-1").await?;
    submit(&bus(&url).await?, &task).await?;
    let r = next_result(&mut res).await?;
    assert_eq!(r.status(), TaskStatus::Succeeded, "{}", r.error);
    assert_eq!((r.stdout_bytes, r.stderr_bytes), (10 << 20, 300_000));
    assert!(r.logs_stored, "{}", r.error);
    assert_eq!(r.stdout_tail.len(), 4096);
    let c = client(&url).await?;
    let out = stored(&c, &r, OutputStream::Stdout).await?;
    let marker = format!("\n[hwsched: output truncated after {cap} bytes; {} more bytes not kept]\n", (10 << 20) - cap);
    assert_eq!(out.len() as u64, cap + marker.len() as u64);
    assert!(out[..cap as usize].iter().all(|b| *b == b'x'));
    assert!(out.ends_with(marker.as_bytes()), "{:?}", String::from_utf8_lossy(&out[out.len() - 200..]));
    assert_eq!(stored(&c, &r, OutputStream::Stderr).await?.len(), 300_000);
    // the monitor still runs tasks
    let mut res = results(&url, "big-2").await?;
    submit(&bus(&url).await?, &TaskRequest { max_attempts: 1, ..sh_task("big-2", "echo fine") }).await?;
    assert_eq!(next_result(&mut res).await?.status(), TaskStatus::Succeeded);
    mon.stop().await?;
    sched.stop().await
}
