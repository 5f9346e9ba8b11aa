//! Scoring of the workers that passed the filters. Each component is a named
//! cost in [0, 1] (lower is better) with a weight; the decision keeps the
//! components so `explain` can say why the winner won.

use hwsched_model::Model;
use hwsched_proto::v1::TaskRequest;

use crate::fit::WorkerView;

/// Weights of the score components.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Predicted runtime on the worker's hardware, relative to the fastest candidate.
    pub runtime: f64,
    /// Slots in use and CPU utilisation.
    pub load: f64,
    /// Temperature; a worker marked hot costs the most.
    pub thermal: f64,
    /// Not having run the same model family recently (caches, weights on disk).
    pub affinity: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self { runtime: 0.5, load: 0.2, thermal: 0.2, affinity: 0.1 }
    }
}

/// How candidates are scored.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scoring<'a> {
    /// Component weights.
    pub weights: Weights,
    /// The learner's model, when one was published.
    pub model: Option<&'a Model>,
    /// Prefer busy workers (bin packing) instead of idle ones (spreading).
    pub pack: bool,
}

/// The score of one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Weighted cost (lower wins).
    pub cost: f64,
    /// Each component's cost, by name.
    pub components: Vec<(&'static str, f64)>,
    /// Predicted runtime on this worker, when the model knows the pair.
    pub predicted_runtime_s: Option<f64>,
}

impl Scoring<'_> {
    /// Scores every candidate of `task`.
    pub fn score(&self, task: &TaskRequest, candidates: &[&WorkerView]) -> Vec<Scored> {
        let workload = hwsched_model::task_workload_key(task);
        let predictions: Vec<Option<f64>> = candidates
            .iter()
            .map(|w| self.model.and_then(|m| m.predict_s(&workload, &w.caps.hardware_class)))
            .collect();
        let fastest = predictions.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        let family = task.model_family.as_str();
        candidates
            .iter()
            .zip(predictions)
            .map(|(w, predicted)| {
                let runtime = match predicted {
                    Some(p) if p > 0.0 && fastest.is_finite() => 1.0 - fastest / p,
                    // unknown on this hardware while others are known: neutral, so it still gets tried
                    None if fastest.is_finite() => 0.5,
                    _ => 0.0,
                };
                let slots = f64::from(w.reserved.slots) / f64::from(w.caps.slots.max(1));
                let cpu = (w.cpu_util_pct / 100.0).clamp(0.0, 1.0);
                let load = 0.5 * if self.pack { 1.0 - slots } else { slots } + 0.5 * cpu;
                let thermal = if w.hot { 1.0 } else { ((w.max_temp_c - 60.0) / 30.0).clamp(0.0, 1.0) };
                let affinity =
                    if family.is_empty() || w.recent_families.iter().any(|f| f == family) { 0.0 } else { 1.0 };
                let wt = self.weights;
                let cost = wt.runtime * runtime + wt.load * load + wt.thermal * thermal + wt.affinity * affinity;
                Scored {
                    cost,
                    components: vec![
                        ("runtime", runtime),
                        ("load", load),
                        ("thermal", thermal),
                        ("affinity", affinity),
                    ],
                    predicted_runtime_s: predicted,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hwsched_proto::v1::{ExecutionResult, TaskStatus, WorkerCapabilities};

    fn view(id: &str, hw: &str) -> WorkerView {
        WorkerView::available(WorkerCapabilities {
            worker_id: id.into(),
            hardware_class: hw.into(),
            slots: 4,
            ..Default::default()
        })
    }

    fn task() -> TaskRequest {
        TaskRequest {
            name: "t".into(),
            test_type: "vision".into(),
            model_family: "resnet".into(),
            ..Default::default()
        }
    }

    fn cost(s: &Scoring<'_>, t: &TaskRequest, ws: &[WorkerView]) -> Vec<f64> {
        let refs: Vec<&WorkerView> = ws.iter().collect();
        s.score(t, &refs).into_iter().map(|x| x.cost).collect()
    }

    #[test]
    fn learned_runtime_makes_the_fast_hardware_win() {
        let mut m = Model::default();
        for (hw, secs) in [("gpu:h100", 10.0), ("cpu:x86", 200.0)] {
            for _ in 0..5 {
                m.observe(&ExecutionResult {
                    name: "t".into(),
                    test_type: "vision".into(),
                    model_family: "resnet".into(),
                    hardware_class: hw.into(),
                    duration_s: secs,
                    status: TaskStatus::Succeeded as i32,
                    ..Default::default()
                });
            }
        }
        let ws = [view("cpu", "cpu:x86"), view("gpu", "gpu:h100")];
        let with = Scoring { model: Some(&m), ..Default::default() };
        let c = cost(&with, &task(), &ws);
        assert!(c[1] < c[0], "{c:?}");
        // without a model the two are equal
        let c = cost(&Scoring::default(), &task(), &ws);
        assert_eq!(c[0], c[1]);
    }

    #[test]
    fn hot_busy_and_unfamiliar_workers_cost_more() {
        let t = task();
        let base = view("a", "cpu");
        let mut hot = view("b", "cpu");
        hot.hot = true;
        let mut busy = view("c", "cpu");
        busy.reserved.slots = 3;
        busy.cpu_util_pct = 90.0;
        let mut familiar = view("d", "cpu");
        familiar.recent_families = vec!["resnet".into()];
        let c = cost(&Scoring::default(), &t, &[base, hot, busy, familiar]);
        assert!(c[1] > c[0] && c[2] > c[0], "{c:?}");
        assert!(c[3] < c[0], "affinity: {c:?}");
    }

    #[test]
    fn packing_prefers_the_busier_worker() {
        let idle = view("idle", "cpu");
        let mut half = view("half", "cpu");
        half.reserved.slots = 2;
        let c = cost(&Scoring { pack: true, ..Default::default() }, &task(), &[idle.clone(), half.clone()]);
        assert!(c[1] < c[0]);
        let c = cost(&Scoring::default(), &task(), &[idle, half]);
        assert!(c[0] < c[1]);
    }
}
