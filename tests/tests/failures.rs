//! Failures by category with real monitors (`hwsched monitor` processes in
//! cgroups): a memory hog is killed by the kernel at its attempt's memory
//! limit, reported OUT_OF_MEMORY with its peak, and retried with more memory
//! until it runs, on the worker that has that memory.

use std::time::Duration;

use hwsched_client::Client;
use hwsched_config::NatsConfig;
use hwsched_proto::v1::{ExecutionResult, FailureCategory, Requirements, TaskRequest, TaskStatus};
use hwsched_testkit::{eventually, NatsServer};
use hwsched_tests::{bus, scheduler, submit, Proc};

const WAIT: Duration = Duration::from_secs(60);

/// Whether this host lets a monitor make cgroups (root with a writable v1 memory
/// hierarchy, or v2 with the memory controller); says why not.
fn cgroups_usable() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists();
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| c.contains("memory"));
    if !(root && (v1 || v2)) && std::env::var_os("HWSCHED_REQUIRE_CGROUPS").is_none() {
        eprintln!("skipped: monitors cannot make cgroups here (root: {root}, v1 memory: {v1}, v2 memory: {v2})");
        return false;
    }
    true
}

fn monitor(url: &str, id: &str, memory_mb: &str) -> anyhow::Result<Proc> {
    let args =
        ["monitor", "--worker-id", id, "--interval-ms", "200", "--memory-mb", memory_mb, "--memory-headroom", "1"];
    Proc::spawn(id, url, &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_hog_is_killed_at_its_limit_and_retried_with_more_memory_on_a_bigger_worker() -> anyhow::Result<()> {
    if !cgroups_usable() {
        return Ok(());
    }
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = scheduler(&url).await?;
    let small = monitor(&url, "w-small", "100")?;
    let big = monitor(&url, "w-big", "4096")?;
    for m in [&small, &big] {
        m.wait_for_log("monitor ready", Duration::from_secs(30)).await?;
        assert!(m.log().contains("each attempt runs in a cgroup of its own"), "no cgroups: {}", m.log());
    }
    let client = Client::connect(&NatsConfig::new(&url)).await?;
    eventually(WAIT, || async { Ok((client.workers(Duration::from_millis(400)).await?.len() == 2).then_some(())) })
        .await?;

    // asks for 64 MB, needs about 130: 64 MB, then 96 (either worker), then 144 (only w-big)
    let hog = TaskRequest {
        task_id: "hog".into(),
        name: "memory-hog".into(),
        command: ["python3", "-c", "b = bytearray(120 << 20); b[::4096] = b'x' * len(b[::4096]); print('done')"]
            .map(String::from)
            .to_vec(),
        requirements: Some(Requirements { memory_mb: 64, ..Default::default() }),
        ..Default::default()
    };
    let b = bus(&url).await?;
    let mut results = b.client().subscribe("hws.results.>").await?;
    submit(&b, &hog).await?;
    let mut seen: Vec<ExecutionResult> = Vec::new();
    while seen.last().is_none_or(|r| r.status() != TaskStatus::Succeeded) && seen.len() < 4 {
        let m = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut results))
            .await
            .map_err(|_| anyhow::anyhow!("results so far: {seen:?}\n{}\n{}", small.log(), big.log()))?
            .ok_or_else(|| anyhow::anyhow!("subscription ended"))?;
        seen.push(prost::Message::decode(m.payload.as_ref())?);
    }
    let limits: Vec<u64> = seen.iter().map(|r| r.resources.as_ref().map_or(0, |u| u.memory_limit_mb)).collect();
    assert_eq!(limits, [64, 96, 144], "each retry asks for 1.5x: {seen:#?}");
    for r in &seen[..2] {
        assert_eq!((r.status(), r.category()), (TaskStatus::Failed, FailureCategory::OutOfMemory), "{r:#?}");
        let u = r.resources.unwrap_or_default();
        assert!(u.oom_kills >= 1 && u.cgroup, "{u:?}");
        assert!(u.memory_peak_mb + 2 >= u.memory_limit_mb, "peaked at its limit: {u:?}");
    }
    let last = &seen[2];
    assert_eq!((last.status(), last.worker_id.as_str()), (TaskStatus::Succeeded, "w-big"), "{last:#?}");
    assert_eq!(last.category(), FailureCategory::Unspecified);
    assert_eq!(last.stdout_tail, "done\n");

    let rec = eventually(WAIT, || async {
        Ok(client.explain("hog").await?.filter(|r| r.history.len() == 3 && r.failures == 2))
    })
    .await?;
    let cats: Vec<FailureCategory> = rec.history.iter().map(|a| a.category()).collect();
    assert_eq!(cats, [FailureCategory::OutOfMemory, FailureCategory::OutOfMemory, FailureCategory::Unspecified]);
    assert_eq!(rec.history[0].decision, "retry with 96 MB");
    assert_eq!(rec.history[1].decision, "retry with 144 MB");
    for mut m in [small, big] {
        assert!(m.terminate(Duration::from_secs(10)).await?.success(), "{}", m.log());
    }
    sched.stop().await
}
