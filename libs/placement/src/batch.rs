//! Batch-aware ordering of many waiting tasks: the list-scheduling heuristics
//! for independent tasks on heterogeneous machines compared by Braun et al.
//! (2001): min-min, max-min and sufferage. Given each task's runtime estimate
//! on each group of interchangeable machines (workers of one shape, each slot
//! a machine) and when each slot is free, it builds a virtual schedule and
//! returns the order in which the tasks were assigned in it. The placement
//! pass then walks the waiting tasks in that order, so the fast scarce
//! hardware goes to the tasks that gain most from it (sufferage) or the short
//! tasks go first (min-min). Pure, deterministic, O(n·c·g) for n tasks in c
//! classes of equal estimates and g groups.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    fmt,
    str::FromStr,
};

/// Which task the virtual schedule assigns next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Heuristic {
    /// The task that would lose most if it did not get its best group: the
    /// difference between its second-best and best completion time (a task
    /// that only one group can run goes first among equals by min-min).
    Sufferage,
    /// The task with the soonest possible completion (short tasks first: the
    /// least mean completion on one machine type). The default: it measured
    /// best on mean completion over the simulator's families (BENCHMARKS.md).
    #[default]
    MinMin,
    /// The task whose soonest possible completion is latest (long tasks
    /// first: the makespan).
    MaxMin,
}

impl Heuristic {
    /// Every heuristic.
    pub const ALL: [Heuristic; 3] = [Heuristic::MinMin, Heuristic::Sufferage, Heuristic::MaxMin];

    /// Name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Heuristic::Sufferage => "sufferage",
            Heuristic::MinMin => "min-min",
            Heuristic::MaxMin => "max-min",
        }
    }
}

impl fmt::Display for Heuristic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Heuristic {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Heuristic::ALL.into_iter().find(|h| h.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Heuristic::ALL.iter().map(|h| h.name()).collect();
            format!("unknown batch heuristic {s:?} (one of: {})", names.join(", "))
        })
    }
}

/// The batch pass's setting: a heuristic, or off ("off": queue order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSetting(pub Option<Heuristic>);

impl Default for BatchSetting {
    fn default() -> Self {
        Self(Some(Heuristic::default()))
    }
}

impl fmt::Display for BatchSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.map_or("off", Heuristic::name))
    }
}

impl FromStr for BatchSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "off" {
            Ok(Self(None))
        } else {
            s.parse().map(|h| Self(Some(h))).map_err(|e| format!("{e}, or off"))
        }
    }
}

/// A ready time, ordered by `total_cmp` (a min-heap holds `Reverse` of it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(f64);

impl Eq for At {}

impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for At {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Interchangeable machines: the slots of the workers of one shape.
#[derive(Debug, Clone, Default)]
pub struct Group {
    ready: BinaryHeap<Reverse<At>>,
}

impl Group {
    /// A group whose slots are free in `ready_s` seconds each (0: now).
    pub fn new(ready_s: impl IntoIterator<Item = f64>) -> Self {
        Self { ready: ready_s.into_iter().map(|r| Reverse(At(r.max(0.0)))).collect() }
    }

    /// When its soonest slot is free, s (`None`: it has no slot).
    pub fn soonest(&self) -> Option<f64> {
        self.ready.peek().map(|r| r.0 .0)
    }

    /// Takes its soonest slot for `runtime_s`; returns when the task starts.
    fn take(&mut self, runtime_s: f64) -> Option<f64> {
        let Reverse(At(start)) = self.ready.pop()?;
        self.ready.push(Reverse(At(start + runtime_s.max(0.0))));
        Some(start)
    }
}

/// One task assigned in the virtual schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assigned {
    /// Index of the task in the input.
    pub task: usize,
    /// The group it was assigned to.
    pub group: usize,
    /// When it would start there, s from now.
    pub start_s: f64,
}

/// A task's best and second-best completion over the groups.
#[derive(Debug, Clone, Copy)]
struct Best {
    completion: f64,
    group: usize,
    second: f64,
    second_group: usize,
}

fn best_of(etc: &[Option<f64>], groups: &[Group]) -> Option<Best> {
    let mut b: Option<Best> = None;
    for (g, (runtime, group)) in etc.iter().zip(groups).enumerate() {
        let (Some(r), Some(ready)) = (runtime, group.soonest()) else { continue };
        let c = ready + r;
        b = Some(match b {
            None => Best { completion: c, group: g, second: f64::INFINITY, second_group: usize::MAX },
            Some(x) if c < x.completion => {
                Best { completion: c, group: g, second: x.completion, second_group: x.group }
            }
            Some(x) if c < x.second => Best { second: c, second_group: g, ..x },
            Some(x) => x,
        });
    }
    b
}

/// Builds the virtual schedule of `etc` (per task, its runtime estimate on
/// each group; `None`: it cannot run there) on `groups` with `heuristic`, and
/// returns the tasks in the order they were assigned (tasks no group can run
/// are left out). Ties go to the earlier task, so equal tasks keep their order.
///
/// Tasks with the same estimates everywhere are interchangeable (a suite's
/// many runs of one test are): they are scheduled as one class whose earliest
/// task goes next, which gives the same schedule as taking them one by one
/// (the earlier task wins every tie) in O(n·c) for c classes instead of O(n²).
pub fn schedule<R: AsRef<[Option<f64>]>>(etc: &[R], groups: &mut [Group], heuristic: Heuristic) -> Vec<Assigned> {
    let mut classes: Vec<Class> = Vec::new();
    let mut index: HashMap<Vec<Option<u64>>, usize> = HashMap::new();
    for (i, row) in etc.iter().map(AsRef::as_ref).enumerate() {
        let key = row.iter().map(|r| r.map(f64::to_bits)).collect();
        let c = *index.entry(key).or_insert_with(|| {
            classes.push(Class { tasks: VecDeque::new(), best: best_of(row, groups) });
            classes.len() - 1
        });
        classes[c].tasks.push_back(i);
    }
    let mut out = Vec::with_capacity(etc.len());
    loop {
        let mut pick: Option<(usize, usize, Best)> = None; // (class, its next task, best)
        for (c, class) in classes.iter().enumerate() {
            let (Some(b), Some(&task)) = (class.best, class.tasks.front()) else { continue };
            let better = pick
                .as_ref()
                .is_none_or(|(_, t, p)| before(heuristic, &b, p) || (!before(heuristic, p, &b) && task < *t));
            if better {
                pick = Some((c, task, b));
            }
        }
        let Some((c, task, b)) = pick else { break };
        classes[c].tasks.pop_front();
        let runtime = etc[task].as_ref()[b.group].unwrap_or(0.0);
        let Some(start_s) = groups[b.group].take(runtime) else { break };
        out.push(Assigned { task, group: b.group, start_s });
        // only the group just taken got later: recompute the classes that counted on it
        for class in &mut classes {
            if class.best.is_some_and(|x| x.group == b.group || x.second_group == b.group) {
                if let Some(&t) = class.tasks.front() {
                    class.best = best_of(etc[t].as_ref(), groups);
                }
            }
        }
    }
    out
}

/// Waiting tasks with the same estimates, earliest first, and their best groups now.
struct Class {
    tasks: VecDeque<usize>,
    best: Option<Best>,
}

/// Whether `a` goes before `b` (the earlier task wins ties: the caller keeps `b` then).
fn before(h: Heuristic, a: &Best, b: &Best) -> bool {
    match h {
        Heuristic::MinMin => a.completion < b.completion,
        Heuristic::MaxMin => a.completion > b.completion,
        Heuristic::Sufferage => {
            let (sa, sb) = (a.second - a.completion, b.second - b.completion);
            sa > sb || (sa == sb && a.completion < b.completion)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{before, best_of, schedule, Assigned, Best, Group, Heuristic};
    use proptest::prelude::*;

    fn order(etc: &[Vec<Option<f64>>], groups: &mut [Group], h: Heuristic) -> Vec<(usize, usize)> {
        schedule(etc, groups, h).iter().map(|a| (a.task, a.group)).collect()
    }

    #[test]
    fn min_min_runs_the_short_tasks_first_and_max_min_the_long_ones() {
        let etc = vec![vec![Some(30.0)], vec![Some(10.0)], vec![Some(20.0)]];
        assert_eq!(order(&etc, &mut [Group::new([0.0])], Heuristic::MinMin), [(1, 0), (2, 0), (0, 0)]);
        assert_eq!(order(&etc, &mut [Group::new([0.0])], Heuristic::MaxMin), [(0, 0), (2, 0), (1, 0)]);
    }

    #[test]
    fn sufferage_gives_the_scarce_fast_group_to_the_task_that_gains_most() {
        // group 0: one fast GPU slot; group 1: a CPU slot
        // task 0 (a unit test) runs as fast anywhere; task 1 (inference) is 30x faster on the GPU
        let etc = vec![vec![Some(8.0), Some(8.0)], vec![Some(14.0), Some(400.0)]];
        let mut groups = [Group::new([0.0]), Group::new([0.0])];
        assert_eq!(order(&etc, &mut groups, Heuristic::Sufferage), [(1, 0), (0, 1)]);
        // min-min takes the unit test first, onto the GPU (equal completion, first group)
        let mut groups = [Group::new([0.0]), Group::new([0.0])];
        assert_eq!(order(&etc, &mut groups, Heuristic::MinMin)[0], (0, 0));
    }

    #[test]
    fn ready_times_count_and_tasks_no_group_can_run_are_left_out() {
        let etc = vec![vec![Some(5.0), Some(50.0)], vec![None, None], vec![Some(5.0), Some(50.0)]];
        let mut groups = [Group::new([100.0]), Group::new([0.0])];
        let a = schedule(&etc, &mut groups, Heuristic::MinMin);
        assert_eq!(a.len(), 2);
        assert_eq!((a[0].task, a[0].group, a[0].start_s), (0, 1, 0.0), "50 s now beats 5 s in 100 s");
        assert_eq!((a[1].task, a[1].group, a[1].start_s), (2, 1, 50.0), "then the slow group again: 50 + 50 < 100 + 5");
    }

    /// The schedule taken one task at a time, as it was before tasks were
    /// grouped into classes: the reference the class version must equal.
    fn one_by_one(etc: &[Vec<Option<f64>>], groups: &mut [Group], heuristic: Heuristic) -> Vec<Assigned> {
        let mut best: Vec<Option<Best>> = etc.iter().map(|e| best_of(e, groups)).collect();
        let mut out = Vec::new();
        loop {
            let mut pick: Option<(usize, Best)> = None;
            for (i, b) in best.iter().enumerate() {
                let Some(b) = b else { continue };
                if pick.as_ref().is_none_or(|(_, p)| before(heuristic, b, p)) {
                    pick = Some((i, *b));
                }
            }
            let Some((task, b)) = pick else { break };
            best[task] = None;
            let Some(start_s) = groups[b.group].take(etc[task][b.group].unwrap_or(0.0)) else { break };
            out.push(Assigned { task, group: b.group, start_s });
            for (i, slot) in best.iter_mut().enumerate() {
                if slot.is_some_and(|x| x.group == b.group || x.second_group == b.group) {
                    *slot = best_of(&etc[i], groups);
                }
            }
        }
        out
    }

    #[test]
    fn a_burst_of_one_test_keeps_its_order() {
        let etc = vec![vec![Some(1.0), Some(2.0)]; 200];
        let a = schedule(&etc, &mut [Group::new([0.0; 6]), Group::new([0.0; 2])], Heuristic::MinMin);
        assert_eq!(a.len(), 200);
        assert!(a.iter().enumerate().all(|(i, x)| x.task == i), "equal tasks keep their queue order");
    }

    proptest! {
        /// Grouping equal tasks into classes changes nothing: the same schedule
        /// as taking the tasks one by one, for every heuristic.
        #[test]
        fn classes_schedule_as_one_task_at_a_time_would(
            kinds in prop::collection::vec(prop::collection::vec(prop::option::of(1u8..6), 3), 1..5),
            picks in prop::collection::vec(0usize..5, 0..60),
            slots in prop::collection::vec(prop::collection::vec(0u8..4, 0..3), 3),
            h in prop::sample::select(Heuristic::ALL.to_vec()),
        ) {
            // few distinct rows and small whole numbers: many classes and many ties
            let etc: Vec<Vec<Option<f64>>> =
                picks.iter().map(|p| kinds[p % kinds.len()].iter().map(|r| r.map(f64::from)).collect()).collect();
            let groups: Vec<Group> = slots.iter().map(|s| Group::new(s.iter().map(|r| f64::from(*r)))).collect();
            prop_assert_eq!(schedule(&etc, &mut groups.clone(), h), one_by_one(&etc, &mut groups.clone(), h));
        }

        /// Every task some group can run is assigned exactly once, no slot runs
        /// two tasks at once, and every heuristic is deterministic.
        #[test]
        fn a_schedule_is_complete_and_consistent(
            etc in prop::collection::vec(prop::collection::vec(prop::option::of(0.1f64..100.0), 3), 0..40),
            slots in prop::collection::vec(prop::collection::vec(0.0f64..50.0, 0..3), 3),
            h in prop::sample::select(Heuristic::ALL.to_vec()),
        ) {
            let groups: Vec<Group> = slots.iter().map(|s| Group::new(s.iter().copied())).collect();
            let a = schedule(&etc, &mut groups.clone(), h);
            let b = schedule(&etc, &mut groups.clone(), h);
            prop_assert_eq!(&a, &b);
            let runnable = etc.iter().filter(|e| e.iter().zip(&slots).any(|(r, s)| r.is_some() && !s.is_empty())).count();
            prop_assert_eq!(a.len(), runnable);
            let mut seen = vec![false; etc.len()];
            for x in &a {
                prop_assert!(!seen[x.task]);
                seen[x.task] = true;
                prop_assert!(etc[x.task][x.group].is_some());
            }
            // per group, the busy intervals fit into its slots: at no instant more tasks than slots
            for (g, s) in slots.iter().enumerate() {
                // a slot free only later is busy until then
                let mut ev: Vec<(f64, i32)> =
                    s.iter().filter(|r| **r > 0.0).flat_map(|r| [(0.0, 1), (*r, -1)]).collect();
                for x in a.iter().filter(|x| x.group == g) {
                    let r = etc[x.task][g].unwrap_or(0.0);
                    ev.push((x.start_s, 1));
                    ev.push((x.start_s + r, -1));
                }
                ev.sort_by(|p, q| p.0.total_cmp(&q.0).then(p.1.cmp(&q.1)));
                let mut busy = 0;
                for (_, d) in ev {
                    busy += d;
                    prop_assert!(busy <= s.len() as i32);
                }
            }
        }
    }
}
