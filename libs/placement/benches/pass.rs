//! One placement pass of the scheduler's state machine (`State::plan`), as the
//! service runs it under load: 1,000 (or 10,000) registered 8-slot workers,
//! half their slots taken by assigned attempts, and a batch of new tasks. Each
//! sample inserts the batch, plans it and completes the attempts it placed
//! (so the state stays the same); `plan` is timed, and apart the results
//! (`State::complete`), with the quarantine's evidence kept (on) and not (off).
//! Prints µs per pass, per placed task and per result.
//! `cargo bench -p hwsched-placement --bench pass`
#![allow(missing_docs)]

mod fleet;

use std::time::{Duration, Instant};

use hwsched_placement::state::{Action, State};
use hwsched_proto::v1::{ExecutionResult, TaskRecord, TaskRequest, TaskState, TaskStatus};

fn task(id: String) -> TaskRecord {
    TaskRecord {
        task: Some(TaskRequest {
            task_id: id,
            command: vec!["true".into()],
            expected_duration_s: 30.0,
            ..Default::default()
        }),
        state: TaskState::Queued as i32,
        ..Default::default()
    }
}

fn main() {
    println!(
        "{:>8} {:>6} {:>8} {:>11} {:>12} {:>12} {:>12}",
        "workers", "batch", "samples", "quarantine", "per pass", "per task", "per result"
    );
    // the last row: more tasks than free slots, so the batch pass orders the
    // head of the queue (and the unplaced rest of each batch stays queued)
    let rows = [(1_000usize, 16usize, 400usize), (1_000, 256, 100), (10_000, 256, 20), (50, 1_000, 20)];
    for ((n, batch, samples), quarantine) in rows.into_iter().flat_map(|r| [(r, true), (r, false)]) {
        let mut s = State::with_aging(60_000);
        s.quarantine.enabled = quarantine;
        s.model = Some(fleet::model());
        for w in fleet::workers(n) {
            s.register((*w.caps).clone(), 0);
        }
        // half of every worker's slots busy with long attempts
        let mut seq = 0u64;
        let mut now = 1_000i64;
        let mut fill = Vec::new();
        for _ in 0..n * 4 {
            seq += 1;
            fill.push(task(format!("fill-{seq}")));
        }
        for r in fill {
            s.insert(r, now);
        }
        let _ = s.plan(now, true);
        let mut times = Vec::with_capacity(samples);
        let (mut results, mut completing) = (0u32, Duration::ZERO);
        for _ in 0..samples {
            now += 10;
            for _ in 0..batch {
                seq += 1;
                s.insert(task(format!("t-{seq}")), now);
            }
            let t0 = Instant::now();
            let actions = std::hint::black_box(s.plan(now, true));
            times.push(t0.elapsed());
            let t1 = Instant::now();
            for a in actions {
                if let Action::Assign(r) = a {
                    let res = ExecutionResult {
                        task_id: r.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
                        attempt: r.attempt,
                        worker_id: r.worker_id.clone(),
                        status: TaskStatus::Succeeded as i32,
                        ..Default::default()
                    };
                    std::hint::black_box(s.complete(&res, now));
                    results += 1;
                }
            }
            completing += t1.elapsed();
        }
        times.sort();
        let mean = times.iter().sum::<Duration>() / samples as u32;
        let on = if quarantine { "on" } else { "off" };
        let per_result = completing / results.max(1);
        println!(
            "{n:>8} {batch:>6} {samples:>8} {on:>11} {:>12.1?} {:>12.1?} {per_result:>12.1?}",
            mean,
            mean / batch as u32
        );
    }
}
