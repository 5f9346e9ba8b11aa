//! The learned model of hwsched: per (workload, hardware) pair, an exponentially
//! weighted mean and variance of ln(runtime), a success rate and the peak memory
//! seen; per test, whether it is flaky (passed and failed at one revision). Pure: the learner trains it from results and publishes snapshots; the
//! scheduler (and the simulator) read predictions from it.
//!
//! Map: `keys` names workloads; `stats` is what one pair learns from a result;
//! `factor` fits the model for pairs never observed; `prediction` is what a
//! look-up returns; `flaky` tells flaky tests from broken ones by the
//! revision they ran at, and `blame` takes back the failures of workers
//! quarantined for them; `model` holds [`Model`] itself, split by job
//! (learning, predicting, worker health, snapshots).
#![forbid(unsafe_code)]

mod blame;
mod factor;
mod flaky;
mod keys;
mod model;
mod prediction;
mod stats;
#[cfg(test)]
mod test_support;

pub use flaky::{counts_as_passed, MAX_CLASSES, MAX_TESTS, REVISION_WINDOW};
pub use keys::{key, task_workload_key, workload_key};
pub use model::{
    health::{DEGRADED_FAILURE_EXCESS, DEGRADED_SLOWDOWN},
    snapshot::SNAPSHOT_KEY,
    Model,
};
pub use prediction::{age_bucket, Prediction, Source};
pub use stats::{recent_quantile, ALPHA};
