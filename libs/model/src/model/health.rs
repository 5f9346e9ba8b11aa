//! Worker health: each worker's runs compared with its class's on the same
//! workloads; a worker much slower, or failing much more often, than its
//! peers is degraded, and the scheduler stretches its predicted runtimes.

use hwsched_proto::v1::{ExecutionResult, TaskStatus, WorkerHealth};

use crate::{model::Model, stats::weight};

/// A worker is compared with its peers once the pair has this many runs.
pub(super) const PEER_MIN_RUNS: u64 = 3;
/// A worker is judged after this many comparisons.
const HEALTH_MIN_OBS: u64 = 8;
/// Degraded: this much slower than its peers on the same workloads ...
pub const DEGRADED_SLOWDOWN: f64 = 1.25;
/// ... or failing this much more often.
pub const DEGRADED_FAILURE_EXCESS: f64 = 0.3;

impl Model {
    /// Compares a worker's result with what its class does on the same workload.
    pub(super) fn judge_worker(&mut self, r: &ExecutionResult, log_ratio: Option<f64>, failure_rate: f64) {
        let h = self
            .workers
            .entry(r.worker_id.clone())
            .or_insert_with(|| WorkerHealth { worker_id: r.worker_id.clone(), ..Default::default() });
        h.hardware_key = r.hardware_class.clone();
        h.observations += 1;
        let a = weight(h.observations, 0.1);
        if let Some(d) = log_ratio {
            h.log_slowdown += a * (d - h.log_slowdown);
        }
        let failed = f64::from(u8::from(r.status() != TaskStatus::Succeeded));
        h.failure_excess += a * ((failed - failure_rate) - h.failure_excess);
        h.updated_at_ms = r.finished_at_ms;
        let degraded = h.observations >= HEALTH_MIN_OBS
            && (h.log_slowdown >= DEGRADED_SLOWDOWN.ln() || h.failure_excess >= DEGRADED_FAILURE_EXCESS);
        if degraded != h.degraded {
            h.degraded = degraded;
            if degraded {
                self.degraded += 1;
            } else {
                self.degraded -= 1;
            }
            self.health_changes.push(h.clone());
        }
    }

    /// How much slower a degraded worker runs than its peers (1.0 for the others).
    pub fn slowdown(&self, worker_id: &str) -> f64 {
        match self.workers.get(worker_id) {
            Some(h) if h.degraded => h.log_slowdown.exp().max(1.0),
            _ => 1.0,
        }
    }

    /// Whether any worker is degraded (the scheduler skips per-worker look-ups otherwise).
    pub fn has_degraded(&self) -> bool {
        self.degraded > 0
    }

    /// Each worker's comparison with its peers.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerHealth> {
        self.workers.values()
    }

    /// Workers that became degraded, or recovered, since the last call.
    pub fn take_health_changes(&mut self) -> Vec<WorkerHealth> {
        std::mem::take(&mut self.health_changes)
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::{ExecutionResult, TaskStatus};

    use crate::{model::Model, test_support::res};

    fn on(worker: &str, r: ExecutionResult) -> ExecutionResult {
        ExecutionResult { worker_id: worker.into(), ..r }
    }

    #[test]
    fn a_worker_slower_than_its_peers_is_flagged_and_recovers() {
        let mut m = Model::default();
        for i in 0..40 {
            for w in ["w1", "w2", "w3"] {
                m.observe(&on(w, res(&format!("t{}", i % 4), "gpu", 10.0, TaskStatus::Succeeded)));
            }
            m.observe(&on("slow", res(&format!("t{}", i % 4), "gpu", 16.0, TaskStatus::Succeeded)));
        }
        let changes = m.take_health_changes();
        assert_eq!(changes.iter().map(|h| h.worker_id.as_str()).collect::<Vec<_>>(), ["slow"]);
        assert!(m.has_degraded());
        assert!(m.slowdown("slow") > 1.3, "{}", m.slowdown("slow"));
        assert_eq!(m.slowdown("w1"), 1.0);
        // repaired: it runs like its peers again
        for i in 0..40 {
            m.observe(&on("slow", res(&format!("t{}", i % 4), "gpu", 10.0, TaskStatus::Succeeded)));
        }
        assert!(!m.has_degraded());
        assert_eq!(m.take_health_changes().len(), 1);
        // failing far more often than peers also flags
        for i in 0..30 {
            m.observe(&on("w1", res(&format!("t{}", i % 4), "gpu", 10.0, TaskStatus::Failed)));
        }
        assert!(m.workers().any(|h| h.worker_id == "w1" && h.degraded));
    }

    #[test]
    fn a_worker_alone_in_its_class_has_no_peers_to_be_slower_than() {
        // its runs get slower (contention on a shared host): it is not judged against itself
        let mut m = Model::default();
        for i in 0..60 {
            let s = 1.0 + f64::from(i) * 0.1;
            m.observe(&on("solo", res(&format!("t{}", i % 4), "accel:tpu", s, TaskStatus::Succeeded)));
            m.observe(&on("cpu-1", res(&format!("t{}", i % 4), "cpu", 1.0, TaskStatus::Succeeded)));
        }
        assert!(!m.has_degraded() && m.workers().next().is_none(), "{:?}", m.workers().collect::<Vec<_>>());
        // a second worker of the class joins: from then on both are compared
        for i in 0..40 {
            m.observe(&on("solo", res(&format!("t{}", i % 4), "accel:tpu", 20.0, TaskStatus::Succeeded)));
            m.observe(&on("peer", res(&format!("t{}", i % 4), "accel:tpu", 7.0, TaskStatus::Succeeded)));
        }
        assert!(m.workers().any(|h| h.worker_id == "solo" && h.degraded), "{:?}", m.workers().collect::<Vec<_>>());
        // and a model restored from its snapshot knows the class has peers
        let restored = Model::from_snapshot(m.snapshot(0));
        assert_eq!(restored.class_workers.get("accel:tpu").map(|c| c.len()), Some(2));
    }
}
