//! [`Model`]: all learned pairs, the factor model, each worker's health and
//! the model's own prediction error. This file holds the state and its plain
//! read-outs; the jobs on it live next door: learning from a result
//! (`observe`), predicting a pair (`predict`), judging workers against their
//! peers (`health`) and the published snapshot (`snapshot`).

pub(crate) mod health;
mod observe;
mod predict;
pub(crate) mod snapshot;

use std::collections::{BTreeMap, BTreeSet};

use hwsched_proto::v1::{FactorModel, FlakyTest, ModelEntry, PredictionError, WorkerHealth};

use crate::{
    factor::{Cell, Factors},
    flaky::Flakiness,
    stats::{learned, runs},
};

/// All learned pairs, the factor model, each worker's health and the model's
/// own prediction error.
#[derive(Debug, Default, Clone)]
pub struct Model {
    entries: BTreeMap<(String, String), ModelEntry>,
    factors: Factors,
    workers: BTreeMap<String, WorkerHealth>,
    /// The workers seen on each hardware class: one alone in its class has no
    /// peers to be compared with (its pairs are its own history).
    class_workers: BTreeMap<String, BTreeSet<String>>,
    errors: BTreeMap<String, PredictionError>,
    /// Workers whose degraded flag changed since [`Model::take_health_changes`].
    health_changes: Vec<WorkerHealth>,
    /// How many workers are degraded.
    degraded: usize,
    /// Each test's outcomes at its recent revisions.
    flaky: Flakiness,
    /// Tests that became flaky since [`Model::take_new_flaky`].
    new_flaky: Vec<String>,
    version: u64,
}

impl Model {
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

    /// The tests that both passed and failed at one of their recent
    /// revisions, by workload key, with their estimated flake rate.
    pub fn flaky_tests(&self) -> Vec<FlakyTest> {
        self.flaky.flaky_tests()
    }

    /// Blames `worker_id` (quarantined for failing more than its tests
    /// predict) for its test failures that ended from `from_ms` to `to_ms`:
    /// they no longer count toward any test's flakiness, nor do those of the
    /// window learned of later. Returns how many counted until now.
    pub fn blame_worker(&mut self, worker_id: &str, from_ms: i64, to_ms: i64) -> usize {
        let moved = self.flaky.blame_worker(worker_id, from_ms, to_ms);
        if moved > 0 {
            self.version += 1;
        }
        moved
    }

    /// Tests whose revisions are tracked for flakiness.
    pub fn tests_tracked(&self) -> usize {
        self.flaky.len()
    }

    /// The tests that became flaky since the last call.
    pub fn take_new_flaky(&mut self) -> Vec<FlakyTest> {
        let keys = std::mem::take(&mut self.new_flaky);
        keys.iter().filter_map(|k| self.flaky.flaky_test(k)).collect()
    }

    /// Bumped by every observation.
    pub fn version(&self) -> u64 {
        self.version
    }
}
