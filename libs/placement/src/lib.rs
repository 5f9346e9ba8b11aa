//! The pure scheduling core of hwsched: validation of task requests, the
//! filter → score placement of a task on the workers the scheduler knows, and
//! the scheduler's state machine (queue, reservations, retries, thermal
//! hysteresis). No IO and no clock, so the scheduler, the simulator and tests
//! share it.
#![forbid(unsafe_code)]

pub mod fit;
pub mod group;
pub mod score;
pub mod state;
pub mod validate;

pub use fit::{place, place_with, Demand, Outcome, Ranked, Reserved, WorkerView};
pub use score::{Policy, Scoring, Weights, DEFAULT_EXPLORE_SHARE};
// the contracts' id rule, at its old path for services/scheduler/src/lib.rs
// (edited by others this round); new code uses `hwsched_proto::is_valid_id`
pub use hwsched_proto::is_valid_id;
pub use validate::validate;
