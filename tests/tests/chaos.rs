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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenth_of_the_monitors_killed_mid_task_loses_nothing() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let url = nats.url();
    let sched = Proc::spawn(
        "scheduler",
        &url,
        &["scheduler", "--startup-grace-s", "0"],
        &[("HWSCHED_WORKER_TIMEOUT_MS", "5000".into())],
    )?;
    sched.wait_for_log("scheduler ready", WAIT).await?;
    let mut monitors = Vec::new();
    for i in 0..WORKERS {
        let id = format!("w{i}");
        let args = ["monitor", "--worker-id", &id, "--slots", "2", "--interval-ms", "500", "--level", "basic"];
        monitors.push((id.clone(), Proc::spawn(&id, &url, &args, &[])?));
    }
    for (id, m) in &monitors {
        m.wait_for_log("monitor ready", WAIT).await?;
        sched.wait_for_log(&format!("worker joined worker_id=\"{id}\""), WAIT).await?;
    }

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
