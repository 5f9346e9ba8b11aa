//! The building blocks every generated trace shares: the hardware classes of
//! the simulated fleet and their workers' capability messages, the kinds of
//! test (where each can run and how fast), and the tasks built from them.
//! The built-in trace (`generate.rs`) and the scenario families
//! (`scenarios/`) draw from these.

use std::collections::BTreeMap;

use hwsched_proto::v1::{CpuInfo, GpuInfo, GpuRequirement, Requirements, TaskRequest, WorkerCapabilities};

use crate::trace::{Background, TaskLine, Thermal, WorkerLine};

/// CPU servers.
pub const CPU: &str = "cpu:x86_64-xeon-16c";
/// NVIDIA T4 hosts.
pub const T4: &str = "gpu:nvidia-tesla-t4";
/// NVIDIA A100 hosts.
pub const A100: &str = "gpu:nvidia-a100-sxm4-40gb";
/// NVIDIA H100 hosts.
pub const H100: &str = "gpu:nvidia-h100-80gb-hbm3";
/// NVIDIA B200 hosts: the new generation of the `new-hardware` scenario.
pub const B200: &str = "gpu:nvidia-b200";
/// TPU hosts.
pub const TPU: &str = "accel:tpu-v4";
/// Browsers with WebGPU.
pub const WEB: &str = "accel:webgpu-chrome";
/// Android phones.
pub const MOBILE: &str = "accel:npu-android";

/// One GPU model.
#[derive(Debug)]
pub struct Gpu {
    /// The hardware class of its hosts.
    pub class: &'static str,
    /// Short name, the prefix of worker ids.
    pub short: &'static str,
    model: &'static str,
    memory_mb: u64,
    cc: &'static str,
    units: u32,
}

/// T4, A100, H100: the GPUs of the built-in fleet.
pub static GPUS: [Gpu; 3] = [
    Gpu { class: T4, short: "t4", model: "Tesla T4", memory_mb: 15_360, cc: "7.5", units: 40 },
    Gpu { class: A100, short: "a100", model: "NVIDIA A100-SXM4-40GB", memory_mb: 40_960, cc: "8.0", units: 108 },
    Gpu { class: H100, short: "h100", model: "NVIDIA H100 80GB HBM3", memory_mb: 81_559, cc: "9.0", units: 132 },
];

/// The B200 (new generation: more memory, compute capability 10.0).
pub static GPU_B200: Gpu =
    Gpu { class: B200, short: "b200", model: "NVIDIA B200", memory_mb: 183_359, cc: "10.0", units: 148 };

/// A worker's capability message.
pub fn worker(
    id: String,
    class: &str,
    cores: u32,
    memory_gb: u64,
    slots: u32,
    backends: &[&str],
) -> WorkerCapabilities {
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

/// A well cooled host: it never reaches the throttling threshold.
pub fn cool() -> Option<Thermal> {
    Some(Thermal { ambient_c: 35.0, heat_c: 45.0, tau_s: 30.0, throttle_c: 90.0 })
}

/// A poorly cooled host: kept busy, it throttles.
pub fn poorly_cooled() -> Option<Thermal> {
    Some(Thermal { ambient_c: 40.0, heat_c: 60.0, tau_s: 30.0, throttle_c: 90.0 })
}

/// A bare worker line (present the whole run).
pub fn line(capabilities: WorkerCapabilities, thermal: Option<Thermal>, background: Vec<Background>) -> WorkerLine {
    WorkerLine { capabilities, thermal, background, join_s: None, leave_s: None, faults: vec![] }
}

/// A 16-core CPU server with 4 slots.
pub fn cpu_server(i: usize, background: Vec<Background>) -> WorkerLine {
    line(worker(format!("cpu-{i:02}"), CPU, 16, 64, 4, &["cpu"]), None, background)
}

/// A single-GPU host.
pub fn gpu_host(g: &Gpu, i: usize, thermal: Option<Thermal>) -> WorkerLine {
    let short = g.short;
    let mut c = worker(format!("{short}-{i:02}"), g.class, 8, 64, 1, &["cpu", "cuda"]);
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
    line(c, thermal, vec![])
}

/// A TPU host (4 chips, one slot).
pub fn tpu_host(i: usize) -> WorkerLine {
    let mut c = worker(format!("tpu-{i:02}"), TPU, 8, 64, 1, &["cpu", "xla"]);
    c.accelerators.insert("tpu".into(), 4);
    line(c, cool(), vec![])
}

/// A browser with WebGPU (2 slots).
pub fn browser(i: usize) -> WorkerLine {
    let mut c = worker(format!("browser-{i:02}"), WEB, 8, 16, 2, &["webgpu", "wasm"]);
    c.accelerators.insert("webgpu".into(), 1);
    line(c, None, vec![])
}

/// An Android phone with an NPU.
pub fn phone(i: usize) -> WorkerLine {
    let mut c = worker(format!("phone-{i:02}"), MOBILE, 8, 8, 1, &["android", "nnapi"]);
    c.accelerators.insert("npu".into(), 1);
    line(c, None, vec![])
}

/// One kind of test: where it can run and how fast.
#[derive(Debug)]
pub struct Kind {
    /// The tasks' `test_type`.
    pub test_type: &'static str,
    /// Its tests: (name, model family).
    pub tests: &'static [(&'static str, &'static str)],
    /// Share of the traffic.
    pub weight: f64,
    /// Typical runtime per hardware class, s.
    pub runtime: &'static [(&'static str, f64)],
    /// What a producer declares as expected duration, s.
    pub declared_s: f64,
    /// The `preferred_backend` label.
    pub preferred_backend: &'static str,
    /// Requirements of a test by name.
    pub requirements: fn(&str) -> Requirements,
    /// Failure probability per class of its bf16 tests (besides the flakiness everywhere).
    pub fails_on: &'static [(&'static str, f64)],
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

/// The kinds of test of the built-in trace, with their traffic shares.
pub const KINDS: &[Kind] = &[
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

/// Long GPU soak training (the `soak` scenario): 300-1500 s at full speed.
pub static SOAK: Kind = Kind {
    test_type: "training",
    tests: &[("llm-pretrain-soak", "llama"), ("diffusion-train-soak", "diffusion"), ("vit-train-soak", "vit")],
    weight: 0.0,
    runtime: &[(T4, 1_500.0), (A100, 650.0), (H100, 380.0)],
    declared_s: 900.0,
    preferred_backend: "cuda",
    requirements: one_gpu,
    fails_on: &[],
};

/// Flakiness of every test on every hardware class.
pub const FLAKY: f64 = 0.02;

/// Draws a kind by the kinds' weights, with `u` uniform in [0, 1).
pub fn pick(kinds: &[Kind], u: f64) -> &Kind {
    let total: f64 = kinds.iter().map(|k| k.weight).sum();
    let mut left = u * total;
    kinds
        .iter()
        .find(|k| {
            left -= k.weight;
            left < 0.0
        })
        .unwrap_or(&kinds[0])
}

/// What differs between the tasks of one kind: the rest comes from the kind.
#[derive(Debug, Clone)]
pub struct TaskSpec<'a> {
    /// The test's name.
    pub name: &'a str,
    /// Its model family.
    pub family: &'a str,
    /// The task id.
    pub id: String,
    /// Arrival, s (rounded to the ms).
    pub at: f64,
    /// Producer.
    pub producer: &'a str,
    /// Priority.
    pub priority: u32,
    /// This run's factor on the kind's runtimes (test factor × run noise).
    pub factor: f64,
    /// Declared `expected_duration_s`.
    pub declared_s: f64,
    /// Flakiness on every class.
    pub flaky: f64,
}

/// The task line of a test of `kind`: runtimes are the kind's times the
/// spec's factor, rounded to 0.1 s.
pub fn task(kind: &Kind, s: &TaskSpec<'_>) -> TaskLine {
    let mut runtime_s = BTreeMap::new();
    for (class, secs) in kind.runtime {
        runtime_s.insert((*class).to_string(), (secs * s.factor * 10.0).round() / 10.0);
    }
    let mut failure_rate: BTreeMap<String, f64> =
        kind.runtime.iter().map(|(c, _)| ((*c).to_string(), s.flaky)).collect();
    if s.name.contains("bf16") {
        for (c, p) in kind.fails_on {
            failure_rate.insert((*c).to_string(), *p);
        }
    }
    TaskLine {
        arrival_s: (s.at * 1000.0).round() / 1000.0,
        request: TaskRequest {
            schema_version: 1,
            task_id: s.id.clone(),
            name: s.name.into(),
            command: vec!["pytest".into(), format!("tests/{}", s.name)],
            test_type: kind.test_type.into(),
            model_family: s.family.into(),
            priority: s.priority,
            max_attempts: 3,
            expected_duration_s: s.declared_s,
            requirements: Some((kind.requirements)(s.name)),
            producer: s.producer.into(),
            labels: [("preferred_backend".to_string(), kind.preferred_backend.to_string())].into(),
            ..Default::default()
        },
        runtime_s,
        failure_rate,
        needs_memory_mb: None,
        straggler: None,
    }
}
