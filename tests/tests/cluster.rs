//! hwsched on a three-node JetStream cluster (loopback, real nats-servers
//! joined by routes) with every stream, bucket and Object Store replicated
//! three times: provisioning sets and changes the replica count in place,
//! and tasks flowing through a real scheduler and monitors are neither lost
//! nor run twice when the node leading the task stream is killed, when a
//! minority node is frozen and resumed, or when every node restarts in turn.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use futures::StreamExt;
use hwsched_bus::{streams, Bus, Stream};
use hwsched_config::NatsConfig;
use hwsched_proto::{
    v1::{ExecutionResult, TaskRequest, TaskStatus},
    Message,
};
use hwsched_testkit::{NatsCluster, NatsServer};
use hwsched_tests::{stored, Proc};

const WAIT: Duration = Duration::from_secs(60);

async fn bus_with(url: &str, replicas: usize) -> anyhow::Result<Bus> {
    let mut cfg = NatsConfig::new(url);
    cfg.js_replicas = replicas;
    Ok(Bus::connect(&cfg, "test", Duration::from_secs(10)).await?)
}

/// Replica counts of every stream the server holds, by name.
async fn replica_counts(b: &Bus) -> anyhow::Result<HashMap<String, usize>> {
    let mut names = b.jetstream().stream_names();
    let mut out = HashMap::new();
    while let Some(name) = names.next().await {
        let name = name?;
        let mut s = b.jetstream().get_stream(&name).await?;
        out.insert(name, s.info().await?.config.num_replicas);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_sets_and_changes_the_replica_count_in_place() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3)?;
    let one = bus_with(&cluster.url(), 1).await?;
    streams::provision(&one).await?;
    let counts = replica_counts(&one).await?;
    // every stream, KV bucket (KV_*) and Object Store (OBJ_*)
    assert!(counts.len() >= Stream::ALL.len() + 8 + 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let task = b"kept".to_vec();
    one.jetstream().publish(one.subjects().tasks_submit(), task.into()).await?.await?;

    let three = bus_with(&cluster.url(), 3).await?;
    streams::provision(&three).await?;
    let counts = replica_counts(&three).await?;
    assert!(counts.values().all(|n| *n == 3), "every asset now has 3 copies: {counts:?}");
    let mut tasks = three.jetstream().get_stream(three.subjects().stream(Stream::Tasks)).await?;
    assert_eq!(tasks.info().await?.state.messages, 1, "what was stored survives the change");
    // and back down
    streams::provision(&one).await?;
    assert!(replica_counts(&one).await?.values().all(|n| *n == 1));

    // a single server refuses more than one copy, with a hint
    let single = NatsServer::start()?;
    let err = streams::provision(&bus_with(&single.url(), 3).await?).await.expect_err("not clustered");
    assert!(err.to_string().contains("--js-replicas 3 needs a JetStream cluster"), "{err}");
    Ok(())
}

/// Submits `t` through JetStream, retrying (same `Nats-Msg-Id`, so the
/// stream drops a copy that was stored although its ack was lost) until stored.
async fn submit_retrying(b: &Bus, t: &TaskRequest) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut h = hwsched_bus::proto_headers(None);
        h.insert(hwsched_bus::MSG_ID, t.task_id.as_str());
        let sent = b.jetstream().publish_with_headers(b.subjects().tasks_submit(), h, t.encode_to_vec().into()).await;
        let stored = match sent {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => bail!("{} not stored within {WAIT:?}: {e}", t.task_id),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Every result in the results stream, by task id.
async fn stored_results(b: &Bus) -> anyhow::Result<HashMap<String, Vec<ExecutionResult>>> {
    let mut out: HashMap<String, Vec<ExecutionResult>> = HashMap::new();
    for r in stored::<ExecutionResult>(b, Stream::Results, b.subjects().results_all()).await? {
        out.entry(r.task_id.clone()).or_default().push(r);
    }
    Ok(out)
}

/// Waits until `n` distinct tasks have a result in the stream; then every one
/// must have succeeded, exactly once.
async fn all_ran_once(b: &Bus, n: usize, within: Duration, context: impl Fn() -> String) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let results = match stored_results(b).await {
            Ok(r) => r,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if results.len() >= n {
            let failed: Vec<_> =
                results.values().flatten().filter(|r| r.status() != TaskStatus::Succeeded).take(3).collect();
            assert!(failed.is_empty(), "{failed:?}");
            let twice: Vec<_> = results.iter().filter(|(_, rs)| rs.len() > 1).map(|(id, rs)| (id, rs.len())).collect();
            assert!(twice.is_empty(), "{} task(s) ran more than once: {twice:?}", twice.len());
            assert_eq!(results.len(), n);
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("only {} of {n} tasks have a result\n{}", results.len(), context());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A scheduler and two monitors (4 slots each) on `url`, every asset with 3 copies.
async fn farm(url: &str) -> anyhow::Result<Vec<Proc>> {
    let env = [("HWSCHED_JS_REPLICAS", "3".to_string())];
    let sched = Proc::spawn("scheduler", url, &["scheduler", "--startup-grace-s", "0"], &env)?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let mut procs = vec![sched];
    for id in ["c1", "c2"] {
        let m = Proc::spawn(id, url, &["monitor", "--worker-id", id, "--slots", "4", "--level", "basic"], &env)?;
        m.wait_for_log("monitor ready", WAIT).await?;
        procs[0].wait_for_log(&format!("worker joined worker_id=\"{id}\""), WAIT).await?;
        procs.push(m);
    }
    Ok(procs)
}

fn quick_task(id: String) -> TaskRequest {
    TaskRequest {
        task_id: id,
        command: vec!["true".into()],
        requirements: Some(hwsched_proto::v1::Requirements { cpu_cores: 0.25, ..Default::default() }),
        ..Default::default()
    }
}

fn logs(procs: &[Proc]) -> String {
    procs.iter().map(|p| format!("----- {} -----\n{}", p.name, p.log())).collect()
}

/// The node leading `stream`, by index.
async fn leader_of(b: &Bus, cluster: &NatsCluster, stream: Stream) -> anyhow::Result<usize> {
    let mut s = b.jetstream().get_stream(b.subjects().stream(stream)).await?;
    let info = s.info().await?;
    let leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).context("no leader")?;
    cluster.index_of(&leader).with_context(|| format!("leader {leader} is not a node"))
}

/// Submits `n` tasks named `prefix-i`; `fault` runs once a third are submitted.
async fn flow<F, Fut>(b: &Bus, prefix: &str, n: usize, fault: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut fault = Some(fault);
    for i in 0..n {
        if i == n / 3 {
            if let Some(f) = fault.take() {
                f().await?;
            }
        }
        submit_retrying(b, &quick_task(format!("{prefix}-{i:05}"))).await?;
    }
    Ok(())
}

/// The node leading the task stream is killed with `n` tasks flowing, then
/// comes back: every task runs, once.
async fn leader_killed(n: usize, within: Duration) -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3)?;
    let procs = farm(&cluster.url()).await?;
    let b = bus_with(&cluster.url(), 3).await?;
    let leader = leader_of(&b, &cluster, Stream::Tasks).await?;
    // the test's own connection goes to a node that stays up
    let b = bus_with(&cluster.node_url((leader + 1) % 3), 3).await?;
    let killed = std::sync::Mutex::new(None);
    flow(&b, "lk", n, || async {
        cluster.kill(leader);
        *killed.lock().expect("lock") = Some(Instant::now());
        Ok(())
    })
    .await?;
    let started = killed.lock().expect("lock").context("the leader was killed")?;
    // back while the rest drains
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(started.elapsed())).await;
    cluster.restart(leader)?;
    all_ran_once(&b, n, within, || logs(&procs)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_stream_leader_killed_with_tasks_flowing_loses_and_repeats_nothing() -> anyhow::Result<()> {
    leader_killed(600, Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: make test-chaos"]
async fn task_stream_leader_killed_with_10000_tasks_flowing_loses_and_repeats_nothing() -> anyhow::Result<()> {
    leader_killed(10_000, Duration::from_secs(600)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_minority_node_resumed_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3)?;
    let procs = farm(&cluster.url()).await?;
    let b = bus_with(&cluster.url(), 3).await?;
    // freeze a node that leads nothing the test reads from
    let leader = leader_of(&b, &cluster, Stream::Results).await?;
    let frozen = (leader + 1) % 3;
    let b = bus_with(&cluster.node_url(leader), 3).await?;
    flow(&b, "fz", 300, || async { cluster.freeze(frozen) }).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.resume(frozen)?;
    all_ran_once(&b, 300, Duration::from_secs(120), || logs(&procs)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: make test-chaos"]
async fn every_node_restarted_in_turn_under_load_loses_and_repeats_nothing() -> anyhow::Result<()> {
    let cluster = NatsCluster::start(3)?;
    let procs = farm(&cluster.url()).await?;
    let per_round = 500;
    for node in 0..cluster.len() {
        let survivor = bus_with(&cluster.node_url((node + 1) % 3), 3).await?;
        let prefix = format!("rr{node}");
        flow(&survivor, &prefix, per_round, || async {
            cluster.kill(node);
            Ok(())
        })
        .await?;
        cluster.restart(node)?;
    }
    let b = bus_with(&cluster.url(), 3).await?;
    all_ran_once(&b, per_round * cluster.len(), Duration::from_secs(300), || logs(&procs)).await
}
