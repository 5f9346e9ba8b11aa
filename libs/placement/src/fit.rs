//! Filter and score: which workers can run a task now, which could later, and
//! the best one. Pure: no IO, no clock, deterministic for the same inputs.

use std::collections::BTreeMap;

use hwsched_proto::v1::{GpuInfo, Requirements, TaskRequest, WorkerCapabilities, WorkerState};

use crate::{
    score::{seed_excludes, Candidate, Policy, Scoring},
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
    /// Registered capabilities (shared with the scheduler's state: a view is cheap to copy).
    pub caps: std::sync::Arc<WorkerCapabilities>,
    /// Reported state.
    pub state: WorkerState,
    /// Reservations by placed tasks.
    pub reserved: Reserved,
    /// Live CPU utilisation, percent.
    pub cpu_util_pct: f64,
    /// Live memory utilisation, percent.
    pub mem_util_pct: f64,
    /// GPU utilisation, percent (share of its GPUs reserved).
    pub gpu_util_pct: f64,
    /// Hottest sensor, °C (0 = unknown).
    pub max_temp_c: f64,
    /// Throttling now or within the cool-down: excluded.
    pub throttling: bool,
    /// Above the hot threshold (with hysteresis): penalised.
    pub hot: bool,
    /// Model families it ran recently (affinity).
    pub recent_families: std::sync::Arc<Vec<String>>,
    /// Expected seconds until a running task ends and frees room on it;
    /// `None` when unknown (it is then never waited for).
    pub free_in_s: Option<f64>,
    /// A waiting task is expected to start here in this many seconds: only
    /// tasks predicted to end by then may be placed here now (backfill).
    pub hold_s: Option<f64>,
    /// [`shape_of`] its capabilities (0: unknown, checked on its own).
    pub shape: u64,
}

impl WorkerView {
    /// An active, idle, cool worker with these capabilities (nothing reserved).
    pub fn available(caps: WorkerCapabilities) -> Self {
        Self {
            shape: shape_of(&caps),
            caps: caps.into(),
            state: WorkerState::Active,
            reserved: Reserved::default(),
            cpu_util_pct: 0.0,
            mem_util_pct: 0.0,
            gpu_util_pct: 0.0,
            max_temp_c: 0.0,
            throttling: false,
            hot: false,
            recent_families: Default::default(),
            free_in_s: None,
            hold_s: None,
        }
    }
}

/// One candidate of a decision, for `explain` and the decisions table.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// The worker.
    pub worker_id: String,
    /// Its hardware class.
    pub hardware_class: String,
    /// Weighted cost (lower is better).
    pub cost: f64,
    /// Expected seconds until it has room (0 = free now).
    pub wait_s: f64,
    /// Expected completion: wait + runtime estimate, s.
    pub completion_s: f64,
    /// The model's runtime prediction there, when it knows the pair.
    pub predicted_runtime_s: Option<f64>,
    /// Score components, by name.
    pub components: Vec<(&'static str, f64)>,
}

/// How many candidates a decision keeps (the winner first).
pub const RANKED_KEPT: usize = 5;

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
        /// Workers that could take it.
        candidates: usize,
        /// The chosen worker's score components, by name.
        components: Vec<(&'static str, f64)>,
        /// Predicted runtime there, when the model knows the pair.
        predicted_runtime_s: Option<f64>,
        /// The best candidates, the winner first.
        ranked: Vec<Ranked>,
    },
    /// Wait for a busy worker: it is expected to finish the task sooner than
    /// any worker free now.
    Queue {
        /// The worker waited for.
        worker_id: String,
        /// Expected seconds until it has room.
        wait_s: f64,
        /// Runtime estimate there, s.
        runtime_s: f64,
        /// Why, for `hwsched queue`.
        reason: String,
        /// The best candidates, the one waited for first.
        ranked: Vec<Ranked>,
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

/// A hash of everything [`fits_ever`] reads of a worker, and its hardware
/// class: workers with the same shape fit a task the same way and run it as
/// fast, so placement checks and estimates each shape once.
pub fn shape_of(caps: &WorkerCapabilities) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // the class too, so runtime estimates can be shared by shape
    caps.hardware_class.hash(&mut h);
    caps.cpu.as_ref().map_or(0, |c| c.logical_cores).hash(&mut h);
    caps.memory_mb.hash(&mut h);
    for g in &caps.gpus {
        (g.index, &g.vendor, &g.model, g.memory_mb, &g.compute_capability).hash(&mut h);
    }
    let mut acc: Vec<(&String, &u32)> = caps.accelerators.iter().collect();
    acc.sort();
    acc.hash(&mut h);
    caps.backends.hash(&mut h);
    sorted(&caps.software).hash(&mut h);
    sorted(&caps.labels).hash(&mut h);
    h.finish().max(1)
}

fn sorted(m: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut v: Vec<(&String, &String)> = m.iter().collect();
    v.sort();
    v
}

/// Whether a worker with these capabilities could ever run `task` (its hard
/// requirements against the worker's total capacity).
pub fn fits_ever(task: &TaskRequest, caps: &WorkerCapabilities) -> bool {
    static_fit(&Need::of(task), &Demand::of(task), caps).is_ok()
}

/// Chooses a worker for `task` among `workers`, scored without a model.
pub fn place(task: &TaskRequest, workers: &[WorkerView]) -> Outcome {
    place_with(task, workers, &Scoring::default())
}

/// Chooses a worker for `task`: filters on hard requirements and what is free,
/// then the lowest cost wins (ties to the sooner, then the earlier in
/// `workers`: the scheduler passes them in worker id order).
/// Under the hwsched policy, busy workers whose running work is expected to end
/// are candidates too: when one of them wins, the task waits for it.
pub fn place_with(task: &TaskRequest, workers: &[WorkerView], scoring: &Scoring<'_>) -> Outcome {
    if workers.is_empty() {
        return Outcome::NeverFits { reason: "no worker is registered".into() };
    }
    let mut demand = Demand::of(task);
    let mut workload: Option<String> = None;
    // A task seen to use more memory than it asks for needs what it used.
    if let Some(m) = scoring.model {
        let key = workload.get_or_insert_with(|| hwsched_model::task_workload_key(task));
        if let Some(peak) = m.memory_peak_mb(key) {
            demand.memory_mb = demand.memory_mb.max(i64::try_from(peak).unwrap_or(i64::MAX));
        }
    }
    let need = Need::of(task);
    let policy = scoring.policy;
    let mut never: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut busy: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    let mut matching: Vec<u64> = Vec::new();
    // Workers of one shape (the same static capabilities) fit the same way:
    // the requirements are checked once per shape.
    let mut shapes: Vec<(u64, Result<u64, &'static str>)> = Vec::new();
    for w in workers {
        let fits = match shapes.iter().find(|(s, _)| w.shape != 0 && *s == w.shape) {
            Some((_, r)) => *r,
            None => {
                let r = static_fit(&need, &demand, &w.caps);
                if w.shape != 0 {
                    shapes.push((w.shape, r));
                }
                r
            }
        };
        let gpus = match fits {
            Ok(mask) => mask,
            Err(why) => {
                *never.entry(why).or_default() += 1;
                continue;
            }
        };
        let mut fit = dynamic_fit(&need, &demand, w, gpus, policy);
        if let (Ok(()), Some(hold), Policy::Hwsched) = (&fit, w.hold_s, policy) {
            let key = workload.get_or_insert_with(|| hwsched_model::task_workload_key(task));
            if scoring.runtime_estimate(key, task, &w.caps.hardware_class).0 > hold {
                fit = Err(Busy { why: "are held for a waiting task", room: true });
            }
        }
        match fit {
            Ok(()) => {
                candidates.push(Candidate { view: w, wait_s: 0.0 });
                matching.push(gpus);
            }
            Err(b) => {
                *busy.entry(b.why).or_default() += 1;
                if let (true, Policy::Hwsched, Some(wait_s)) = (b.room, policy, w.free_in_s) {
                    candidates.push(Candidate { view: w, wait_s: wait_s.max(1e-3) });
                    matching.push(gpus);
                }
            }
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
    let evals = scoring.evaluate(task, &candidates);
    // lowest cost, then sooner, then earlier in `workers`; only the best few are sorted
    let better = |a: &usize, b: &usize| {
        let (x, y) = (&evals[*a], &evals[*b]);
        x.cost.total_cmp(&y.cost).then(candidates[*a].wait_s.total_cmp(&candidates[*b].wait_s)).then(a.cmp(b))
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    if order.len() > RANKED_KEPT {
        order.select_nth_unstable_by(RANKED_KEPT - 1, better);
        order.truncate(RANKED_KEPT);
    }
    order.sort_by(better);
    let explored = explore(task, &candidates, &evals, order[0], scoring, &mut workload);
    if let Some(i) = explored {
        order.retain(|o| *o != i);
        order.insert(0, i);
        order.truncate(RANKED_KEPT);
    }
    let ranked: Vec<Ranked> = order
        .iter()
        .map(|i| {
            let (c, e) = (&candidates[*i], &evals[*i]);
            Ranked {
                worker_id: c.view.caps.worker_id.clone(),
                hardware_class: c.view.caps.hardware_class.clone(),
                cost: e.cost,
                wait_s: c.wait_s,
                completion_s: e.completion_s,
                predicted_runtime_s: e.predicted_runtime_s,
                components: e.parts.to_vec(),
            }
        })
        .collect();
    let n = candidates.len();
    let (c, e) = (candidates[order[0]], evals[order[0]]);
    if c.wait_s > 0.0 {
        let runtime_s = e.completion_s - c.wait_s;
        let now = evals
            .iter()
            .zip(&candidates)
            .filter(|(_, c)| c.wait_s == 0.0)
            .map(|(e, _)| e.completion_s)
            .fold(f64::INFINITY, f64::min);
        let alternative =
            if now.is_finite() { format!("; ~{now:.0} s on the best worker free now") } else { String::new() };
        return Outcome::Queue {
            worker_id: c.view.caps.worker_id.clone(),
            wait_s: c.wait_s,
            runtime_s,
            reason: format!(
                "for {} (free in ~{:.0} s, then ~{runtime_s:.0} s){alternative}",
                c.view.caps.worker_id, c.wait_s
            ),
            ranked,
        };
    }
    let mut components = e.parts.to_vec();
    if explored.is_some() {
        components.push(("explore", 1.0));
    }
    Outcome::Place {
        worker_id: c.view.caps.worker_id.clone(),
        gpus: free_gpus(matching[order[0]], &demand, c.view),
        score: e.cost,
        candidates: n,
        components,
        predicted_runtime_s: e.predicted_runtime_s,
        ranked,
    }
}

/// The candidate an exploring placement takes instead of `best`: free now, on
/// hardware where the model has fewer than [`crate::score::EXPLORE_BELOW_RUNS`] runs of this
/// workload (or no estimate), expected to finish within [`crate::score::EXPLORE_SLACK`] of
/// `best`; the cheapest such. `None` when the placement does not explore, the
/// best is already such a candidate, or there is none.
fn explore(
    task: &TaskRequest,
    candidates: &[Candidate<'_>],
    evals: &[crate::score::Eval],
    best: usize,
    scoring: &Scoring<'_>,
    workload: &mut Option<String>,
) -> Option<usize> {
    let (true, Policy::Hwsched, Some(m)) = (scoring.explore, scoring.policy, scoring.model) else { return None };
    let key = workload.get_or_insert_with(|| hwsched_model::task_workload_key(task));
    // many workers, few classes: one model look-up per class
    let mut known: Vec<(&str, bool)> = Vec::new();
    let mut unsure = |i: usize| {
        let class = candidates[i].view.caps.hardware_class.as_str();
        if let Some((_, u)) = known.iter().find(|(c, _)| *c == class) {
            return *u;
        }
        let u = m.predict(key, class).is_none_or(|p| p.runs < crate::score::EXPLORE_BELOW_RUNS);
        known.push((class, u));
        u
    };
    if unsure(best) {
        return None;
    }
    let limit = crate::score::EXPLORE_SLACK * evals[best].completion_s;
    (0..candidates.len())
        .filter(|&i| candidates[i].wait_s == 0.0 && evals[i].completion_s <= limit && unsure(i))
        .min_by(|a, b| evals[*a].cost.total_cmp(&evals[*b].cost).then(a.cmp(b)))
}

fn summarize(total: usize, reasons: &BTreeMap<&'static str, usize>) -> String {
    let parts: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
    format!("{total} worker(s): {}", parts.join(", "))
}

/// Requirements checked against a worker's total capacity.
/// Returns the mask of the worker's GPUs (by position, the first 64) that
/// match the task's GPU requirement.
fn static_fit(n: &Need<'_>, d: &Demand, c: &WorkerCapabilities) -> Result<u64, &'static str> {
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

/// CPU or memory utilisation at which a worker gets nothing new, percent.
pub const CRITICAL_PCT: f64 = 95.0;

/// Why a worker cannot take a task now.
struct Busy {
    why: &'static str,
    /// It lacks room only (slots, cores, memory, devices): it will have some
    /// once its running work ends.
    room: bool,
}

/// Requirements checked against what is free now.
fn dynamic_fit(n: &Need<'_>, d: &Demand, w: &WorkerView, matching: u64, policy: Policy) -> Result<(), Busy> {
    let no = |why| Err(Busy { why, room: false });
    if w.state != WorkerState::Active {
        return no("are not active (draining or offline)");
    }
    if policy.reads_thermal() && w.throttling {
        return no("are throttling");
    }
    if policy.reads_thermal() && (w.cpu_util_pct >= CRITICAL_PCT || w.mem_util_pct >= CRITICAL_PCT) {
        return no("are critically overloaded");
    }
    if policy == Policy::Seed && seed_excludes(w) {
        return no("are over the seed's load limits");
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
fn free_gpus(matching: u64, d: &Demand, w: &WorkerView) -> Vec<u32> {
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
    fn a_learned_memory_peak_above_the_request_keeps_the_task_off_small_workers() {
        let ws = [worker("eight", 4, 8_000, &[]), worker("sixteen", 4, 16_000, &[])];
        let t =
            TaskRequest { name: "big-model".into(), ..task(Requirements { memory_mb: 1_000, ..Default::default() }) };
        // it asks for 1 GB; both fit, the first in worker order wins the tie
        assert!(matches!(place(&t, &ws), Outcome::Place { ref worker_id, .. } if worker_id == "eight"));
        // it was seen to peak at 9 GB
        let mut m = hwsched_model::Model::default();
        m.observe(&hwsched_proto::v1::ExecutionResult {
            name: "big-model".into(),
            hardware_class: "cpu".into(),
            status: hwsched_proto::v1::TaskStatus::Succeeded as i32,
            duration_s: 5.0,
            resources: Some(hwsched_proto::v1::ResourceUsage { memory_peak_mb: 9_000, ..Default::default() }),
            ..Default::default()
        });
        let learned = Scoring { model: Some(&m), ..Default::default() };
        assert!(
            matches!(place_with(&t, &ws, &learned), Outcome::Place { ref worker_id, .. } if worker_id == "sixteen")
        );
        // and where only small workers exist, it fits none of them
        assert!(
            matches!(place_with(&t, &ws[..1], &learned), Outcome::NeverFits { ref reason } if reason.contains("memory"))
        );
    }

    #[test]
    fn memory_and_cores_filter_workers() {
        let ws = [worker("small", 2, 1024, &[]), worker("big", 16, 65536, &[])];
        let t = task(Requirements { cpu_cores: 4.0, memory_mb: 8000, ..Default::default() });
        assert!(matches!(place(&t, &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "big"));
    }

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
    fn required_hardware_classes_filter_workers() {
        let mut cpu = worker("cpu", 8, 65536, &[]);
        std::sync::Arc::make_mut(&mut cpu.caps).hardware_class = "cpu:x86_64-epyc".into();
        let mut gpu = worker("gpu", 8, 65536, &[("NVIDIA H100 80GB HBM3", 81559)]);
        std::sync::Arc::make_mut(&mut gpu.caps).hardware_class = "gpu:nvidia-h100-80gb-hbm3".into();
        let (cpu, gpu) =
            (WorkerView { shape: shape_of(&cpu.caps), ..cpu }, WorkerView { shape: shape_of(&gpu.caps), ..gpu });
        let ws = [cpu, gpu];
        let on = |classes: &[&str]| {
            task(Requirements {
                hardware_classes: classes.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            })
        };
        assert!(
            matches!(place(&on(&["gpu:nvidia-h100"]), &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "gpu")
        );
        assert!(
            matches!(place(&on(&["cpu"]), &ws), Outcome::Place { ref worker_id, candidates: 1, .. } if worker_id == "cpu")
        );
        assert!(matches!(place(&on(&["cpu", "gpu"]), &ws), Outcome::Place { candidates: 2, .. }));
        match place(&on(&["accel:tpu"]), &ws) {
            Outcome::NeverFits { reason } => assert!(reason.contains("2 are of another hardware class"), "{reason}"),
            o => panic!("{o:?}"),
        }
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
    fn least_loaded_worker_wins_and_ties_go_to_the_earlier_worker() {
        let mut busy = worker("a", 8, 8192, &[]);
        busy.cpu_util_pct = 90.0;
        let idle = worker("b", 8, 8192, &[]);
        assert!(
            matches!(place(&task(Requirements::default()), &[busy, idle.clone()]), Outcome::Place { ref worker_id, .. } if worker_id == "b")
        );
        let idle2 = worker("c", 8, 8192, &[]);
        assert!(
            matches!(place(&task(Requirements::default()), &[idle.clone(), idle2.clone()]), Outcome::Place { ref worker_id, .. } if worker_id == "b")
        );
        assert!(
            matches!(place(&task(Requirements::default()), &[idle2, idle]), Outcome::Place { ref worker_id, .. } if worker_id == "c")
        );
    }

    #[test]
    fn no_workers_is_never_fits() {
        assert!(matches!(place(&task(Requirements::default()), &[]), Outcome::NeverFits { .. }));
    }
}
