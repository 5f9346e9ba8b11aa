//! What placement sees of a worker: its capabilities, what placed tasks
//! reserved on it, its live load and thermal state. The bottom floor of the
//! crate: filters, scoring and the state machine all read it, it reads none
//! of them.

use std::collections::BTreeMap;

use hwsched_proto::v1::{WorkerCapabilities, WorkerState};

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
    /// The part of `cpu_util_pct` its monitor and the tests hwsched placed
    /// there used (0 when the monitor does not say).
    pub tasks_cpu_pct: f64,
    /// The part of `mem_util_pct` its monitor and running tests hold.
    pub tasks_mem_pct: f64,
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
            tasks_cpu_pct: 0.0,
            tasks_mem_pct: 0.0,
            gpu_util_pct: 0.0,
            max_temp_c: 0.0,
            throttling: false,
            hot: false,
            recent_families: Default::default(),
            free_in_s: None,
            hold_s: None,
        }
    }

    /// Whether it has a free slot.
    pub fn has_room(&self) -> bool {
        self.reserved.slots < self.caps.slots.max(1)
    }
}

/// A hash of everything `filter::fits_ever` reads of a worker, and its hardware
/// class: workers with the same shape fit a task the same way and run it as
/// fast, so placement checks and estimates each shape once.
pub fn shape_of(caps: &WorkerCapabilities) -> u64 {
    use std::hash::{Hash, Hasher};
    // a fixed-key hasher (not `RandomState`): the same shape in every process
    let mut h = std::collections::hash_map::DefaultHasher::new();
    // the class too, so runtime estimates can be shared by shape
    caps.hardware_class.hash(&mut h);
    caps.cpu.as_ref().map_or(0, |c| c.logical_cores).hash(&mut h);
    caps.memory_mb.hash(&mut h);
    for g in &caps.gpus {
        (g.index, &g.vendor, &g.model, g.memory_mb, &g.compute_capability).hash(&mut h);
    }
    // the maps are BTreeMaps: they hash in key order
    caps.accelerators.hash(&mut h);
    caps.backends.hash(&mut h);
    caps.software.hash(&mut h);
    caps.labels.hash(&mut h);
    h.finish().max(1)
}

/// Slots in use (or free, when packing) and CPU utilisation, in [0, 1].
pub fn load(w: &WorkerView, pack: bool) -> f64 {
    let slots = (f64::from(w.reserved.slots) / f64::from(w.caps.slots.max(1))).min(1.0);
    let cpu = (w.cpu_util_pct / 100.0).clamp(0.0, 1.0);
    0.5 * if pack { 1.0 - slots } else { slots } + 0.5 * cpu
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::CpuInfo;

    fn caps(id: &str, class: &str, cores: u32) -> WorkerCapabilities {
        WorkerCapabilities {
            worker_id: id.into(),
            hardware_class: class.into(),
            cpu: Some(CpuInfo { logical_cores: cores, ..Default::default() }),
            slots: 2,
            ..Default::default()
        }
    }

    #[test]
    fn the_shape_ignores_the_id_and_map_order_but_not_capacity_or_class() {
        let a = caps("a", "cpu:x", 8);
        let mut b = caps("b", "cpu:x", 8);
        assert_eq!(shape_of(&a), shape_of(&b), "ids are not part of the shape");
        let label = |i: usize| (format!("k{i}"), format!("v{i}"));
        let mut a2 = a.clone();
        a2.labels = (0..16).map(label).collect();
        b.labels = (0..16).rev().map(label).collect();
        assert_eq!(shape_of(&a2), shape_of(&b));
        assert_ne!(shape_of(&a), shape_of(&caps("a", "cpu:x", 16)));
        assert_ne!(shape_of(&a), shape_of(&caps("a", "cpu:y", 8)));
    }

    #[test]
    fn load_counts_slots_or_free_slots_and_cpu() {
        let mut w = WorkerView::available(caps("a", "cpu", 8));
        assert_eq!(load(&w, false), 0.0);
        assert!(w.has_room());
        w.reserved.slots = 2;
        w.cpu_util_pct = 50.0;
        assert!(!w.has_room());
        assert!((load(&w, false) - 0.75).abs() < 1e-9);
        assert!((load(&w, true) - 0.25).abs() < 1e-9);
    }
}
