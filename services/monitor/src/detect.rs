//! Capability detection: what this host really has (sysinfo, NVML, installed
//! software) plus what the operator declares (accelerators, backends, labels).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use hwsched_proto::{
    v1::{CpuInfo, GpuInfo, WorkerCapabilities},
    SCHEMA_VERSION,
};
use sysinfo::{Disks, System};

use crate::{config::MonitorConfig, gpu::Gpus, host, probes};

/// The worker id: configured, else the node name (Kubernetes: `spec.nodeName`,
/// which may hold dots), else the host name, the last two made subject-safe.
pub fn worker_id(configured: Option<&str>, node_name: Option<&str>) -> Result<String, String> {
    if let Some(id) = configured {
        return if id.len() <= 128 && hwsched_proto::is_valid_id(id) {
            Ok(id.to_string())
        } else {
            Err(format!("--worker-id / HWSCHED_WORKER_ID {id:?} must be 1..=128 characters of [A-Za-z0-9_-]"))
        };
    }
    if let Some(node) = node_name.filter(|n| !n.trim().is_empty()) {
        return Ok(sanitize(node.trim()));
    }
    let host = System::host_name().unwrap_or_else(|_| "worker".into());
    Ok(sanitize(&host))
}

/// Replaces every character outside `[A-Za-z0-9_-]` with '-', at most 128 characters.
pub fn sanitize(s: &str) -> String {
    let out: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).take(128).collect();
    if out.is_empty() {
        "worker".into()
    } else {
        out
    }
}

/// The cores this worker offers: the host's, or fewer where the monitor may
/// use only some of them (a CPU affinity mask such as `taskset -c 0`, or a
/// cgroup CPU quota, as in a container with a CPU limit). Its tasks inherit
/// the same limit, so this is what they get.
fn offered_cores(host: usize, allowed: Option<usize>) -> usize {
    match allowed {
        Some(n) if host == 0 || n < host => n,
        _ => host,
    }
}

/// Detects this host's capabilities.
pub fn detect(cfg: &MonitorConfig, worker_id: &str, gpus: Option<&Gpus>, started_at_ms: i64) -> WorkerCapabilities {
    let mut sys = System::new().ok();
    if let Some(sys) = sys.as_mut() {
        sys.refresh_memory();
        sys.refresh_cpu_all();
    }
    let cpus = sys.as_ref().map_or(&[][..], |s| s.cpus());
    let logical = offered_cores(cpus.len(), std::thread::available_parallelism().ok().map(|n| n.get()));
    let cpu = CpuInfo {
        model: cpus.first().map(|c| c.brand().trim().to_string()).unwrap_or_default(),
        vendor: cpus.first().map(|c| c.vendor_id().to_string()).unwrap_or_default(),
        arch: System::cpu_arch(),
        physical_cores: System::physical_core_count().unwrap_or(cpus.len()).min(logical) as u32,
        logical_cores: logical as u32,
        frequency_mhz: cpus.first().map(|c| c.frequency()).unwrap_or(0),
        isa_features: host::host_isa_features(),
    };
    let memory_mb = cfg.memory_mb.unwrap_or_else(|| sys.as_ref().map_or(0, effective_memory_bytes) / (1024 * 1024));
    let disk_mb = Disks::new_with_refreshed_list()
        .ok()
        .and_then(|disks| {
            disks
                .iter()
                .find(|d| d.mount_point() == std::path::Path::new("/"))
                .map(|d| d.available_space() / (1024 * 1024))
        })
        .unwrap_or(0);

    let gpu_list: Vec<GpuInfo> = gpus.map(Gpus::inventory).unwrap_or_default();
    let probes: Vec<(String, String)> = if cfg.probes.is_empty() {
        probes::DEFAULT_PROBES.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect()
    } else {
        cfg.probes.clone()
    };
    let mut software = probes::run(&probes);
    if let Some(g) = gpus {
        if let Some(v) = g.cuda_version() {
            software.insert("cuda".into(), v);
        }
        if let Some(v) = g.driver_version() {
            software.insert("nvidia-driver".into(), v);
        }
    }
    software.extend(cfg.software.iter().cloned());

    let mut backends = vec!["cpu".to_string()];
    if gpu_list.iter().any(|g| g.vendor == "nvidia") {
        backends.push("cuda".into());
    }
    for b in &cfg.backends {
        if !backends.contains(b) {
            backends.push(b.clone());
        }
    }
    let slots = cfg.slots.unwrap_or(cpu.logical_cores.max(1));
    let hardware_class = hardware_class(&cpu, &gpu_list, &cfg.accelerators);
    let mut caps = WorkerCapabilities {
        schema_version: SCHEMA_VERSION,
        worker_id: worker_id.to_string(),
        hostname: System::host_name().unwrap_or_default(),
        os: System::long_os_version().unwrap_or_default(),
        cpu: Some(cpu),
        memory_mb,
        disk_mb,
        gpus: gpu_list,
        accelerators: cfg.accelerators.iter().cloned().collect(),
        backends,
        software: software.into_iter().collect(),
        labels: cfg.labels.iter().cloned().collect(),
        slots,
        revision: 0,
        hardware_class,
        started_at_ms,
        monitor_version: env!("CARGO_PKG_VERSION").into(),
        swap_mb: sys.as_ref().map_or(0, |s| s.total_swap() / (1024 * 1024)),
        disks: host::disks(),
        nics: host::nics(),
    };
    caps.revision = revision(&caps);
    caps
}

/// Host memory, capped by a cgroup limit when running in a container.
fn effective_memory_bytes(sys: &System) -> u64 {
    let total = sys.total_memory();
    match sys.cgroup_limits() {
        Some(l) if l.total_memory > 0 && l.total_memory < total => l.total_memory,
        _ => total,
    }
}

/// A hash of the capabilities' content (revision excluded).
fn revision(caps: &WorkerCapabilities) -> u64 {
    let mut c = caps.clone();
    c.revision = 0;
    c.started_at_ms = 0;
    let mut h = DefaultHasher::new();
    prost::Message::encode_to_vec(&c).hash(&mut h);
    h.finish().max(1)
}

/// The learner's hardware key: the GPU model when there is one, else a declared
/// accelerator, else the CPU architecture and model.
pub fn hardware_class(cpu: &CpuInfo, gpus: &[GpuInfo], accelerators: &[(String, u32)]) -> String {
    if let Some(g) = gpus.first() {
        let model = g.model.to_lowercase();
        let model = model.trim_start_matches("nvidia").trim();
        return format!("gpu:{}-{}", g.vendor, slug(model));
    }
    if let Some((kind, _)) = accelerators.first() {
        return format!("accel:{}", slug(kind));
    }
    format!("cpu:{}-{}", cpu.arch, slug(&cpu.model.to_lowercase()))
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_makes_subject_safe_ids() {
        assert_eq!(sanitize("node-1.example.com"), "node-1-example-com");
        assert_eq!(sanitize("gpu_box_01"), "gpu_box_01");
        assert_eq!(sanitize(""), "worker");
    }

    #[test]
    fn configured_worker_id_is_validated() {
        assert!(worker_id(Some("a.b"), None).is_err());
        assert_eq!(worker_id(Some("node_1"), Some("other")).as_deref(), Ok("node_1"));
        // a Kubernetes node name: made subject-safe, not refused
        assert_eq!(worker_id(None, Some("ip-10-0-1-7.ec2.internal")).as_deref(), Ok("ip-10-0-1-7-ec2-internal"));
    }

    #[test]
    fn hardware_class_prefers_gpu_then_accelerator_then_cpu() {
        let cpu = CpuInfo { arch: "x86_64".into(), model: "AMD EPYC 7B13".into(), ..Default::default() };
        let h100 = GpuInfo { vendor: "nvidia".into(), model: "NVIDIA H100 80GB HBM3".into(), ..Default::default() };
        assert_eq!(hardware_class(&cpu, &[h100], &[]), "gpu:nvidia-h100-80gb-hbm3");
        assert_eq!(hardware_class(&cpu, &[], &[("tpu".into(), 4)]), "accel:tpu");
        assert_eq!(hardware_class(&cpu, &[], &[]), "cpu:x86_64-amd-epyc-7b13");
    }

    fn cpu_model(c: &WorkerCapabilities) -> String {
        c.cpu.as_ref().map(|c| c.model.clone()).unwrap_or_default()
    }

    #[test]
    fn a_worker_offers_only_the_cores_it_may_use() {
        assert_eq!(offered_cores(16, Some(16)), 16);
        assert_eq!(offered_cores(16, Some(2)), 2, "affinity mask or CPU quota");
        assert_eq!(offered_cores(16, None), 16);
        assert_eq!(offered_cores(0, Some(4)), 4, "sysinfo saw no CPUs");
        assert_eq!(offered_cores(4, Some(8)), 4);
    }

    #[test]
    fn detection_reads_this_host() {
        let cfg = MonitorConfig::for_tests();
        let caps = detect(&cfg, "w", None, 0);
        let cpu = caps.cpu.clone().expect("cpu");
        assert_eq!(cpu.logical_cores as usize, std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
        // memory and swap as /proc/meminfo says (memory may be capped lower by a cgroup limit)
        let meminfo = std::fs::read_to_string("/proc/meminfo").expect("linux");
        let kb = |key: &str| -> u64 {
            meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mem_total_mb = kb("MemTotal:") / 1024;
        assert!(caps.memory_mb > 0 && caps.memory_mb <= mem_total_mb, "{} vs {mem_total_mb}", caps.memory_mb);
        assert_eq!(caps.swap_mb, kb("SwapTotal:") / 1024);
        let model_line = std::fs::read_to_string("/proc/cpuinfo").expect("linux");
        if let Some(name) = model_line.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')) {
            assert_eq!(cpu_model(&caps), name.1.trim());
        }
        assert!(caps.backends.contains(&"cpu".to_string()));
        if Gpus::init().is_none() {
            // the no-NVML path: no GPU and no CUDA backend invented
            assert!(caps.gpus.is_empty());
            assert_eq!(caps.backends, vec!["cpu".to_string()]);
            assert!(caps.hardware_class.starts_with("cpu:"), "{}", caps.hardware_class);
        }
        assert_ne!(caps.revision, 0);
        // webgpu must never imply a GPU (a bug of the system we replace)
        let mut cfg = MonitorConfig::for_tests();
        cfg.accelerators = vec![("webgpu".into(), 1)];
        assert!(detect(&cfg, "w", None, 0).gpus.is_empty());
    }

    #[test]
    fn declared_memory_overrides_the_detected() {
        let mut cfg = MonitorConfig::for_tests();
        cfg.memory_mb = Some(512);
        cfg.probes = vec![("none".into(), "true".into())];
        assert_eq!(detect(&cfg, "w", None, 0).memory_mb, 512);
    }
}
