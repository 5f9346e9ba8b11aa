//! The built-in trace: a heterogeneous fleet (CPU servers, NVIDIA GPUs of three
//! generations, TPU hosts, browsers with WebGPU, phones) and an hour of CI
//! traffic (pull-request suites every minute or so, one nightly suite) whose
//! true runtime depends on the test and the hardware.

use std::collections::BTreeMap;

use hwsched_proto::v1::{CpuInfo, GpuInfo, GpuRequirement, Requirements, TaskRequest, WorkerCapabilities};

use crate::{
    rng::Rng,
    trace::{Background, TaskLine, Thermal, Trace, WorkerLine},
};

const CPU: &str = "cpu:x86_64-xeon-16c";
const T4: &str = "gpu:nvidia-tesla-t4";
const A100: &str = "gpu:nvidia-a100-sxm4-40gb";
const H100: &str = "gpu:nvidia-h100-80gb-hbm3";
const TPU: &str = "accel:tpu-v4";
const WEB: &str = "accel:webgpu-chrome";
const MOBILE: &str = "accel:npu-android";

/// Length of the generated traffic, s.
pub const TRAFFIC_S: f64 = 3_600.0;

struct Gpu {
    model: &'static str,
    memory_mb: u64,
    cc: &'static str,
    units: u32,
}

const GPUS: [(&str, Gpu); 3] = [
    (T4, Gpu { model: "Tesla T4", memory_mb: 15_360, cc: "7.5", units: 40 }),
    (A100, Gpu { model: "NVIDIA A100-SXM4-40GB", memory_mb: 40_960, cc: "8.0", units: 108 }),
    (H100, Gpu { model: "NVIDIA H100 80GB HBM3", memory_mb: 81_559, cc: "9.0", units: 132 }),
];

fn worker(id: String, class: &str, cores: u32, memory_gb: u64, slots: u32, backends: &[&str]) -> WorkerCapabilities {
    WorkerCapabilities {
        schema_version: 1,
        worker_id: id.clone(),
        hostname: id,
        os: "linux".into(),
        cpu: Some(CpuInfo {
            arch: "x86_64".into(),
            logical_cores: cores,
            physical_cores: cores / 2,
            ..Default::default()
        }),
        memory_mb: memory_gb * 1024,
        slots,
        backends: backends.iter().map(|b| (*b).to_string()).collect(),
        software: [("python".to_string(), "3.11.9".to_string())].into(),
        labels: [("compute_units".to_string(), cores.to_string())].into(),
        hardware_class: class.into(),
        revision: 1,
        ..Default::default()
    }
}

fn cool() -> Option<Thermal> {
    Some(Thermal { ambient_c: 35.0, heat_c: 45.0, tau_s: 30.0, throttle_c: 90.0 })
}

fn poorly_cooled() -> Option<Thermal> {
    Some(Thermal { ambient_c: 40.0, heat_c: 60.0, tau_s: 30.0, throttle_c: 90.0 })
}

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
        out.push(WorkerLine {
            capabilities: worker(format!("cpu-{i:02}"), CPU, 16, 64, 4, &["cpu"]),
            thermal: None,
            background,
        });
    }
    for (class, g) in GPUS {
        let n = if class == T4 { 4 } else { 3 };
        let short = class.rsplit('-').next().unwrap_or("gpu");
        let short = match class {
            T4 => "t4",
            A100 => "a100",
            H100 => "h100",
            _ => short,
        };
        for i in 1..=n {
            let mut c = worker(format!("{short}-{i:02}"), class, 8, 64, 1, &["cpu", "cuda"]);
            c.gpus = vec![GpuInfo {
                index: 0,
                uuid: format!("GPU-{short}-{i:02}"),
                vendor: "nvidia".into(),
                model: g.model.into(),
                memory_mb: g.memory_mb,
                compute_capability: g.cc.into(),
                ..Default::default()
            }];
            c.software.insert("cuda".into(), "12.4".into());
            c.labels.insert("compute_units".into(), g.units.to_string());
            out.push(WorkerLine {
                capabilities: c,
                thermal: if i == 2 { poorly_cooled() } else { cool() },
                background: vec![],
            });
        }
    }
    for i in 1..=2 {
        let mut c = worker(format!("tpu-{i:02}"), TPU, 8, 64, 1, &["cpu", "xla"]);
        c.accelerators.insert("tpu".into(), 4);
        out.push(WorkerLine { capabilities: c, thermal: cool(), background: vec![] });
    }
    for i in 1..=2 {
        let mut c = worker(format!("browser-{i:02}"), WEB, 8, 16, 2, &["webgpu", "wasm"]);
        c.accelerators.insert("webgpu".into(), 1);
        out.push(WorkerLine { capabilities: c, thermal: None, background: vec![] });
    }
    for i in 1..=2 {
        let mut c = worker(format!("phone-{i:02}"), MOBILE, 8, 8, 1, &["android", "nnapi"]);
        c.accelerators.insert("npu".into(), 1);
        out.push(WorkerLine { capabilities: c, thermal: None, background: vec![] });
    }
    out
}

/// One kind of test: where it can run and how fast.
struct Kind {
    test_type: &'static str,
    tests: &'static [(&'static str, &'static str)],
    /// Share of the traffic.
    weight: f64,
    /// Typical runtime per hardware class, s.
    runtime: &'static [(&'static str, f64)],
    /// What a producer declares as expected duration, s.
    declared_s: f64,
    preferred_backend: &'static str,
    requirements: fn(&str) -> Requirements,
    /// Failure probability per class (besides the 2 % flakiness everywhere).
    fails_on: &'static [(&'static str, f64)],
}

fn any_cpu(_: &str) -> Requirements {
    Requirements { backends: vec!["cpu".into()], memory_mb: 8_192, ..Default::default() }
}

fn one_gpu(test: &str) -> Requirements {
    let min_memory_mb = if test.contains("llama") { 24_000 } else { 0 };
    let min_compute_capability = if test.contains("fp8") { "8.9".to_string() } else { String::new() };
    Requirements {
        gpus: Some(GpuRequirement { count: 1, min_memory_mb, min_compute_capability, ..Default::default() }),
        backends: vec!["cuda".into()],
        memory_mb: 16_384,
        ..Default::default()
    }
}

fn xla(_: &str) -> Requirements {
    Requirements { backends: vec!["xla".into()], ..Default::default() }
}

fn android(_: &str) -> Requirements {
    Requirements { backends: vec!["android".into()], ..Default::default() }
}

fn webgpu(_: &str) -> Requirements {
    Requirements { accelerators: [("webgpu".to_string(), 1)].into(), ..Default::default() }
}

const KINDS: &[Kind] = &[
    Kind {
        test_type: "unit",
        tests: &[("ops-unit", "core"), ("tokenizer-unit", "core"), ("serde-unit", "core"), ("cli-unit", "core")],
        weight: 0.34,
        runtime: &[(CPU, 8.0), (T4, 8.0), (A100, 8.0), (H100, 8.0), (TPU, 8.0)],
        declared_s: 10.0,
        preferred_backend: "cpu",
        requirements: any_cpu,
        fails_on: &[],
    },
    Kind {
        test_type: "vision-inference",
        tests: &[("resnet50-accuracy", "resnet"), ("vit-b16-accuracy", "vit"), ("yolo-detect", "yolo")],
        weight: 0.15,
        runtime: &[(CPU, 400.0), (T4, 45.0), (A100, 22.0), (H100, 14.0), (TPU, 18.0)],
        declared_s: 60.0,
        preferred_backend: "cuda",
        requirements: any_cpu,
        fails_on: &[],
    },
    Kind {
        test_type: "nlp-inference",
        tests: &[("bert-base-glue", "bert"), ("t5-small-summarize", "t5")],
        weight: 0.10,
        runtime: &[(CPU, 900.0), (T4, 110.0), (A100, 40.0), (H100, 25.0), (TPU, 30.0)],
        declared_s: 120.0,
        preferred_backend: "cuda",
        requirements: any_cpu,
        fails_on: &[],
    },
    Kind {
        test_type: "nlp-inference",
        tests: &[("llama-7b-int4-generate", "llama")],
        weight: 0.03,
        runtime: &[(A100, 60.0), (H100, 35.0)],
        declared_s: 120.0,
        preferred_backend: "cuda",
        requirements: one_gpu,
        fails_on: &[],
    },
    Kind {
        test_type: "audio-inference",
        tests: &[("whisper-tiny-wer", "whisper"), ("wav2vec2-ctc", "wav2vec")],
        weight: 0.08,
        runtime: &[(CPU, 90.0), (T4, 30.0), (A100, 18.0), (H100, 14.0), (TPU, 40.0)],
        declared_s: 60.0,
        preferred_backend: "cuda",
        requirements: any_cpu,
        fails_on: &[],
    },
    Kind {
        test_type: "training",
        tests: &[("resnet18-train-smoke", "resnet"), ("bert-finetune-smoke", "bert")],
        weight: 0.04,
        runtime: &[(T4, 400.0), (A100, 150.0), (H100, 90.0)],
        declared_s: 300.0,
        preferred_backend: "cuda",
        requirements: one_gpu,
        fails_on: &[],
    },
    Kind {
        test_type: "kernels",
        tests: &[("gemm-bf16", "kernels"), ("flash-attn-bf16", "kernels"), ("gemm-fp8", "kernels")],
        weight: 0.10,
        runtime: &[(T4, 50.0), (A100, 20.0), (H100, 10.0)],
        declared_s: 30.0,
        preferred_backend: "cuda",
        requirements: one_gpu,
        // T4 has no bf16 tensor cores: these fail there and pass elsewhere
        fails_on: &[(T4, 0.7)],
    },
    Kind {
        test_type: "xla",
        tests: &[("jax-xla-compile", "jax")],
        weight: 0.05,
        runtime: &[(TPU, 25.0)],
        declared_s: 30.0,
        preferred_backend: "tpu",
        requirements: xla,
        fails_on: &[],
    },
    Kind {
        test_type: "webgpu",
        tests: &[("webgpu-matmul", "web"), ("webnn-conv", "web")],
        weight: 0.06,
        runtime: &[(WEB, 30.0)],
        declared_s: 30.0,
        preferred_backend: "webgpu",
        requirements: webgpu,
        fails_on: &[],
    },
    Kind {
        test_type: "mobile-inference",
        tests: &[("tflite-mobilenet", "mobilenet")],
        weight: 0.05,
        runtime: &[(MOBILE, 45.0)],
        declared_s: 60.0,
        preferred_backend: "nnapi",
        requirements: android,
        fails_on: &[],
    },
];

/// Flakiness of every test on every hardware class.
const FLAKY: f64 = 0.02;

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
    let total: f64 = KINDS.iter().map(|k| k.weight).sum();
    let mut tasks = Vec::new();
    let suite = |rng: &mut Rng, at: f64, producer: &str, priority: u32, size: usize, tasks: &mut Vec<TaskLine>| {
        for n in 0..size {
            let mut pick = rng.f64() * total;
            let kind = KINDS
                .iter()
                .find(|k| {
                    pick -= k.weight;
                    pick < 0.0
                })
                .unwrap_or(&KINDS[0]);
            let (test, family) = kind.tests[rng.below(kind.tests.len())];
            let noise = rng.lognormal(0.08) * factor.get(test).copied().unwrap_or(1.0);
            let req = (kind.requirements)(test);
            let mut runtime_s = BTreeMap::new();
            for (class, secs) in kind.runtime {
                runtime_s.insert((*class).to_string(), (secs * noise * 10.0).round() / 10.0);
            }
            let mut failure_rate: BTreeMap<String, f64> =
                kind.runtime.iter().map(|(c, _)| ((*c).to_string(), FLAKY)).collect();
            if test.contains("bf16") {
                for (c, p) in kind.fails_on {
                    failure_rate.insert((*c).to_string(), *p);
                }
            }
            let id = format!("{producer}-{}-{n:03}", (at * 10.0).round() as u64);
            tasks.push(TaskLine {
                arrival_s: (at * 1000.0).round() / 1000.0,
                request: TaskRequest {
                    schema_version: 1,
                    task_id: id,
                    name: test.into(),
                    command: vec!["pytest".into(), format!("tests/{test}")],
                    test_type: kind.test_type.into(),
                    model_family: family.into(),
                    priority,
                    max_attempts: 3,
                    expected_duration_s: kind.declared_s,
                    requirements: Some(req),
                    producer: producer.into(),
                    labels: [("preferred_backend".to_string(), kind.preferred_backend.to_string())].into(),
                    ..Default::default()
                },
                runtime_s,
                failure_rate,
            });
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
