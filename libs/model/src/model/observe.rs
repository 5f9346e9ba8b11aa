//! Learning from one result: the pair's statistics, the model's own prediction
//! error (measured before it learns), and the worker's comparison with its peers.

use hwsched_proto::v1::{ExecutionResult, ModelEntry, PredictionError, TaskStatus};

use crate::{
    keys::workload_key,
    model::{health::PEER_MIN_RUNS, Model},
    prediction::age_bucket,
    stats::{runs, update_entry, weight},
};

impl Model {
    /// Learns from one result. Cancelled attempts teach nothing. A result
    /// with a revision also counts toward its test's flakiness (`crate::flaky`).
    pub fn observe(&mut self, r: &ExecutionResult) -> bool {
        let status = r.status();
        if matches!(status, TaskStatus::Cancelled | TaskStatus::Unspecified) || r.hardware_class.is_empty() {
            return false;
        }
        let workload = workload_key(r);
        let ok = status == TaskStatus::Succeeded;
        let timed_out = status == TaskStatus::TimedOut;
        let runtime = (ok && r.duration_s > 0.0).then(|| r.duration_s.ln());
        // how good the model was before it saw this result
        if runtime.is_some() {
            self.record_error(&workload, r);
        }
        if self.flaky.observe(&workload, r) {
            self.new_flaky.push(workload.clone());
        }
        let key = (workload, r.hardware_class.clone());
        let e = self.entries.entry(key.clone()).or_insert_with(|| ModelEntry {
            workload_key: key.0.clone(),
            hardware_key: key.1.clone(),
            ..Default::default()
        });
        // the pair as it was, for the worker's comparison with its peers
        let peer = (runs(e) >= PEER_MIN_RUNS).then_some((e.log_runtime_mean, 1.0 - e.success_rate));
        update_entry(e, r, ok, timed_out, runtime);
        if let (Some((mean, failure_rate)), true) = (peer, self.has_peers(r)) {
            self.judge_worker(r, runtime.map(|x| x - mean), failure_rate);
        }
        self.version += 1;
        true
    }

    /// Notes `r`'s worker as one of its class; whether the class has another.
    /// Alone in its class, a worker's pairs are its own history: it has no
    /// peers to be judged by (a shared host's contention read as a slowdown).
    fn has_peers(&mut self, r: &ExecutionResult) -> bool {
        if r.worker_id.is_empty() {
            return false;
        }
        let class = self.class_workers.entry(r.hardware_class.clone()).or_default();
        if !class.contains(&r.worker_id) {
            class.insert(r.worker_id.clone());
        }
        class.len() >= 2
    }

    /// Files the error of the model's prediction for a successful result's
    /// pair (if it had one) under the prediction's age bucket.
    fn record_error(&mut self, workload: &str, r: &ExecutionResult) {
        let Some(p) = self.predict(workload, &r.hardware_class) else {
            return;
        };
        let ape = (p.runtime_s - r.duration_s).abs() / r.duration_s;
        let e = self
            .errors
            .entry(age_bucket(&p).to_string())
            .or_insert_with(|| PredictionError { age: age_bucket(&p).into(), ..Default::default() });
        e.count += 1;
        e.mape += weight(e.count, 0.02) * (ape - e.mape);
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::TaskStatus;

    use crate::{model::Model, prediction::Source, stats::recent_quantile, test_support::res};

    /// Deterministic noise: ln-normal-ish factor from a xorshift stream.
    fn noise(seed: &mut u64, sd: f64) -> f64 {
        let mut sum = 0.0;
        for _ in 0..12 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            sum += (*seed >> 11) as f64 / (1u64 << 53) as f64;
        }
        ((sum - 6.0) * sd).exp()
    }

    #[test]
    fn runtime_converges_to_observations_per_hardware() {
        let mut m = Model::default();
        let mut seed = 7;
        for _ in 0..60 {
            m.observe(&res("t", "gpu:h100", 10.0 * noise(&mut seed, 0.2), TaskStatus::Succeeded));
            m.observe(&res("t", "cpu:x86", 100.0 * noise(&mut seed, 0.2), TaskStatus::Succeeded));
        }
        let k = "unit/-/t";
        let gpu = m.predict(k, "gpu:h100").expect("h100");
        assert!((gpu.runtime_s / 10.0 - 1.0).abs() < 0.15, "{gpu:?}");
        assert_eq!((gpu.source, gpu.runs), (Source::Observed, 60));
        assert!((m.predict_s(k, "cpu:x86").expect("cpu") / 100.0 - 1.0).abs() < 0.15);
        // the spread is learned too: ln sd about 0.2
        let sd = m.entry(k, "gpu:h100").expect("entry").log_runtime_var.sqrt();
        assert!((0.1..0.3).contains(&sd), "{sd}");
        let p50 = recent_quantile(m.entry(k, "gpu:h100").expect("entry"), 0.5).expect("recent");
        assert!((7.0..14.0).contains(&p50), "{p50}");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn outliers_do_not_swing_the_estimate() {
        let mut m = Model::default();
        for _ in 0..20 {
            m.observe(&res("t", "hw", 10.0, TaskStatus::Succeeded));
        }
        // one run 50x longer (a stuck disk, a cold cache)
        m.observe(&res("t", "hw", 500.0, TaskStatus::Succeeded));
        let after = m.predict_s("unit/-/t", "hw").expect("learned");
        assert!(after < 11.0, "one outlier moved the estimate to {after}");
        // a real change is followed within a few runs
        for _ in 0..15 {
            m.observe(&res("t", "hw", 20.0, TaskStatus::Succeeded));
        }
        let moved = m.predict_s("unit/-/t", "hw").expect("learned");
        assert!(moved > 18.0, "{moved}");
    }

    #[test]
    fn failures_lower_success_rate_but_not_runtime_and_flakiness_is_seen() {
        let mut m = Model::default();
        m.observe(&res("t", "hw", 10.0, TaskStatus::Succeeded));
        m.observe(&res("t", "hw", 0.1, TaskStatus::Failed));
        let e = m.entry("unit/-/t", "hw").expect("entry");
        assert_eq!((e.observations, e.runtime_observations), (2, 1));
        assert!((e.success_rate - 0.5).abs() < 1e-9);
        assert!((e.log_runtime_mean.exp() - 10.0).abs() < 1e-9);
        let mut flaky = Model::default();
        let mut steady = Model::default();
        for i in 0..30 {
            let status = if i % 3 == 0 { TaskStatus::Failed } else { TaskStatus::Succeeded };
            flaky.observe(&res("t", "hw", 1.0, status));
            steady.observe(&res("t", "hw", 1.0, TaskStatus::Succeeded));
            steady.observe(&res("u", "hw", 1.0, TaskStatus::TimedOut));
        }
        assert!(flaky.entry("unit/-/t", "hw").expect("e").flakiness > 0.4);
        assert!(steady.entry("unit/-/t", "hw").expect("e").flakiness < 0.01);
        assert!(steady.entry("unit/-/u", "hw").expect("e").flakiness < 0.01);
        assert!(steady.entry("unit/-/u", "hw").expect("e").timeout_rate > 0.99);
    }

    #[test]
    fn memory_peaks_and_prediction_errors_are_kept() {
        let mut m = Model::default();
        let mut r = res("t", "hw", 10.0, TaskStatus::Succeeded);
        r.resources = Some(hwsched_proto::v1::ResourceUsage { memory_peak_mb: 9000, ..Default::default() });
        m.observe(&r);
        m.observe(&res("t", "hw2", 10.0, TaskStatus::Succeeded));
        assert_eq!(m.memory_peak_mb("unit/-/t"), Some(9000));
        assert_eq!(m.memory_peak_mb("unit/-/x"), None);
        for _ in 0..30 {
            m.observe(&res("t", "hw", 10.0, TaskStatus::Succeeded));
        }
        m.observe(&res("t", "hw", 12.0, TaskStatus::Succeeded));
        let old = m.errors().find(|e| e.age == "20+").expect("20+");
        assert!(old.mape > 0.0 && old.mape < 0.2, "{old:?}");
        assert!(m.errors().any(|e| e.age == "1-4"));
    }
}
