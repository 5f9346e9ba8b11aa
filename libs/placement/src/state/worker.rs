//! One worker as the state knows it: capabilities, last heartbeat, thermal
//! marks, the reservations of the tasks assigned to it and when they are
//! expected to end; and what placement sees of it ([`WorkerView`]).

use std::sync::Arc;

use hwsched_proto::v1::{TaskRecord, WorkerCapabilities, WorkerHeartbeat, WorkerState};

use crate::{
    filter::Demand,
    score::DEFAULT_RUNTIME_S,
    view::{Reserved, WorkerView},
};

/// Hottest-sensor temperature that marks a worker hot (penalised), °C.
pub const HOT_C: f64 = 85.0;
/// A hot worker is cool again below `HOT_C` minus this.
pub const HOT_HYSTERESIS_C: f64 = 5.0;

/// One known worker.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    /// Capabilities; `None` until registered (the worker is then never chosen).
    pub caps: Option<Arc<WorkerCapabilities>>,
    /// Last heartbeat.
    pub heartbeat: WorkerHeartbeat,
    /// When it was last heard from.
    pub last_seen_ms: i64,
    /// Declared or inferred state.
    pub state: WorkerState,
    /// Reservations of tasks assigned to it.
    pub reserved: Reserved,
    /// Above [`HOT_C`] until it cools below [`HOT_C`] - [`HOT_HYSTERESIS_C`].
    pub hot: bool,
    /// Throttled recently: excluded until then.
    pub throttled_until_ms: i64,
    /// Model families assigned to it lately, newest last.
    pub recent_families: Arc<Vec<String>>,
    /// `view::shape_of` its capabilities.
    pub shape: u64,
    /// (assigned at ms, runtime estimate s) of each attempt assigned to it.
    pub(super) ends: Vec<(i64, f64)>,
}

impl Worker {
    /// Expected seconds until it has room: the soonest end of its attempts, by
    /// their runtime estimate. An attempt past its estimate is expected to need
    /// another quarter of the time it has run. `None` when nothing runs there.
    pub(super) fn free_in_s(&self, now_ms: i64) -> Option<f64> {
        self.ends.iter().map(|end| left_s(*end, now_ms)).reduce(f64::min)
    }

    /// When each of its slots is expected to be free, s from now (0:
    /// free now), soonest first: an attempt's slot when it ends (as in
    /// [`Worker::free_in_s`]), a slot reserved without a known end after
    /// [`DEFAULT_RUNTIME_S`].
    pub(super) fn slots_free_in_s(&self, now_ms: i64) -> Vec<f64> {
        let slots = self.caps.as_ref().map_or(1, |c| c.slots.max(1));
        let busy = self.reserved.slots.min(slots) as usize;
        let mut ready: Vec<f64> = self.ends.iter().map(|end| left_s(*end, now_ms)).collect();
        ready.sort_by(f64::total_cmp);
        ready.resize(busy, DEFAULT_RUNTIME_S);
        ready.resize(slots as usize, 0.0);
        ready.sort_by(f64::total_cmp);
        ready
    }

    /// What the placement core sees of this worker; `None` before it registered.
    pub(super) fn view(&self, now_ms: i64) -> Option<WorkerView> {
        let caps = self.caps.clone()?;
        let free_in_s = self.free_in_s(now_ms);
        let gpu_util_pct =
            if caps.gpus.is_empty() { 0.0 } else { 100.0 * self.reserved.gpus.len() as f64 / caps.gpus.len() as f64 };
        Some(WorkerView {
            caps,
            state: self.state,
            reserved: self.reserved.clone(),
            cpu_util_pct: self.heartbeat.cpu_util_pct,
            mem_util_pct: self.heartbeat.memory_used_pct,
            tasks_cpu_pct: self.heartbeat.tasks_cpu_util_pct,
            tasks_mem_pct: self.heartbeat.tasks_memory_used_pct,
            gpu_util_pct,
            max_temp_c: self.heartbeat.max_temp_c,
            throttling: self.heartbeat.throttling || now_ms < self.throttled_until_ms,
            hot: self.hot,
            recent_families: self.recent_families.clone(),
            free_in_s,
            hold_s: None,
            shape: self.shape,
        })
    }
}

/// Seconds an attempt (assigned at ms, runtime estimate s) is expected to run
/// on: an attempt past its estimate needs another quarter of the time it has run.
fn left_s((at, estimate): (i64, f64), now_ms: i64) -> f64 {
    let ran = (now_ms - at).max(0) as f64 / 1000.0;
    (estimate - ran).max(0.25 * ran)
}

/// Reserves what an assigned record takes on its worker.
pub(super) fn reserve(r: &mut Reserved, rec: &TaskRecord) {
    let d = Demand::of(&rec.task.clone().unwrap_or_default());
    r.cpu_cores += d.cpu_cores;
    r.memory_mb += d.memory_mb;
    r.slots += 1;
    r.gpus.extend(rec.gpu_indices.iter().copied());
    for (k, n) in rec.task.as_ref().map(|t| t.requirements.clone().unwrap_or_default().accelerators).unwrap_or_default()
    {
        *r.accelerators.entry(k).or_default() += n;
    }
}

/// Frees what [`reserve`] took.
pub(super) fn unreserve(r: &mut Reserved, rec: &TaskRecord) {
    let d = Demand::of(&rec.task.clone().unwrap_or_default());
    r.cpu_cores = (r.cpu_cores - d.cpu_cores).max(0.0);
    r.memory_mb = (r.memory_mb - d.memory_mb).max(0);
    r.slots = r.slots.saturating_sub(1);
    r.gpus.retain(|g| !rec.gpu_indices.contains(g));
    for (k, n) in rec.task.as_ref().map(|t| t.requirements.clone().unwrap_or_default().accelerators).unwrap_or_default()
    {
        if let Some(have) = r.accelerators.get_mut(&k) {
            *have = have.saturating_sub(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::{GpuInfo, Requirements, TaskRequest};

    #[test]
    fn an_attempt_past_its_estimate_needs_a_quarter_of_its_run_more() {
        let w = Worker { ends: vec![(0, 100.0), (50_000, 20.0)], ..Default::default() };
        assert_eq!(w.free_in_s(60_000), Some(10.0), "the second ends 10 s after now");
        assert_eq!(w.free_in_s(200_000), Some(37.5), "both overdue: a quarter of the second's 150 s");
        assert_eq!(Worker::default().free_in_s(0), None);
    }

    #[test]
    fn the_view_reads_the_heartbeat_the_cooldown_and_reserved_gpus() {
        let mut w = Worker { state: WorkerState::Active, ..Default::default() };
        assert!(w.view(0).is_none(), "not registered");
        let gpu = GpuInfo::default();
        w.caps = Some(Arc::new(WorkerCapabilities { gpus: vec![gpu.clone(), gpu], ..Default::default() }));
        w.reserved.gpus = vec![1];
        w.throttled_until_ms = 5_000;
        w.heartbeat.cpu_util_pct = 40.0;
        let v = w.view(1_000).expect("registered");
        assert_eq!((v.gpu_util_pct, v.cpu_util_pct, v.throttling), (50.0, 40.0, true));
        assert!(!w.view(5_000).expect("registered").throttling, "cooled down");
    }

    #[test]
    fn unreserve_undoes_reserve() {
        let task = TaskRequest {
            requirements: Some(Requirements {
                cpu_cores: 2.0,
                memory_mb: 512,
                accelerators: [("tpu".to_string(), 1)].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let rec = TaskRecord { task: Some(task), gpu_indices: vec![3], ..Default::default() };
        let mut r = Reserved::default();
        reserve(&mut r, &rec);
        assert_eq!((r.cpu_cores, r.memory_mb, r.slots, r.gpus.clone()), (2.0, 512, 1, vec![3]));
        assert_eq!(r.accelerators.get("tpu"), Some(&1));
        unreserve(&mut r, &rec);
        assert_eq!((r.cpu_cores, r.memory_mb, r.slots, r.gpus.len()), (0.0, 0, 0, 0));
        assert_eq!(r.accelerators.get("tpu"), Some(&0));
    }
}
