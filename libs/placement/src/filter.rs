//! The filters of placement: a task's hard requirements against a worker's
//! total capacity (could it ever run there?) and against what is free now
//! (can it run there now?). Pure and deterministic.

use hwsched_proto::v1::{GpuInfo, Requirements, TaskRequest, WorkerCapabilities, WorkerState};

use crate::{
    baseline::seed_excludes,
    score::Policy,
    validate::{parse_capability, DEFAULT_CPU_CORES},
    view::WorkerView,
};

/// Resources a task needs, with defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Demand {
    /// CPU cores.
    pub cpu_cores: f64,
    /// Memory, MB.
    pub memory_mb: i64,
    /// GPUs.
    pub gpu_count: u32,
}

impl Demand {
    /// What `t` reserves on a worker.
    pub fn of(t: &TaskRequest) -> Self {
        let r = t.requirements.as_ref().unwrap_or(&*NO_REQUIREMENTS);
        Demand {
            cpu_cores: if r.cpu_cores > 0.0 { r.cpu_cores } else { DEFAULT_CPU_CORES },
            memory_mb: r.memory_mb.max(0),
            gpu_count: r.gpus.as_ref().map_or(0, |g| g.count),
        }
    }
}

/// A task's requirements, parsed once per placement.
pub(crate) struct Need<'a> {
    req: &'a Requirements,
    gpu_vendor: &'a str,
    gpu_models: Vec<String>,
    gpu_min_memory_mb: i64,
    gpu_min_cc: Option<(u32, u32)>,
    software: Vec<(&'a str, Option<semver::VersionReq>)>,
}

static NO_REQUIREMENTS: std::sync::LazyLock<Requirements> = std::sync::LazyLock::new(Requirements::default);

impl<'a> Need<'a> {
    pub(crate) fn of(t: &'a TaskRequest) -> Self {
        let req = t.requirements.as_ref().unwrap_or(&*NO_REQUIREMENTS);
        let gpu = req.gpus.as_ref();
        Need {
            req,
            gpu_vendor: gpu.map_or("", |g| g.vendor.as_str()),
            gpu_models: gpu.map(|g| g.models.iter().map(|m| m.to_ascii_lowercase()).collect()).unwrap_or_default(),
            gpu_min_memory_mb: gpu.map_or(0, |g| g.min_memory_mb),
            gpu_min_cc: gpu.and_then(|g| parse_capability(&g.min_compute_capability)),
            software: req.software.iter().map(|(k, v)| (k.as_str(), semver::VersionReq::parse(v).ok())).collect(),
        }
    }

    fn gpu_matches(&self, g: &GpuInfo) -> bool {
        (self.gpu_vendor.is_empty() || g.vendor.eq_ignore_ascii_case(self.gpu_vendor))
            && (self.gpu_models.is_empty() || self.gpu_models.iter().any(|m| contains_ignore_case(&g.model, m)))
            && g.memory_mb as i64 >= self.gpu_min_memory_mb
            && self
                .gpu_min_cc
                .is_none_or(|need| parse_capability(&g.compute_capability).is_some_and(|have| have >= need))
    }
}

/// Whether hardware class `class` matches `pattern`: equal, or `pattern` is a
/// prefix of it that ends where `class` has a ':' or '-' (ASCII case ignored).
/// "gpu:nvidia-h100" matches "gpu:nvidia-h100-80gb-hbm3" but not "gpu:nvidia-h1000".
pub fn class_matches(pattern: &str, class: &str) -> bool {
    let (p, c) = (pattern.as_bytes(), class.as_bytes());
    c.len() >= p.len()
        && c[..p.len()].eq_ignore_ascii_case(p)
        && (c.len() == p.len()
            || matches!(c[p.len()], b':' | b'-')
            || p.last().is_some_and(|b| matches!(b, b':' | b'-')))
}

/// `needle_lower` (ASCII lower-case) occurs in `hay`, ignoring ASCII case.
fn contains_ignore_case(hay: &str, needle_lower: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// Whether a worker with these capabilities could ever run `task` (its hard
/// requirements against the worker's total capacity).
pub fn fits_ever(task: &TaskRequest, caps: &WorkerCapabilities) -> bool {
    static_fit(&Need::of(task), &Demand::of(task), caps).is_ok()
}

/// Requirements checked against a worker's total capacity.
/// Returns the mask of the worker's GPUs (by position, the first 64) that
/// match the task's GPU requirement.
pub(crate) fn static_fit(n: &Need<'_>, d: &Demand, c: &WorkerCapabilities) -> Result<u64, &'static str> {
    let r = n.req;
    if !r.hardware_classes.is_empty() && !r.hardware_classes.iter().any(|p| class_matches(p, &c.hardware_class)) {
        return Err("are of another hardware class");
    }
    let cores = c.cpu.as_ref().map_or(0, |cpu| cpu.logical_cores) as f64;
    if d.cpu_cores > cores {
        return Err("have too few cpu cores");
    }
    if d.memory_mb as u64 > c.memory_mb {
        return Err("have too little memory");
    }
    let mut gpus = 0u64;
    if d.gpu_count > 0 {
        for (i, g) in c.gpus.iter().enumerate().take(64) {
            if n.gpu_matches(g) {
                gpus |= 1 << i;
            }
        }
        if gpus.count_ones() < d.gpu_count {
            return Err("lack matching gpus");
        }
    }
    for (kind, count) in &r.accelerators {
        if c.accelerators.get(kind).copied().unwrap_or(0) < *count {
            return Err("lack the accelerator");
        }
    }
    if r.backends.iter().any(|b| !c.backends.iter().any(|have| have.eq_ignore_ascii_case(b))) {
        return Err("lack the backend");
    }
    for (name, req) in &n.software {
        let ok = match (req, c.software.get(*name).and_then(|v| lenient_version(v))) {
            (Some(req), Some(v)) => req.matches(&v),
            _ => false,
        };
        if !ok {
            return Err("lack the software version");
        }
    }
    if r.labels.iter().any(|(k, v)| c.labels.get(k) != Some(v)) {
        return Err("lack the labels");
    }
    Ok(gpus)
}

/// The task's GPUs among `matching` that no placed task reserved.
fn free_mask(matching: u64, w: &WorkerView) -> u64 {
    if w.reserved.gpus.is_empty() {
        return matching;
    }
    let mut reserved = 0u64;
    for (i, g) in w.caps.gpus.iter().enumerate().take(64) {
        if w.reserved.gpus.contains(&g.index) {
            reserved |= 1 << i;
        }
    }
    matching & !reserved
}

/// CPU or memory utilisation by others at which a worker gets nothing new, percent.
pub const CRITICAL_PCT: f64 = 95.0;

/// Whether load that hwsched did not place there reaches [`CRITICAL_PCT`] of
/// the worker's CPU or memory. Each pair is (total, ours) in percent, ours
/// being what the monitor and the tests it runs used: a worker saturated by
/// its own tests is busy (its slots say so), not overloaded.
pub fn critically_overloaded(cpu: (f64, f64), memory: (f64, f64)) -> bool {
    // a missing or garbled own share counts as none: all load is others'
    let others =
        |(total, ours): (f64, f64)| total - if ours.is_finite() { ours.clamp(0.0, total.max(0.0)) } else { 0.0 };
    others(cpu) >= CRITICAL_PCT || others(memory) >= CRITICAL_PCT
}

/// Why a worker cannot take a task now.
pub(crate) struct Busy {
    pub(crate) why: &'static str,
    /// It lacks room only (slots, cores, memory, devices): it will have some
    /// once its running work ends.
    pub(crate) room: bool,
}

/// Why `policy` gives a worker nothing new now, whatever the task: not
/// active, throttling, critically overloaded (hwsched) or over the seed's
/// load limits. `None`: it is usable.
pub(crate) fn unusable(w: &WorkerView, policy: Policy) -> Option<&'static str> {
    if w.state != WorkerState::Active {
        return Some("are not active (draining or offline)");
    }
    if policy.reads_thermal() && w.throttling {
        return Some("are throttling");
    }
    if policy.reads_thermal()
        && critically_overloaded((w.cpu_util_pct, w.tasks_cpu_pct), (w.mem_util_pct, w.tasks_mem_pct))
    {
        return Some("are critically overloaded");
    }
    if policy == Policy::Seed && seed_excludes(w) {
        return Some("are over the seed's load limits");
    }
    None
}

/// Requirements checked against what is free now.
pub(crate) fn dynamic_fit(n: &Need<'_>, d: &Demand, w: &WorkerView, matching: u64, policy: Policy) -> Result<(), Busy> {
    if let Some(why) = unusable(w, policy) {
        return Err(Busy { why, room: false });
    }
    let full = |why| Err(Busy { why, room: true });
    if w.reserved.slots >= w.caps.slots.max(1) {
        return full("have no free slot");
    }
    let cores = w.caps.cpu.as_ref().map_or(0, |cpu| cpu.logical_cores) as f64;
    if w.reserved.cpu_cores + d.cpu_cores > cores + 1e-9 {
        return full("have no free cpu cores");
    }
    if w.reserved.memory_mb + d.memory_mb > w.caps.memory_mb as i64 {
        return full("have no free memory");
    }
    for (kind, count) in &n.req.accelerators {
        let have = w.caps.accelerators.get(kind).copied().unwrap_or(0);
        if w.reserved.accelerators.get(kind).copied().unwrap_or(0) + count > have {
            return full("have no free accelerator");
        }
    }
    if d.gpu_count > 0 && free_mask(matching, w).count_ones() < d.gpu_count {
        return full("have no free matching gpu");
    }
    Ok(())
}

/// The GPUs to reserve on a worker that passed [`dynamic_fit`].
pub(crate) fn free_gpus(matching: u64, d: &Demand, w: &WorkerView) -> Vec<u32> {
    let free = free_mask(matching, w);
    w.caps
        .gpus
        .iter()
        .enumerate()
        .take(64)
        .filter(|(i, _)| free & (1 << i) != 0)
        .map(|(_, g)| g.index)
        .take(d.gpu_count as usize)
        .collect()
}

/// "3.11.7", "3.11", "12" -> semver versions.
fn lenient_version(v: &str) -> Option<semver::Version> {
    let v = v.trim().trim_start_matches('v');
    let end = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let mut parts = v[..end].split('.').filter(|p| !p.is_empty()).map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().transpose().ok()?.unwrap_or(0);
    let patch = parts.next().transpose().ok()?.unwrap_or(0);
    Some(semver::Version::new(major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardware_class_patterns_match_whole_segments() {
        assert!(class_matches("gpu:nvidia-h100", "gpu:nvidia-h100-80gb-hbm3"));
        assert!(class_matches("gpu:nvidia-h100", "gpu:nvidia-h100"));
        assert!(class_matches("GPU", "gpu:nvidia-a100"));
        assert!(class_matches("cpu:", "cpu:x86_64-amd-epyc"));
        assert!(!class_matches("gpu:nvidia-h100", "gpu:nvidia-h1000"));
        assert!(!class_matches("gpu:nvidia-h100-80gb", "gpu:nvidia-h100"));
        assert!(!class_matches("cpu", "accel:npu"));
    }

    #[test]
    fn versions_are_read_leniently() {
        assert_eq!(lenient_version("3.11.7"), Some(semver::Version::new(3, 11, 7)));
        assert_eq!(lenient_version("v3.11"), Some(semver::Version::new(3, 11, 0)));
        assert_eq!(lenient_version("12"), Some(semver::Version::new(12, 0, 0)));
        assert_eq!(lenient_version("12.1-rc1"), Some(semver::Version::new(12, 1, 0)));
        assert_eq!(lenient_version("latest"), None);
    }

    #[test]
    fn overload_is_what_others_use() {
        assert!(critically_overloaded((99.0, 0.0), (10.0, 0.0)), "old monitors: all load is others'");
        assert!(!critically_overloaded((99.0, 80.0), (10.0, 0.0)), "saturated by its own tests");
        assert!(critically_overloaded((99.0, 3.0), (10.0, 0.0)));
        assert!(critically_overloaded((20.0, 5.0), (96.0, 0.5)), "memory held by others");
        assert!(!critically_overloaded((20.0, 5.0), (96.0, 40.0)));
        // an own share beyond the total (sampling skew) never makes load negative
        assert!(!critically_overloaded((50.0, 70.0), (50.0, 70.0)));
        assert!(critically_overloaded((96.0, f64::NAN), (0.0, 0.0)), "a garbled share hides nothing");
    }
}
