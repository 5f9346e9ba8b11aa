//! The built-in trace: a heterogeneous fleet (CPU servers, NVIDIA GPUs of three
//! generations, TPU hosts, browsers with WebGPU, phones) and an hour of CI
//! traffic (pull-request suites every minute or so, one nightly suite) whose
//! true runtime depends on the test and the hardware.

use std::collections::BTreeMap;

use crate::{
    kinds::{
        self, browser, cool, cpu_server, gpu_host, phone, poorly_cooled, tpu_host, TaskSpec, FLAKY, GPUS, KINDS, T4,
    },
    rng::Rng,
    trace::{Background, TaskLine, Trace, WorkerLine},
};

/// Length of the generated traffic, s.
pub const TRAFFIC_S: f64 = 3_600.0;

/// The fleet: 6 CPU servers (one shared with other tenants who saturate it at
/// times), 4 T4, 3 A100 and 3 H100 single-GPU hosts (one of each kind poorly
/// cooled: it throttles when kept busy), 2 TPU hosts, 2 browsers and 2 phones.
pub fn fleet() -> Vec<WorkerLine> {
    let mut out = Vec::new();
    for i in 1..=6 {
        let background = if i == 6 {
            vec![
                Background { from_s: 300.0, to_s: 1_500.0, cpu_pct: 97.0 },
                Background { from_s: 2_400.0, to_s: 3_300.0, cpu_pct: 97.0 },
            ]
        } else {
            vec![]
        };
        out.push(cpu_server(i, background));
    }
    for g in &GPUS {
        let n = if g.class == T4 { 4 } else { 3 };
        for i in 1..=n {
            out.push(gpu_host(g, i, if i == 2 { poorly_cooled() } else { cool() }));
        }
    }
    out.extend((1..=2).map(tpu_host));
    out.extend((1..=2).map(browser));
    out.extend((1..=2).map(phone));
    out
}

/// The built-in trace for `seed`.
pub fn builtin(seed: u64) -> Trace {
    let mut rng = Rng::new(seed);
    // Each test is a fixed amount slower or faster than its kind's typical runtime.
    let mut factor: BTreeMap<&str, f64> = BTreeMap::new();
    for k in KINDS {
        for (t, _) in k.tests {
            factor.insert(t, rng.lognormal(0.3));
        }
    }
    let mut tasks = Vec::new();
    let suite = |rng: &mut Rng, at: f64, producer: &str, priority: u32, size: usize, tasks: &mut Vec<TaskLine>| {
        for n in 0..size {
            let kind = kinds::pick(KINDS, rng.f64());
            let (test, family) = kind.tests[rng.below(kind.tests.len())];
            let noise = rng.lognormal(0.08) * factor.get(test).copied().unwrap_or(1.0);
            let spec = TaskSpec {
                name: test,
                family,
                id: format!("{producer}-{}-{n:03}", (at * 10.0).round() as u64),
                at,
                producer,
                priority,
                factor: noise,
                declared_s: kind.declared_s,
                flaky: FLAKY,
            };
            tasks.push(kinds::task(kind, &spec));
        }
    };
    // pull-request suites: every ~75 s, 8 to 30 tests, priority 2
    let mut at = 0.0;
    let mut pr = 0;
    while at < TRAFFIC_S {
        pr += 1;
        let size = 8 + rng.below(23);
        suite(&mut rng, at, &format!("pr{pr}"), 2, size, &mut tasks);
        at += rng.exp(75.0);
    }
    // one nightly suite of 150 tests at 10 minutes, priority 4
    suite(&mut rng, 600.0, "nightly", 4, 150, &mut tasks);
    tasks.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Trace { workers: fleet(), tasks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_is_valid_and_repeatable() {
        let t = builtin(1);
        t.check().expect("valid");
        assert_eq!(t, builtin(1));
        assert_ne!(t, builtin(2));
        assert_eq!(Trace::parse(&t.to_jsonl()).expect("round trip"), t);
        assert!(t.tasks.len() > 500, "{}", t.tasks.len());
        let classes: std::collections::BTreeSet<&str> =
            t.workers.iter().map(|w| w.capabilities.hardware_class.as_str()).collect();
        assert_eq!(classes.len(), 7, "{classes:?}");
    }
}
