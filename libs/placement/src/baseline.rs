//! The seed framework's baseline policy: the static hardware-aware composite
//! of the Python framework hwsched replaces, from its intended formulas
//! (docs/SIMULATOR.md lists them). The simulator compares hwsched with it.

use hwsched_model::Model;
use hwsched_proto::v1::TaskRequest;

use crate::{validate::parse_capability, view::WorkerView};

/// The seed's load score: 0.3 cpu + 0.3 memory + 0.2 gpu (+ io and network,
/// which heartbeats do not carry), in [0, 1].
pub fn seed_load(w: &WorkerView) -> f64 {
    (0.3 * w.cpu_util_pct + 0.3 * w.mem_util_pct + 0.2 * w.gpu_util_pct).clamp(0.0, 100.0) / 100.0
}

/// Whether the seed considered the worker out of capacity: load above 0.9, or
/// CPU or memory at 95 % or GPU at 98 %.
pub fn seed_excludes(w: &WorkerView) -> bool {
    seed_load(w) > 0.9 || w.cpu_util_pct >= 95.0 || w.mem_util_pct >= 95.0 || w.gpu_util_pct >= 98.0
}

/// The seed's workload type, by substrings of the test type.
fn seed_workload(test_type: &str) -> &'static str {
    let t = test_type.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| t.contains(w));
    if has(&["vision", "image"]) {
        "vision"
    } else if has(&["nlp", "text", "language"]) {
        "nlp"
    } else if has(&["audio", "speech"]) {
        "audio"
    } else if has(&["embedding"]) {
        "embedding"
    } else if has(&["training"]) {
        "training"
    } else if has(&["inference"]) {
        "inference"
    } else if has(&["conversational"]) {
        "conversational"
    } else if has(&["multi"]) {
        "multimodal"
    } else {
        "mixed"
    }
}

/// The seed's hardware family of a worker: "gpu", "tpu", "npu", "browser" or "cpu".
fn seed_family(w: &WorkerView) -> &'static str {
    let hw = w.caps.hardware_class.as_str();
    let acc = |k: &str| w.caps.accelerators.get(k).copied().unwrap_or(0) > 0;
    if !w.caps.gpus.is_empty() || hw.starts_with("gpu") {
        "gpu"
    } else if acc("tpu") || hw.starts_with("tpu") {
        "tpu"
    } else if acc("npu") || hw.starts_with("npu") {
        "npu"
    } else if acc("webgpu") || acc("webnn") || hw.starts_with("browser") {
        "browser"
    } else {
        "cpu"
    }
}

/// The seed's intended composite for one worker: (hardware-aware adjusted
/// score, adaptive score, 0.7 / 0.3 composite minus its utilisation penalties).
/// Higher is better.
pub(crate) fn seed_score(
    task: &TaskRequest,
    w: &WorkerView,
    model: Option<&Model>,
    workload: &str,
    mean_load: f64,
) -> (f64, f64, f64) {
    let eff = seed_efficiency(task, w).clamp(0.0, 1.0);
    // 5. load and temperature (warming/cooling performance: 1.0, the workers are warm)
    let load = seed_load(w);
    let temperature = (w.max_temp_c / 100.0).clamp(0.0, 1.0);
    let adjusted = eff * (1.0 - 0.3 * load) * (1.0 - 0.3 * temperature);
    let adaptive = seed_adaptive(task, w, model, workload, mean_load, load);
    // 7. the coordinator's utilisation penalties
    let penalty = ((w.cpu_util_pct - 70.0).max(0.0) / 10.0
        + (w.mem_util_pct - 70.0).max(0.0) / 10.0
        + (w.gpu_util_pct - 60.0).max(0.0) / 8.0)
        / 10.0;
    (adjusted, adaptive, 0.7 * adjusted + 0.3 * adaptive - penalty)
}

/// The seed's expected duration of a task: declared, else 60 s.
fn seed_expected_s(task: &TaskRequest) -> f64 {
    if task.expected_duration_s > 0.0 {
        task.expected_duration_s
    } else {
        60.0
    }
}

/// Steps 1 to 4 of the seed's hardware-aware score (before clamping):
/// preferences, compute and memory intensity, specialisation.
fn seed_efficiency(task: &TaskRequest, w: &WorkerView) -> f64 {
    let family = seed_family(w);
    let label = |k: &str| task.labels.get(k).map(String::as_str).unwrap_or("");
    // 1. preferences (the seed's preferred hardware class, architecture and vendor)
    let mut eff = 1.0;
    let preferred = match label("preferred_backend") {
        "cuda" | "rocm" | "gpu" => "gpu",
        "tpu" | "xla" => "tpu",
        "npu" | "nnapi" => "npu",
        "webgpu" | "webnn" | "browser" => "browser",
        "cpu" => "cpu",
        _ => "",
    };
    if !preferred.is_empty() && preferred != family {
        eff *= 0.7;
    }
    let arch = w.caps.cpu.as_ref().map_or("", |c| c.arch.as_str());
    if !label("preferred_arch").is_empty() && label("preferred_arch") != arch {
        eff *= 0.8;
    }
    let vendor = w.caps.gpus.first().map_or("", |g| g.vendor.as_str());
    if !label("preferred_vendor").is_empty() && !label("preferred_vendor").eq_ignore_ascii_case(vendor) {
        eff *= 0.9;
    }
    // 2. compute intensity: 0.8 above 120 s expected, 0.3 below 10 s, else 0.5
    let expected = seed_expected_s(task);
    let compute_intensity = if expected > 120.0 {
        0.8
    } else if expected < 10.0 {
        0.3
    } else {
        0.5
    };
    if compute_intensity > 0.7 {
        let units = w
            .caps
            .labels
            .get("compute_units")
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or_else(|| f64::from(w.caps.cpu.as_ref().map_or(1, |c| c.logical_cores)));
        eff *= 0.5 + 0.5 * (units / 100.0).min(1.0);
    }
    // 3. memory intensity: minimum memory / 16 GB
    let min_mem_gb = task.requirements.as_ref().map_or(0.0, |r| r.memory_mb as f64 / 1024.0).max(0.5);
    if (min_mem_gb / 16.0).min(1.0) > 0.7 {
        let mem_gb = w.caps.gpus.first().map_or(w.caps.memory_mb, |g| g.memory_mb) as f64 / 1024.0;
        eff *= 0.5 + 0.5 * (mem_gb / 16.0).min(1.0);
    }
    // 4. specialisation
    let kind = seed_workload(&task.test_type);
    let tensor_cores =
        w.caps.gpus.iter().any(|g| parse_capability(&g.compute_capability).is_some_and(|cc| cc >= (7, 0)));
    eff * match (family, kind) {
        ("gpu", "vision") => 1.2,
        ("gpu", "nlp") if tensor_cores => 1.2,
        ("tpu", "nlp" | "vision") => 1.3,
        ("npu", "inference") => 1.2,
        _ => 1.0,
    }
}

/// Step 6 of the seed's score, adaptive: performance-based when the fleet is
/// busy, model affinity when it is idle, priority-based (load) otherwise.
fn seed_adaptive(
    task: &TaskRequest,
    w: &WorkerView,
    model: Option<&Model>,
    workload: &str,
    mean_load: f64,
    load: f64,
) -> f64 {
    if mean_load > 0.8 {
        let expected = seed_expected_s(task);
        let performance = model.and_then(|m| m.entry(workload, &w.caps.hardware_class)).map_or(0.5, |e| {
            let time_score =
                if e.log_runtime_mean != 0.0 { 1.0 / (1.0 + e.log_runtime_mean.exp() / expected) } else { 0.5 };
            0.3 * e.success_rate + 0.3 * time_score + 0.1 * (e.observations as f64 / 10.0).min(1.0)
        });
        0.7 * performance + 0.3 * (1.0 - load)
    } else if mean_load < 0.3 {
        if !task.model_family.is_empty() && w.recent_families.iter().any(|f| f == &task.model_family) {
            1.0
        } else {
            0.5
        }
    } else {
        1.0 - load
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::view;
    use hwsched_proto::v1::GpuInfo;

    #[test]
    fn the_seed_reads_families_workloads_and_load_limits() {
        let mut gpu = view("gpu", "gpu:h100");
        std::sync::Arc::make_mut(&mut gpu.caps).gpus =
            vec![GpuInfo { compute_capability: "9.0".into(), ..Default::default() }];
        assert_eq!(seed_family(&gpu), "gpu");
        assert_eq!(seed_family(&view("t", "tpu:v4")), "tpu");
        assert_eq!(seed_family(&view("c", "cpu:x86")), "cpu");
        assert_eq!(seed_workload("nlp-inference"), "nlp");
        assert_eq!(seed_workload("unit"), "mixed");
        let mut w = view("c", "cpu:x86");
        w.mem_util_pct = 95.0;
        assert!(seed_excludes(&w));
        w.mem_util_pct = 50.0;
        assert!(!seed_excludes(&w));
        assert!((seed_load(&w) - 0.15).abs() < 1e-9);
    }

    #[test]
    fn a_vision_task_scores_higher_on_a_cool_gpu_than_on_a_cpu() {
        let mut gpu = view("gpu", "gpu:h100");
        std::sync::Arc::make_mut(&mut gpu.caps).gpus =
            vec![GpuInfo { compute_capability: "9.0".into(), ..Default::default() }];
        let t = TaskRequest { test_type: "vision".into(), ..Default::default() };
        let (on_gpu, _, gpu_total) = seed_score(&t, &gpu, None, "w", 0.5);
        let (on_cpu, _, cpu_total) = seed_score(&t, &view("cpu", "cpu:x86"), None, "w", 0.5);
        assert!(on_gpu >= on_cpu && gpu_total >= cpu_total, "{on_gpu} {on_cpu}");
        let mut hot = gpu.clone();
        hot.max_temp_c = 95.0;
        assert!(seed_score(&t, &hot, None, "w", 0.5).2 < gpu_total);
    }
}
