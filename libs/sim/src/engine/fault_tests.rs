//! The faults' tests: each fault kind ends attempts with its category, an
//! out-of-memory retry runs with more memory on the worker that has it, a bad
//! worker is quarantined and probed back after its window, a GPU burst.

use hwsched_placement::Policy;
use hwsched_proto::v1::{CpuInfo, Requirements, TaskRequest, WorkerCapabilities};

use crate::{
    engine::{run, Config, Sim},
    report::Report,
    trace::{FaultKind, Straggler, TaskLine, Trace, WorkerFault, WorkerLine},
};

fn worker(id: &str, memory_mb: u64, faults: Vec<WorkerFault>) -> WorkerLine {
    WorkerLine {
        capabilities: WorkerCapabilities {
            worker_id: id.into(),
            hardware_class: "cpu:x".into(),
            slots: 1,
            cpu: Some(CpuInfo { logical_cores: 8, ..Default::default() }),
            memory_mb,
            ..Default::default()
        },
        thermal: None,
        background: vec![],
        join_s: None,
        leave_s: None,
        faults,
    }
}

fn fault(kind: FaultKind, from_s: f64, to_s: f64, p: f64) -> WorkerFault {
    WorkerFault { kind, from_s, to_s, p }
}

/// `n` tasks of `runtime_s` every `every_s`, asking 8192 MB, at revision r1,
/// cycling over 4 test names.
fn tasks(n: u32, every_s: f64, runtime_s: f64) -> Vec<TaskLine> {
    (0..n)
        .map(|i| TaskLine {
            arrival_s: f64::from(i) * every_s,
            request: TaskRequest {
                task_id: format!("t{i}"),
                name: format!("test-{}", i % 4),
                command: vec!["true".into()],
                max_attempts: 3,
                requirements: Some(Requirements { memory_mb: 8_192, ..Default::default() }),
                revision: "r1".into(),
                ..Default::default()
            },
            runtime_s: [("cpu:x".to_string(), runtime_s)].into(),
            failure_rate: Default::default(),
            needs_memory_mb: None,
            straggler: None,
        })
        .collect()
}

fn run_policy(t: &Trace, policy: Policy) -> Report {
    t.check().expect("valid");
    run(t, &Config { policy, ..Config::default() })
}

fn attempts(r: &Report, category: &str) -> usize {
    r.failed_attempts_by_category.get(category).copied().unwrap_or(0)
}

#[test]
fn each_fault_ends_its_attempts_with_its_category() {
    let always = |kind| vec![worker("w", 65_536, vec![fault(kind, 0.0, 1e6, 1.0)])];
    let bad =
        run_policy(&Trace { workers: always(FaultKind::Failing), tasks: tasks(2, 1.0, 10.0) }, Policy::LeastLoaded);
    assert_eq!((attempts(&bad, "test_failed"), bad.failed, bad.failed_not_own), (6, 2, 2), "{bad:?}");
    let gpu =
        run_policy(&Trace { workers: always(FaultKind::GpuFault), tasks: tasks(2, 1.0, 10.0) }, Policy::LeastLoaded);
    // GPU faults spend no attempts: 3 retries, then the task gives up
    assert_eq!((attempts(&gpu, "gpu_fault"), gpu.failed, gpu.failed_not_own), (8, 2, 2), "{gpu:?}");
    let mut oom = Trace { workers: vec![worker("w", 65_536, vec![])], tasks: tasks(2, 1.0, 10.0) };
    oom.tasks.iter_mut().for_each(|t| t.needs_memory_mb = Some(12_000));
    let r = run_policy(&oom, Policy::LeastLoaded);
    // the baselines retry with the same memory: out of memory every time, the test's own failure
    assert_eq!((attempts(&r, "out_of_memory"), r.failed, r.failed_not_own), (6, 2, 0), "{r:?}");
    let mut flaky = Trace { workers: vec![worker("w", 65_536, vec![])], tasks: tasks(2, 1.0, 10.0) };
    flaky.tasks.iter_mut().for_each(|t| t.failure_rate = [("cpu:x".to_string(), 1.0)].into());
    let r = run_policy(&flaky, Policy::Hwsched);
    assert_eq!((attempts(&r, "test_failed"), r.failed, r.failed_not_own), (6, 2, 0), "{r:?}");
    assert!(r.wasted_machine_s > 6.0 * 2.0 - 1e-9 && r.wasted_machine_s <= 60.0, "{r:?}");
}

#[test]
fn a_straggler_runs_its_factor_longer() {
    let mut t = Trace { workers: vec![worker("w", 65_536, vec![])], tasks: tasks(1, 1.0, 10.0) };
    let plain = run_policy(&t, Policy::LeastLoaded);
    t.tasks[0].straggler = Some(Straggler { p: 1.0, factor: 3.0 });
    let slow = run_policy(&t, Policy::LeastLoaded);
    assert_eq!((plain.makespan_s, slow.makespan_s), (10.0, 30.0));
    assert_eq!(slow.failed + slow.wasted_machine_s as usize, 0, "a straggler is slow, not failed");
}

#[test]
fn an_out_of_memory_retry_asks_for_more_and_runs_on_the_worker_that_has_it() {
    // 10,000 MB cannot grant the 12,288 MB of the retry; 32,768 MB can. The
    // classes differ so that where the time went shows where the tasks ran.
    let mut workers = vec![worker("small", 10_000, vec![]), worker("big", 32_768, vec![])];
    workers[0].capabilities.hardware_class = "cpu:small".into();
    workers[1].capabilities.hardware_class = "cpu:big".into();
    let mut t = Trace { workers, tasks: tasks(6, 1.0, 10.0) };
    for task in &mut t.tasks {
        task.needs_memory_mb = Some(12_000);
        task.runtime_s = [("cpu:small".to_string(), 10.0), ("cpu:big".to_string(), 50.0)].into();
    }
    let ours = run_policy(&t, Policy::Hwsched);
    // every first attempt (8192 MB) runs out of memory; every retry (12,288 MB) passes
    assert_eq!((attempts(&ours, "out_of_memory"), ours.succeeded, ours.failed), (6, 6, 0), "{ours:?}");
    // six whole 50 s runs on "big"
    let big_busy_s = ours.utilization_by_class["cpu:big"] * ours.makespan_s;
    assert!(big_busy_s >= 6.0 * 50.0 - 1.0, "{ours:?}");
    let theirs = run_policy(&t, Policy::LeastLoaded);
    assert_eq!((attempts(&theirs, "out_of_memory"), theirs.failed), (18, 6), "{theirs:?}");
}

/// Four workers of a class, `bad` failing every attempt from 0 to 600 s, and
/// a task every 2 s for 1,500 s.
fn bad_worker_trace() -> Trace {
    let mut workers: Vec<WorkerLine> = (1..=3).map(|i| worker(&format!("ok-{i}"), 65_536, vec![])).collect();
    workers.push(worker("bad", 65_536, vec![fault(FaultKind::Failing, 0.0, 600.0, 1.0)]));
    Trace { workers, tasks: tasks(750, 2.0, 6.0) }
}

#[test]
fn a_bad_worker_is_quarantined_then_probed_back_after_its_window() {
    let t = bad_worker_trace();
    t.check().expect("valid");
    let mut sim = Sim::new(&t, &Config::default());
    let now = sim.simulate();
    let r = sim.report(now);
    let health = &sim.tally.health_ms;
    assert_eq!(health.len(), 2, "{health:?}");
    let ((quarantined_ms, true), (restored_ms, false)) = (health[0], health[1]) else { panic!("{health:?}") };
    assert!(quarantined_ms < 100_000, "quarantined early: {health:?}");
    // probes fail until 600 s; then three pass, 30 s apart
    assert!((600_000..=720_000).contains(&restored_ms), "{health:?}");
    assert!(r.probes >= 3 && r.probe_machine_s >= 3.0 * crate::engine::PROBE_S, "{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    // without quarantine the bad worker keeps failing attempts for the whole window
    let blind = run_policy(&t, Policy::LeastLoaded);
    assert_eq!((blind.quarantines, blind.probes), (0, 0));
    assert!(attempts(&blind, "test_failed") > 5 * attempts(&r, "test_failed"), "{blind:?}\n{r:?}");
    assert!(blind.wasted_machine_s > r.wasted_machine_s, "{blind:?}\n{r:?}");
}

#[test]
fn a_gpu_fault_burst_quarantines_its_worker_at_the_first_fault() {
    let mut t = bad_worker_trace();
    t.workers[3].faults = vec![fault(FaultKind::GpuFault, 100.0, 400.0, 1.0)];
    let mut sim = Sim::new(&t, &Config::default());
    let now = sim.simulate();
    let r = sim.report(now);
    assert_eq!(attempts(&r, "gpu_fault"), 1, "{r:?}");
    let health = &sim.tally.health_ms;
    assert!(matches!(health[..], [(q, true), (back, false)] if q < 110_000 && back >= 400_000), "{health:?}");
    let blind = run_policy(&t, Policy::LeastLoaded);
    assert!(attempts(&blind, "gpu_fault") > 10, "{blind:?}");
    assert_eq!((r.failed, r.failed_not_own), (0, 0), "{r:?}");
}
