//! The evaluator's throughput on one core: every sample of a heartbeat's worth
//! of telemetry (10 metrics per worker) against the built-in rules, the way
//! the service's loop feeds them (each sample to the rules on its metric).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hwsched_alerting::{rules, Evaluator, RuleSet};
use hwsched_proto::metric;

const METRICS: [(&str, &str); 10] = [
    (metric::CPU_UTIL_PCT, "cpu"),
    (metric::CPU_TEMP_C, "cpu"),
    (metric::MEM_USED_PCT, "mem"),
    (metric::DISK_USED_PCT, "nvme0n1"),
    (metric::GPU_UTIL_PCT, "gpu0"),
    (metric::GPU_MEM_USED_PCT, "gpu0"),
    (metric::GPU_TEMP_C, "gpu0"),
    (metric::GPU_THROTTLE_THERMAL, "gpu0"),
    (metric::GPU_THROTTLE_POWER, "gpu0"),
    (metric::GPU_ECC_UNCORRECTED, "gpu0"),
];

fn evaluate(c: &mut Criterion) {
    let workers: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
    let mut set =
        RuleSet::new(rules::parse(rules::DEFAULTS).expect("defaults").rules.into_iter().map(Evaluator::new).collect());
    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements((workers.len() * METRICS.len()) as u64));
    let mut now = 0i64;
    g.bench_function("1000 workers x 10 samples x built-in rules", |b| {
        b.iter(|| {
            now += 1000;
            for (i, w) in workers.iter().enumerate() {
                for (j, (metric, device)) in METRICS.iter().enumerate() {
                    // a mix of quiet and alerting values
                    let value = ((i * 7 + j * 13) % 100) as f64;
                    for t in set.observe(w, device, metric, value, now) {
                        std::hint::black_box(t);
                    }
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
