//! Failures blamed on a worker, not on the test: when the scheduler
//! quarantines a worker for failing more than the tests it ran predict, its
//! failures in the evidence window say nothing about those tests' flakiness.
//! The learner (`Model::blame_worker`) moves them out of the tests' failure
//! counts (`HardwareOutcomes.blamed`), including failures it learns of only
//! later, whose attempt ended inside a blamed window.
//!
//! Memory is bounded: the last [`FAILURES_KEPT`] failures and
//! [`WINDOWS_KEPT`] blamed windows per worker, [`WORKERS_KEPT`] workers.

use std::collections::{BTreeMap, VecDeque};

/// Failures remembered per worker (the most recent).
pub const FAILURES_KEPT: usize = 64;
/// Blamed windows remembered per worker (the most recent).
pub const WINDOWS_KEPT: usize = 8;
/// Workers remembered.
pub const WORKERS_KEPT: usize = 10_000;

/// One failure counted against a test, where to take it back from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    /// When the attempt ended, ms.
    pub(crate) at_ms: i64,
    pub(crate) workload: String,
    pub(crate) revision: String,
    pub(crate) hardware: String,
}

/// The recent failures of each worker and the windows blamed on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Blame {
    failures: BTreeMap<String, VecDeque<Failure>>,
    windows: BTreeMap<String, VecDeque<(i64, i64)>>,
}

impl Blame {
    /// Whether a failure of `worker` that ended at `at_ms` falls in a window blamed on it.
    pub(crate) fn covers(&self, worker: &str, at_ms: i64) -> bool {
        self.windows.get(worker).is_some_and(|ws| ws.iter().any(|(from, to)| (*from..=*to).contains(&at_ms)))
    }

    /// Remembers a failure counted against a test, in case its worker is blamed later.
    pub(crate) fn remember(&mut self, worker: &str, f: Failure) {
        if worker.is_empty() {
            return;
        }
        if !self.failures.contains_key(worker) && self.failures.len() >= WORKERS_KEPT {
            self.failures.pop_first();
        }
        let fs = self.failures.entry(worker.to_string()).or_default();
        if fs.len() >= FAILURES_KEPT {
            fs.pop_front();
        }
        fs.push_back(f);
    }

    /// Blames `worker` for its failures that ended from `from_ms` to `to_ms`:
    /// returns those remembered (to be taken back from their tests) and
    /// keeps the window for failures still to come.
    pub(crate) fn blame(&mut self, worker: &str, from_ms: i64, to_ms: i64) -> Vec<Failure> {
        if !self.windows.contains_key(worker) && self.windows.len() >= WORKERS_KEPT {
            self.windows.pop_first();
        }
        let ws = self.windows.entry(worker.to_string()).or_default();
        if ws.len() >= WINDOWS_KEPT {
            ws.pop_front();
        }
        ws.push_back((from_ms, to_ms));
        let Some(fs) = self.failures.get_mut(worker) else { return Vec::new() };
        let (taken, kept): (Vec<Failure>, Vec<Failure>) =
            fs.drain(..).partition(|f| (from_ms..=to_ms).contains(&f.at_ms));
        fs.extend(kept);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(at_ms: i64, workload: &str) -> Failure {
        Failure { at_ms, workload: workload.into(), revision: "r".into(), hardware: "hw".into() }
    }

    #[test]
    fn blaming_takes_the_window_s_failures_once_and_covers_later_ones() {
        let mut b = Blame::default();
        for (at, w) in [(5, "a"), (10, "b"), (20, "c")] {
            b.remember("w1", failure(at, w));
        }
        b.remember("w2", failure(10, "d"));
        let taken: Vec<String> = b.blame("w1", 8, 20).into_iter().map(|f| f.workload).collect();
        assert_eq!(taken, ["b", "c"]);
        assert!(b.blame("w1", 8, 20).is_empty(), "taken once");
        assert!(b.covers("w1", 15) && !b.covers("w1", 21) && !b.covers("w2", 15));
        assert_eq!(b.blame("w1", 0, 6).len(), 1, "the older one, by a wider window");
    }

    #[test]
    fn memory_is_bounded() {
        let mut b = Blame::default();
        for i in 0..(FAILURES_KEPT as i64 + 10) {
            b.remember("w", failure(i, "t"));
            b.blame("w", -100 - i, -99 - i);
        }
        assert_eq!(b.failures["w"].len(), FAILURES_KEPT);
        assert_eq!(b.windows["w"].len(), WINDOWS_KEPT);
        assert_eq!(b.failures["w"].front().map(|f| f.at_ms), Some(10), "the oldest went first");
        b.remember("", failure(1, "t"));
        assert!(!b.failures.contains_key(""));
    }
}
