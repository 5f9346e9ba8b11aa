//! Fixtures shared by the unit tests of the filter, score and baseline modules.

use hwsched_model::Model;
use hwsched_proto::v1::{ExecutionResult, TaskStatus, WorkerCapabilities};

use crate::view::WorkerView;

/// An idle 4-slot worker of hardware class `hw`.
pub(crate) fn view(id: &str, hw: &str) -> WorkerView {
    WorkerView::available(WorkerCapabilities {
        worker_id: id.into(),
        hardware_class: hw.into(),
        slots: 4,
        ..Default::default()
    })
}

/// A model that saw the vision test "t" (resnet) run five times on each class, taking these seconds.
pub(crate) fn learned_vision(pairs: &[(&str, f64)]) -> Model {
    let mut m = Model::default();
    for (hw, secs) in pairs {
        for _ in 0..5 {
            m.observe(&ExecutionResult {
                name: "t".into(),
                test_type: "vision".into(),
                model_family: "resnet".into(),
                hardware_class: (*hw).into(),
                duration_s: *secs,
                status: TaskStatus::Succeeded as i32,
                ..Default::default()
            });
        }
    }
    m
}
