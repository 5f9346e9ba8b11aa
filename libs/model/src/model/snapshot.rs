//! The model as published: starting from a snapshot, making one, and making
//! one that fits a NATS message.

use hwsched_proto::{v1::ModelSnapshot, Message, SCHEMA_VERSION};

use crate::{
    factor::Factors,
    flaky::{last_seen_ms, Flakiness},
    model::Model,
};

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
            flaky: Flakiness::from_histories(s.test_revisions),
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
            flaky_tests: self.flaky.flaky_tests(),
            test_revisions: self.flaky.histories().cloned().collect(),
        }
    }

    /// The snapshot, made to fit in `max_bytes` encoded (a NATS server's
    /// `max_payload`, 1 MB by default): past it, the recent runtimes are left
    /// out, then the revision histories of the tests seen longest ago (the
    /// flaky tests found so far stay listed), then the pairs updated longest
    /// ago. Returns it and how many pairs were left out.
    pub fn snapshot_within(&self, now_ms: i64, max_bytes: usize) -> (ModelSnapshot, usize) {
        let mut snap = self.snapshot(now_ms);
        if snap.encoded_len() <= max_bytes {
            return (snap, 0);
        }
        for e in &mut snap.entries {
            e.recent_runtimes_s.clear();
        }
        snap.test_revisions.sort_by_key(|t| std::cmp::Reverse(last_seen_ms(t)));
        let excess = snap.encoded_len().saturating_sub(max_bytes);
        drop_tail(&mut snap.test_revisions, excess);
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

/// Drops items from the end of `items` until `excess` bytes of their
/// encoding (as repeated message fields) are gone, or none is left.
fn drop_tail<T: Message>(items: &mut Vec<T>, mut excess: usize) {
    while excess > 0 {
        let Some(item) = items.pop() else { return };
        let len = item.encoded_len();
        // the field's tag (one byte) and the length's varint
        let framed = len + 1 + (64 - (len as u64 | 1).leading_zeros() as usize).div_ceil(7);
        excess = excess.saturating_sub(framed);
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

    /// An attempt of test `name` at revision `rev`.
    fn at_rev(name: &str, rev: &str, status: TaskStatus, finished_at_ms: i64) -> hwsched_proto::v1::ExecutionResult {
        hwsched_proto::v1::ExecutionResult { revision: rev.into(), finished_at_ms, ..res(name, "hw", 1.0, status) }
    }

    #[test]
    fn flaky_tests_are_published_and_a_restored_model_goes_on_counting() {
        let mut m = Model::default();
        m.observe(&at_rev("t", "r1", TaskStatus::Failed, 1));
        m.observe(&at_rev("u", "r1", TaskStatus::Succeeded, 1));
        let mut back = Model::from_snapshot(m.snapshot(0));
        assert!(back.snapshot(0).flaky_tests.is_empty());
        // the pass at the same revision arrives after the restart
        back.observe(&at_rev("t", "r1", TaskStatus::Succeeded, 2));
        let snap = back.snapshot(0);
        let keys: Vec<&str> = snap.flaky_tests.iter().map(|t| t.workload_key.as_str()).collect();
        assert_eq!(keys, ["unit/-/t"]);
        assert_eq!((snap.flaky_tests[0].attempts, snap.flaky_tests[0].failures), (2, 1));
        assert_eq!(back.take_new_flaky().len(), 1);
        assert!(back.take_new_flaky().is_empty());
    }

    #[test]
    fn a_snapshot_too_large_drops_test_histories_before_pairs() {
        let mut m = Model::default();
        for i in 0..200 {
            for rev in 0..10 {
                m.observe(&at_rev(&format!("t{i}"), &format!("rev-{rev:040}"), TaskStatus::Succeeded, i));
            }
        }
        m.observe(&at_rev("flaky", "r", TaskStatus::Failed, 0));
        m.observe(&at_rev("flaky", "r", TaskStatus::Succeeded, 0));
        let (full, _) = m.snapshot_within(0, usize::MAX);
        assert_eq!(full.test_revisions.len(), 201);
        let without_histories =
            full.encoded_len() - full.test_revisions.iter().map(|t| t.encoded_len() + 3).sum::<usize>();
        let limit = without_histories + full.encoded_len() / 4 - without_histories / 4;
        let (small, dropped) = m.snapshot_within(0, limit);
        assert!(small.encoded_len() <= limit, "{} > {limit}", small.encoded_len());
        assert_eq!((small.entries.len(), dropped), (201, 0), "every pair kept");
        assert!(small.test_revisions.len() < 201 && !small.test_revisions.is_empty());
        // the tests seen last are kept, and the flaky test stays listed
        assert!(small.test_revisions.iter().any(|t| t.workload_key == "unit/-/t199"));
        assert_eq!(small.flaky_tests.len(), 1);
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
