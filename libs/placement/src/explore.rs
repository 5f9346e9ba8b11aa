//! Exploration: a bounded share of hwsched's first placements goes to
//! hardware the model is unsure of for the workload, when that is expected to
//! finish within [`EXPLORE_SLACK`] of the best, so the model learns it.

use hwsched_proto::v1::TaskRequest;

use crate::score::{Candidate, Eval, Policy, Scoring, EXPLORE_BELOW_RUNS, EXPLORE_SLACK};

/// The candidate an exploring placement takes instead of `best`: free now, on
/// hardware where the model has fewer than [`EXPLORE_BELOW_RUNS`] runs of this
/// workload (or no estimate), expected to finish within [`EXPLORE_SLACK`] of
/// `best`; the cheapest such. `None` when the placement does not explore, the
/// best is already such a candidate, or there is none.
pub(crate) fn explore(
    task: &TaskRequest,
    candidates: &[Candidate<'_>],
    evals: &[Eval],
    best: usize,
    scoring: &Scoring<'_>,
    workload: &mut Option<String>,
) -> Option<usize> {
    let (true, Policy::Hwsched, Some(m)) = (scoring.explore, scoring.policy, scoring.model) else { return None };
    let key = workload.get_or_insert_with(|| hwsched_model::task_workload_key(task));
    // many workers, few classes: one model look-up per class
    let mut known: Vec<(&str, bool)> = Vec::new();
    let mut unsure = |i: usize| {
        let class = candidates[i].view.caps.hardware_class.as_str();
        if let Some((_, u)) = known.iter().find(|(c, _)| *c == class) {
            return *u;
        }
        let u = m.predict(key, class).is_none_or(|p| p.runs < EXPLORE_BELOW_RUNS);
        known.push((class, u));
        u
    };
    if unsure(best) {
        return None;
    }
    let limit = EXPLORE_SLACK * evals[best].completion_s;
    (0..candidates.len())
        .filter(|&i| candidates[i].wait_s == 0.0 && evals[i].completion_s <= limit && unsure(i))
        .min_by(|a, b| evals[*a].cost.total_cmp(&evals[*b].cost).then(a.cmp(b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::{ExecutionResult, TaskStatus, WorkerCapabilities};

    use crate::view::WorkerView;

    fn observe(m: &mut hwsched_model::Model, hw: &str, secs: f64, times: usize) {
        for _ in 0..times {
            m.observe(&ExecutionResult {
                name: "t".into(),
                hardware_class: hw.into(),
                duration_s: secs,
                status: TaskStatus::Succeeded as i32,
                ..Default::default()
            });
        }
    }

    #[test]
    fn only_a_free_unsure_candidate_within_the_slack_is_explored() {
        let mut m = hwsched_model::Model::default();
        observe(&mut m, "gpu:h100", 10.0, 5);
        observe(&mut m, "gpu:a100", 15.0, 1);
        let view = |id: &str, hw: &str| {
            WorkerView::available(WorkerCapabilities {
                worker_id: id.into(),
                hardware_class: hw.into(),
                slots: 1,
                ..Default::default()
            })
        };
        let ws = [view("a", "gpu:a100"), view("h", "gpu:h100")];
        let t = TaskRequest { name: "t".into(), ..Default::default() };
        let cands = [Candidate { view: &ws[0], wait_s: 0.0 }, Candidate { view: &ws[1], wait_s: 0.0 }];
        let scoring = Scoring { model: Some(&m), explore: true, ..Default::default() };
        let evals = scoring.evaluate(&t, &cands);
        assert_eq!(explore(&t, &cands, &evals, 1, &scoring, &mut None), Some(0));
        // the unsure one is busy: nothing to explore
        let busy = [Candidate { view: &ws[0], wait_s: 5.0 }, cands[1]];
        let evals = scoring.evaluate(&t, &busy);
        assert_eq!(explore(&t, &busy, &evals, 1, &scoring, &mut None), None);
        // not exploring, or the best is already unsure
        let off = Scoring { explore: false, ..scoring };
        assert_eq!(explore(&t, &cands, &evals, 1, &off, &mut None), None);
        assert_eq!(explore(&t, &cands, &evals, 0, &scoring, &mut None), None);
    }
}
