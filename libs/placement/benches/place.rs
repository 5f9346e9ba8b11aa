//! Cost of the pure core: validating a task and placing it among N workers.
#![allow(missing_docs)]

mod fleet;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fleet::{gpu_task, workers};
use hwsched_placement::{place, place_with, validate, Scoring};
use hwsched_proto::v1::TaskRequest;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("place_gpu_task");
    for n in [10usize, 100, 1000] {
        let ws = workers(n);
        let t = gpu_task();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(|| place(&t, &ws)));
    }
    g.finish();
    let mut g = c.benchmark_group("place_gpu_task_learned");
    let model = fleet::model();
    for n in [1000usize, 10_000] {
        let ws = fleet::with_busy(workers(n));
        let t = gpu_task();
        let scoring = Scoring { model: Some(&model), ..Default::default() };
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| b.iter(|| place_with(&t, &ws, &scoring)));
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
