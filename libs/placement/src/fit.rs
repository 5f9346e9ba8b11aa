//! Filter and score: which workers can run a task now, which could later, and
//! the best one. Pure: no IO, no clock, deterministic for the same inputs.

use std::collections::BTreeMap;

use hwsched_proto::v1::{GpuInfo, Requirements, TaskRequest, WorkerCapabilities, WorkerState};

use crate::{
    score::{Scored, Scoring},
    validate::{parse_capability, DEFAULT_CPU_CORES},
};

/// What is already reserved on a worker by tasks placed there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reserved {
    /// CPU cores.
    pub cpu_cores: f64,
    /// Memory, MB.
    pub memory_mb: i64,
    /// GPU indices in use.
    pub gpus: Vec<u32>,
    /// Declared accelerators in use.
    pub accelerators: BTreeMap<String, u32>,
    /// Tasks running or assigned.
    pub slots: u32,
}

/// The scheduler's view of one worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Registered capabilities.
    pub caps: WorkerCapabilities,
    /// Reported state.
    pub state: WorkerState,
    /// Reservations by placed tasks.
    pub reserved: Reserved,
    /// Live CPU utilisation, percent.
    pub cpu_util_pct: f64,
    /// Hottest sensor, °C (0 = unknown).
    pub max_temp_c: f64,
    /// Throttling now or within the cool-down: excluded.
    pub throttling: bool,
    /// Above the hot threshold (with hysteresis): penalised.
    pub hot: bool,
    /// Model families it ran recently (affinity).
    pub recent_families: Vec<String>,
}

impl WorkerView {
    /// An active, idle, cool worker with these capabilities (nothing reserved).
    pub fn available(caps: WorkerCapabilities) -> Self {
        Self {
            caps,
            state: WorkerState::Active,
            reserved: Reserved::default(),
            cpu_util_pct: 0.0,
            max_temp_c: 0.0,
            throttling: false,
            hot: false,
            recent_families: vec![],
        }
    }
}

/// The placement decision for one task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Run it there now.
    Place {
        /// Chosen worker.
        worker_id: String,
        /// GPU indices reserved for it.
        gpus: Vec<u32>,
        /// Weighted cost of the chosen worker (lower is better).
        score: f64,
        /// Workers that passed the filters.
        candidates: usize,
        /// The chosen worker's score components, by name.
        components: Vec<(&'static str, f64)>,
        /// Predicted runtime there, when the model knows the pair.
        predicted_runtime_s: Option<f64>,
    },
    /// Some worker could run it, none can right now.
    Wait {
        /// Why, per filter, for `hwsched queue`.
        reason: String,
    },
    /// No registered worker could ever run it (or none is registered).
    NeverFits {
        /// Why.
        reason: String,
    },
}

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
struct Need<'a> {
    req: &'a Requirements,
    gpu_vendor: &'a str,
    gpu_models: Vec<String>,
    gpu_min_memory_mb: i64,
    gpu_min_cc: Option<(u32, u32)>,
    software: Vec<(&'a str, Option<semver::VersionReq>)>,
}

static NO_REQUIREMENTS: std::sync::LazyLock<Requirements> = std::sync::LazyLock::new(Requirements::default);

impl<'a> Need<'a> {
    fn of(t: &'a TaskRequest) -> Self {
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

/// `needle_lower` (ASCII lower-case) occurs in `hay`, ignoring ASCII case.
fn contains_ignore_case(hay: &str, needle_lower: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle_lower.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.iter().zip(n).all(|(a, b)| a.to_ascii_lowercase() == *b))
}

/// Chooses a worker for `task` among `workers`, scored without a model.
pub fn place(task: &TaskRequest, workers: &[WorkerView]) -> Outcome {
    place_with(task, workers, &Scoring::default())
}

/// Chooses a worker for `task`: filters on hard requirements and what is free,
/// then the lowest weighted cost wins (ties to the smaller worker id).
pub fn place_with(task: &TaskRequest, workers: &[WorkerView], scoring: &Scoring<'_>) -> Outcome {
    if workers.is_empty() {
        return Outcome::NeverFits { reason: "no worker is registered".into() };
    }
    let demand = Demand::of(task);
    let need = Need::of(task);
    let mut never: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut busy: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut candidates: Vec<(&WorkerView, Vec<u32>)> = Vec::new();
    for w in workers {
        if let Err(why) = static_fit(&need, &demand, &w.caps) {
            *never.entry(why).or_default() += 1;
            continue;
        }
        match dynamic_fit(&need, &demand, w) {
            Err(why) => *busy.entry(why).or_default() += 1,
            Ok(gpus) => candidates.push((w, gpus)),
        }
    }
    if candidates.is_empty() {
        if busy.is_empty() {
            return Outcome::NeverFits { reason: summarize(workers.len(), &never) };
        }
        let mut all = busy;
        for (k, v) in never {
            *all.entry(k).or_default() += v;
        }
        return Outcome::Wait { reason: summarize(workers.len(), &all) };
    }
    let views: Vec<&WorkerView> = candidates.iter().map(|(w, _)| *w).collect();
    let scored = scoring.score(task, &views);
    let mut best = 0;
    for i in 1..scored.len() {
        let (a, b) = (&scored[i], &scored[best]);
        if a.cost < b.cost || (a.cost == b.cost && views[i].caps.worker_id < views[best].caps.worker_id) {
            best = i;
        }
    }
    let n = candidates.len();
    let (w, gpus) = candidates.swap_remove(best);
    let s = scored.into_iter().nth(best).unwrap_or(Scored { cost: 0.0, components: vec![], predicted_runtime_s: None });
    Outcome::Place {
        worker_id: w.caps.worker_id.clone(),
        gpus,
        score: s.cost,
        candidates: n,
        components: s.components,
        predicted_runtime_s: s.predicted_runtime_s,
    }
}

fn summarize(total: usize, reasons: &BTreeMap<&'static str, usize>) -> String {
    let parts: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
    format!("{total} worker(s): {}", parts.join(", "))
}

/// Requirements checked against a worker's total capacity.
fn static_fit(n: &Need<'_>, d: &Demand, c: &WorkerCapabilities) -> Result<(), &'static str> {
    let r = n.req;
    let cores = c.cpu.as_ref().map_or(0, |cpu| cpu.logical_cores) as f64;
    if d.cpu_cores > cores {
        return Err("have too few cpu cores");
    }
    if d.memory_mb as u64 > c.memory_mb {
        return Err("have too little memory");
    }
    if d.gpu_count > 0 && (c.gpus.iter().filter(|g| n.gpu_matches(g)).count() as u32) < d.gpu_count {
        return Err("lack matching gpus");
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
    Ok(())
}

/// Requirements checked against what is free now. Returns the GPUs to reserve.
fn dynamic_fit(n: &Need<'_>, d: &Demand, w: &WorkerView) -> Result<Vec<u32>, &'static str> {
    if w.state != WorkerState::Active {
        return Err("are not active (draining or offline)");
    }
    if w.throttling {
        return Err("are throttling");
    }
    if w.reserved.slots >= w.caps.slots.max(1) {
        return Err("have no free slot");
    }
    let cores = w.caps.cpu.as_ref().map_or(0, |cpu| cpu.logical_cores) as f64;
    if w.reserved.cpu_cores + d.cpu_cores > cores + 1e-9 {
        return Err("have no free cpu cores");
    }
    if w.reserved.memory_mb + d.memory_mb > w.caps.memory_mb as i64 {
        return Err("have no free memory");
    }
    for (kind, count) in &n.req.accelerators {
        let have = w.caps.accelerators.get(kind).copied().unwrap_or(0);
        if w.reserved.accelerators.get(kind).copied().unwrap_or(0) + count > have {
            return Err("have no free accelerator");
        }
    }
    if d.gpu_count == 0 {
        return Ok(Vec::new());
    }
    let gpus: Vec<u32> = w
        .caps
        .gpus
        .iter()
        .filter(|g| n.gpu_matches(g) && !w.reserved.gpus.contains(&g.index))
        .map(|g| g.index)
        .take(d.gpu_count as usize)
        .collect();
    if (gpus.len() as u32) < d.gpu_count {
        return Err("have no free matching gpu");
    }
    Ok(gpus)
}

/// "3.11.7", "3.11", "12" -> semver versions.
fn lenient_version(v: &str) -> Option<semver::Version> {
    let core: String =
        v.trim().trim_start_matches('v').chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut parts = core.split('.').filter(|p| !p.is_empty()).map(|p| p.parse::<u64>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().transpose().ok()?.unwrap_or(0);
    let patch = parts.next().transpose().ok()?.unwrap_or(0);
    Some(semver::Version::new(major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::{CpuInfo, GpuRequirement, Requirements};

    fn worker(id: &str, cores: u32, mem: u64, gpus: &[(&str, u64)]) -> WorkerView {
        WorkerView::available(WorkerCapabilities {
            worker_id: id.into(),
            cpu: Some(CpuInfo { logical_cores: cores, ..Default::default() }),
            memory_mb: mem,
            slots: 4,
            gpus: gpus
                .iter()
                .enumerate()
                .map(|(i, (m, mem))| GpuInfo {
                    index: i as u32,
                    vendor: "nvidia".into(),
                    model: (*m).into(),
                    memory_mb: *mem,
                    compute_capability: "9.0".into(),
                    ..Default::default()
                })
                .collect(),
            software: [("python".to_string(), "3.11.7".to_string())].into(),
            ..Default::default()
        })
    }

    fn task(req: Requirements) -> TaskRequest {
        TaskRequest { task_id: "t".into(), command: vec!["true".into()], requirements: Some(req), ..Default::default() }
    }

    #[test]
    fn memory_and_cores_filter_workers() {
        let ws = [worker("small", 2, 1024, &[]), worker("big", 16, 65536, &[])];
        let t = task(Requirements { cpu_cores: 4.0, memory_mb: 8000, ..Default::default() });
        assert!(matches!(place(&t, &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "big"));
    }

    #[test]
    fn gpu_model_and_memory_are_matched() {
        let ws = [
            worker("a100", 8, 65536, &[("NVIDIA A100-SXM4-40GB", 40960)]),
            worker("h100", 8, 65536, &[("NVIDIA H100 80GB HBM3", 81559)]),
        ];
        let req = |models: &[&str], mem| Requirements {
            gpus: Some(GpuRequirement {
                count: 1,
                min_memory_mb: mem,
                models: models.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(
            matches!(place(&task(req(&["h100"], 0)), &ws), Outcome::Place { ref worker_id, .. } if worker_id == "h100")
        );
        assert!(
            matches!(place(&task(req(&[], 60000)), &ws), Outcome::Place { ref worker_id, .. } if worker_id == "h100")
        );
        assert!(matches!(place(&task(req(&["MI300"], 0)), &ws), Outcome::NeverFits { .. }));
    }

    #[test]
    fn busy_worker_means_wait_not_never() {
        let mut w = worker("one", 2, 4096, &[]);
        w.reserved.cpu_cores = 2.0;
        w.reserved.slots = 1;
        match place(&task(Requirements::default()), &[w]) {
            Outcome::Wait { reason } => assert!(reason.contains("no free cpu cores"), "{reason}"),
            other => panic!("expected wait, got {other:?}"),
        }
    }

    #[test]
    fn reserved_gpus_are_not_handed_out_twice() {
        let mut w = worker("g", 8, 65536, &[("H100", 81559), ("H100", 81559)]);
        w.reserved.gpus = vec![0];
        let t =
            task(Requirements { gpus: Some(GpuRequirement { count: 1, ..Default::default() }), ..Default::default() });
        assert!(matches!(place(&t, &[w]), Outcome::Place { ref gpus, .. } if gpus == &vec![1]));
    }

    #[test]
    fn software_requirement_uses_semver() {
        let ws = [worker("py311", 4, 8192, &[])];
        let need = |r: &str| {
            task(Requirements { software: [("python".to_string(), r.to_string())].into(), ..Default::default() })
        };
        assert!(matches!(place(&need(">=3.10"), &ws), Outcome::Place { .. }));
        assert!(matches!(place(&need(">=3.12"), &ws), Outcome::NeverFits { .. }));
        assert!(matches!(place(&need(">=1"), &[worker("x", 1, 1, &[])]), Outcome::Place { .. }));
    }

    #[test]
    fn draining_and_throttling_workers_get_nothing() {
        let mut d = worker("d", 4, 8192, &[]);
        d.state = WorkerState::Draining;
        let mut h = worker("h", 4, 8192, &[]);
        h.throttling = true;
        assert!(matches!(place(&task(Requirements::default()), &[d, h]), Outcome::Wait { .. }));
    }

    #[test]
    fn least_loaded_worker_wins_and_ties_break_by_id() {
        let mut busy = worker("a", 8, 8192, &[]);
        busy.cpu_util_pct = 90.0;
        let idle = worker("b", 8, 8192, &[]);
        assert!(
            matches!(place(&task(Requirements::default()), &[busy, idle.clone()]), Outcome::Place { ref worker_id, .. } if worker_id == "b")
        );
        let idle2 = worker("c", 8, 8192, &[]);
        assert!(
            matches!(place(&task(Requirements::default()), &[idle2, idle]), Outcome::Place { ref worker_id, .. } if worker_id == "b")
        );
    }

    #[test]
    fn no_workers_is_never_fits() {
        assert!(matches!(place(&task(Requirements::default()), &[]), Outcome::NeverFits { .. }));
    }
}
