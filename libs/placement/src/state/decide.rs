//! One placement decision ([`State::decide`]): which worker a waiting task
//! goes to, or why it waits; retries prefer what was not tried (after a
//! timeout, hardware the model knows to be faster first), and a worker that
//! refused the task is never chosen.

use hwsched_model::Model;
use hwsched_proto::v1::{FailureCategory, TaskRecord};

use crate::{
    fit::{place_with, Outcome},
    score::{Policy, Scoring},
    state::{records::NO_TASK, State},
    view::WorkerView,
};

impl State {
    /// The placement decision for one waiting task. Retries prefer hardware
    /// not tried yet, then workers not tried yet, then any; never a worker that refused it.
    pub(super) fn decide(&mut self, rec: &TaskRecord, views: &[WorkerView], model: Option<&Model>) -> Outcome {
        let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
        let allowed: Vec<WorkerView>;
        let views = if rec.refused_by.is_empty() {
            views
        } else {
            // a worker whose policy refused the task never gets it again
            allowed = views.iter().filter(|v| !rec.refused_by.contains(&v.caps.worker_id)).cloned().collect();
            &allowed
        };
        let turn = match self.policy {
            Policy::Random => self.random(),
            _ => self.placements,
        };
        // a bounded share of first attempts may explore what the model is unsure of
        let explore = self.explore_share > 0.0
            && self.policy == Policy::Hwsched
            && rec.tried_workers.is_empty()
            && (self.random() as f64 / (1u64 << 53) as f64) < self.explore_share;
        let scoring = Scoring {
            weights: self.weights,
            model,
            declarations: self.trust_declarations.then_some(&self.declarations),
            pack: self.pack,
            policy: self.policy,
            turn,
            explore,
        };
        if let Some(faster) = self.faster_after_timeout(rec, views, model) {
            if let o @ (Outcome::Place { .. } | Outcome::Queue { .. }) = place_with(task, &faster, &scoring) {
                return o;
            }
        }
        if !rec.tried_workers.is_empty() {
            let tried_classes: Vec<&str> = rec
                .tried_workers
                .iter()
                .filter_map(|w| self.workers.get(w)?.caps.as_ref().map(|c| c.hardware_class.as_str()))
                .collect();
            let other_hardware: Vec<WorkerView> =
                views.iter().filter(|v| !tried_classes.contains(&v.caps.hardware_class.as_str())).cloned().collect();
            let untried: Vec<WorkerView> =
                views.iter().filter(|v| !rec.tried_workers.contains(&v.caps.worker_id)).cloned().collect();
            let elsewhere = [other_hardware, untried]
                .iter()
                .filter(|vs| !vs.is_empty())
                .map(|vs| place_with(task, vs, &scoring))
                .find(|o| matches!(o, Outcome::Place { .. } | Outcome::Queue { .. }));
            if let Some(o) = elsewhere {
                return o;
            }
        }
        match place_with(task, views, &scoring) {
            Outcome::NeverFits { reason } if !rec.refused_by.is_empty() => {
                let refused = rec.refused_by.join(", ");
                let reason = if views.is_empty() { "no other worker is registered".into() } else { reason };
                Outcome::NeverFits { reason: format!("{reason}; refused by the worker's policy on {refused}") }
            }
            o => o,
        }
    }

    /// After a timeout, the workers of hardware the model predicts faster for
    /// the task than the hardware that timed out (than its timeout, when that
    /// hardware has no prediction); `None` when the last attempt did not time
    /// out or the model knows no faster hardware.
    fn faster_after_timeout(
        &self,
        rec: &TaskRecord,
        views: &[WorkerView],
        model: Option<&Model>,
    ) -> Option<Vec<WorkerView>> {
        let last = rec.history.last().filter(|h| h.category() == FailureCategory::Timeout)?;
        let model = model?;
        let task = rec.task.as_ref().unwrap_or(&*NO_TASK);
        let key = hwsched_model::task_workload_key(task);
        let class = if last.hardware_class.is_empty() {
            self.workers.get(&last.worker_id).and_then(|w| w.caps.as_ref()).map(|c| c.hardware_class.clone())?
        } else {
            last.hardware_class.clone()
        };
        let slow = model.predict_s(&key, &class).or((task.timeout_s > 0).then(|| f64::from(task.timeout_s)))?;
        let faster: Vec<WorkerView> = views
            .iter()
            .filter(|v| v.caps.hardware_class != class)
            .filter(|v| model.predict_s(&key, &v.caps.hardware_class).is_some_and(|p| p < slow))
            .cloned()
            .collect();
        (!faster.is_empty()).then_some(faster)
    }
}
