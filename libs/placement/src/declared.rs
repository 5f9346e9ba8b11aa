//! Trust in declared durations, learned per producer: how far each producer's
//! `expected_duration_s` is from what its tasks then took, per test type and
//! hardware class. A producer whose declarations are consistently 5x too
//! short has them corrected by 5x; the correction is shrunk towards none while
//! there are few results. It is what placement estimates with when the model
//! knows nothing of a workload yet (a new test), so a lying producer stops
//! misleading the batch pass and the waits. Pure; the scheduler feeds it the
//! results it applies (kept in memory: a new active scheduler relearns it from
//! the next results).

use std::collections::BTreeMap;

use hwsched_proto::v1::{ExecutionResult, TaskRequest, TaskStatus};

/// Results of one key before its correction is taken at full weight: with n
/// results the log-correction is scaled by n / (n + `PRIOR_RESULTS`).
pub const PRIOR_RESULTS: f64 = 1.0;

/// The most keys kept (producers come and go; the oldest-keyed are dropped).
pub const MAX_KEYS: usize = 100_000;

/// Running mean of ln(actual / declared) for one key.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ratio {
    /// Results seen.
    pub n: u64,
    /// Mean of ln(actual / declared).
    pub mean: f64,
}

impl Ratio {
    fn add(&mut self, x: f64) {
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
    }

    /// The factor to multiply a declaration by, shrunk while `n` is small.
    pub fn factor(&self) -> f64 {
        let n = self.n as f64;
        (self.mean * n / (n + PRIOR_RESULTS)).exp()
    }
}

/// What declarations turned out to be. ln(actual / declared) is read as the
/// sum of two parts: how fast a test type runs on a hardware class relative
/// to what producers declare for it, and the producer's own bias. A
/// producer's bias compares its results with other producers' results of the
/// same test type on the same class (so one producer's lie does not become
/// the class's speed, and a class's speed not a producer's lie); the class's
/// part is learned from results with their producer's bias taken out.
#[derive(Debug, Clone, Default)]
pub struct Declarations {
    /// Per (producer, test type, class): its results.
    cells: BTreeMap<(String, String, String), Ratio>,
    /// Per (test type, class): every producer's results, raw.
    raw: BTreeMap<(String, String), Ratio>,
    /// Per test type, per class: results less their producer's bias (nested:
    /// looked up by borrowed names on every estimate).
    by_class: BTreeMap<String, BTreeMap<String, Ratio>>,
    /// Per producer: its bias.
    by_producer: BTreeMap<String, Ratio>,
}

impl Declarations {
    /// Learns from a successful result of `task` (nothing from failures, tasks
    /// that declared nothing, or results without a duration).
    pub fn observe(&mut self, task: &TaskRequest, res: &ExecutionResult) {
        let declared = task.expected_duration_s;
        if res.status() != TaskStatus::Succeeded || declared <= 0.0 || res.duration_s <= 0.0 {
            return;
        }
        let x = (res.duration_s / declared).ln();
        if !x.is_finite() || self.cells.len() >= MAX_KEYS {
            return;
        }
        let (p, t, c) = (task.producer.clone(), task.test_type.clone(), res.hardware_class.clone());
        self.cells.entry((p.clone(), t.clone(), c.clone())).or_default().add(x);
        self.raw.entry((t.clone(), c.clone())).or_default().add(x);
        let bias = self.bias_of(&p);
        let taken_out = bias.map_or(0.0, |b| b.mean);
        if let Some(b) = bias {
            self.by_producer.insert(p, b);
        }
        self.by_class.entry(t).or_default().entry(c).or_default().add(x - taken_out);
    }

    /// A producer's bias: over its cells, how far its mean is from the other
    /// producers' mean of the same cell, weighted by its results there
    /// (`None` while no other producer ran what it ran).
    fn bias_of(&self, producer: &str) -> Option<Ratio> {
        let from = (producer.to_string(), String::new(), String::new());
        let (mut n, mut sum) = (0u64, 0.0);
        for ((_, t, c), mine) in self.cells.range(from..).take_while(|((q, _, _), _)| q == producer) {
            let Some(all) = self.raw.get(&(t.clone(), c.clone())).filter(|a| a.n > mine.n) else { continue };
            let others = (all.mean * all.n as f64 - mine.mean * mine.n as f64) / (all.n - mine.n) as f64;
            n += mine.n;
            sum += mine.n as f64 * (mine.mean - others);
        }
        (n > 0).then(|| Ratio { n, mean: sum / n as f64 })
    }

    /// `task`'s declared duration on `hardware_class`, corrected by how its
    /// test type runs there relative to declarations and by its producer's
    /// bias; `None` when it declares nothing.
    pub fn corrected(&self, task: &TaskRequest, hardware_class: &str) -> Option<f64> {
        let declared = task.expected_duration_s;
        if declared <= 0.0 {
            return None;
        }
        if self.by_producer.is_empty() && self.by_class.is_empty() {
            return Some(declared);
        }
        let class = self.by_class.get(task.test_type.as_str()).and_then(|m| m.get(hardware_class));
        let producer = self.by_producer.get(task.producer.as_str());
        Some(declared * class.map_or(1.0, Ratio::factor) * producer.map_or(1.0, Ratio::factor))
    }

    /// A producer's bias: its declarations are this many times too short
    /// (above 1) or too long (below 1), when it has results.
    pub fn bias(&self, producer: &str) -> Option<f64> {
        self.by_producer.get(producer).map(Ratio::factor)
    }
}

#[cfg(test)]
mod tests {
    use super::{Declarations, Ratio};
    use hwsched_proto::v1::{ExecutionResult, TaskRequest, TaskStatus};

    fn task(producer: &str, kind: &str, declared: f64) -> TaskRequest {
        TaskRequest {
            producer: producer.into(),
            test_type: kind.into(),
            expected_duration_s: declared,
            ..Default::default()
        }
    }

    fn ran(class: &str, secs: f64, status: TaskStatus) -> ExecutionResult {
        ExecutionResult { hardware_class: class.into(), duration_s: secs, status: status as i32, ..Default::default() }
    }

    #[test]
    fn a_producer_that_declares_five_times_too_little_is_corrected_towards_five() {
        let mut d = Declarations::default();
        let liar = task("ci-a", "unit", 10.0);
        assert_eq!(d.corrected(&liar, "cpu"), Some(10.0), "nothing learned: the declaration");
        // honest producers: unit tests take what they declare on cpu, a tenth on gpu
        for _ in 0..20 {
            d.observe(&task("ci-b", "unit", 10.0), &ran("cpu", 10.0, TaskStatus::Succeeded));
            d.observe(&task("ci-b", "unit", 10.0), &ran("gpu", 1.0, TaskStatus::Succeeded));
        }
        let honest = d.corrected(&task("ci-c", "unit", 10.0), "gpu").expect("declared");
        assert!((honest - 1.0).abs() < 0.15, "{honest}");
        // the liar's tests take five times what it declares
        for _ in 0..20 {
            d.observe(&liar, &ran("cpu", 50.0, TaskStatus::Succeeded));
        }
        let bias = d.bias("ci-a").expect("learned");
        assert!((bias - 5.0).abs() < 0.5, "{bias}");
        // its new test on the gpu: the type's speed there and its own bias
        let gpu = d.corrected(&liar, "gpu").expect("declared");
        assert!((gpu - 5.0).abs() < 0.6, "{gpu}");
        // judged against the others' mean, the honest one of two producers looks
        // biased the other way (with two, neither can be told the liar; the
        // majority of producers defines what is honest)
        d.observe(&task("ci-b", "unit", 10.0), &ran("cpu", 10.0, TaskStatus::Succeeded));
        let honest = d.bias("ci-b").expect("learned");
        assert!(honest < 1.0 && honest > 0.15, "{honest}");
    }

    #[test]
    fn failures_and_tasks_without_a_declaration_teach_nothing() {
        let mut d = Declarations::default();
        d.observe(&task("p", "unit", 10.0), &ran("cpu", 500.0, TaskStatus::Failed));
        d.observe(&task("p", "unit", 0.0), &ran("cpu", 500.0, TaskStatus::Succeeded));
        assert_eq!(d.bias("p"), None);
        assert_eq!(d.corrected(&task("p", "unit", 0.0), "cpu"), None);
    }

    #[test]
    fn the_correction_is_shrunk_while_results_are_few() {
        let r = Ratio { n: 1, mean: 2.0f64.ln() };
        assert!((r.factor() - 2.0f64.sqrt()).abs() < 1e-9);
        assert_eq!(Ratio::default().factor(), 1.0);
    }
}
