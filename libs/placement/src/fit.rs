//! Placement of one task: the filters (`filter.rs`) leave the workers that
//! can run it now or, under hwsched, once their running work ends; scoring
//! (`score.rs`) ranks them; the best one wins, or the task waits for it.
//! Pure: no IO, no clock, deterministic for the same inputs.

use std::collections::BTreeMap;

use hwsched_proto::v1::TaskRequest;

pub use crate::filter::{class_matches, critically_overloaded, fits_ever, CRITICAL_PCT};
use crate::{
    explore::explore,
    filter::{dynamic_fit, free_gpus, static_fit, Busy, Demand, Need},
    score::{Candidate, Eval, Policy, Scoring},
    view::WorkerView,
};

/// One candidate of a decision, for `explain` and the decisions table.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The worker.
    pub worker_id: String,
    /// Its hardware class.
    pub hardware_class: String,
    /// Weighted cost (lower is better).
    pub cost: f64,
    /// Expected seconds until it has room (0 = free now).
    pub wait_s: f64,
    /// Expected completion: wait + runtime estimate, s.
    pub completion_s: f64,
    /// The model's runtime prediction there, when it knows the pair.
    pub predicted_runtime_s: Option<f64>,
    /// Score components, by name.
    pub components: Vec<(&'static str, f64)>,
}

/// How many candidates a decision keeps (the winner first).
pub const RANKED_KEPT: usize = 5;

/// The placement decision for one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Run it there now.
    Place {
        /// Chosen worker.
        worker_id: String,
        /// GPU indices reserved for it.
        gpus: Vec<u32>,
        /// Weighted cost of the chosen worker (lower is better).
        score: f64,
        /// Workers that could take it.
        candidates: usize,
        /// The chosen worker's score components, by name.
        components: Vec<(&'static str, f64)>,
        /// Predicted runtime there, when the model knows the pair.
        predicted_runtime_s: Option<f64>,
        /// The best candidates, the winner first.
        ranked: Vec<Ranked>,
    },
    /// Wait for a busy worker: it is expected to finish the task sooner than
    /// any worker free now.
    Queue {
        /// The worker waited for.
        worker_id: String,
        /// Expected seconds until it has room.
        wait_s: f64,
        /// Runtime estimate there, s.
        runtime_s: f64,
        /// Why, for `hwsched queue`.
        reason: String,
        /// The best candidates, the one waited for first.
        ranked: Vec<Ranked>,
    },
    /// Some worker could run it, none can right now.
    Wait {
        /// Why, per filter, for `hwsched queue`.
        reason: String,
    },
    /// No registered worker could ever run it (or none is registered).
    NeverFits {
        /// Why.
        reason: String,
    },
}

/// Chooses a worker for `task` among `workers`, scored without a model.
pub fn place(task: &TaskRequest, workers: &[WorkerView]) -> Outcome {
    place_with(task, workers, &Scoring::default())
}

/// Chooses a worker for `task`: filters on hard requirements and what is free,
/// then the lowest cost wins (ties to the sooner, then the earlier in
/// `workers`: the scheduler passes them in worker id order).
/// Under the hwsched policy, busy workers whose running work is expected to end
/// are candidates too: when one of them wins, the task waits for it.
pub fn place_with(task: &TaskRequest, workers: &[WorkerView], scoring: &Scoring<'_>) -> Outcome {
    if workers.is_empty() {
        return Outcome::NeverFits { reason: "no worker is registered".into() };
    }
    let mut workload: Option<String> = None;
    let demand = demand_seen(task, scoring, &mut workload);
    let f = filter(task, workers, &demand, scoring, &mut workload);
    if f.candidates.is_empty() {
        return unplaceable(workers.len(), f.never, f.busy);
    }
    let evals = scoring.evaluate(task, &f.candidates);
    let (order, explored) = rank(task, &f.candidates, &evals, scoring, &mut workload);
    let ranked = ranked(&order, &f.candidates, &evals);
    let (c, e) = (f.candidates[order[0]], evals[order[0]]);
    if c.wait_s > 0.0 {
        return queue_for(c, &e, &f.candidates, &evals, ranked);
    }
    let mut components = e.parts.to_vec();
    if explored {
        components.push(("explore", 1.0));
    }
    Outcome::Place {
        worker_id: c.view.caps.worker_id.clone(),
        gpus: free_gpus(f.matching[order[0]], &demand, c.view),
        score: e.cost,
        candidates: f.candidates.len(),
        components,
        predicted_runtime_s: e.predicted_runtime_s,
        ranked,
    }
}

/// What `task` reserves, with the memory it was seen to use when that is more
/// than it asks for (a task needs what it used).
fn demand_seen(task: &TaskRequest, scoring: &Scoring<'_>, workload: &mut Option<String>) -> Demand {
    let mut demand = Demand::of(task);
    if let Some(m) = scoring.model {
        let key = workload.get_or_insert_with(|| hwsched_model::task_workload_key(task));
        if let Some(peak) = m.memory_peak_mb(key) {
            demand.memory_mb = demand.memory_mb.max(i64::try_from(peak).unwrap_or(i64::MAX));
        }
    }
    demand
}

/// What the filters left of the workers for one task.
struct Filtered<'w> {
    /// Workers that can take it now, or (hwsched) once their running work ends.
    candidates: Vec<Candidate<'w>>,
    /// Each candidate's GPUs that match the task (mask by position).
    matching: Vec<u64>,
    /// Workers that could never run it, by reason.
    never: BTreeMap<&'static str, usize>,
    /// Workers that cannot run it now, by reason.
    busy: BTreeMap<&'static str, usize>,
}

/// Runs the filters over `workers`, in their order.
fn filter<'w>(
    task: &TaskRequest,
    workers: &'w [WorkerView],
    demand: &Demand,
    scoring: &Scoring<'_>,
    workload: &mut Option<String>,
) -> Filtered<'w> {
    let need = Need::of(task);
    let policy = scoring.policy;
    let mut f =
        Filtered { candidates: Vec::new(), matching: Vec::new(), never: BTreeMap::new(), busy: BTreeMap::new() };
    // Workers of one shape (the same static capabilities) fit the same way:
    // the requirements are checked once per shape.
    let mut shapes: Vec<(u64, Result<u64, &'static str>)> = Vec::new();
    for w in workers {
        let fits = match shapes.iter().find(|(s, _)| w.shape != 0 && *s == w.shape) {
            Some((_, r)) => *r,
            None => {
                let r = static_fit(&need, demand, &w.caps);
                if w.shape != 0 {
                    shapes.push((w.shape, r));
                }
                r
            }
        };
        let gpus = match fits {
            Ok(mask) => mask,
            Err(why) => {
                *f.never.entry(why).or_default() += 1;
                continue;
            }
        };
        let mut fit = dynamic_fit(&need, demand, w, gpus, policy);
        if let (Ok(()), Some(hold), Policy::Hwsched) = (&fit, w.hold_s, policy) {
            let key = workload.get_or_insert_with(|| hwsched_model::task_workload_key(task));
            if scoring.runtime_estimate(key, task, &w.caps.hardware_class).0 > hold {
                fit = Err(Busy { why: "are held for a waiting task", room: true });
            }
        }
        match fit {
            Ok(()) => {
                f.candidates.push(Candidate { view: w, wait_s: 0.0 });
                f.matching.push(gpus);
            }
            Err(b) => {
                *f.busy.entry(b.why).or_default() += 1;
                if let (true, Policy::Hwsched, Some(wait_s)) = (b.room, policy, w.free_in_s) {
                    f.candidates.push(Candidate { view: w, wait_s: wait_s.max(1e-3) });
                    f.matching.push(gpus);
                }
            }
        }
    }
    f
}

/// The outcome when no worker is a candidate: wait when some are only busy,
/// else it never fits.
fn unplaceable(total: usize, never: BTreeMap<&'static str, usize>, busy: BTreeMap<&'static str, usize>) -> Outcome {
    if busy.is_empty() {
        return Outcome::NeverFits { reason: summarize(total, &never) };
    }
    let mut all = busy;
    for (k, v) in never {
        *all.entry(k).or_default() += v;
    }
    Outcome::Wait { reason: summarize(total, &all) }
}

/// The best [`RANKED_KEPT`] candidates, the winner first: lowest cost, then
/// sooner, then earlier in `workers` (only the best few are sorted); an
/// exploring placement's pick goes first. Also says whether it explored.
fn rank(
    task: &TaskRequest,
    candidates: &[Candidate<'_>],
    evals: &[Eval],
    scoring: &Scoring<'_>,
    workload: &mut Option<String>,
) -> (Vec<usize>, bool) {
    let better = |a: &usize, b: &usize| {
        let (x, y) = (&evals[*a], &evals[*b]);
        x.cost.total_cmp(&y.cost).then(candidates[*a].wait_s.total_cmp(&candidates[*b].wait_s)).then(a.cmp(b))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    if order.len() > RANKED_KEPT {
        order.select_nth_unstable_by(RANKED_KEPT - 1, better);
        order.truncate(RANKED_KEPT);
    }
    order.sort_by(better);
    let explored = explore(task, candidates, evals, order[0], scoring, workload);
    if let Some(i) = explored {
        order.retain(|o| *o != i);
        order.insert(0, i);
        order.truncate(RANKED_KEPT);
    }
    (order, explored.is_some())
}

/// The candidates in `order`, as a decision keeps them.
fn ranked(order: &[usize], candidates: &[Candidate<'_>], evals: &[Eval]) -> Vec<Ranked> {
    order
        .iter()
        .map(|i| {
            let (c, e) = (&candidates[*i], &evals[*i]);
            Ranked {
                worker_id: c.view.caps.worker_id.clone(),
                hardware_class: c.view.caps.hardware_class.clone(),
                cost: e.cost,
                wait_s: c.wait_s,
                completion_s: e.completion_s,
                predicted_runtime_s: e.predicted_runtime_s,
                components: e.parts.to_vec(),
            }
        })
        .collect()
}

/// The outcome when the winner `c` is busy: the task waits for it.
fn queue_for(c: Candidate<'_>, e: &Eval, candidates: &[Candidate<'_>], evals: &[Eval], ranked: Vec<Ranked>) -> Outcome {
    let runtime_s = e.completion_s - c.wait_s;
    let now = evals
        .iter()
        .zip(candidates)
        .filter(|(_, c)| c.wait_s == 0.0)
        .map(|(e, _)| e.completion_s)
        .fold(f64::INFINITY, f64::min);
    let alternative =
        if now.is_finite() { format!("; ~{now:.0} s on the best worker free now") } else { String::new() };
    Outcome::Queue {
        worker_id: c.view.caps.worker_id.clone(),
        wait_s: c.wait_s,
        runtime_s,
        reason: format!(
            "for {} (free in ~{:.0} s, then ~{runtime_s:.0} s){alternative}",
            c.view.caps.worker_id, c.wait_s
        ),
        ranked,
    }
}

fn summarize(total: usize, reasons: &BTreeMap<&'static str, usize>) -> String {
    let parts: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
    format!("{total} worker(s): {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::learned_vision;
    use hwsched_proto::v1::{
        CpuInfo, ExecutionResult, GpuInfo, GpuRequirement, Requirements, TaskStatus, WorkerCapabilities, WorkerState,
    };

    use crate::view::shape_of;

    fn worker(id: &str, cores: u32, mem: u64, gpus: &[(&str, u64)]) -> WorkerView {
        WorkerView::available(WorkerCapabilities {
            worker_id: id.into(),
            cpu: Some(CpuInfo { logical_cores: cores, ..Default::default() }),
            memory_mb: mem,
            slots: 4,
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (m, mem))| GpuInfo {
                    index: i as u32,
                    vendor: "nvidia".into(),
                    model: (*m).into(),
                    memory_mb: *mem,
                    compute_capability: "9.0".into(),
                    ..Default::default()
                })
                .collect(),
            software: [("python".to_string(), "3.11.7".to_string())].into(),
            ..Default::default()
        })
    }

    fn task(req: Requirements) -> TaskRequest {
        TaskRequest { task_id: "t".into(), command: vec!["true".into()], requirements: Some(req), ..Default::default() }
    }

    #[test]
    fn a_learned_memory_peak_above_the_request_keeps_the_task_off_small_workers() {
        let ws = [worker("eight", 4, 8_000, &[]), worker("sixteen", 4, 16_000, &[])];
        let t =
            TaskRequest { name: "big-model".into(), ..task(Requirements { memory_mb: 1_000, ..Default::default() }) };
        // it asks for 1 GB; both fit, the first in worker order wins the tie
        assert!(matches!(place(&t, &ws), Outcome::Place { ref worker_id, .. } if worker_id == "eight"));
        // it was seen to peak at 9 GB
        let mut m = hwsched_model::Model::default();
        m.observe(&ExecutionResult {
            name: "big-model".into(),
            hardware_class: "cpu".into(),
            status: TaskStatus::Succeeded as i32,
            duration_s: 5.0,
            resources: Some(hwsched_proto::v1::ResourceUsage { memory_peak_mb: 9_000, ..Default::default() }),
            ..Default::default()
        });
        let learned = Scoring { model: Some(&m), ..Default::default() };
        assert!(
            matches!(place_with(&t, &ws, &learned), Outcome::Place { ref worker_id, .. } if worker_id == "sixteen")
        );
        // and where only small workers exist, it fits none of them
        assert!(
            matches!(place_with(&t, &ws[..1], &learned), Outcome::NeverFits { ref reason } if reason.contains("memory"))
        );
    }

    #[test]
    fn memory_and_cores_filter_workers() {
        let ws = [worker("small", 2, 1024, &[]), worker("big", 16, 65536, &[])];
        let t = task(Requirements { cpu_cores: 4.0, memory_mb: 8000, ..Default::default() });
        assert!(matches!(place(&t, &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "big"));
    }

    #[test]
    fn required_hardware_classes_filter_workers() {
        let mut cpu = worker("cpu", 8, 65536, &[]);
        std::sync::Arc::make_mut(&mut cpu.caps).hardware_class = "cpu:x86_64-epyc".into();
        let mut gpu = worker("gpu", 8, 65536, &[("NVIDIA H100 80GB HBM3", 81559)]);
        std::sync::Arc::make_mut(&mut gpu.caps).hardware_class = "gpu:nvidia-h100-80gb-hbm3".into();
        let (cpu, gpu) =
            (WorkerView { shape: shape_of(&cpu.caps), ..cpu }, WorkerView { shape: shape_of(&gpu.caps), ..gpu });
        let ws = [cpu, gpu];
        let on = |classes: &[&str]| {
            task(Requirements {
                hardware_classes: classes.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            })
        };
        assert!(
            matches!(place(&on(&["gpu:nvidia-h100"]), &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "gpu")
        );
        assert!(
            matches!(place(&on(&["cpu"]), &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "cpu")
        );
        assert!(matches!(place(&on(&["cpu", "gpu"]), &ws), Outcome::Place { candidates: 2, .. }));
        match place(&on(&["accel:tpu"]), &ws) {
            Outcome::NeverFits { reason } => assert!(reason.contains("2 are of another hardware class"), "{reason}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn gpu_model_and_memory_are_matched() {
        let ws = [
            worker("a100", 8, 65536, &[("NVIDIA A100-SXM4-40GB", 40960)]),
            worker("h100", 8, 65536, &[("NVIDIA H100 80GB HBM3", 81559)]),
        ];
        let req = |models: &[&str], mem| Requirements {
            gpus: Some(GpuRequirement {
                count: 1,
                min_memory_mb: mem,
                models: models.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(place(&task(req(&["h100"], 0)), &ws), Outcome::Place { ref worker_id, .. } if worker_id == "h100")
        );
        assert!(
            matches!(place(&task(req(&[], 60000)), &ws), Outcome::Place { ref worker_id, .. } if worker_id == "h100")
        );
        assert!(matches!(place(&task(req(&["MI300"], 0)), &ws), Outcome::NeverFits { .. }));
    }

    #[test]
    fn busy_worker_means_wait_not_never() {
        let mut w = worker("one", 2, 4096, &[]);
        w.reserved.cpu_cores = 2.0;
        w.reserved.slots = 1;
        match place(&task(Requirements::default()), &[w]) {
            Outcome::Wait { reason } => assert!(reason.contains("no free cpu cores"), "{reason}"),
            other => panic!("expected wait, got {other:?}"),
        }
    }

    #[test]
    fn reserved_gpus_are_not_handed_out_twice() {
        let mut w = worker("g", 8, 65536, &[("H100", 81559), ("H100", 81559)]);
        w.reserved.gpus = vec![0];
        let t =
            task(Requirements { gpus: Some(GpuRequirement { count: 1, ..Default::default() }), ..Default::default() });
        assert!(matches!(place(&t, &[w]), Outcome::Place { ref gpus, .. } if gpus == &vec![1]));
    }

    #[test]
    fn software_requirement_uses_semver() {
        let ws = [worker("py311", 4, 8192, &[])];
        let need = |r: &str| {
            task(Requirements { software: [("python".to_string(), r.to_string())].into(), ..Default::default() })
        };
        assert!(matches!(place(&need(">=3.10"), &ws), Outcome::Place { .. }));
        assert!(matches!(place(&need(">=3.12"), &ws), Outcome::NeverFits { .. }));
        assert!(matches!(place(&need(">=1"), &[worker("x", 1, 1, &[])]), Outcome::Place { .. }));
    }

    #[test]
    fn draining_and_throttling_workers_get_nothing() {
        let mut d = worker("d", 4, 8192, &[]);
        d.state = WorkerState::Draining;
        let mut h = worker("h", 4, 8192, &[]);
        h.throttling = true;
        assert!(matches!(place(&task(Requirements::default()), &[d, h]), Outcome::Wait { .. }));
    }

    #[test]
    fn least_loaded_worker_wins_and_ties_go_to_the_earlier_worker() {
        let mut busy = worker("a", 8, 8192, &[]);
        busy.cpu_util_pct = 90.0;
        let idle = worker("b", 8, 8192, &[]);
        assert!(
            matches!(place(&task(Requirements::default()), &[busy, idle.clone()]), Outcome::Place { ref worker_id, .. } if worker_id == "b")
        );
        let idle2 = worker("c", 8, 8192, &[]);
        assert!(
            matches!(place(&task(Requirements::default()), &[idle.clone(), idle2.clone()]), Outcome::Place { ref worker_id, .. } if worker_id == "b")
        );
        assert!(
            matches!(place(&task(Requirements::default()), &[idle2, idle]), Outcome::Place { ref worker_id, .. } if worker_id == "c")
        );
    }

    #[test]
    fn no_workers_is_never_fits() {
        assert!(matches!(place(&task(Requirements::default()), &[]), Outcome::NeverFits { .. }));
    }

    /// The score tests' task: a resnet vision test named "t".
    fn vision() -> TaskRequest {
        TaskRequest {
            name: "t".into(),
            test_type: "vision".into(),
            model_family: "resnet".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_exploring_placement_tries_hardware_the_model_is_unsure_of_within_bounds() {
        // well known on the h100 (10 s); once on the a100, where the model is unsure
        let mut m = learned_vision(&[("gpu:h100", 10.0)]);
        m.observe(&ExecutionResult {
            name: "t".into(),
            test_type: "vision".into(),
            model_family: "resnet".into(),
            hardware_class: "gpu:a100".into(),
            duration_s: 15.0,
            status: TaskStatus::Succeeded as i32,
            ..Default::default()
        });
        let placeable = |id: &str, hw: &str| {
            WorkerView::available(WorkerCapabilities {
                worker_id: id.into(),
                hardware_class: hw.into(),
                slots: 4,
                cpu: Some(hwsched_proto::v1::CpuInfo { logical_cores: 8, ..Default::default() }),
                memory_mb: 16_000,
                ..Default::default()
            })
        };
        let ws = [placeable("a", "gpu:a100"), placeable("h", "gpu:h100"), placeable("x", "cpu:x86")];
        let winner = |explore: bool, t: &TaskRequest| match place_with(
            t,
            &ws,
            &Scoring { model: Some(&m), explore, ..Default::default() },
        ) {
            Outcome::Place { worker_id, components, .. } => {
                (worker_id, components.iter().any(|(n, _)| *n == "explore"))
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(winner(false, &vision()), ("h".to_string(), false));
        assert_eq!(winner(true, &vision()), ("a".to_string(), true));
        // not when the unsure hardware is expected to take more than twice as long
        let mut slow = vision();
        slow.expected_duration_s = 100.0;
        let m2 = learned_vision(&[("gpu:h100", 10.0)]);
        let far = place_with(&slow, &ws, &Scoring { model: Some(&m2), explore: true, ..Default::default() });
        assert!(matches!(far, Outcome::Place { ref worker_id, .. } if worker_id == "h"), "{far:?}");
    }
}
