//! The evaluator's throughput on one core: every sample of a heartbeat's worth
//! of telemetry (10 metrics per worker) against the built-in rules, the way
//! the service's loop feeds them (each sample to the rules on its metric).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hwsched_alerting::{rules, Evaluator, RuleSet};

const METRICS: [(&str, &str); 10] = [
    ("cpu.util_pct", "cpu"),
    ("cpu.temp_c", "cpu"),
    ("mem.used_pct", "mem"),
    ("disk.used_pct", "nvme0n1"),
    ("gpu.util_pct", "gpu0"),
    ("gpu.mem_used_pct", "gpu0"),
    ("gpu.temp_c", "gpu0"),
    ("gpu.throttle_thermal", "gpu0"),
    ("gpu.throttle_power", "gpu0"),
    ("gpu.ecc_uncorrected", "gpu0"),
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
