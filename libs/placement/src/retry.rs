//! What happens after an attempt fails, by its failure category: the retry
//! policy (global defaults a task may override field by field) and the pure
//! decision it gives for one ended attempt. `state::outcome` applies it.
//!
//! | category | counted against | next attempt |
//! |---|---|---|
//! | test failed, signaled | `max_attempts` | elsewhere, unless `retry_test_failures` is off |
//! | timeout | `max_attempts` and `timeout_retries` | elsewhere: hardware the model predicts faster first, else other hardware first |
//! | out of memory | `max_attempts` | with `oom_memory_factor` x the memory, capped |
//! | worker lost, infrastructure, GPU fault | `infrastructure_retries` only | elsewhere |
//! | refused | `infrastructure_retries` only | never on the worker that refused |
//! | cancelled, bad input | — | none |

pub use hwsched_proto::failure::{category, category_name};
use hwsched_proto::v1::{FailureCategory, RetryPolicy};

/// Attempts lost to the worker or the infrastructure retried by default.
pub const INFRASTRUCTURE_RETRIES: u32 = 3;

/// Largest growth factor a policy may ask for after running out of memory.
pub const MAX_OOM_FACTOR: f64 = 16.0;

/// The retry policy with every field decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Retry test failures (and deaths by a signal) on other hardware.
    pub retry_test_failures: bool,
    /// The memory of an out-of-memory retry, as a multiple of the last attempt's.
    pub oom_memory_factor: f64,
    /// The most memory an out-of-memory retry asks for, MB (0 = no cap).
    pub oom_memory_cap_mb: i64,
    /// Retries after a timeout.
    pub timeout_retries: u32,
    /// Attempts lost to the worker or the infrastructure that are retried
    /// without spending `max_attempts`.
    pub infrastructure_retries: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            retry_test_failures: true,
            oom_memory_factor: 1.5,
            oom_memory_cap_mb: 0,
            timeout_retries: 1,
            infrastructure_retries: INFRASTRUCTURE_RETRIES,
        }
    }
}

impl Retry {
    /// These defaults with the fields `task` sets taken from it.
    pub fn with(self, task: Option<&RetryPolicy>) -> Retry {
        let Some(p) = task else { return self };
        Retry {
            retry_test_failures: p.retry_test_failures.unwrap_or(self.retry_test_failures),
            oom_memory_factor: p.oom_memory_factor.unwrap_or(self.oom_memory_factor).clamp(1.0, MAX_OOM_FACTOR),
            oom_memory_cap_mb: p.oom_memory_cap_mb.unwrap_or(self.oom_memory_cap_mb).max(0),
            timeout_retries: p.timeout_retries.unwrap_or(self.timeout_retries),
            infrastructure_retries: p.infrastructure_retries.unwrap_or(self.infrastructure_retries),
        }
    }

    /// Why a task's own policy is invalid (submission validation).
    pub fn check(p: &RetryPolicy) -> Result<(), String> {
        match p.oom_memory_factor {
            Some(f) if !(1.0..=MAX_OOM_FACTOR).contains(&f) => {
                Err(format!("oom_memory_factor must be between 1 and {MAX_OOM_FACTOR}, not {f}"))
            }
            _ if p.oom_memory_cap_mb.is_some_and(|c| c < 0) => {
                Err("oom_memory_cap_mb must not be negative".to_string())
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "retry_test_failures={},oom_memory_factor={},oom_memory_cap_mb={},timeout_retries={},infrastructure_retries={}",
            self.retry_test_failures,
            self.oom_memory_factor,
            self.oom_memory_cap_mb,
            self.timeout_retries,
            self.infrastructure_retries
        )
    }
}

impl std::str::FromStr for Retry {
    type Err = String;

    /// Parses "timeout_retries=0,oom_memory_factor=2" (the fields of
    /// `RetryPolicy`; those not named keep their defaults).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = RetryPolicy::default();
        for f in crate::settings::fields(s, "field=value") {
            let f = f?;
            match f.name {
                "retry_test_failures" => p.retry_test_failures = Some(f.parse()?),
                "oom_memory_factor" => p.oom_memory_factor = Some(f.parse()?),
                "oom_memory_cap_mb" => p.oom_memory_cap_mb = Some(f.parse()?),
                "timeout_retries" => p.timeout_retries = Some(f.parse()?),
                "infrastructure_retries" => p.infrastructure_retries = Some(f.parse()?),
                _ => return Err(f.unknown("retry")),
            }
        }
        Retry::check(&p)?;
        Ok(Retry::default().with(Some(&p)))
    }
}

/// What a task has spent so far, before the attempt being decided on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Failed attempts counted against `max_attempts`.
    pub failures: u32,
    /// Attempts lost to the worker or the infrastructure.
    pub losses: u32,
    /// Retries spent on timeouts.
    pub timeouts: u32,
}

/// The ended attempt, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    /// Its category.
    pub category: FailureCategory,
    /// The task's input cannot work anywhere.
    pub bad_input: bool,
    /// The memory it asked for, MB (0 = none asked).
    pub memory_mb: i64,
    /// The memory it peaked at, MB.
    pub memory_peak_mb: u64,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Queue it again.
    Retry {
        /// What it has spent, this attempt included.
        spent: Spent,
        /// The memory the next attempt asks for, MB, when it changes.
        memory_mb: Option<i64>,
        /// The worker must never get the task again.
        exclude_worker: bool,
        /// For the record: what was decided ("retry elsewhere", "retry with 768 MB").
        note: String,
    },
    /// End the task as failed, saying why.
    GiveUp {
        /// What it has spent, this attempt included.
        spent: Spent,
        /// Why no retry.
        why: String,
    },
}

/// The decision after a failed attempt. `max_attempts` bounds the attempts
/// counted against it; `largest_memory_mb` is the most memory any known
/// worker offers (0 = unknown: no bound from the fleet).
pub fn decide(ended: Ended, spent: Spent, policy: Retry, max_attempts: u32, largest_memory_mb: i64) -> Decision {
    use FailureCategory as C;
    let give_up = |spent, why: String| Decision::GiveUp { spent, why };
    let elsewhere = |spent, exclude_worker| Decision::Retry {
        spent,
        memory_mb: None,
        exclude_worker,
        note: if exclude_worker { "retry, never on this worker" } else { "retry elsewhere" }.into(),
    };
    if ended.bad_input {
        return give_up(spent, "its input cannot run anywhere".into());
    }
    match ended.category {
        C::Cancelled | C::Superseded => give_up(spent, category_name(ended.category).into()),
        C::Unspecified => give_up(spent, "ended without a failure".into()),
        C::WorkerLost | C::Infrastructure | C::GpuFault | C::Refused => {
            let spent = Spent { losses: spent.losses + 1, ..spent };
            if spent.losses > policy.infrastructure_retries {
                give_up(spent, format!("lost or not run {} times, giving up", spent.losses))
            } else {
                elsewhere(spent, ended.category == C::Refused)
            }
        }
        C::TestFailed | C::Signaled | C::Timeout | C::OutOfMemory => {
            let spent = Spent { failures: spent.failures + 1, ..spent };
            if spent.failures >= max_attempts {
                return give_up(spent, format!("{} of {max_attempts} attempts failed", spent.failures));
            }
            match ended.category {
                C::Timeout if spent.timeouts >= policy.timeout_retries => {
                    give_up(spent, format!("timed out; {} timeout retries allowed", policy.timeout_retries))
                }
                C::Timeout => elsewhere(Spent { timeouts: spent.timeouts + 1, ..spent }, false),
                C::OutOfMemory => more_memory(ended, spent, policy, largest_memory_mb),
                _ if !policy.retry_test_failures => give_up(spent, "test failures are not retried".into()),
                _ => elsewhere(spent, false),
            }
        }
    }
}

/// The retry of an attempt that ran out of memory: `factor` x what it asked
/// for (or x its peak when it asked for nothing), capped; none when the cap
/// or the fleet leaves no more memory to give.
fn more_memory(ended: Ended, spent: Spent, policy: Retry, largest_memory_mb: i64) -> Decision {
    let base = if ended.memory_mb > 0 { ended.memory_mb } else { ended.memory_peak_mb as i64 };
    if base <= 0 || policy.oom_memory_factor <= 1.0 {
        return Decision::Retry {
            spent,
            memory_mb: None,
            exclude_worker: false,
            note: "retry with the same memory".into(),
        };
    }
    let mut want = (base as f64 * policy.oom_memory_factor).ceil() as i64;
    if policy.oom_memory_cap_mb > 0 {
        want = want.min(policy.oom_memory_cap_mb);
    }
    if largest_memory_mb > 0 {
        want = want.min(largest_memory_mb);
    }
    if want <= ended.memory_mb {
        return Decision::GiveUp {
            spent,
            why: format!("out of memory at {} MB, and no worker or cap allows more", ended.memory_mb),
        };
    }
    Decision::Retry { spent, memory_mb: Some(want), exclude_worker: false, note: format!("retry with {want} MB") }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
