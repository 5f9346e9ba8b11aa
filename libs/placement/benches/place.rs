//! Cost of the pure core: validating a task and placing it among N workers.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hwsched_placement::{place, validate, Reserved, WorkerView};
use hwsched_proto::v1::{CpuInfo, GpuInfo, GpuRequirement, Requirements, TaskRequest, WorkerCapabilities, WorkerState};

fn workers(n: usize) -> Vec<WorkerView> {
    (0..n)
        .map(|i| WorkerView {
            caps: WorkerCapabilities {
                worker_id: format!("w{i:04}"),
                cpu: Some(CpuInfo { logical_cores: 64, ..Default::default() }),
                memory_mb: 512 * 1024,
                slots: 8,
                gpus: (0..(i % 3) as u32 * 4)
                    .map(|g| GpuInfo {
                        index: g,
                        vendor: "nvidia".into(),
                        model: if i % 2 == 0 { "NVIDIA H100 80GB HBM3" } else { "NVIDIA A100-SXM4-40GB" }.into(),
                        memory_mb: 81559,
                        compute_capability: "9.0".into(),
                        ..Default::default()
                    })
                    .collect(),
                software: [("python".to_string(), "3.11.7".to_string())].into(),
                ..Default::default()
            },
            state: WorkerState::Active,
            reserved: Reserved { slots: (i % 8) as u32, cpu_cores: (i % 8) as f64, ..Default::default() },
            cpu_util_pct: (i * 7 % 100) as f64,
            max_temp_c: 60.0,
            throttling: false,
            hot: false,
            recent_families: vec![],
            mem_util_pct: 0.0,
            gpu_util_pct: 0.0,
            free_in_s: None,
            hold_s: None,
        })
        .collect()
}

fn gpu_task() -> TaskRequest {
    TaskRequest {
        task_id: "bench".into(),
        command: vec!["pytest".into()],
        requirements: Some(Requirements {
            cpu_cores: 4.0,
            memory_mb: 16384,
            gpus: Some(GpuRequirement { count: 1, models: vec!["H100".into()], ..Default::default() }),
            software: [("python".to_string(), ">=3.10".to_string())].into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("place_gpu_task");
    for n in [10usize, 100, 1000] {
        let ws = workers(n);
        let t = gpu_task();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(|| place(&t, &ws)));
    }
    g.finish();
    let json = r#"{"task_id":"t-1","name":"resnet","command":["pytest","-x","tests/test_resnet.py"],
        "test_type":"vision_classification","priority":3,"timeout_s":600,
        "requirements":{"cpu_cores":1,"memory_mb":512,"gpus":{"count":1,"min_memory_mb":16000,"vendor":"nvidia","models":["H100"]},
        "software":{"python":">=3.10"}},"placement":{"strategy":"single","shards":1}}"#;
    c.bench_function("decode_json_and_validate", |b| {
        b.iter(|| {
            let t: TaskRequest = serde_json::from_str(json).expect("json");
            validate(&t).expect("valid");
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
