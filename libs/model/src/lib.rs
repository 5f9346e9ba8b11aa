//! The learned model of hwsched: per (workload, hardware) pair, an exponentially
//! weighted mean and variance of ln(runtime), a success rate and the peak memory
//! seen. Pure: the learner trains it from results and publishes snapshots; the
//! scheduler (and the simulator) read predictions from it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use hwsched_proto::{
    v1::{ExecutionResult, FactorModel, ModelEntry, ModelSnapshot, PredictionError, TaskStatus, WorkerHealth},
    Message as _, SCHEMA_VERSION,
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

mod factor;

use factor::{Cell, Factors};

/// Successful runs after which a pair's statistics stop trusting the
/// factor model (before, the two are blended by their variances).
const BLEND_UNTIL: u64 = 20;
/// Runs before a deviation is clipped: an outlier moves the estimate by at most
/// three of its standard deviations' worth.
const CLIP_AFTER: u64 = 5;
const CLIP_SD: f64 = 3.0;
/// The standard deviation of ln(runtime) assumed for a pair with one run, and
/// the least any pair is taken to have.
const MIN_LOG_SD: f64 = 0.05;
/// Recent runtimes kept per pair.
const RECENT: usize = 16;
/// A worker is compared with its peers once the pair has this many runs.
const PEER_MIN_RUNS: u64 = 3;
/// A worker is judged after this many comparisons.
const HEALTH_MIN_OBS: u64 = 8;
/// Degraded: this much slower than its peers on the same workloads ...
pub const DEGRADED_SLOWDOWN: f64 = 1.25;
/// ... or failing this much more often.
pub const DEGRADED_FAILURE_EXCESS: f64 = 0.3;

/// Where a prediction comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The pair's own runs (blended with the factor model while they are few).
    Observed,
    /// The factor model: the pair was never observed.
    Factor,
}

/// A predicted runtime with its uncertainty.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Seconds (the exponential of the predicted ln runtime: a median).
    pub runtime_s: f64,
    /// Standard deviation of ln(runtime): 0.1 is about ±10 %.
    pub log_sd: f64,
    /// Where it comes from.
    pub source: Source,
    /// Successful runs of the pair.
    pub runs: u64,
    /// For a pair never observed: whether other workloads of its test type
    /// ran on this hardware (without, the estimate rests on the class's
    /// average speed-up alone and is much less certain).
    pub type_seen: bool,
}

/// All learned pairs, the factor model, each worker's health and the model's
/// own prediction error.
#[derive(Debug, Default, Clone)]
pub struct Model {
    entries: BTreeMap<(String, String), ModelEntry>,
    factors: Factors,
    workers: BTreeMap<String, WorkerHealth>,
    errors: BTreeMap<String, PredictionError>,
    /// Workers whose degraded flag changed since [`Model::take_health_changes`].
    health_changes: Vec<WorkerHealth>,
    /// How many workers are degraded.
    degraded: usize,
    version: u64,
}

/// The age bucket of a prediction, for the error metrics: the pair's
/// successful runs, and for a pair never observed whether its test type ran on
/// the hardware ("unseen") or not ("unseen-type").
pub fn age_bucket(p: &Prediction) -> &'static str {
    match p.runs {
        0 if !p.type_seen => "unseen-type",
        0 => "unseen",
        1..=4 => "1-4",
        5..=19 => "5-19",
        _ => "20+",
    }
}

fn learned(e: &ModelEntry) -> bool {
    e.runtime_observations > 0 || e.log_runtime_mean != 0.0 || e.log_runtime_var != 0.0
}

/// Successful runs behind a pair's runtime (snapshots from before the field
/// existed count every observation).
fn runs(e: &ModelEntry) -> u64 {
    if e.runtime_observations > 0 {
        e.runtime_observations
    } else if learned(e) {
        e.observations.max(1)
    } else {
        0
    }
}

/// EWMA weight for the n-th value (1-based): a plain mean until it falls to `floor`.
fn weight(n: u64, floor: f64) -> f64 {
    (1.0 / n.max(1) as f64).max(floor)
}

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

    /// Learns from one result. Cancelled attempts teach nothing.
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
        if let (true, Some(p)) = (runtime.is_some(), self.predict(&workload, &r.hardware_class)) {
            let ape = (p.runtime_s - r.duration_s).abs() / r.duration_s;
            let e = self
                .errors
                .entry(age_bucket(&p).to_string())
                .or_insert_with(|| PredictionError { age: age_bucket(&p).into(), ..Default::default() });
            e.count += 1;
            e.mape += weight(e.count, 0.02) * (ape - e.mape);
        }
        let key = (workload, r.hardware_class.clone());
        let e = self.entries.entry(key.clone()).or_insert_with(|| ModelEntry {
            workload_key: key.0.clone(),
            hardware_key: key.1.clone(),
            ..Default::default()
        });
        // the pair as it was, for the worker's comparison with its peers
        let peer = (runs(e) >= PEER_MIN_RUNS).then_some((e.log_runtime_mean, 1.0 - e.success_rate));
        e.observations += 1;
        let a = weight(e.observations, ALPHA);
        e.success_rate +=
            if e.observations == 1 { f64::from(u8::from(ok)) } else { a * (f64::from(u8::from(ok)) - e.success_rate) };
        e.timeout_rate += if e.observations == 1 {
            f64::from(u8::from(timed_out))
        } else {
            a * (f64::from(u8::from(timed_out)) - e.timeout_rate)
        };
        if e.observations > 1 {
            let flipped = f64::from(u8::from(ok != e.last_succeeded));
            e.flakiness += ALPHA * (flipped - e.flakiness);
        }
        e.last_succeeded = ok;
        // Only successful runs say how long the work takes.
        if let Some(x) = runtime {
            let n = runs(e);
            if n == 0 {
                e.log_runtime_mean = x;
                e.log_runtime_var = 0.0;
            } else {
                let sd = e.log_runtime_var.sqrt().max(MIN_LOG_SD);
                let mut d = x - e.log_runtime_mean;
                if n >= CLIP_AFTER {
                    d = d.clamp(-CLIP_SD * sd, CLIP_SD * sd);
                }
                let a = weight(n + 1, ALPHA);
                e.log_runtime_mean += a * d;
                e.log_runtime_var = (1.0 - a) * (e.log_runtime_var + a * d * d);
            }
            e.runtime_observations = n + 1;
            e.recent_runtimes_s.push(r.duration_s);
            if e.recent_runtimes_s.len() > RECENT {
                e.recent_runtimes_s.remove(0);
            }
        }
        if let Some(u) = &r.resources {
            e.memory_peak_mb = e.memory_peak_mb.max(u.memory_peak_mb);
        }
        e.updated_at_ms = r.finished_at_ms;
        if let (Some((mean, failure_rate)), false) = (peer, r.worker_id.is_empty()) {
            self.judge_worker(r, runtime.map(|x| x - mean), failure_rate);
        }
        self.version += 1;
        true
    }

    /// Compares a worker's result with what its class does on the same workload.
    fn judge_worker(&mut self, r: &ExecutionResult, log_ratio: Option<f64>, failure_rate: f64) {
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

    /// Refits the factor model to the pairs learned so far (the learner does
    /// before each snapshot; a few milliseconds for thousands of pairs).
    pub fn refit(&mut self) {
        let cells: Vec<Cell<'_>> = self
            .entries
            .values()
            .filter(|e| learned(e))
            .map(|e| Cell {
                workload: &e.workload_key,
                hardware: &e.hardware_key,
                log_runtime: e.log_runtime_mean,
                runs: runs(e),
            })
            .collect();
        self.factors = Factors::fit(&cells);
    }

    /// What is known of a pair, when observed.
    pub fn entry(&self, workload: &str, hardware: &str) -> Option<&ModelEntry> {
        self.entries.get(&(workload.to_string(), hardware.to_string()))
    }

    /// Every learned pair, by workload then hardware.
    pub fn entries(&self) -> impl Iterator<Item = &ModelEntry> {
        self.entries.values()
    }

    /// The runtime of a pair: its own runs when it has some (blended with the
    /// factor model, by their variances, while it has fewer than 20), else the
    /// factor model when both the workload and the hardware were seen. `None`
    /// otherwise (the caller falls back to the declared duration).
    pub fn predict(&self, workload: &str, hardware: &str) -> Option<Prediction> {
        let factor = self.factors.predict(workload, hardware);
        let own = self.entry(workload, hardware).filter(|e| learned(e));
        match (own, factor) {
            (Some(e), f) => {
                let n = runs(e);
                let data_var = e.log_runtime_var.max(MIN_LOG_SD * MIN_LOG_SD) / n as f64;
                let (x, var) = match f {
                    Some((fx, fvar, _)) if n < BLEND_UNTIL => {
                        let var = 1.0 / (1.0 / data_var + 1.0 / fvar);
                        (var * (e.log_runtime_mean / data_var + fx / fvar), var)
                    }
                    _ => (e.log_runtime_mean, data_var),
                };
                Some(Prediction {
                    runtime_s: x.exp(),
                    log_sd: var.sqrt(),
                    source: Source::Observed,
                    runs: n,
                    type_seen: true,
                })
            }
            (None, Some((x, var, group))) => Some(Prediction {
                runtime_s: x.exp(),
                log_sd: var.sqrt(),
                source: Source::Factor,
                runs: 0,
                type_seen: group > 0,
            }),
            (None, None) => None,
        }
    }

    /// Predicted runtime (s) of a pair ([`Model::predict`]).
    pub fn predict_s(&self, workload: &str, hardware: &str) -> Option<f64> {
        self.predict(workload, hardware).map(|p| p.runtime_s)
    }

    /// The entries of one workload.
    fn workload_entries<'a>(&'a self, workload: &str) -> impl Iterator<Item = &'a ModelEntry> + 'a {
        let w = workload.to_string();
        self.entries.range((w.clone(), String::new())..).map(|(_, e)| e).take_while(move |e| e.workload_key == w)
    }

    /// Observed runtime of the fastest class `workload` ran on, s.
    pub fn best_observed_s(&self, workload: &str) -> Option<f64> {
        self.workload_entries(workload).filter(|e| learned(e)).map(|e| e.log_runtime_mean.exp()).reduce(f64::min)
    }

    /// The most memory `workload` was seen to use on any hardware, MB.
    pub fn memory_peak_mb(&self, workload: &str) -> Option<u64> {
        self.workload_entries(workload).map(|e| e.memory_peak_mb).max().filter(|m| *m > 0)
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

    /// The prediction error by pair age.
    pub fn errors(&self) -> impl Iterator<Item = &PredictionError> {
        self.errors.values()
    }

    /// The fitted factor model.
    pub fn factors(&self) -> &FactorModel {
        &self.factors.fit
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
}

impl Model {
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

/// The `q` quantile (0..=1) of a pair's recent runtimes, s.
pub fn recent_quantile(e: &ModelEntry, q: f64) -> Option<f64> {
    let mut v = e.recent_runtimes_s.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(v[i])
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

    fn on(worker: &str, r: ExecutionResult) -> ExecutionResult {
        ExecutionResult { worker_id: worker.into(), ..r }
    }

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
    fn unseen_pairs_are_predicted_by_the_factor_model_with_wider_uncertainty() {
        let mut m = Model::default();
        // peers ran on both classes: the cpu is 20x slower
        for name in ["a", "b", "c"] {
            for _ in 0..5 {
                m.observe(&res(name, "gpu", 10.0, TaskStatus::Succeeded));
                m.observe(&res(name, "cpu", 200.0, TaskStatus::Succeeded));
            }
        }
        for _ in 0..5 {
            m.observe(&res("t", "gpu", 30.0, TaskStatus::Succeeded));
        }
        assert_eq!(m.predict("unit/-/t", "cpu"), None, "not refitted yet");
        m.refit();
        let p = m.predict("unit/-/t", "cpu").expect("factor");
        assert_eq!(p.source, Source::Factor);
        assert!((p.runtime_s / 600.0 - 1.0).abs() < 0.3, "{p:?}");
        let seen = m.predict("unit/-/t", "gpu").expect("seen");
        assert!(p.log_sd > seen.log_sd, "{p:?} vs {seen:?}");
        assert!((seen.runtime_s - 30.0).abs() < 1.0, "{seen:?}");
        // a workload never seen, or hardware never seen: no prediction
        assert_eq!(m.predict("unit/-/new", "cpu"), None);
        assert_eq!(m.predict("unit/-/t", "tpu"), None);
        assert!((m.best_observed_s("unit/-/t").unwrap_or(0.0) - 30.0).abs() < 1e-9);
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
