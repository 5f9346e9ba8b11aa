//! Is a worker failing more than the tests it ran would predict? A one-sided
//! test on its recent attempts: each attempt `i` would fail with probability
//! `p_i`, the failure rate of its workload on the *other* workers of its
//! hardware class, smoothed towards the workload's rate on the rest of the
//! fleet (itself smoothed by a Beta(1, 9) prior: 10 % before anything is
//! known; [`peer_failure_rate`]), so its failure count `K` follows a
//! Poisson-binomial distribution under "this worker is as good as the rest".
//! The worker is suspect when `P(K >= k)` for the failures `k` it had is below
//! `alpha` (default 0.001) and `k >= min_failures` (default 3). A flaky test
//! fails everywhere, so its failures raise `p_i` and barely count against
//! the worker it happened on; a worker that fails tests others pass stands out.
//! A GPU fault is evidence by itself (see `state::health`).

/// Prior failures of a workload never seen elsewhere (Beta prior alpha).
pub const PRIOR_FAILURES: f64 = 1.0;
/// Prior successes (Beta prior beta): a prior failure rate of 10 %.
pub const PRIOR_SUCCESSES: f64 = 9.0;

/// How many runs the rest of the fleet's rate counts for against the class peers'.
pub const CLASS_PRIOR_WEIGHT: f64 = 10.0;

/// The failure probability of a workload on a worker, from (runs, failures)
/// of its class peers and of the rest of the fleet: the peers' rate, with the
/// fleet's ([`failure_rate`]) as a prior worth [`CLASS_PRIOR_WEIGHT`] runs.
pub fn peer_failure_rate(peers: (u64, u64), rest: (u64, u64)) -> f64 {
    let prior = failure_rate(rest.1, rest.0);
    (peers.1 as f64 + CLASS_PRIOR_WEIGHT * prior) / (peers.0 as f64 + CLASS_PRIOR_WEIGHT)
}

/// What the test found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Attempts judged.
    pub attempts: usize,
    /// Of them failed.
    pub failures: usize,
    /// Failures expected from the tests' failure rates elsewhere.
    pub expected: f64,
    /// P(at least `failures` failures) if the worker were as good as the rest.
    pub p_value: f64,
}

/// The failure probability of a workload from its `failures` in `runs` on other workers.
pub fn failure_rate(failures: u64, runs: u64) -> f64 {
    (failures as f64 + PRIOR_FAILURES) / (runs as f64 + PRIOR_FAILURES + PRIOR_SUCCESSES)
}

/// P(K >= k) where K is the number of successes of independent trials with
/// probabilities `ps` (exact, O(n·k)).
pub fn tail(ps: &[f64], k: usize) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > ps.len() {
        return 0.0;
    }
    // dist[j] = P(exactly j so far) for j < k; `at_least` collects P(>= k)
    let mut dist = vec![0.0; k];
    dist[0] = 1.0;
    let mut at_least = 0.0;
    for &p in ps {
        let p = p.clamp(0.0, 1.0);
        at_least += dist[k - 1] * p;
        for j in (1..k).rev() {
            dist[j] = dist[j] * (1.0 - p) + dist[j - 1] * p;
        }
        dist[0] *= 1.0 - p;
    }
    at_least.clamp(0.0, 1.0)
}

/// Judges attempts given as (failure probability elsewhere, failed here).
pub fn judge(attempts: &[(f64, bool)]) -> Verdict {
    let ps: Vec<f64> = attempts.iter().map(|a| a.0).collect();
    let failures = attempts.iter().filter(|a| a.1).count();
    Verdict { attempts: attempts.len(), failures, expected: ps.iter().sum(), p_value: tail(&ps, failures) }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_tail_is_exact_on_small_cases() {
        assert_eq!(tail(&[0.5, 0.5], 0), 1.0);
        assert!((tail(&[0.5, 0.5], 1) - 0.75).abs() < 1e-12);
        assert!((tail(&[0.5, 0.5], 2) - 0.25).abs() < 1e-12);
        assert!((tail(&[0.1, 0.2, 0.3], 3) - 0.006).abs() < 1e-12);
        assert_eq!(tail(&[0.9], 2), 0.0);
    }

    #[test]
    fn a_worker_failing_tests_that_pass_elsewhere_stands_out_a_flaky_test_does_not() {
        // 5 of 20 failed, of tests that fail 2 % elsewhere
        let bad: Vec<(f64, bool)> = (0..20).map(|i| (failure_rate(2, 100), i % 4 == 0)).collect();
        let v = judge(&bad);
        assert_eq!(v.failures, 5);
        assert!(v.p_value < 1e-3, "{v:?}");
        // the same 5 of 20, but of a test that fails 30 % of the time everywhere
        let flaky: Vec<(f64, bool)> = (0..20).map(|i| (failure_rate(30, 100), i % 4 == 0)).collect();
        assert!(judge(&flaky).p_value > 0.3, "{:?}", judge(&flaky));
        // an unknown workload starts at the prior
        assert!((failure_rate(0, 0) - 0.1).abs() < 1e-12);
    }

    proptest! {
        /// The tail is a probability, falls as k grows, and rises with any p.
        #[test]
        fn the_tail_is_monotone(ps in proptest::collection::vec(0.0f64..1.0, 0..30), k in 0usize..31, bump in 0.0f64..0.5) {
            let t = tail(&ps, k);
            prop_assert!((0.0..=1.0).contains(&t));
            prop_assert!(tail(&ps, k + 1) <= t + 1e-12);
            if let Some(first) = ps.first() {
                let mut higher = ps.clone();
                higher[0] = (first + bump).min(1.0);
                prop_assert!(tail(&higher, k) + 1e-12 >= t);
            }
        }
    }
}
