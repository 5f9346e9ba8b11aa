use hwsched_proto::v1::{ExecutionResult, TaskStatus};

use super::*;
use crate::state::{
    testutil::{assigned, named, with_class},
    Action, Completion,
};

/// A state with `n` 4-slot workers `w0..` of class "c", probes every second.
fn fleet(n: usize) -> State {
    let mut s = State::default();
    s.quarantine.probe_interval_ms = 1_000;
    for i in 0..n {
        s.register(with_class(&format!("w{i}"), "c", 4), 0);
    }
    s
}

/// Runs task `id` (workload `name`) on `worker` and ends it with `category`.
fn run_on(s: &mut State, id: &str, name: &str, worker: &str, category: FailureCategory, now: i64) -> Completion {
    let mut rec = named(id, name, now);
    rec.state = TaskState::Assigned as i32;
    rec.worker_id = worker.into();
    rec.attempt = 1;
    s.insert(rec, now);
    let status = if category == FailureCategory::Unspecified { TaskStatus::Succeeded } else { TaskStatus::Failed };
    let res = ExecutionResult {
        task_id: id.into(),
        attempt: 1,
        worker_id: worker.into(),
        status: status as i32,
        category: category as i32,
        ..Default::default()
    };
    s.complete(&res, now)
}

/// Every worker runs each of `tests` once; `bad` fails all of them.
fn round(s: &mut State, n: usize, bad: &[&str], tests: &[&str], t: &mut i64) {
    for i in 0..n {
        let w = format!("w{i}");
        for name in tests {
            *t += 1;
            let failed = bad.contains(&w.as_str());
            let cat = if failed { FailureCategory::TestFailed } else { FailureCategory::Unspecified };
            run_on(s, &format!("{w}-{name}-{t}"), name, &w, cat, *t);
        }
    }
}

#[test]
fn a_worker_failing_what_passes_elsewhere_is_quarantined_probed_and_restored() {
    let mut s = fleet(5);
    let mut t = 0;
    round(&mut s, 5, &["w3"], &["a", "b", "c"], &mut t);
    round(&mut s, 5, &["w3"], &["a", "b"], &mut t);
    assert!(s.is_quarantined("w3"), "{:?}", s.verdict("w3"));
    assert_eq!(s.quarantined().len(), 1, "only the bad one");
    assert!(
        matches!(s.take_health_events().as_slice(), [HealthEvent::Quarantined { worker_id, .. }] if worker_id == "w3")
    );
    // no new tasks for it
    for i in 0..30 {
        s.insert(named(&format!("q{i}"), "a", t), t);
    }
    let placed = assigned(&s.plan(t + 1, true));
    assert!(!placed.is_empty() && placed.iter().all(|(_, w)| w != "w3"), "{placed:?}");
    // a probe goes to it once due, and three passing probes in a row bring it back
    let mut passes = 0;
    let mut now = t + 2_000;
    while s.is_quarantined("w3") {
        let probe = s.plan(now, true).into_iter().find_map(|a| match a {
            Action::Assign(r) if r.worker_id == "w3" => Some(r),
            _ => None,
        });
        let probe = probe.expect("a probe is due");
        assert!(is_probe(&probe) && probe.task.as_ref().is_some_and(|t| t.command == ["true"]));
        let ok = ExecutionResult {
            task_id: probe.task.as_ref().map(|t| t.task_id.clone()).unwrap_or_default(),
            attempt: 1,
            worker_id: "w3".into(),
            status: TaskStatus::Succeeded as i32,
            ..Default::default()
        };
        assert!(matches!(s.complete(&ok, now + 10), Completion::Done(_)));
        passes += 1;
        now += 2_000;
    }
    assert_eq!(passes, 3);
    assert!(s
        .take_health_events()
        .iter()
        .any(|e| matches!(e, HealthEvent::Restored { worker_id, .. } if worker_id == "w3")));
}

#[test]
fn a_flaky_test_failing_everywhere_quarantines_no_one() {
    let mut s = fleet(5);
    let mut t = 0;
    // "flaky" fails on every worker, one run in two
    for r in 0..8 {
        for i in 0..5 {
            t += 1;
            let cat = if (r + i) % 2 == 0 { FailureCategory::TestFailed } else { FailureCategory::Unspecified };
            run_on(&mut s, &format!("f{r}-{i}"), "flaky", &format!("w{i}"), cat, t);
        }
    }
    assert!(s.quarantined().is_empty(), "{:?}", s.verdict("w0"));
}

#[test]
fn failures_of_tests_no_one_else_ran_say_nothing_and_the_only_worker_is_never_quarantined() {
    let mut s = fleet(1);
    for i in 0..10 {
        run_on(&mut s, &format!("t{i}"), "broken", "w0", FailureCategory::TestFailed, i);
    }
    assert!(s.quarantined().is_empty() && s.breaker().is_none(), "{:?}", s.verdict("w0"));
    // even a GPU fault does not take the only worker out: the breaker opens instead
    run_on(&mut s, "g", "x", "w0", FailureCategory::GpuFault, 20);
    assert!(s.quarantined().is_empty());
    assert!(s.breaker().is_some_and(|b| b.reason.contains("1 of 1")), "{:?}", s.breaker());
}

#[test]
fn a_gpu_fault_is_evidence_by_itself_and_oom_is_none() {
    let mut s = fleet(5);
    run_on(&mut s, "x", "a", "w1", FailureCategory::OutOfMemory, 1);
    run_on(&mut s, "y", "a", "w1", FailureCategory::OutOfMemory, 2);
    run_on(&mut s, "z", "a", "w1", FailureCategory::OutOfMemory, 3);
    assert!(!s.is_quarantined("w1"), "running out of memory is the test's own");
    run_on(&mut s, "g", "a", "w2", FailureCategory::GpuFault, 4);
    assert!(s.is_quarantined("w2"));
    assert!(s.quarantined()[0].1.reason.contains("GPU fault"));
}

#[test]
fn the_breaker_stops_quarantines_beyond_the_share_and_closes_after_a_window() {
    let mut s = fleet(5);
    s.quarantine.max_fleet_share = 0.4;
    let mut t = 0;
    for _ in 0..3 {
        round(&mut s, 5, &["w0", "w1", "w2"], &["a", "b"], &mut t);
    }
    assert_eq!(s.quarantined().len(), 2, "two of five at most");
    let b = s.breaker().expect("breaker open").clone();
    assert!(b.reason.contains("3 of 5"), "{}", b.reason);
    assert_eq!(b.suspects.len(), 1);
    assert!(s.take_health_events().iter().any(|e| matches!(e, HealthEvent::BreakerOpened { .. })));
    // no more blocked for a window: it closes
    s.plan(t + s.quarantine.window_ms + 1, true);
    assert!(s.breaker().is_none());
    assert!(s.take_health_events().contains(&HealthEvent::BreakerClosed));
}

#[test]
fn an_operator_release_restores_at_once_and_a_failed_probe_starts_the_count_again() {
    let mut s = fleet(5);
    run_on(&mut s, "g", "a", "w2", FailureCategory::GpuFault, 1);
    let probe: Vec<(String, String)> = assigned(&s.plan(2_000, true)).into_iter().filter(|(_, w)| w == "w2").collect();
    assert_eq!(probe.len(), 1, "the retry of g goes elsewhere, the probe to w2");
    let rec = s.record(&probe[0].0).expect("probe record");
    let failed = ExecutionResult {
        task_id: probe[0].0.clone(),
        attempt: 1,
        worker_id: "w2".into(),
        status: TaskStatus::Failed as i32,
        ..Default::default()
    };
    assert!(matches!(s.complete(&failed, 2_100), Completion::Done(r) if r.state() == TaskState::Failed));
    assert_eq!(s.quarantined()[0].1.probes_passed, 0);
    assert!(rec.task.as_ref().is_some_and(|t| t.labels.get(PROBE_LABEL).map(String::as_str) == Some("w2")));
    assert!(s.release_worker("w2"));
    assert!(!s.is_quarantined("w2") && !s.release_worker("w2"));
}

proptest::proptest! {
    /// Whatever fails where, the quarantined never exceed the fleet's and any
    /// class's share (at least one each), and a worker that never failed is
    /// never quarantined.
    #[test]
    fn the_breaker_bounds_quarantines(
        outcomes in proptest::collection::vec((0usize..8, 0usize..3, proptest::bool::ANY), 1..300),
        fleet_share in 0.1f64..0.6,
        class_share in 0.1f64..0.8,
    ) {
        let mut s = State::default();
        s.quarantine.max_fleet_share = fleet_share;
        s.quarantine.max_class_share = class_share;
        for i in 0..8 {
            s.register(with_class(&format!("w{i}"), if i < 5 { "a" } else { "b" }, 4), 0);
        }
        let mut failed_once = std::collections::BTreeSet::new();
        for (t, (w, test, fails)) in outcomes.iter().enumerate() {
            // workers 0 and 5 fail whatever runs there; the rest as drawn
            let w = format!("w{w}");
            let fails = *fails || w == "w0" || w == "w5";
            if fails {
                failed_once.insert(w.clone());
            }
            let cat = if fails { FailureCategory::TestFailed } else { FailureCategory::Unspecified };
            run_on(&mut s, &format!("t{t}"), &format!("test{test}"), &w, cat, t as i64);
            let q = s.quarantined();
            proptest::prop_assert!(q.len() <= QuarantinePolicy::allowed(fleet_share, 8));
            for (class, n) in [("a", 5), ("b", 3)] {
                let in_class = q.iter().filter(|(id, _)| {
                    s.workers.get(*id).and_then(|w| w.caps.as_ref()).is_some_and(|c| c.hardware_class == class)
                }).count();
                proptest::prop_assert!(in_class <= QuarantinePolicy::allowed(class_share, n));
            }
            proptest::prop_assert!(q.iter().all(|(id, _)| failed_once.contains(*id)));
        }
    }
}
