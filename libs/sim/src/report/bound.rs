//! The class-aware lower bound on the makespan of any schedule of a trace
//! (documented in docs/SIMULATOR.md, "Lower bound").
//!
//! Two terms, the larger wins:
//! - critical path: a task ends no sooner than its arrival, or the joining of
//!   the first worker able to run it, plus its runtime there;
//! - capacity: for a set S of hardware classes, the tasks that can run only on
//!   classes of S must be run by S's slots. The work of those arriving from
//!   time t on (each at its fastest runtime) needs the earliest T with
//!   ∫_t^T slots_S(τ) dτ ≥ work, where a worker's slots count only while it is
//!   in service. The sets tried are each task's set of feasible classes, their
//!   pairwise unions and the whole fleet.
//!
//! Failures, waits, throttling, lost attempts and slower hardware only add to
//! both (assuming each task ends by succeeding once: a task that fails for good
//! can end sooner).

use std::collections::{BTreeMap, BTreeSet};

use hwsched_placement::fit::fits_ever;

use crate::trace::{TaskLine, Trace, WorkerLine};

/// A set of hardware classes, as a bit mask over the fleet's classes.
type Mask = u64;

/// What the bound needs of one task.
#[derive(Debug)]
struct Need {
    arrival: f64,
    /// Its fastest runtime on any worker it fits.
    fastest: f64,
    /// The classes it can run on.
    classes: Mask,
}

/// A lower bound on the makespan (first arrival to last end) of any schedule
/// of the trace, s: see the module's documentation.
pub fn lower_bound(trace: &Trace) -> f64 {
    let classes: BTreeMap<&str, usize> = trace
        .workers
        .iter()
        .map(|w| w.capabilities.hardware_class.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (c, i))
        .collect();
    let mut needs = Vec::new();
    let mut critical: f64 = 0.0;
    for t in &trace.tasks {
        if let Some((need, end)) = need_of(t, trace, &classes) {
            critical = critical.max(end);
            needs.push(need);
        }
    }
    needs.sort_by(|a, b| a.arrival.total_cmp(&b.arrival));
    let first = needs.first().map_or(0.0, |n| n.arrival);
    let mut spread: f64 = 0.0;
    for set in sets(&needs, classes.len()) {
        let capacity = Capacity::of(trace.workers.iter().filter(|w| in_set(set, &classes, w)));
        let mut work = 0.0;
        for n in needs.iter().rev().filter(|n| n.classes & !set == 0) {
            work += n.fastest;
            if let Some(end) = capacity.finish(n.arrival, work) {
                spread = spread.max(end);
            }
        }
    }
    (critical.max(spread) - first).max(0.0)
}

fn in_set(set: Mask, classes: &BTreeMap<&str, usize>, w: &WorkerLine) -> bool {
    classes.get(w.capabilities.hardware_class.as_str()).is_some_and(|i| set & (1 << i) != 0)
}

/// The task's need, and the soonest it can end (critical path); None when no
/// worker of the fleet can run it.
fn need_of(t: &TaskLine, trace: &Trace, classes: &BTreeMap<&str, usize>) -> Option<(Need, f64)> {
    let mut need = Need { arrival: t.arrival_s, fastest: f64::INFINITY, classes: 0 };
    let (mut end, mut end_ignoring_leave) = (f64::INFINITY, f64::INFINITY);
    for w in trace.workers.iter().filter(|w| fits_ever(&t.request, &w.capabilities)) {
        let class = w.capabilities.hardware_class.as_str();
        let Some(r) = t.runtime_s.get(class).copied() else { continue };
        need.fastest = need.fastest.min(r);
        need.classes |= classes.get(class).map_or(0, |i| 1 << i);
        let done = t.arrival_s.max(w.joins_at()) + r;
        end_ignoring_leave = end_ignoring_leave.min(done);
        if done <= w.leaves_at() {
            end = end.min(done);
        }
    }
    need.fastest.is_finite().then(|| (need, if end.is_finite() { end } else { end_ignoring_leave }))
}

/// The class sets tried: each task's feasible set, pairwise unions of those
/// and the whole fleet (only the whole fleet past 64 classes).
fn sets(needs: &[Need], n_classes: usize) -> BTreeSet<Mask> {
    if n_classes > 64 {
        return [Mask::MAX].into();
    }
    let distinct: Vec<Mask> = needs.iter().map(|n| n.classes).collect::<BTreeSet<_>>().into_iter().collect();
    let mut out: BTreeSet<Mask> = distinct.iter().copied().collect();
    for (i, a) in distinct.iter().enumerate() {
        for b in &distinct[i + 1..] {
            out.insert(a | b);
        }
    }
    out.insert(if n_classes == 64 { Mask::MAX } else { (1 << n_classes) - 1 });
    out
}

/// The slots of some workers over time: a step function.
#[derive(Debug)]
struct Capacity {
    /// (from, slots until the next step, slot-seconds before `from`).
    steps: Vec<(f64, f64, f64)>,
}

impl Capacity {
    fn of<'w>(workers: impl Iterator<Item = &'w WorkerLine>) -> Self {
        let mut changes: BTreeMap<i64, f64> = BTreeMap::new();
        for w in workers {
            let slots = f64::from(w.capabilities.slots.max(1));
            *changes.entry(ms(w.joins_at())).or_default() += slots;
            if w.leaves_at().is_finite() {
                *changes.entry(ms(w.leaves_at())).or_default() -= slots;
            }
        }
        let (mut slots, mut before, mut last) = (0.0, 0.0, 0.0);
        let mut steps = Vec::new();
        for (at, delta) in changes {
            let at = at as f64 / 1000.0;
            before += slots * (at - last);
            slots += delta;
            last = at;
            steps.push((at, slots.max(0.0), before));
        }
        Self { steps }
    }

    /// Slot-seconds available from 0 to `t`.
    fn integral(&self, t: f64) -> f64 {
        let i = self.steps.partition_point(|s| s.0 <= t);
        match i.checked_sub(1).map(|i| self.steps[i]) {
            Some((from, slots, before)) => before + slots * (t - from),
            None => 0.0,
        }
    }

    /// The earliest T with `work` slot-seconds between `t` and T (None: never).
    fn finish(&self, t: f64, work: f64) -> Option<f64> {
        let target = self.integral(t) + work;
        // the first step whose start already holds the target, then back one
        let i = self.steps.partition_point(|s| s.2 < target);
        let (from, slots, before) = *self.steps.get(i.checked_sub(1)?)?;
        if slots <= 0.0 {
            return None;
        }
        Some((from + (target - before) / slots).max(t))
    }
}

fn ms(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

#[cfg(test)]
mod tests {
    use super::{lower_bound, Capacity};
    use crate::{
        kinds::{self, TaskSpec, KINDS},
        trace::{Trace, WorkerLine},
    };
    use hwsched_proto::v1::WorkerCapabilities;

    #[test]
    fn tasks_only_a_scarce_class_runs_are_bounded_by_its_slots() {
        // 100 WebGPU tests of 30 s at once; 2 browsers of 2 slots and 10 idle CPU servers
        let web = KINDS.iter().find(|k| k.test_type == "webgpu").expect("kind");
        let tasks = (0..100)
            .map(|n| {
                let spec = TaskSpec {
                    name: "webgpu-matmul",
                    family: "web",
                    id: format!("t{n}"),
                    at: 0.0,
                    producer: "p",
                    priority: 2,
                    factor: 1.0,
                    declared_s: 30.0,
                    flaky: 0.0,
                };
                kinds::task(web, &spec)
            })
            .collect();
        let mut workers: Vec<WorkerLine> = (1..=10).map(|i| kinds::cpu_server(i, vec![])).collect();
        workers.extend((1..=2).map(kinds::browser));
        let mut t = Trace { workers, tasks };
        t.check().expect("valid");
        assert_eq!(lower_bound(&t), 750.0);
        // one browser joins only at 100 s: 2 slots until then, 4 after
        t.workers[11].join_s = Some(100.0);
        assert_eq!(lower_bound(&t), 100.0 + (3_000.0 - 200.0) / 4.0);
    }

    fn w(slots: u32, join_s: Option<f64>, leave_s: Option<f64>) -> WorkerLine {
        WorkerLine {
            capabilities: WorkerCapabilities { slots, ..Default::default() },
            thermal: None,
            background: vec![],
            join_s,
            leave_s,
            faults: vec![],
        }
    }

    #[test]
    fn capacity_integrates_slots_over_presence() {
        // 2 slots from 0, 1 more from 100 to 200
        let ws = [w(2, None, None), w(1, Some(100.0), Some(200.0))];
        let c = Capacity::of(ws.iter());
        assert_eq!(c.integral(50.0), 100.0);
        assert_eq!(c.integral(150.0), 350.0);
        assert_eq!(c.finish(0.0, 200.0), Some(100.0));
        assert_eq!(c.finish(50.0, 250.0), Some(150.0));
        assert_eq!(c.finish(150.0, 350.0), Some(300.0));
        let gone = [w(1, Some(10.0), Some(20.0))];
        let c = Capacity::of(gone.iter());
        assert_eq!(c.finish(0.0, 5.0), Some(15.0));
        assert_eq!(c.finish(0.0, 50.0), None);
    }
}
