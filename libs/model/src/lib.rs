//! The learned model of hwsched: per (workload, hardware) pair, an exponentially
//! weighted mean and variance of ln(runtime), a success rate and the peak memory
//! seen. Pure: the learner trains it from results and publishes snapshots; the
//! scheduler (and the simulator) read predictions from it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use hwsched_proto::{
    v1::{ExecutionResult, ModelEntry, ModelSnapshot, TaskStatus},
    SCHEMA_VERSION,
};

/// Key of the snapshot in the model bucket (`hws_model`).
pub const SNAPSHOT_KEY: &str = "snapshot";

/// Weight of the newest observation in the moving averages.
pub const ALPHA: f64 = 0.2;

/// The workload key: test type, model (id, else family) and test name.
pub fn key(test_type: &str, model_family: &str, model_id: &str, name: &str) -> String {
    let or_dash = |s: &str| if s.is_empty() { "-".to_string() } else { s.to_string() };
    let model = if model_id.is_empty() { model_family } else { model_id };
    format!("{}/{}/{}", or_dash(test_type), or_dash(model), or_dash(name))
}

/// The workload key of a result.
pub fn workload_key(r: &ExecutionResult) -> String {
    key(&r.test_type, &r.model_family, &r.model_id, &r.name)
}

/// The workload key of a task (the same as its results').
pub fn task_workload_key(t: &hwsched_proto::v1::TaskRequest) -> String {
    key(&t.test_type, &t.model_family, &t.model_id, &t.name)
}

/// All learned pairs.
#[derive(Debug, Default, Clone)]
pub struct Model {
    entries: BTreeMap<(String, String), ModelEntry>,
    version: u64,
}

impl Model {
    /// Starts from a published snapshot.
    pub fn from_snapshot(s: ModelSnapshot) -> Self {
        let entries = s.entries.into_iter().map(|e| ((e.workload_key.clone(), e.hardware_key.clone()), e)).collect();
        Self { entries, version: s.version }
    }

    /// Learns from one result. Cancelled attempts teach nothing.
    pub fn observe(&mut self, r: &ExecutionResult) -> bool {
        let status = r.status();
        if matches!(status, TaskStatus::Cancelled | TaskStatus::Unspecified) || r.hardware_class.is_empty() {
            return false;
        }
        let key = (workload_key(r), r.hardware_class.clone());
        let e = self.entries.entry(key.clone()).or_insert_with(|| ModelEntry {
            workload_key: key.0.clone(),
            hardware_key: key.1.clone(),
            ..Default::default()
        });
        let ok = status == TaskStatus::Succeeded;
        let first = e.observations == 0;
        e.observations += 1;
        e.success_rate = if first {
            f64::from(u8::from(ok))
        } else {
            (1.0 - ALPHA) * e.success_rate + ALPHA * f64::from(u8::from(ok))
        };
        // Only successful runs say how long the work takes.
        if ok && r.duration_s > 0.0 {
            let x = r.duration_s.ln();
            if e.log_runtime_mean == 0.0 && e.log_runtime_var == 0.0 {
                e.log_runtime_mean = x;
            } else {
                let d = x - e.log_runtime_mean;
                e.log_runtime_mean += ALPHA * d;
                e.log_runtime_var = (1.0 - ALPHA) * (e.log_runtime_var + ALPHA * d * d);
            }
        }
        if let Some(u) = &r.resources {
            e.memory_peak_mb = e.memory_peak_mb.max(u.memory_peak_mb);
        }
        e.updated_at_ms = r.finished_at_ms;
        self.version += 1;
        true
    }

    /// What is known of a pair, when observed.
    pub fn entry(&self, workload: &str, hardware: &str) -> Option<&ModelEntry> {
        self.entries.get(&(workload.to_string(), hardware.to_string()))
    }

    /// Predicted runtime (s) of a pair, when observed.
    pub fn predict_s(&self, workload: &str, hardware: &str) -> Option<f64> {
        self.entries
            .get(&(workload.to_string(), hardware.to_string()))
            .filter(|e| e.log_runtime_mean != 0.0 || e.log_runtime_var != 0.0)
            .map(|e| e.log_runtime_mean.exp())
    }

    /// Runtime (s) of a pair the model has not observed, transferred from
    /// workloads of the same test type: for each such workload observed both on
    /// `hardware` and on a class where `workload` was observed, the runtime
    /// ratio between the two classes is applied to `workload`'s own runtime
    /// there; the estimate is the geometric mean of those. `None` without such
    /// evidence (the caller then falls back to the declared duration).
    pub fn transfer_s(&self, workload: &str, hardware: &str) -> Option<f64> {
        let test_type = workload.split('/').next().unwrap_or("");
        let learned = |e: &ModelEntry| e.log_runtime_mean != 0.0 || e.log_runtime_var != 0.0;
        let own: BTreeMap<&str, f64> = self
            .workload_entries(workload)
            .filter(|e| learned(e))
            .map(|e| (e.hardware_key.as_str(), e.log_runtime_mean))
            .collect();
        if own.is_empty() {
            return None;
        }
        let prefix = format!("{test_type}/");
        let mut sum = 0.0;
        let mut n = 0u32;
        let mut peers = self.entries.range((prefix.clone(), String::new())..).map(|(_, e)| e).peekable();
        while let Some(first) = peers.next() {
            if !first.workload_key.starts_with(&prefix) {
                break;
            }
            // all entries of this peer workload
            let peer = first.workload_key.as_str();
            let mut rows = vec![first];
            while let Some(e) = peers.next_if(|e| e.workload_key == peer) {
                rows.push(e);
            }
            if peer == workload {
                continue;
            }
            let Some(there) = rows.iter().find(|e| e.hardware_key == hardware && learned(e)) else { continue };
            for e in rows.iter().filter(|e| learned(e)) {
                if let Some(mine) = own.get(e.hardware_key.as_str()) {
                    sum += mine + there.log_runtime_mean - e.log_runtime_mean;
                    n += 1;
                }
            }
        }
        (n > 0).then(|| (sum / f64::from(n)).exp())
    }

    /// The entries of one workload.
    fn workload_entries<'a>(&'a self, workload: &str) -> impl Iterator<Item = &'a ModelEntry> + 'a {
        let w = workload.to_string();
        self.entries.range((w.clone(), String::new())..).map(|(_, e)| e).take_while(move |e| e.workload_key == w)
    }

    /// Observed runtime of the fastest class `workload` ran on, s.
    pub fn best_observed_s(&self, workload: &str) -> Option<f64> {
        self.workload_entries(workload)
            .filter(|e| e.log_runtime_mean != 0.0 || e.log_runtime_var != 0.0)
            .map(|e| e.log_runtime_mean.exp())
            .reduce(f64::min)
    }

    /// Number of learned pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True before anything was learned.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bumped by every observation.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The publishable snapshot.
    pub fn snapshot(&self, now_ms: i64) -> ModelSnapshot {
        ModelSnapshot {
            schema_version: SCHEMA_VERSION,
            version: self.version,
            generated_at_ms: now_ms,
            entries: self.entries.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str, hw: &str, secs: f64, status: TaskStatus) -> ExecutionResult {
        ExecutionResult {
            name: name.into(),
            test_type: "unit".into(),
            hardware_class: hw.into(),
            duration_s: secs,
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn runtime_converges_to_observations_per_hardware() {
        let mut m = Model::default();
        for _ in 0..30 {
            m.observe(&res("t", "gpu:h100", 10.0, TaskStatus::Succeeded));
            m.observe(&res("t", "cpu:x86", 100.0, TaskStatus::Succeeded));
        }
        let k = "unit/-/t";
        assert!((m.predict_s(k, "gpu:h100").expect("h100") - 10.0).abs() < 0.01);
        assert!((m.predict_s(k, "cpu:x86").expect("cpu") - 100.0).abs() < 0.1);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn failures_lower_success_rate_but_not_runtime() {
        let mut m = Model::default();
        m.observe(&res("t", "hw", 10.0, TaskStatus::Succeeded));
        m.observe(&res("t", "hw", 0.1, TaskStatus::Failed));
        let e = &m.snapshot(0).entries[0];
        assert_eq!(e.observations, 2);
        assert!((e.success_rate - 0.8).abs() < 1e-9);
        assert!((e.log_runtime_mean.exp() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn unseen_pairs_borrow_the_ratio_of_the_same_test_type() {
        let mut m = Model::default();
        // a peer of the same type ran on both classes: the cpu is 20x slower
        m.observe(&res("peer", "gpu", 10.0, TaskStatus::Succeeded));
        m.observe(&res("peer", "cpu", 200.0, TaskStatus::Succeeded));
        m.observe(&res("t", "gpu", 30.0, TaskStatus::Succeeded));
        let est = m.transfer_s("unit/-/t", "cpu").expect("transferred");
        assert!((est - 600.0).abs() < 1e-6, "{est}");
        assert!((m.best_observed_s("unit/-/t").unwrap_or(0.0) - 30.0).abs() < 1e-9);
        // another type does not lend its ratio
        let other = ExecutionResult { test_type: "lint".into(), ..res("x", "gpu", 5.0, TaskStatus::Succeeded) };
        m.observe(&other);
        assert_eq!(m.transfer_s("lint/-/x", "cpu"), None);
        // nothing observed of the workload itself: nothing to transfer
        assert_eq!(m.transfer_s("unit/-/new", "cpu"), None);
    }

    #[test]
    fn snapshot_round_trips() {
        let mut m = Model::default();
        m.observe(&res("t", "hw", 5.0, TaskStatus::Succeeded));
        let back = Model::from_snapshot(m.snapshot(1));
        assert_eq!(back.version(), m.version());
        assert_eq!(back.predict_s("unit/-/t", "hw"), m.predict_s("unit/-/t", "hw"));
    }
}
