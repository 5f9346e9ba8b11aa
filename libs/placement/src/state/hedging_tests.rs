use hwsched_proto::v1::{ExecutionResult, FailureCategory, TaskStatus};

use super::*;
use crate::{
    hedge::HedgePolicy,
    state::testutil::{assigned, caps, hb, hedged, queued, result},
};

/// Two one-slot workers `a` and `b`; copies after 1.5x the expectation, 1 s at least, any share.
fn pair() -> State {
    let mut s = State { hedge: HedgePolicy { share: 1.0, factor: 1.5, min_after_ms: 1_000 }, ..Default::default() };
    s.register(caps("a", 8, 1), 0);
    s.register(caps("b", 8, 1), 0);
    s
}

/// Queues task `id` declared to take `expected_s` and places it (on `a`, the first worker).
fn started(s: &mut State, id: &str, expected_s: f64, now: i64) -> TaskRecord {
    let mut rec = queued(id, 3, now);
    rec.task.as_mut().expect("task").expected_duration_s = expected_s;
    s.insert(rec, now);
    assert_eq!(assigned(&s.plan(now, true)), [(id.to_string(), "a".to_string())]);
    s.record(id).expect("assigned")
}

/// The result of the hedged copy of `rec`.
fn copy_result(rec: &TaskRecord, status: TaskStatus) -> ExecutionResult {
    result(&copy_view(rec).expect("a copy"), status)
}

#[test]
fn a_straggler_gets_one_copy_on_a_free_worker_once_past_its_expectation() {
    let mut s = pair();
    started(&mut s, "t", 10.0, 0);
    assert!(hedged(&s.plan(14_000, true)).is_empty(), "14 s is within 1.5 x 10 s");
    let actions = s.plan(15_500, true);
    assert_eq!(hedged(&actions), [("t".to_string(), "b".to_string())]);
    let rec = s.record("t").expect("t");
    let h = rec.hedge.as_ref().expect("a hedge");
    assert_eq!((rec.attempt, h.attempt, rec.hedges), (1, 2, 1));
    assert!(h.reason.contains("past 15.0 s") && h.reason.contains("expected 10.0 s"), "{}", h.reason);
    assert_eq!(s.workers["b"].reserved.slots, 1, "the copy holds its slot");
    assert!(hedged(&s.plan(60_000, true)).is_empty(), "one copy per task");
}

#[test]
fn no_copy_without_an_expectation_a_free_worker_or_budget_or_for_a_concurrency_key() {
    let mut s = pair();
    started(&mut s, "t", 0.0, 0);
    assert!(hedged(&s.plan(600_000, true)).is_empty(), "nothing expected of it");

    let mut s = pair();
    s.hedge.share = 0.5;
    started(&mut s, "t", 10.0, 0);
    assert!(hedged(&s.plan(20_000, true)).is_empty(), "1 placement x 0.5 is less than one copy");

    let mut s = pair();
    let mut rec = queued("k", 3, 0);
    rec.task.as_mut().expect("task").expected_duration_s = 10.0;
    rec.task.as_mut().expect("task").concurrency_key = "db".into();
    s.insert(rec, 0);
    s.plan(0, true);
    assert!(hedged(&s.plan(20_000, true)).is_empty(), "a copy would break the concurrency limit");

    let mut s = pair();
    started(&mut s, "t", 10.0, 0);
    s.insert(queued("u", 3, 0), 0);
    assert_eq!(assigned(&s.plan(500, true)), [("u".to_string(), "b".to_string())]);
    assert!(hedged(&s.plan(20_000, true)).is_empty(), "no worker has room");
}

#[test]
fn the_first_copy_to_succeed_wins_and_the_other_is_superseded() {
    for copy_wins in [true, false] {
        let mut s = pair();
        started(&mut s, "t", 10.0, 0);
        s.plan(16_000, true);
        let rec = s.record("t").expect("t");
        let res =
            if copy_wins { copy_result(&rec, TaskStatus::Succeeded) } else { result(&rec, TaskStatus::Succeeded) };
        let Completion::Done(done) = s.complete(&res, 17_000) else { panic!("not done") };
        let (winner, loser, loser_attempt) = if copy_wins { ("b", "a", 1) } else { ("a", "b", 2) };
        assert_eq!((done.state(), done.worker_id.as_str(), done.hedge.is_none()), (TaskState::Succeeded, winner, true));
        let superseded: Vec<_> =
            done.history.iter().filter(|h| h.category() == FailureCategory::Superseded).map(|h| &h.worker_id).collect();
        assert_eq!(superseded, [loser]);
        assert_eq!(done.history.len(), 2, "one success, one superseded copy");
        let stops = s.take_hedge_cancels();
        assert_eq!(stops.len(), 1);
        assert_eq!((stops[0].attempt, stops[0].worker_id.as_str()), (loser_attempt, loser));
        assert!(s.take_hedge_cancels().is_empty());
        assert_eq!((s.workers["a"].reserved.slots, s.workers["b"].reserved.slots), (0, 0), "both slots freed");
        let late =
            if copy_wins { result(&rec, TaskStatus::Cancelled) } else { copy_result(&rec, TaskStatus::Cancelled) };
        assert_eq!(s.complete(&late, 18_000), Completion::Stale, "the loser's report changes nothing");
    }
}

#[test]
fn a_failed_copy_leaves_the_other_running_without_spending_an_attempt() {
    let mut s = pair();
    started(&mut s, "t", 10.0, 0);
    s.plan(16_000, true);
    let rec = s.record("t").expect("t");
    let Completion::Continues(on) = s.complete(&result(&rec, TaskStatus::Failed), 17_000) else { panic!("ended") };
    assert_eq!((on.attempt, on.worker_id.as_str(), on.failures, on.hedge.is_none()), (2, "b", 0, true));
    assert_eq!(on.history[0].decision, "its hedged twin, attempt 2 on b, goes on");
    assert_eq!((s.workers["a"].reserved.slots, s.workers["b"].reserved.slots), (0, 1));
    // the survivor's failure is an ordinary failure: retried as attempt 3 (past both)
    let Completion::Retry(q) = s.complete(&result(&on, TaskStatus::Failed), 18_000) else { panic!("not retried") };
    assert_eq!(q.failures, 1);
    s.plan(19_000, true);
    assert_eq!(s.record("t").map(|r| r.attempt), Some(3));
}

#[test]
fn a_copy_lost_with_its_worker_leaves_the_other_running() {
    let mut s = pair();
    started(&mut s, "t", 10.0, 0);
    s.plan(16_000, true);
    s.heartbeat(hb("a", 40.0, false), 30_000);
    // b fell silent at its registration; a reports the task running
    let mut beat = hb("a", 40.0, false);
    beat.running_task_ids = vec!["t".into()];
    s.heartbeat(beat, 31_000);
    let out = s.supervise(31_000, 20_000, 60_000);
    assert!(matches!(out.as_slice(), [Completion::Continues(r)] if r.worker_id == "a" && r.hedge.is_none()), "{out:?}");
    let rec = s.record("t").expect("t");
    assert_eq!(
        rec.history.last().map(|h| (h.category(), h.worker_id.as_str())),
        Some((FailureCategory::WorkerLost, "b"))
    );
    assert!(matches!(s.complete(&result(&rec, TaskStatus::Succeeded), 32_000), Completion::Done(_)));
}

#[test]
fn an_unsent_copy_is_undone_and_never_made_again() {
    let mut s = pair();
    started(&mut s, "t", 10.0, 0);
    s.plan(16_000, true);
    s.unhedge("t", 16_500);
    let rec = s.record("t").expect("t");
    assert_eq!((rec.hedge.is_none(), rec.hedges, s.workers["b"].reserved.slots), (true, 1, 0));
    assert!(hedged(&s.plan(30_000, true)).is_empty());
}

#[test]
fn the_learned_p95_sets_when_an_attempt_straggles() {
    let mut s = pair();
    let mut m = hwsched_model::Model::default();
    for secs in [20.0, 21.0, 22.0, 23.0, 24.0, 40.0] {
        m.observe(&ExecutionResult {
            name: "slow-suite".into(),
            status: TaskStatus::Succeeded as i32,
            duration_s: secs,
            hardware_class: String::new() + "cpu",
            ..Default::default()
        });
    }
    s.model = Some(m);
    s.register(hwsched_proto::v1::WorkerCapabilities { hardware_class: "cpu".into(), ..caps("a", 8, 1) }, 0);
    let mut rec = queued("t", 3, 0);
    rec.task.as_mut().expect("task").name = "slow-suite".into();
    s.insert(rec, 0);
    s.plan(0, true);
    assert_eq!(s.record("t").map(|r| r.worker_id), Some("a".into()));
    assert!(hedged(&s.plan(59_000, true)).is_empty(), "p95 40 s x 1.5 = 60 s");
    let actions = s.plan(60_500, true);
    assert_eq!(hedged(&actions).len(), 1);
    let rec = s.record("t").expect("t");
    assert!(rec.hedge.as_ref().is_some_and(|h| h.reason.contains("p95 of 40.0 s")), "{:?}", rec.hedge);
}

proptest::proptest! {
    /// However results and losses arrive, copies stay within the share of
    /// placements, one per task, and every slot held is a live copy's.
    #[test]
    fn hedging_stays_bounded_and_reservations_match_live_copies(
        share in 0.05f64..1.0,
        steps in proptest::collection::vec((0usize..12, 0u8..4), 1..120),
    ) {
        let mut s = State { hedge: HedgePolicy { share, factor: 1.5, min_after_ms: 1_000 }, ..Default::default() };
        // (a quarantine's probe would hold a slot no task record names)
        s.quarantine.enabled = false;
        for i in 0..4 {
            s.register(caps(&format!("w{i}"), 8, 2), 0);
        }
        for i in 0..12 {
            let mut rec = queued(&format!("t{i}"), 3, 0);
            rec.task.as_mut().expect("task").expected_duration_s = 2.0;
            s.insert(rec, 0);
        }
        let mut now = 0;
        for (task, what) in steps {
            now += 1_500;
            s.plan(now, true);
            let id = format!("t{task}");
            let Some(rec) = s.record(&id).filter(|r| r.state() == TaskState::Assigned) else { continue };
            let res = match what {
                0 => result(&rec, TaskStatus::Succeeded),
                1 => result(&rec, TaskStatus::Failed),
                2 if rec.hedge.is_some() => copy_result(&rec, TaskStatus::Succeeded),
                _ if rec.hedge.is_some() => copy_result(&rec, TaskStatus::Failed),
                _ => continue,
            };
            s.complete(&res, now);
            proptest::prop_assert!(s.hedging.made as f64 <= share * s.placements as f64 + 1e-9);
            let mut copies = std::collections::BTreeMap::<String, u32>::new();
            for i in 0..12 {
                let Some(r) = s.record(&format!("t{i}")).filter(|r| r.state() == TaskState::Assigned) else { continue };
                proptest::prop_assert!(r.hedges <= 1);
                *copies.entry(r.worker_id.clone()).or_default() += 1;
                if let Some(h) = &r.hedge {
                    proptest::prop_assert!(h.worker_id != r.worker_id);
                    *copies.entry(h.worker_id.clone()).or_default() += 1;
                }
            }
            for (id, w) in &s.workers {
                proptest::prop_assert_eq!(w.reserved.slots, copies.get(id).copied().unwrap_or(0), "{}", id);
            }
        }
    }
}
