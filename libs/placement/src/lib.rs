//! The pure scheduling core of hwsched: validation of task requests, the
//! filter → score placement of a task on the workers the scheduler knows, and
//! the scheduler's state machine (queue, reservations, retries, thermal
//! hysteresis). No IO and no clock, so the scheduler, the simulator and tests
//! share it.
//!
//! Its floors, each reading only those below it: `view` (what placement sees
//! of a worker), `group` (split tasks), `retry` (what a failed attempt's
//! category leads to), `suspect` and `quarantine` (bad hardware told from
//! bad tests), `hedge` (when a straggler gets a second copy); `validate`; `baseline` (the seed
//! framework's policy); `declared` (trust in declared durations); `batch`
//! (the heuristics over many waiting tasks); `score`; `filter` and `explore`; `fit` (placing one
//! task); `state` (the state machine).
#![forbid(unsafe_code)]

pub mod baseline;
pub mod batch;
pub mod declared;
mod explore;
pub mod files;
pub mod filter;
pub mod fit;
pub mod group;
pub mod hedge;
pub mod quarantine;
pub mod retry;
pub mod score;
mod settings;
pub mod state;
pub mod suspect;
#[cfg(test)]
mod testutil;
pub mod validate;
pub mod view;

pub use batch::{BatchSetting, Heuristic};
pub use filter::Demand;
pub use fit::{place, place_with, Outcome, Ranked};
pub use score::{Policy, Scoring, Weights, DEFAULT_EXPLORE_SHARE};
pub use validate::validate;
pub use view::{Reserved, WorkerView};
