//! Flaky tests told apart from broken ones by the revision of the code under
//! test. A test is its workload key plus the revision it ran at
//! (`ExecutionResult.revision`): one that both passed and failed at the same
//! revision is flaky; one that passed at A and failed at B may simply be
//! broken by B (a regression), and is not.
//!
//! What counts: passed attempts, and failures on the test's own account
//! (TEST_FAILED, SIGNALED, TIMEOUT). OUT_OF_MEMORY, WORKER_LOST,
//! INFRASTRUCTURE, REFUSED, GPU_FAULT and CANCELLED say nothing about the
//! test's nondeterminism at that revision (the limit asked for, the worker or
//! the platform decided them) and are left out. So are results without a
//! revision (nothing to compare them with) and without a name (every unnamed
//! task shares one workload key).
//!
//! Memory is bounded: the last [`REVISION_WINDOW`] revisions of each test, at
//! most [`MAX_CLASSES`] hardware classes per revision and [`MAX_TESTS`] tests
//! (past it the test seen longest ago is forgotten).

use std::collections::BTreeMap;

use crate::blame::{Blame, Failure};

use hwsched_proto::v1::{
    ExecutionResult, FailureCategory, FlakyOnHardware, FlakyTest, HardwareOutcomes, RevisionOutcomes, TaskStatus,
    TestRevisions,
};

/// Revisions remembered per test: the latest to appear.
pub const REVISION_WINDOW: usize = 20;
/// Tests tracked at most.
pub const MAX_TESTS: usize = 10_000;
/// Hardware classes counted per revision of a test (attempts on more are not).
pub const MAX_CLASSES: usize = 16;

/// How an attempt counts for flakiness: `Some(true)` passed, `Some(false)`
/// failed on the test's own account (`hwsched_proto::failure::category`:
/// test failed, signaled or timed out), `None` not at all.
pub fn counts_as_passed(r: &ExecutionResult) -> Option<bool> {
    match r.status() {
        TaskStatus::Succeeded => Some(true),
        // neither a status nor a category: says nothing
        TaskStatus::Unspecified if r.category() == FailureCategory::Unspecified => None,
        _ => matches!(
            hwsched_proto::failure::category(r),
            FailureCategory::TestFailed | FailureCategory::Signaled | FailureCategory::Timeout
        )
        .then_some(false),
    }
}

/// The revisions of every tracked test, by workload key.
#[derive(Debug, Clone)]
pub(crate) struct Flakiness {
    tests: BTreeMap<String, TestRevisions>,
    max_tests: usize,
    /// Failures by worker, and the windows blamed on workers (`crate::blame`).
    blame: Blame,
}

impl Default for Flakiness {
    fn default() -> Self {
        Self { tests: BTreeMap::new(), max_tests: MAX_TESTS, blame: Blame::default() }
    }
}

impl Flakiness {
    /// Goes on from the histories of a snapshot.
    pub(crate) fn from_histories(histories: Vec<TestRevisions>) -> Self {
        let tests = histories.into_iter().map(|t| (t.workload_key.clone(), t)).collect();
        Self { tests, ..Default::default() }
    }

    /// At most `max_tests` tests.
    #[cfg(test)]
    pub(crate) fn with_max_tests(max_tests: usize) -> Self {
        Self { max_tests: max_tests.max(1), ..Default::default() }
    }

    /// Every test's recent revisions, by workload key.
    pub(crate) fn histories(&self) -> impl Iterator<Item = &TestRevisions> {
        self.tests.values()
    }

    /// Counts one result of `workload`. True when this made the test flaky
    /// (its first mixed revision in the window).
    pub(crate) fn observe(&mut self, workload: &str, r: &ExecutionResult) -> bool {
        let Some(passed) = counts_as_passed(r) else { return false };
        if r.revision.is_empty() || r.name.is_empty() || r.hardware_class.is_empty() {
            return false;
        }
        // a failure in a window blamed on its worker is the worker's, not the test's
        let blamed = !passed && self.blame.covers(&r.worker_id, r.finished_at_ms);
        if !self.tests.contains_key(workload) && self.tests.len() >= self.max_tests {
            self.forget_oldest();
        }
        let t = self.tests.entry(workload.to_string()).or_insert_with(|| TestRevisions {
            workload_key: workload.to_string(),
            name: r.name.clone(),
            revisions: Vec::new(),
        });
        let was_flaky = t.revisions.iter().any(mixed);
        let i = match t.revisions.iter().position(|v| v.revision == r.revision) {
            Some(i) => i,
            None => {
                if t.revisions.len() >= REVISION_WINDOW {
                    t.revisions.remove(0);
                }
                t.revisions.push(RevisionOutcomes { revision: r.revision.clone(), ..Default::default() });
                t.revisions.len() - 1
            }
        };
        let v = &mut t.revisions[i];
        v.last_seen_ms = v.last_seen_ms.max(r.finished_at_ms);
        let hw = match v.hardware.iter().position(|h| h.hardware_key == r.hardware_class) {
            Some(j) => &mut v.hardware[j],
            None if v.hardware.len() < MAX_CLASSES => {
                v.hardware.push(HardwareOutcomes { hardware_key: r.hardware_class.clone(), ..Default::default() });
                let last = v.hardware.len() - 1;
                &mut v.hardware[last]
            }
            None => return false,
        };
        if passed {
            hw.passed = hw.passed.saturating_add(1);
        } else if blamed {
            hw.blamed = hw.blamed.saturating_add(1);
        } else {
            hw.failed = hw.failed.saturating_add(1);
        }
        let became = !was_flaky && mixed(v);
        if !passed && !blamed {
            let f = Failure {
                at_ms: r.finished_at_ms,
                workload: workload.to_string(),
                revision: r.revision.clone(),
                hardware: r.hardware_class.clone(),
            };
            self.blame.remember(&r.worker_id, f);
        }
        became
    }

    /// Blames `worker` for its failures that ended from `from_ms` to `to_ms`
    /// (those counted already and those still to come): they leave their
    /// tests' failure counts. Returns how many were counted already.
    pub(crate) fn blame_worker(&mut self, worker: &str, from_ms: i64, to_ms: i64) -> usize {
        let mut moved = 0;
        for f in self.blame.blame(worker, from_ms, to_ms) {
            let hw = self
                .tests
                .get_mut(&f.workload)
                .and_then(|t| t.revisions.iter_mut().find(|v| v.revision == f.revision))
                .and_then(|v| v.hardware.iter_mut().find(|h| h.hardware_key == f.hardware));
            if let Some(hw) = hw.filter(|h| h.failed > 0) {
                hw.failed -= 1;
                hw.blamed = hw.blamed.saturating_add(1);
                moved += 1;
            }
        }
        moved
    }

    /// Forgets the test seen longest ago.
    fn forget_oldest(&mut self) {
        let oldest = self.tests.values().min_by_key(|t| last_seen_ms(t)).map(|t| t.workload_key.clone());
        if let Some(k) = oldest {
            self.tests.remove(&k);
        }
    }

    /// The flaky tests, by workload key.
    pub(crate) fn flaky_tests(&self) -> Vec<FlakyTest> {
        self.tests.values().filter_map(estimate).collect()
    }

    /// The estimate of one test, when flaky.
    pub(crate) fn flaky_test(&self, workload: &str) -> Option<FlakyTest> {
        self.tests.get(workload).and_then(estimate)
    }

    /// Tests tracked.
    pub(crate) fn len(&self) -> usize {
        self.tests.len()
    }
}

/// When a test last ran, ms.
pub(crate) fn last_seen_ms(t: &TestRevisions) -> i64 {
    t.revisions.iter().map(|v| v.last_seen_ms).max().unwrap_or(0)
}

/// Passed and failed attempts at one revision, over all classes.
fn totals(v: &RevisionOutcomes) -> (u64, u64) {
    v.hardware.iter().fold((0, 0), |(p, f), h| (p + u64::from(h.passed), f + u64::from(h.failed)))
}

/// Whether the test both passed and failed at this revision.
fn mixed(v: &RevisionOutcomes) -> bool {
    let (p, f) = totals(v);
    p > 0 && f > 0
}

/// Attempts counted toward one estimate.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    mixed_revisions: u32,
    attempts: u64,
    failures: u64,
    clean_passes: u64,
}

impl Tally {
    /// Adds one class's (or all classes') outcomes at a revision judged
    /// `is_mixed` (over all classes); revisions where it only failed are skipped.
    fn add(&mut self, passed: u64, failed: u64, is_mixed: bool) {
        if is_mixed && passed + failed > 0 {
            self.mixed_revisions += 1;
            self.attempts += passed + failed;
            self.failures += failed;
        } else if failed == 0 {
            self.clean_passes += passed;
        }
    }

    /// The flake rate: the chance that one attempt fails at a revision where
    /// the code is fine, by Laplace's rule of succession (a uniform Beta(1, 1)
    /// prior, its posterior mean):
    ///
    /// ```text
    /// flake_rate = (F + 1) / (N + 2)
    ///   F = failed attempts at the mixed revisions (passed and failed there)
    ///   N = all attempts at the mixed revisions + passed attempts at the
    ///       revisions where the test only passed
    /// ```
    ///
    /// Revisions where the test only failed are left out: broken code and bad
    /// luck look alike there. The passes at clean revisions matter: a test
    /// retried until it passes shows about one failure per pass at its mixed
    /// revisions whatever its real rate, and the revisions where it passed at
    /// once are what say how rarely it fails.
    fn rate(&self) -> f64 {
        (self.failures as f64 + 1.0) / ((self.attempts + self.clean_passes) as f64 + 2.0)
    }
}

/// The estimate of a test with at least one mixed revision in its window.
fn estimate(t: &TestRevisions) -> Option<FlakyTest> {
    let last_mixed = t.revisions.iter().rev().find(|v| mixed(v))?;
    let mut all = Tally::default();
    let mut by_class: BTreeMap<&str, Tally> = BTreeMap::new();
    for v in &t.revisions {
        let is_mixed = mixed(v);
        let (p, f) = totals(v);
        all.add(p, f, is_mixed);
        for h in &v.hardware {
            by_class.entry(&h.hardware_key).or_default().add(u64::from(h.passed), u64::from(h.failed), is_mixed);
        }
    }
    let by_hardware = by_class
        .into_iter()
        .filter(|(_, c)| c.attempts + c.clean_passes > 0)
        .map(|(k, c)| FlakyOnHardware {
            hardware_key: k.to_string(),
            mixed_revisions: c.mixed_revisions,
            attempts: c.attempts,
            failures: c.failures,
            clean_passes: c.clean_passes,
            flake_rate: c.rate(),
        })
        .collect();
    Some(FlakyTest {
        workload_key: t.workload_key.clone(),
        name: t.name.clone(),
        mixed_revisions: all.mixed_revisions,
        revisions: u32::try_from(t.revisions.len()).unwrap_or(u32::MAX),
        attempts: all.attempts,
        failures: all.failures,
        clean_passes: all.clean_passes,
        flake_rate: all.rate(),
        by_hardware,
        last_revision: last_mixed.revision.clone(),
        last_seen_ms: last_seen_ms(t),
    })
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::{ExecutionResult, FailureCategory, FlakyTest, TaskStatus};
    use proptest::prelude::*;

    use crate::flaky::{counts_as_passed, Flakiness, REVISION_WINDOW};

    /// An attempt of test `name` on `hw` at `rev`.
    fn at(name: &str, hw: &str, rev: &str, status: TaskStatus, category: FailureCategory) -> ExecutionResult {
        ExecutionResult {
            name: name.into(),
            hardware_class: hw.into(),
            revision: rev.into(),
            status: status as i32,
            category: category as i32,
            ..Default::default()
        }
    }

    fn pass(name: &str, hw: &str, rev: &str) -> ExecutionResult {
        at(name, hw, rev, TaskStatus::Succeeded, FailureCategory::Unspecified)
    }

    fn fail(name: &str, hw: &str, rev: &str) -> ExecutionResult {
        at(name, hw, rev, TaskStatus::Failed, FailureCategory::TestFailed)
    }

    fn feed(f: &mut Flakiness, results: &[ExecutionResult]) -> usize {
        results.iter().filter(|r| f.observe(&r.name, r)).count()
    }

    #[test]
    fn passed_and_failed_at_one_revision_is_flaky_with_the_laplace_estimate() {
        let mut f = Flakiness::default();
        // r1: failed then passed on retry; r2, r3: passed at once; r4: only failed (broken?)
        let became =
            feed(&mut f, &[fail("t", "hw", "r1"), pass("t", "hw", "r1"), pass("t", "hw", "r2"), pass("t", "hw", "r3")]);
        assert_eq!(became, 1, "one change to flaky, at the first mixed revision");
        feed(&mut f, &[fail("t", "hw", "r4"), fail("t", "hw", "r4")]);
        let t = f.flaky_test("t").expect("flaky");
        assert_eq!((t.mixed_revisions, t.revisions, t.attempts, t.failures, t.clean_passes), (1, 4, 2, 1, 2));
        assert_eq!(t.last_revision, "r1");
        // (F + 1) / (N + 2) = (1 + 1) / (2 + 2 + 2); r4's failures are left out
        assert!((t.flake_rate - 2.0 / 6.0).abs() < 1e-12, "{t:?}");
        assert_eq!(t.by_hardware.len(), 1);
        assert!((t.by_hardware[0].flake_rate - t.flake_rate).abs() < 1e-12);
    }

    #[test]
    fn passed_at_one_revision_and_failed_at_the_next_is_a_regression_not_a_flake() {
        let mut f = Flakiness::default();
        let became =
            feed(&mut f, &[pass("t", "hw", "a"), pass("t", "hw", "a"), fail("t", "hw", "b"), fail("t", "hw", "b")]);
        assert_eq!(became, 0);
        assert!(f.flaky_test("t").is_none());
        assert!(f.flaky_tests().is_empty());
        assert_eq!(f.len(), 1, "tracked all the same");
    }

    #[test]
    fn only_the_tests_own_failures_count() {
        use FailureCategory as C;
        let own = [C::TestFailed, C::Signaled, C::Timeout];
        let not_own =
            [C::OutOfMemory, C::WorkerLost, C::Infrastructure, C::Refused, C::GpuFault, C::Cancelled, C::Superseded];
        for c in own {
            assert_eq!(counts_as_passed(&at("t", "hw", "r", TaskStatus::Failed, c)), Some(false), "{c:?}");
        }
        for c in not_own {
            let mut f = Flakiness::default();
            feed(&mut f, &[pass("t", "hw", "r"), at("t", "hw", "r", TaskStatus::Failed, c)]);
            assert!(f.flaky_test("t").is_none(), "{c:?} made it flaky");
        }
        // results from before categories: FAILED and TIMED_OUT are the test's, ERROR is not
        let legacy = |s| counts_as_passed(&at("t", "hw", "r", s, C::Unspecified));
        assert_eq!(legacy(TaskStatus::Failed), Some(false));
        assert_eq!(legacy(TaskStatus::TimedOut), Some(false));
        assert_eq!(legacy(TaskStatus::Error), None);
        assert_eq!(legacy(TaskStatus::Cancelled), None);
    }

    #[test]
    fn results_without_a_revision_or_a_name_do_not_feed_flakiness() {
        let mut f = Flakiness::default();
        feed(&mut f, &[pass("t", "hw", ""), fail("t", "hw", ""), pass("", "hw", "r"), fail("", "hw", "r")]);
        assert_eq!(f.len(), 0);
        assert!(f.flaky_tests().is_empty());
    }

    #[test]
    fn the_rate_is_split_by_hardware_class() {
        let mut f = Flakiness::default();
        // at each revision it fails on "bad" and passes on its retry on "good"
        for i in 0..5 {
            let rev = format!("r{i}");
            feed(&mut f, &[fail("t", "bad", &rev), pass("t", "good", &rev)]);
        }
        let t = f.flaky_test("t").expect("flaky");
        assert_eq!((t.mixed_revisions, t.attempts, t.failures), (5, 10, 5));
        let rate = |hw: &str| t.by_hardware.iter().find(|h| h.hardware_key == hw).map(|h| h.flake_rate);
        // bad: (5 + 1) / (5 + 2); good: (0 + 1) / (5 + 2)
        assert!((rate("bad").unwrap_or(0.0) - 6.0 / 7.0).abs() < 1e-12, "{t:?}");
        assert!((rate("good").unwrap_or(1.0) - 1.0 / 7.0).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn a_mixed_revision_is_forgotten_once_out_of_the_window() {
        let mut f = Flakiness::default();
        feed(&mut f, &[fail("t", "hw", "old"), pass("t", "hw", "old")]);
        for i in 0..REVISION_WINDOW - 1 {
            feed(&mut f, &[pass("t", "hw", &format!("r{i}"))]);
        }
        assert!(f.flaky_test("t").is_some(), "still in the window");
        feed(&mut f, &[pass("t", "hw", "newest")]);
        assert!(f.flaky_test("t").is_none(), "the mixed revision fell out of the window");
        assert_eq!(f.histories().next().map(|t| t.revisions.len()), Some(REVISION_WINDOW));
    }

    #[test]
    fn past_the_cap_the_test_seen_longest_ago_is_forgotten() {
        let mut f = Flakiness::with_max_tests(3);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut r = pass(name, "hw", "r");
            r.finished_at_ms = i as i64;
            // "a" runs again later than everyone: "b" is then the oldest
            let mut again = pass("a", "hw", "r");
            again.finished_at_ms = 100;
            feed(&mut f, &[r]);
            if *name == "c" {
                feed(&mut f, &[again]);
            }
        }
        let kept: Vec<&str> = f.histories().map(|t| t.workload_key.as_str()).collect();
        assert_eq!(kept, ["a", "c", "d"]);
    }

    /// One attempt: (test, class, revision, outcome) with outcome 0 passed,
    /// 1 failed on its own account, 2 failed otherwise (out of memory).
    fn attempt() -> impl Strategy<Value = (u8, u8, u8, u8)> {
        (0u8..3, 0u8..3, 0u8..6, 0u8..3)
    }

    fn result_of((t, hw, rev, outcome): (u8, u8, u8, u8)) -> ExecutionResult {
        let (name, hw, rev) = (format!("t{t}"), format!("hw{hw}"), format!("r{rev}"));
        match outcome {
            0 => pass(&name, &hw, &rev),
            1 => fail(&name, &hw, &rev),
            _ => at(&name, &hw, &rev, TaskStatus::Failed, FailureCategory::OutOfMemory),
        }
    }

    proptest! {
        /// Flaky exactly when some revision saw a pass and an own failure;
        /// the counts add up, the rate is a share strictly inside (0, 1) and
        /// the order of the results does not matter.
        #[test]
        fn flaky_means_passed_and_failed_at_one_revision(attempts in prop::collection::vec(attempt(), 0..60), seed in any::<u64>()) {
            let results: Vec<ExecutionResult> = attempts.iter().copied().map(result_of).collect();
            let mut f = Flakiness::default();
            feed(&mut f, &results);
            for t in 0..3u8 {
                let name = format!("t{t}");
                let expected = (0..6u8).any(|rev| {
                    let seen = |o: u8| attempts.iter().any(|a| (a.0, a.2, a.3) == (t, rev, o));
                    seen(0) && seen(1)
                });
                let got = f.flaky_test(&name);
                prop_assert_eq!(got.is_some(), expected, "{}", name);
                if let Some(g) = got {
                    prop_assert!(g.failures < g.attempts && g.mixed_revisions >= 1);
                    prop_assert!(g.flake_rate > 0.0 && g.flake_rate < 1.0);
                    prop_assert_eq!(g.by_hardware.iter().map(|h| h.attempts).sum::<u64>(), g.attempts);
                    prop_assert_eq!(g.by_hardware.iter().map(|h| h.failures).sum::<u64>(), g.failures);
                    prop_assert_eq!(g.by_hardware.iter().map(|h| h.clean_passes).sum::<u64>(), g.clean_passes);
                }
            }
            // the same results in another order: the same estimates
            let mut shuffled = results.clone();
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut g = Flakiness::default();
            feed(&mut g, &shuffled);
            // (but for which mixed revision came last)
            let strip = |f: &Flakiness| {
                f.flaky_tests().into_iter().map(|t| FlakyTest { last_revision: String::new(), ..t }).collect::<Vec<_>>()
            };
            prop_assert_eq!(strip(&f), strip(&g));
        }

        /// Memory stays bounded whatever arrives: the window per test, the cap on tests.
        #[test]
        fn memory_is_bounded(attempts in prop::collection::vec((0u8..20, 0u8..3, 0u8..60, 0u8..2), 0..300)) {
            let mut f = Flakiness::with_max_tests(8);
            for a in attempts {
                let mut r = result_of(a);
                r.finished_at_ms = i64::from(a.2);
                f.observe(&r.name.clone(), &r);
                prop_assert!(f.len() <= 8);
            }
            for t in f.histories() {
                prop_assert!(t.revisions.len() <= REVISION_WINDOW);
            }
        }
    }

    #[test]
    fn failures_blamed_on_a_quarantined_worker_leave_the_test_s_flakiness() {
        let on = |mut r: ExecutionResult, worker: &str, at: i64| {
            r.worker_id = worker.into();
            r.finished_at_ms = at;
            r
        };
        let mut f = Flakiness::default();
        // the bad worker fails t at r1 (t passes elsewhere): t looks flaky
        feed(&mut f, &[on(fail("t", "hw", "r1"), "bad", 10), on(pass("t", "hw", "r1"), "good", 11)]);
        assert!(f.flaky_test("t").is_some());
        assert_eq!(f.blame_worker("bad", 0, 20), 1);
        assert!(f.flaky_test("t").is_none(), "its only failure was the worker's");
        // a failure in the window learned of late is the worker's too; one after it is the test's
        feed(&mut f, &[on(fail("u", "hw", "r1"), "bad", 15), on(pass("u", "hw", "r1"), "good", 16)]);
        assert!(f.flaky_test("u").is_none());
        feed(&mut f, &[on(fail("u", "hw", "r1"), "bad", 30)]);
        assert!(f.flaky_test("u").is_some());
        let hw = &f.tests["t"].revisions[0].hardware[0];
        assert_eq!((hw.passed, hw.failed, hw.blamed), (1, 0, 1));
        assert_eq!(f.blame_worker("bad", 0, 20), 0, "nothing twice");
    }
}
