//! Why an attempt did not succeed (`FailureCategory`), read the same way by
//! every service: results from monitors older than the field get the
//! category their status implies.

use crate::v1::{ExecutionResult, FailureCategory, TaskStatus};

/// The category of an ended attempt; results from monitors older than the
/// field get one from their status.
pub fn category(res: &ExecutionResult) -> FailureCategory {
    match (res.category(), res.status()) {
        (_, TaskStatus::Succeeded) => FailureCategory::Unspecified,
        (FailureCategory::Unspecified, TaskStatus::TimedOut) => FailureCategory::Timeout,
        (FailureCategory::Unspecified, TaskStatus::Error) => FailureCategory::Infrastructure,
        (FailureCategory::Unspecified, TaskStatus::Cancelled) => FailureCategory::Cancelled,
        (FailureCategory::Unspecified, _) => FailureCategory::TestFailed,
        (c, _) => c,
    }
}

/// Short lower-case name of a category ("out_of_memory"), as stored and shown.
pub fn category_name(c: FailureCategory) -> &'static str {
    match c {
        FailureCategory::Unspecified => "",
        FailureCategory::TestFailed => "test_failed",
        FailureCategory::Timeout => "timeout",
        FailureCategory::OutOfMemory => "out_of_memory",
        FailureCategory::Signaled => "signaled",
        FailureCategory::WorkerLost => "worker_lost",
        FailureCategory::Infrastructure => "infrastructure",
        FailureCategory::Refused => "refused",
        FailureCategory::GpuFault => "gpu_fault",
        FailureCategory::Cancelled => "cancelled",
        FailureCategory::Superseded => "superseded",
    }
}
