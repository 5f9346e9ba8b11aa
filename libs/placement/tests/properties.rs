//! Properties of the pure core over random fleets and tasks: a placement never
//! violates a hard requirement or a reservation, and the GPUs it hands out are
//! free, matching and distinct. The checks below are written independently of
//! `fit.rs` and `filter.rs` (plain loops over the same data).
#![allow(missing_docs)]

use std::collections::BTreeMap;

use hwsched_placement::{place, place_with, Outcome, Policy, Reserved, Scoring, WorkerView};
use hwsched_proto::v1::{CpuInfo, GpuInfo, GpuRequirement, Requirements, TaskRequest, WorkerCapabilities, WorkerState};
use proptest::prelude::*;

const MODELS: &[&str] = &["NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "NVIDIA L4", "AMD MI300X"];

fn worker() -> impl Strategy<Value = WorkerView> {
    (
        1u32..64,                                                                        // cores
        512u64..262_144,                                                                 // memory MB
        proptest::collection::vec((0usize..4, 8_000u64..90_000, 7u32..10), 0..8),        // gpus: model, mem, cc major
        0u32..3,                                                                         // tpus
        any::<bool>(),                                                                   // has label pool=ci
        (0u32..4, 0.0f64..32.0, 0i64..65_536, proptest::collection::vec(0u32..8, 0..4)), // reserved
        1u32..8,                                                                         // slots
        prop_oneof![Just(WorkerState::Active), Just(WorkerState::Draining)],
        any::<bool>(),                       // throttling
        proptest::option::of(0.0f64..600.0), // free in (s)
        // cpu utilisation, total and the share of the tests hwsched placed there
        prop_oneof![Just((10.0f64, 0.0f64)), Just((99.0, 0.0)), Just((99.0, 90.0))],
    )
        .prop_map(
            |(
                cores,
                mem,
                gpus,
                tpus,
                label,
                (r_slots, r_cpu, r_mem, r_gpus),
                slots,
                state,
                throttling,
                free_in,
                (cpu_util, tasks_cpu),
            )| {
                let gpus: Vec<GpuInfo> = gpus
                    .into_iter()
                    .enumerate()
                    .map(|(i, (m, gmem, cc))| GpuInfo {
                        index: i as u32,
                        vendor: if MODELS[m].starts_with("AMD") { "amd" } else { "nvidia" }.into(),
                        model: MODELS[m].into(),
                        memory_mb: gmem,
                        compute_capability: format!("{cc}.0"),
                        ..Default::default()
                    })
                    .collect();
                let mut accelerators = std::collections::BTreeMap::new();
                if tpus > 0 {
                    accelerators.insert("tpu".to_string(), tpus);
                }
                let labels = if label { [("pool".to_string(), "ci".to_string())].into() } else { Default::default() };
                WorkerView {
                    caps: std::sync::Arc::new(WorkerCapabilities {
                        worker_id: String::new(),
                        cpu: Some(CpuInfo { logical_cores: cores, ..Default::default() }),
                        memory_mb: mem,
                        gpus,
                        accelerators,
                        labels,
                        slots,
                        backends: vec!["cpu".into()],
                        ..Default::default()
                    }),
                    state,
                    reserved: Reserved {
                        slots: r_slots,
                        cpu_cores: r_cpu.min(f64::from(cores)),
                        memory_mb: r_mem,
                        gpus: r_gpus,
                        accelerators: BTreeMap::new(),
                    },
                    cpu_util_pct: cpu_util,
                    tasks_cpu_pct: tasks_cpu,
                    tasks_mem_pct: 0.0,
                    max_temp_c: 0.0,
                    throttling,
                    hot: false,
                    recent_families: Default::default(),
                    mem_util_pct: 0.0,
                    gpu_util_pct: 0.0,
                    free_in_s: free_in,
                    hold_s: None,
                    shape: 0,
                }
            },
        )
}

fn task() -> impl Strategy<Value = TaskRequest> {
    (
        0.0f64..16.0,
        0i64..131_072,
        0u32..4,
        proptest::option::of(0usize..4),
        0i64..80_000,
        0u32..3,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(cpu, mem, gpus, model, gmem, tpus, label, cc9)| TaskRequest {
            task_id: "t".into(),
            command: vec!["true".into()],
            requirements: Some(Requirements {
                cpu_cores: cpu,
                memory_mb: mem,
                gpus: (gpus > 0).then(|| GpuRequirement {
                    count: gpus,
                    min_memory_mb: gmem,
                    models: model
                        .map(|m| vec![MODELS[m].split_whitespace().nth(1).unwrap_or("H100").to_string()])
                        .unwrap_or_default(),
                    min_compute_capability: if cc9 { "9.0".into() } else { String::new() },
                    ..Default::default()
                }),
                accelerators: if tpus > 0 { [("tpu".to_string(), tpus)].into() } else { Default::default() },
                labels: if label { [("pool".to_string(), "ci".to_string())].into() } else { Default::default() },
                ..Default::default()
            }),
            ..Default::default()
        })
}

fn gpu_ok(g: &GpuInfo, r: &GpuRequirement) -> bool {
    let model_ok = r.models.is_empty() || r.models.iter().any(|m| g.model.to_lowercase().contains(&m.to_lowercase()));
    let cc_ok =
        r.min_compute_capability.is_empty() || g.compute_capability.as_str() >= r.min_compute_capability.as_str();
    model_ok && cc_ok && g.memory_mb as i64 >= r.min_memory_mb
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn placements_respect_requirements_and_reservations(
        mut fleet in proptest::collection::vec(worker(), 0..12),
        t in task(),
        policy in proptest::sample::select(Policy::ALL.to_vec()),
        turn in any::<u64>(),
    ) {
        for (i, w) in fleet.iter_mut().enumerate() {
            std::sync::Arc::make_mut(&mut w.caps).worker_id = format!("w{i:02}");
        }
        let req = t.requirements.clone().unwrap_or_default();
        let hwsched = policy == Policy::Hwsched;
        let outcome = place_with(&t, &fleet, &Scoring { policy, turn, ..Default::default() });
        if let Outcome::Queue { worker_id, wait_s, .. } = &outcome {
            // waiting for a busy worker: one that can run it once it has room
            prop_assert!(hwsched, "only hwsched waits for a worker");
            prop_assert!(*wait_s > 0.0);
            let w = fleet.iter().find(|w| &w.caps.worker_id == worker_id).expect("worker exists");
            prop_assert_eq!(w.state, WorkerState::Active);
            prop_assert!(!w.throttling && w.cpu_util_pct - w.tasks_cpu_pct < 95.0);
            prop_assert!(w.free_in_s.is_some());
        } else if let Outcome::Place { worker_id, gpus, .. } = outcome {
            let w = fleet.iter().find(|w| w.caps.worker_id == worker_id).expect("chosen worker exists");
            let cores = f64::from(w.caps.cpu.as_ref().map_or(0, |c| c.logical_cores));
            let cpu = if req.cpu_cores > 0.0 { req.cpu_cores } else { 1.0 };
            prop_assert_eq!(w.state, WorkerState::Active);
            if hwsched {
                prop_assert!(
                    !w.throttling && w.cpu_util_pct - w.tasks_cpu_pct < 95.0,
                    "hwsched never picks a throttling worker or one others overload"
                );
            }
            prop_assert!(w.reserved.slots < w.caps.slots, "free slot");
            prop_assert!(w.reserved.cpu_cores + cpu <= cores + 1e-9, "free cores");
            prop_assert!(w.reserved.memory_mb + req.memory_mb <= w.caps.memory_mb as i64, "free memory");
            for (k, n) in &req.accelerators {
                prop_assert!(w.caps.accelerators.get(k).copied().unwrap_or(0) >= *n, "accelerator {}", k);
            }
            for (k, v) in &req.labels {
                prop_assert_eq!(w.caps.labels.get(k), Some(v));
            }
            let want = req.gpus.as_ref().map_or(0, |g| g.count) as usize;
            prop_assert_eq!(gpus.len(), want);
            let mut distinct = gpus.clone();
            distinct.sort_unstable();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), gpus.len(), "distinct GPUs");
            for i in &gpus {
                prop_assert!(!w.reserved.gpus.contains(i), "GPU {} already reserved", i);
                let g = w.caps.gpus.iter().find(|g| g.index == *i).expect("GPU exists");
                prop_assert!(gpu_ok(g, req.gpus.as_ref().expect("asked for GPUs")), "GPU {:?} does not match", g);
            }
        } else {
            // Nothing placed: then no worker could take it now (checked the same way).
            let any_fits = fleet.iter().any(|w| {
                let cores = f64::from(w.caps.cpu.as_ref().map_or(0, |c| c.logical_cores));
                let cpu = if req.cpu_cores > 0.0 { req.cpu_cores } else { 1.0 };
                let free_gpus = match &req.gpus {
                    None => true,
                    Some(r) => w.caps.gpus.iter().filter(|g| gpu_ok(g, r) && !w.reserved.gpus.contains(&g.index)).count() >= r.count as usize,
                };
                w.state == WorkerState::Active
                    && !(hwsched && (w.throttling || w.cpu_util_pct - w.tasks_cpu_pct >= 95.0))
                    && !(policy == Policy::Seed && w.cpu_util_pct >= 95.0)
                    && w.reserved.slots < w.caps.slots
                    && w.reserved.cpu_cores + cpu <= cores + 1e-9
                    && w.reserved.memory_mb + req.memory_mb <= w.caps.memory_mb as i64
                    && req.accelerators.iter().all(|(k, n)| w.caps.accelerators.get(k).copied().unwrap_or(0) >= *n)
                    && req.labels.iter().all(|(k, v)| w.caps.labels.get(k) == Some(v))
                    && free_gpus
            });
            prop_assert!(!any_fits, "a worker could have taken it: {:?}", outcome);
        }
    }

    #[test]
    fn placement_is_deterministic(fleet in proptest::collection::vec(worker(), 1..8), t in task()) {
        let mut fleet = fleet;
        for (i, w) in fleet.iter_mut().enumerate() {
            std::sync::Arc::make_mut(&mut w.caps).worker_id = format!("w{i}");
        }
        prop_assert_eq!(place(&t, &fleet), place(&t, &fleet));
        // checking requirements once per shape changes nothing
        let mut shaped = fleet.clone();
        for w in &mut shaped {
            w.shape = hwsched_placement::view::shape_of(&w.caps);
        }
        prop_assert_eq!(place(&t, &shaped), place(&t, &fleet));
    }
}
