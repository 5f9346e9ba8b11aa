use proptest::prelude::*;

use hwsched_proto::v1::{ExecutionResult, TaskStatus};

use super::*;

fn ended(category: FailureCategory) -> Ended {
    Ended { category, bad_input: false, memory_mb: 512, memory_peak_mb: 512 }
}

fn retried(d: &Decision) -> Option<(Spent, Option<i64>, bool)> {
    match d {
        Decision::Retry { spent, memory_mb, exclude_worker, .. } => Some((*spent, *memory_mb, *exclude_worker)),
        Decision::GiveUp { .. } => None,
    }
}

#[test]
fn a_test_failure_spends_an_attempt_and_goes_elsewhere() {
    let d = decide(ended(FailureCategory::TestFailed), Spent::default(), Retry::default(), 3, 0);
    assert_eq!(retried(&d), Some((Spent { failures: 1, ..Default::default() }, None, false)));
    let last =
        decide(ended(FailureCategory::TestFailed), Spent { failures: 2, ..Default::default() }, Retry::default(), 3, 0);
    assert!(matches!(last, Decision::GiveUp { ref why, .. } if why.contains("3 of 3")), "{last:?}");
    let off = Retry { retry_test_failures: false, ..Retry::default() };
    assert!(retried(&decide(ended(FailureCategory::Signaled), Spent::default(), off, 3, 0)).is_none());
}

#[test]
fn out_of_memory_asks_for_more_memory_up_to_the_cap_and_the_fleet() {
    let p = Retry::default();
    let d = decide(ended(FailureCategory::OutOfMemory), Spent::default(), p, 5, 0);
    assert_eq!(retried(&d).and_then(|r| r.1), Some(768));
    let capped = Retry { oom_memory_cap_mb: 600, ..p };
    assert_eq!(
        retried(&decide(ended(FailureCategory::OutOfMemory), Spent::default(), capped, 5, 0)).and_then(|r| r.1),
        Some(600)
    );
    // the biggest worker has 700 MB: ask for that, not more
    assert_eq!(
        retried(&decide(ended(FailureCategory::OutOfMemory), Spent::default(), p, 5, 700)).and_then(|r| r.1),
        Some(700)
    );
    // already at the biggest worker: no retry that could do better
    let at_top = Ended { memory_mb: 700, ..ended(FailureCategory::OutOfMemory) };
    assert!(matches!(decide(at_top, Spent::default(), p, 5, 700), Decision::GiveUp { .. }));
    // asked for nothing: grows from its peak
    let none = Ended { memory_mb: 0, memory_peak_mb: 100, ..ended(FailureCategory::OutOfMemory) };
    assert_eq!(retried(&decide(none, Spent::default(), p, 5, 0)).and_then(|r| r.1), Some(150));
    // factor 1: the same memory again
    let same = Retry { oom_memory_factor: 1.0, ..p };
    assert_eq!(
        retried(&decide(ended(FailureCategory::OutOfMemory), Spent::default(), same, 5, 0)).map(|r| r.1),
        Some(None)
    );
}

#[test]
fn a_timeout_is_retried_as_often_as_the_policy_says() {
    let p = Retry::default();
    let first = decide(ended(FailureCategory::Timeout), Spent::default(), p, 5, 0);
    let spent = retried(&first).expect("retried once").0;
    assert_eq!(spent, Spent { failures: 1, timeouts: 1, losses: 0 });
    assert!(matches!(decide(ended(FailureCategory::Timeout), spent, p, 5, 0), Decision::GiveUp { .. }));
    let none = Retry { timeout_retries: 0, ..p };
    assert!(matches!(decide(ended(FailureCategory::Timeout), Spent::default(), none, 5, 0), Decision::GiveUp { .. }));
}

#[test]
fn losses_do_not_spend_attempts_and_a_refusal_excludes_the_worker() {
    let p = Retry::default();
    for c in [FailureCategory::WorkerLost, FailureCategory::Infrastructure, FailureCategory::GpuFault] {
        let d = decide(ended(c), Spent { failures: 2, ..Default::default() }, p, 3, 0);
        assert_eq!(retried(&d), Some((Spent { failures: 2, losses: 1, timeouts: 0 }, None, false)), "{c:?}");
    }
    let refused = decide(ended(FailureCategory::Refused), Spent::default(), p, 3, 0);
    assert_eq!(retried(&refused).map(|r| r.2), Some(true));
    let spent = Spent { losses: 3, ..Default::default() };
    assert!(matches!(decide(ended(FailureCategory::Infrastructure), spent, p, 3, 0), Decision::GiveUp { .. }));
}

#[test]
fn cancelled_and_bad_input_end_the_task() {
    let p = Retry::default();
    assert!(matches!(decide(ended(FailureCategory::Cancelled), Spent::default(), p, 3, 0), Decision::GiveUp { .. }));
    let bad = Ended { bad_input: true, ..ended(FailureCategory::Infrastructure) };
    assert!(matches!(decide(bad, Spent::default(), p, 3, 0), Decision::GiveUp { .. }));
}

#[test]
fn a_task_overrides_only_the_fields_it_sets() {
    let task = RetryPolicy { timeout_retries: Some(0), oom_memory_factor: Some(40.0), ..Default::default() };
    let r = Retry::default().with(Some(&task));
    assert_eq!(r, Retry { timeout_retries: 0, oom_memory_factor: MAX_OOM_FACTOR, ..Retry::default() });
    assert!(Retry::check(&task).is_err(), "out of range is refused at submission");
    assert!(Retry::check(&RetryPolicy { oom_memory_cap_mb: Some(-1), ..Default::default() }).is_err());
    assert!(Retry::check(&RetryPolicy { oom_memory_factor: Some(2.0), ..Default::default() }).is_ok());
}

#[test]
fn an_old_monitors_result_gets_a_category_from_its_status() {
    let res = |status: TaskStatus| ExecutionResult { status: status as i32, ..Default::default() };
    assert_eq!(category(&res(TaskStatus::Failed)), FailureCategory::TestFailed);
    assert_eq!(category(&res(TaskStatus::TimedOut)), FailureCategory::Timeout);
    assert_eq!(category(&res(TaskStatus::Error)), FailureCategory::Infrastructure);
    assert_eq!(category(&res(TaskStatus::Succeeded)), FailureCategory::Unspecified);
    let oom = ExecutionResult { category: FailureCategory::OutOfMemory as i32, ..res(TaskStatus::Failed) };
    assert_eq!(category(&oom), FailureCategory::OutOfMemory);
}

#[test]
fn the_global_policy_parses_and_prints_the_same_fields() {
    let r: Retry = "timeout_retries=0, oom_memory_factor=2".parse().expect("parses");
    assert_eq!(r, Retry { timeout_retries: 0, oom_memory_factor: 2.0, ..Retry::default() });
    assert_eq!(r.to_string().parse::<Retry>(), Ok(r), "round trip");
    assert!("oom_memory_factor=0.5".parse::<Retry>().is_err());
    assert!("retries=2".parse::<Retry>().is_err());
    assert!("timeout_retries=-1".parse::<Retry>().is_err());
}

fn any_category() -> impl Strategy<Value = FailureCategory> {
    (0i32..=9).prop_map(|v| FailureCategory::try_from(v).unwrap_or_default())
}

proptest! {
    /// Every task ends: attempts counted against max_attempts never pass it,
    /// losses never pass their bound, and memory never shrinks.
    #[test]
    fn any_sequence_of_failures_ends_within_its_bounds(
        cats in proptest::collection::vec(any_category(), 1..40),
        max_attempts in 1u32..6,
        infra in 0u32..5,
        timeouts in 0u32..3,
        factor in 1.0f64..4.0,
    ) {
        let p = Retry { infrastructure_retries: infra, timeout_retries: timeouts, oom_memory_factor: factor, ..Retry::default() };
        let mut spent = Spent::default();
        let mut memory = 256i64;
        let mut ended_at = None;
        for (i, c) in cats.iter().enumerate() {
            let e = Ended { category: *c, bad_input: false, memory_mb: memory, memory_peak_mb: memory as u64 };
            match decide(e, spent, p, max_attempts, 4096) {
                Decision::Retry { spent: s, memory_mb, .. } => {
                    prop_assert!(s.failures < max_attempts);
                    prop_assert!(s.losses <= infra);
                    prop_assert!(s.timeouts <= timeouts);
                    prop_assert!(s.failures + s.losses > spent.failures + spent.losses, "each retry spends something");
                    if let Some(m) = memory_mb {
                        prop_assert!(m > memory && m <= 4096);
                        memory = m;
                    }
                    spent = s;
                }
                Decision::GiveUp { .. } => { ended_at = Some(i); break; }
            }
        }
        prop_assert!(ended_at.is_some() || cats.len() < (max_attempts + infra + 1) as usize);
    }
}
