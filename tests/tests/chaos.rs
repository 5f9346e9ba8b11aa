//! Chaos at fleet scale: a tenth of the monitors SIGKILLed while their tests
//! run. Every task they held is placed again within 10 s of the kill (with a
//! 5 s worker timeout), and every task of the batch ends succeeded exactly once.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use hwsched_proto::{
    v1::{ExecutionResult, TaskEvent, TaskEventKind, TaskStatus},
    Message,
};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, sleep_task, submit, Proc};

const WORKERS: usize = 10;
const SLOTS: usize = 2;
const TASKS: usize = WORKERS * SLOTS;
const WAIT: Duration = Duration::from_secs(60);

/// A scheduler (worker timeout `timeout_ms`) and a monitor process per id
/// (`slots` each, heartbeat every `interval_ms`), every worker joined.
async fn fleet(
    url: &str,
    timeout_ms: u32,
    ids: &[&str],
    slots: u32,
    interval_ms: u32,
) -> anyhow::Result<(Proc, Vec<(String, Proc)>)> {
    let sched = Proc::spawn(
        "scheduler",
        url,
        &["scheduler", "--startup-grace-s", "0"],
        &[("HWSCHED_WORKER_TIMEOUT_MS", timeout_ms.to_string())],
    )?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let (slots, interval) = (slots.to_string(), interval_ms.to_string());
    let mut monitors = Vec::new();
    for id in ids {
        let args = ["monitor", "--worker-id", id, "--slots", &slots, "--interval-ms", &interval, "--level", "basic"];
        monitors.push((id.to_string(), Proc::spawn(id, url, &args, &[])?));
    }
    for (id, m) in &monitors {
        m.wait_for_log("monitor ready", WAIT).await?;
        sched.wait_for_log(&format!("worker joined worker_id=\"{id}\""), WAIT).await?;
    }
    Ok((sched, monitors))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenth_of_the_monitors_killed_mid_task_loses_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let ids: Vec<String> = (0..WORKERS).map(|i| format!("w{i}")).collect();
    let (sched, mut monitors) = fleet(&url, 5000, &ids.iter().map(String::as_str).collect::<Vec<_>>(), 2, 500).await?;

    let b = bus(&url).await?;
    let mut events = b.client().subscribe("hws.events.>").await?;
    let mut results = b.client().subscribe("hws.results.>").await?;
    for i in 0..TASKS {
        submit(&b, &sleep_task(&format!("c-{i}"), "6")).await?;
    }
    // every slot busy: then a tenth of the workers die
    let mut on: HashMap<String, String> = HashMap::new();
    while on.len() < TASKS {
        let m = tokio::time::timeout(WAIT, events.next()).await?.expect("event");
        let ev = TaskEvent::decode(m.payload.as_ref())?;
        if ev.kind() == TaskEventKind::Started {
            on.insert(ev.task_id, ev.worker_id);
        }
    }
    let victims: Vec<String> = monitors.iter().take(WORKERS / 10).map(|(id, _)| id.clone()).collect();
    let mut lost: Vec<String> = on.iter().filter(|(_, w)| victims.contains(w)).map(|(t, _)| t.clone()).collect();
    lost.sort();
    assert_eq!(lost.len(), SLOTS * victims.len(), "each victim held {SLOTS} tasks: {on:?}");
    let killed_at = std::time::Instant::now();
    for (id, m) in monitors.iter_mut() {
        if victims.contains(id) {
            m.kill();
        }
    }

    // each lost task is assigned again, elsewhere, within 10 s
    let mut replaced: HashMap<String, Duration> = HashMap::new();
    let mut done: HashMap<String, Vec<ExecutionResult>> = HashMap::new();
    while replaced.len() < lost.len() || done.len() < TASKS {
        tokio::select! {
            m = events.next() => {
                let ev = TaskEvent::decode(m.expect("events").payload.as_ref())?;
                if ev.kind() == TaskEventKind::Assigned && lost.contains(&ev.task_id) && ev.attempt == 2 {
                    assert!(!victims.contains(&ev.worker_id), "{} placed on the dead {}", ev.task_id, ev.worker_id);
                    replaced.entry(ev.task_id).or_insert(killed_at.elapsed());
                }
            }
            m = results.next() => {
                let r = ExecutionResult::decode(m.expect("results").payload.as_ref())?;
                done.entry(r.task_id.clone()).or_default().push(r);
            }
            _ = tokio::time::sleep(WAIT) => anyhow::bail!(
                "stalled: {} of {} re-placed, {} of {TASKS} finished\nscheduler:\n{}", replaced.len(), lost.len(), done.len(), sched.log()
            ),
        }
    }
    eprintln!("re-placed after the kill: {replaced:?}");
    for (task, after) in &replaced {
        assert!(*after < Duration::from_secs(10), "{task} re-placed {after:?} after the kill");
    }
    for (task, rs) in &done {
        assert_eq!(rs.len(), 1, "{task} finished {} times: {rs:?}", rs.len());
        assert_eq!(rs[0].status(), TaskStatus::Succeeded, "{task}: {:?}", rs[0]);
        if lost.contains(task) {
            assert_eq!(rs[0].attempt, 2, "{task} ran again");
        }
    }
    Ok(())
}

/// The next lifecycle event on `events`.
async fn next_event(events: &mut async_nats::Subscriber, wait: Duration) -> anyhow::Result<TaskEvent> {
    let m = tokio::time::timeout(wait, events.next()).await?.ok_or_else(|| anyhow::anyhow!("events ended"))?;
    Ok(TaskEvent::decode(m.payload.as_ref())?)
}

/// A monitor frozen (SIGSTOP) longer than the worker timeout, then resumed:
/// its test runs on elsewhere meanwhile (at-least-once: the frozen monitor's
/// child kept running, so the command ran twice); the scheduler counts only
/// the second attempt, ignores the late result of the first, and takes the
/// resumed worker back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_monitor_is_replaced_and_its_late_result_ignored() -> anyhow::Result<()> {
    use nix::sys::signal::{kill, Signal};
    let nats = NatsServer::start()?;
    let url = nats.url();
    let (_sched, monitors) = fleet(&url, 2000, &["w-a", "w-b"], 1, 200).await?;
    let monitors: HashMap<String, Proc> = monitors.into_iter().collect();
    let b = bus(&url).await?;
    let mut events = b.client().subscribe("hws.events.frozen").await?;
    let mut results = b.client().subscribe("hws.results.*.frozen").await?;
    submit(&b, &sleep_task("frozen", "3")).await?;
    let victim = loop {
        let ev = next_event(&mut events, WAIT).await?;
        if ev.kind() == TaskEventKind::Started {
            break ev.worker_id;
        }
    };
    let pid = nix::unistd::Pid::from_raw(monitors[&victim].pid() as i32);
    kill(pid, Signal::SIGSTOP)?;
    let other = loop {
        let ev = next_event(&mut events, WAIT).await?;
        if ev.kind() == TaskEventKind::Assigned && ev.attempt == 2 {
            break ev.worker_id;
        }
    };
    assert_ne!(other, victim);
    kill(pid, Signal::SIGCONT)?;
    // both attempts report; only the second counts
    let mut by_attempt = HashMap::new();
    while by_attempt.len() < 2 {
        let m = tokio::time::timeout(WAIT, results.next()).await?.expect("result");
        let r = ExecutionResult::decode(m.payload.as_ref())?;
        by_attempt.insert(r.attempt, r.worker_id);
    }
    assert_eq!((by_attempt[&1].as_str(), by_attempt[&2].as_str()), (victim.as_str(), other.as_str()));
    let out = hwsched_tests::cli_async(&url, &["tasks", "frozen"]).await?;
    assert_eq!(out.stdout.matches("finished").count(), 1, "one end only:\n{}", out.stdout);
    assert!(out.stdout.contains("finished: succeeded"), "{}", out.stdout);
    let out = hwsched_tests::cli_async(&url, &["explain", "frozen"]).await?;
    assert!(out.stdout.contains("state      succeeded, attempt 2"), "{}", out.stdout);
    // the resumed worker is back and takes work: two tasks for two one-slot workers
    let mut thawed = b.client().subscribe("hws.events.>").await?;
    hwsched_testkit::eventually(WAIT, || async {
        let out = hwsched_tests::cli_async(&url, &["workers"]).await?;
        Ok(out.stdout.lines().any(|l| l.starts_with(victim.as_str()) && l.contains(" active")).then_some(()))
    })
    .await?;
    for id in ["thaw-1", "thaw-2"] {
        submit(&b, &sleep_task(id, "1")).await?;
    }
    let mut ran_on = Vec::new();
    while ran_on.len() < 2 {
        let ev = next_event(&mut thawed, WAIT).await?;
        if ev.kind() == TaskEventKind::Started && ev.task_id.starts_with("thaw-") {
            ran_on.push(ev.worker_id);
        }
    }
    assert!(ran_on.contains(&victim), "the resumed {victim} got nothing: {ran_on:?}");
    Ok(())
}

/// nats-server (file store) restarted while thirty tests are queued and
/// running: every service reconnects and every test ends succeeded, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_mid_run_loses_no_task() -> anyhow::Result<()> {
    const N: usize = 30;
    let mut nats = NatsServer::start()?;
    let url = nats.url();
    let (sched, _monitors) = fleet(&url, 10_000, &["w-1", "w-2"], 2, 200).await?;
    {
        let b = bus(&url).await?;
        let mut events = b.client().subscribe("hws.events.>").await?;
        for i in 0..N {
            submit(&b, &sleep_task(&format!("r-{i}"), "0.5")).await?;
        }
        // some have run, some run, most wait: now the server goes
        let mut started = 0;
        while started < 6 {
            if next_event(&mut events, WAIT).await?.kind() == TaskEventKind::Started {
                started += 1;
            }
        }
    }
    nats.restart()?;
    let client = hwsched_client::Client::connect(&hwsched_config::NatsConfig::new(&url)).await?;
    let ids: Vec<String> = (0..N).map(|i| format!("r-{i}")).collect();
    let histories = hwsched_testkit::eventually(Duration::from_secs(120), || async {
        let mut all = Vec::new();
        for id in &ids {
            let h = client.history(id).await?;
            if h.attempts.last().is_none_or(|a| a.result.status() != TaskStatus::Succeeded) {
                return Ok(None);
            }
            all.push((id.clone(), h));
        }
        Ok(Some(all))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}\nscheduler:\n{}", sched.log()))?;
    for (id, h) in &histories {
        let successes = h.attempts.iter().filter(|a| a.result.status() == TaskStatus::Succeeded).count();
        assert_eq!(successes, 1, "{id} succeeded {successes} times");
    }
    Ok(())
}

/// The active scheduler SIGKILLed while 10,000 tasks flow to 100 simulated
/// workers (`hwsched bench assign`): the standby takes over and every task is
/// assigned, a task assigned twice (at-least-once across the hand-over)
/// counted and kept under 0.1 %. Slow: `make test-chaos` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: make test-chaos"]
async fn killing_the_active_scheduler_under_10k_tasks_loses_none() -> anyhow::Result<()> {
    const N: usize = 10_000;
    let nats = NatsServer::start()?;
    let url = nats.url();
    let mut a =
        Proc::spawn("scheduler a", &url, &["scheduler", "--startup-grace-s", "0"], &[("HOSTNAME", "sched-a".into())])?;
    a.wait_for_log("became the active scheduler", WAIT).await?;
    let b =
        Proc::spawn("scheduler b", &url, &["scheduler", "--startup-grace-s", "0"], &[("HOSTNAME", "sched-b".into())])?;
    b.wait_for_log("standby: another scheduler is active", WAIT).await?;
    let bench = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(hwsched_tests::hwsched_bin()?)
                .args([
                    "bench",
                    "assign",
                    "--workers",
                    "100",
                    "--slots",
                    "8",
                    "--tasks",
                    &N.to_string(),
                    "--timeout-s",
                    "240",
                ])
                .env("HWSCHED_NATS_URL", url)
                .output()
                .map_err(anyhow::Error::from)
        })
    };
    // a few seconds in (3 s of the bench's fleet registration, then submissions): kill the active
    let c = hwsched_tests::bus(&url).await?;
    let mut assigns = c.client().subscribe("hws.assign.>").await?;
    let mut seen = 0;
    while seen < N / 5 {
        tokio::time::timeout(WAIT, assigns.next()).await?.expect("assignments");
        seen += 1;
    }
    a.kill();
    b.wait_for_log("became the active scheduler", WAIT).await?;
    let out = bench.await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}\nscheduler b:\n{}", String::from_utf8_lossy(&out.stderr), b.log());
    assert!(stdout.contains(&format!("assigned {N} of {N}")), "{stdout}");
    let dups: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("duplicate assignments "))
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no duplicate count: {stdout}"))?;
    eprintln!("{stdout}");
    assert!(dups * 1000 <= N as u64, "{dups} duplicate assignments of {N}: over 0.1 %");
    Ok(())
}
