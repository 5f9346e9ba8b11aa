//! The engine's tests: determinism, the bound, the targets on the built-in
//! trace, the ablation and thermal avoidance.

use super::*;
use crate::generate;

fn run_policy(trace: &Trace, policy: Policy) -> Report {
    run(trace, &Config { policy, ..Config::default() })
}

#[test]
fn same_seed_same_report() {
    let t = generate::builtin(3);
    assert_eq!(run_policy(&t, Policy::Random), run_policy(&t, Policy::Random));
}

#[test]
fn every_task_ends_and_the_bound_holds() {
    let t = generate::builtin(1);
    for p in Policy::ALL {
        let r = run_policy(&t, p);
        assert_eq!(r.unfinished, 0, "{p}");
        assert_eq!(r.succeeded + r.failed + r.rejected, r.tasks, "{p}");
        assert!(r.makespan_s >= r.makespan_lower_bound_s, "{p}: {} < {}", r.makespan_s, r.makespan_lower_bound_s);
        assert!(r.placements >= r.tasks, "{p}");
    }
}

/// The targets on the built-in trace: hwsched's mean completion at
/// least 35 % below least-loaded and 20 % below the seed's policy, its
/// makespan within 10 % of the lower bound, and nothing placed on a
/// throttling worker.
#[test]
fn hwsched_beats_the_baselines_on_the_builtin_trace() {
    let t = generate::builtin(1);
    let ours = run_policy(&t, Policy::Hwsched);
    let least = run_policy(&t, Policy::LeastLoaded);
    let seed = run_policy(&t, Policy::Seed);
    assert!(ours.mean_completion_s <= 0.65 * least.mean_completion_s, "{ours:?}\n{least:?}");
    assert!(ours.mean_completion_s <= 0.80 * seed.mean_completion_s, "{ours:?}\n{seed:?}");
    assert!(ours.makespan_s <= 1.10 * ours.makespan_lower_bound_s, "{ours:?}");
    assert_eq!(ours.throttled_placements, 0);
    assert_eq!(ours.overloaded_placements, 0);
    // the baselines do land on throttling and overloaded workers: the fleet has them
    assert!(least.throttled_placements > 0 && least.overloaded_placements > 0, "{least:?}");
    // and the learned model predicts the runtime of what it places
    assert!(ours.prediction_mape.unwrap_or(1.0) < 0.15, "{ours:?}");
    assert!(ours.predicted_share > 0.8, "{ours:?}");
}

#[test]
fn the_learned_model_is_accurate_and_is_what_beats_the_seed_policy() {
    let t = generate::builtin(1);
    let ours = run_policy(&t, Policy::Hwsched);
    let age = |a: &str| ours.prediction_mape_by_age.get(a).copied().unwrap_or(1.0);
    // pairs with 20 runs or more; pairs never observed whose test type ran on the class
    assert!(age("20+") <= 0.15, "{:?}", ours.prediction_mape_by_age);
    assert!(age("unseen") <= 0.30, "{:?}", ours.prediction_mape_by_age);
    // the ablation: without the model hwsched does no better than the seed policy
    let blind = run(&t, &Config { learn: false, ..Config::default() });
    let seed = run_policy(&t, Policy::Seed);
    assert_eq!(blind.policy, "hwsched-no-learner");
    assert_eq!(blind.prediction_mape, None);
    assert!(ours.mean_completion_s < 0.8 * blind.mean_completion_s, "{ours:?}\n{blind:?}");
    assert!(blind.mean_completion_s > seed.mean_completion_s, "{blind:?}\n{seed:?}");
    assert!(ours.mean_completion_s <= 0.8 * seed.mean_completion_s, "{ours:?}\n{seed:?}");
}

#[test]
fn a_throttling_worker_slows_its_tasks_and_hwsched_avoids_it() {
    use crate::trace::{TaskLine, Thermal, WorkerLine};
    use hwsched_proto::v1::{CpuInfo, TaskRequest, WorkerCapabilities};
    let worker = |id: &str, heat: f64| WorkerLine {
        capabilities: WorkerCapabilities {
            worker_id: id.into(),
            hardware_class: "gpu:x".into(),
            slots: 1,
            cpu: Some(CpuInfo { logical_cores: 8, ..Default::default() }),
            memory_mb: 8192,
            ..Default::default()
        },
        thermal: Some(Thermal { ambient_c: 40.0, heat_c: heat, tau_s: 5.0, throttle_c: 90.0 }),
        background: vec![],
        join_s: None,
        leave_s: None,
        faults: vec![],
    };
    let tasks = (0..40)
        .map(|i| TaskLine {
            arrival_s: f64::from(i) * 20.0,
            request: TaskRequest {
                task_id: format!("t{i}"),
                name: "t".into(),
                command: vec!["true".into()],
                ..Default::default()
            },
            runtime_s: [("gpu:x".to_string(), 60.0)].into(),
            failure_rate: Default::default(),
            needs_memory_mb: None,
            straggler: None,
        })
        .collect();
    let t = Trace { workers: vec![worker("cool", 30.0), worker("hot", 60.0)], tasks };
    t.check().expect("valid");
    let ours = run_policy(&t, Policy::Hwsched);
    let rr = run_policy(&t, Policy::RoundRobin);
    assert_eq!(ours.throttled_placements, 0, "{ours:?}");
    assert!(rr.throttled_placements > 0, "{rr:?}");
}
