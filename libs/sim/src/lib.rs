//! The hwsched simulator: replays a trace of workers and tasks through the
//! real scheduling core and learned model with simulated time, under each
//! placement policy, and reports what each achieved, on one trace or on the
//! traces of a scenario family over many seeds.
#![forbid(unsafe_code)]

pub mod distribution;
pub mod engine;
pub mod generate;
pub mod kinds;
pub mod report;
pub mod rng;
pub mod runner;
pub mod scenarios;
pub mod trace;

pub use engine::{run, Config};
pub use report::{lower_bound, Report};
pub use trace::{Trace, TraceError};
