//! The model as published: starting from a snapshot, making one, and making
//! one that fits a NATS message.

use hwsched_proto::{v1::ModelSnapshot, Message as _, SCHEMA_VERSION};

use crate::{factor::Factors, model::Model};

/// Key of the snapshot in the model bucket (`hws_model`).
pub const SNAPSHOT_KEY: &str = "snapshot";

impl Model {
    /// Starts from a published snapshot.
    pub fn from_snapshot(s: ModelSnapshot) -> Self {
        let entries = s.entries.into_iter().map(|e| ((e.workload_key.clone(), e.hardware_key.clone()), e)).collect();
        let mut m = Self {
            entries,
            workers: s.workers.into_iter().map(|w| (w.worker_id.clone(), w)).collect(),
            errors: s.errors.into_iter().map(|e| (e.age.clone(), e)).collect(),
            version: s.version,
            ..Default::default()
        };
        m.degraded = m.workers.values().filter(|h| h.degraded).count();
        for h in m.workers.values() {
            m.class_workers.entry(h.hardware_key.clone()).or_default().insert(h.worker_id.clone());
        }
        m.factors = match s.factors {
            Some(f) => Factors::from_fit(f),
            None => {
                let mut fresh = m.clone();
                fresh.refit();
                fresh.factors
            }
        };
        m
    }

    /// The publishable snapshot (with the factor model as last refitted).
    pub fn snapshot(&self, now_ms: i64) -> ModelSnapshot {
        ModelSnapshot {
            schema_version: SCHEMA_VERSION,
            version: self.version,
            generated_at_ms: now_ms,
            entries: self.entries.values().cloned().collect(),
            factors: Some(self.factors.fit.clone()),
            workers: self.workers.values().cloned().collect(),
            errors: self.errors.values().cloned().collect(),
        }
    }

    /// The snapshot, made to fit in `max_bytes` encoded (a NATS server's
    /// `max_payload`, 1 MB by default): past it, the recent runtimes are left
    /// out, then the pairs updated longest ago. Returns it and how many pairs
    /// were left out.
    pub fn snapshot_within(&self, now_ms: i64, max_bytes: usize) -> (ModelSnapshot, usize) {
        let mut snap = self.snapshot(now_ms);
        if snap.encoded_len() <= max_bytes {
            return (snap, 0);
        }
        for e in &mut snap.entries {
            e.recent_runtimes_s.clear();
        }
        let total = snap.entries.len();
        while snap.encoded_len() > max_bytes && !snap.entries.is_empty() {
            let keep = (snap.entries.len() as f64 * 0.95 * max_bytes as f64 / snap.encoded_len() as f64) as usize;
            snap.entries.sort_by_key(|e| std::cmp::Reverse(e.updated_at_ms));
            snap.entries.truncate(keep.min(snap.entries.len() - 1));
        }
        let dropped = total - snap.entries.len();
        (snap, dropped)
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::{v1::TaskStatus, Message as _};

    use crate::{model::Model, test_support::res};

    #[test]
    fn a_snapshot_too_large_drops_the_oldest_pairs() {
        let mut m = Model::default();
        for i in 0..400 {
            let mut r = res(&format!("t{i}"), "hw", 5.0, TaskStatus::Succeeded);
            r.finished_at_ms = i;
            m.observe(&r);
        }
        let (full, dropped) = m.snapshot_within(0, usize::MAX);
        assert_eq!((full.entries.len(), dropped), (400, 0));
        let limit = full.encoded_len() / 4;
        let (small, dropped) = m.snapshot_within(0, limit);
        assert!(small.encoded_len() <= limit);
        assert_eq!(small.entries.len() + dropped, 400);
        assert!(small.entries.iter().all(|e| e.updated_at_ms >= i64::try_from(dropped).unwrap_or(0)));
    }

    #[test]
    fn snapshot_round_trips() {
        let mut m = Model::default();
        m.observe(&res("t", "hw", 5.0, TaskStatus::Succeeded));
        m.observe(&res("u", "hw", 7.0, TaskStatus::Succeeded));
        m.observe(&res("u", "hw2", 14.0, TaskStatus::Succeeded));
        m.refit();
        let back = Model::from_snapshot(m.snapshot(1));
        assert_eq!(back.version(), m.version());
        assert_eq!(back.predict("unit/-/t", "hw"), m.predict("unit/-/t", "hw"));
        assert_eq!(back.predict("unit/-/t", "hw2"), m.predict("unit/-/t", "hw2"));
        assert!(back.predict("unit/-/t", "hw2").is_some());
    }
}
