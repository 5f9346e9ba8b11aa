//! The learner's refit before each snapshot, and the snapshot's size, as the
//! number of learned pairs grows: W workloads of 10 test types on 8 hardware
//! classes, each workload observed on half of the classes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hwsched_model::Model;
use hwsched_proto::{
    v1::{ExecutionResult, TaskStatus},
    Message as _,
};

fn model(workloads: usize) -> Model {
    let mut m = Model::default();
    for w in 0..workloads {
        for h in (0..8).filter(|h| (h + w) % 2 == 0) {
            for run in 0..3 {
                m.observe(&ExecutionResult {
                    name: format!("test-{w}"),
                    test_type: format!("type-{}", w % 10),
                    hardware_class: format!("class-{h}"),
                    worker_id: format!("w-{h}-{}", run % 2),
                    status: TaskStatus::Succeeded as i32,
                    duration_s: 10.0 * (1.0 + (w % 7) as f64) / (1.0 + h as f64),
                    ..Default::default()
                });
            }
        }
    }
    m
}

fn refit(c: &mut Criterion) {
    let mut g = c.benchmark_group("refit");
    g.sample_size(10);
    for workloads in [100, 1_000, 5_000] {
        let mut m = model(workloads);
        m.refit();
        let bytes = m.snapshot(0).encode_to_vec().len();
        println!("{workloads} workloads, {} pairs: snapshot {bytes} bytes ({} per pair)", m.len(), bytes / m.len());
        g.bench_with_input(BenchmarkId::from_parameter(m.len()), &workloads, |b, _| b.iter(|| m.refit()));
    }
    g.finish();
}

criterion_group!(benches, refit);
criterion_main!(benches);
