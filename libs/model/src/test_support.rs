//! Results for the unit tests of the model's files.

use hwsched_proto::v1::{ExecutionResult, TaskStatus};

/// A result of test `name` (type "unit") on hardware class `hw`.
pub(crate) fn res(name: &str, hw: &str, secs: f64, status: TaskStatus) -> ExecutionResult {
    ExecutionResult {
        name: name.into(),
        test_type: "unit".into(),
        hardware_class: hw.into(),
        duration_s: secs,
        status: status as i32,
        ..Default::default()
    }
}
