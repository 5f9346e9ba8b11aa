//! The pure scheduling core of hwsched: validation of task requests and the
//! filter → score placement of a task on the workers the scheduler knows.
//! No IO and no clock, so the scheduler, the simulator and tests share it.
#![forbid(unsafe_code)]

pub mod fit;
pub mod score;
pub mod validate;

pub use fit::{place, place_with, Demand, Outcome, Reserved, WorkerView};
pub use score::{Scoring, Weights};
pub use validate::{is_valid_id, validate};
