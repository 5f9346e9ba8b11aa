//! The scheduler's settings (command line and environment).

use clap::Args;

/// Default values, shared by the flags and `Default`.
pub mod defaults {
    /// Worker silence before it counts as lost (ms).
    pub const WORKER_TIMEOUT_MS: u64 = 10_000;
    /// Wait for more workers after start before tasks that fit none are rejected (s).
    pub const STARTUP_GRACE_S: u64 = 30;
    /// Wait that raises a task one priority level (s).
    pub const AGING_S: u64 = 60;
    /// Throttle-free time before a throttled worker gets tasks again (s).
    pub const THROTTLE_COOLDOWN_S: u64 = 60;
    /// Time an assignment may go unreported before it is placed again (ms).
    pub const ASSIGNMENT_GRACE_MS: u64 = 30_000;
}

/// Scheduler settings.
#[derive(Debug, Clone, Args)]
pub struct SchedulerConfig {
    /// A worker silent for this long is lost and its tasks are placed again (ms).
    #[arg(long = "worker-timeout-ms", env = "HWSCHED_WORKER_TIMEOUT_MS", default_value_t = defaults::WORKER_TIMEOUT_MS)]
    pub worker_timeout_ms: u64,
    /// After start, tasks that fit no registered worker wait this long for more workers to join
    /// before they are rejected (s).
    #[arg(long = "startup-grace-s", env = "HWSCHED_STARTUP_GRACE_S", default_value_t = defaults::STARTUP_GRACE_S)]
    pub startup_grace_s: u64,
    /// Waiting this long raises a task one priority level, so low priorities never starve (s; 0 = off).
    #[arg(long = "aging-s", env = "HWSCHED_AGING_S", default_value_t = defaults::AGING_S)]
    pub aging_s: u64,
    /// A worker that reported throttling gets no task until it has not throttled for this long (s).
    #[arg(long = "throttle-cooldown-s", env = "HWSCHED_THROTTLE_COOLDOWN_S", default_value_t = defaults::THROTTLE_COOLDOWN_S)]
    pub throttle_cooldown_s: u64,
    /// Score weights of the hwsched policy, e.g. completion=0.6,load=0.15,thermal=0.15,affinity=0.1.
    #[arg(
        long = "weights",
        env = "HWSCHED_WEIGHTS",
        default_value = "completion=0.6,load=0.15,thermal=0.15,affinity=0.1"
    )]
    pub weights: hwsched_placement::Weights,
    /// Placement policy: hwsched, or a baseline (least-loaded, round-robin, random, seed).
    #[arg(long = "policy", env = "HWSCHED_POLICY", default_value = "hwsched")]
    pub policy: hwsched_placement::Policy,
    /// Interleave producers within a priority instead of first come first served.
    #[arg(long = "fair-share", env = "HWSCHED_FAIR_SHARE")]
    pub fair_share: bool,
    /// Fill busy workers first (bin packing) instead of spreading.
    #[arg(long = "pack", env = "HWSCHED_PACK")]
    pub pack: bool,
    /// Share of first placements that may explore hardware the learner knows little about for the
    /// task (only a worker free now, expected to finish within 2x of the best); 0 never explores.
    #[arg(long = "explore-share", env = "HWSCHED_EXPLORE_SHARE", default_value_t = hwsched_placement::DEFAULT_EXPLORE_SHARE,
          value_parser = parse_share)]
    pub explore_share: f64,
    /// How a pass orders the waiting tasks it considers together when more wait than the fleet has
    /// room for (hwsched policy): min-min (short tasks first), sufferage, max-min, or off (queue order).
    #[arg(long = "batch", env = "HWSCHED_BATCH", default_value_t = hwsched_placement::BatchSetting::default())]
    pub batch: hwsched_placement::BatchSetting,
    /// An assignment its (live) worker has not reported running for this long is placed again (ms).
    #[arg(long = "assignment-grace-ms", env = "HWSCHED_ASSIGNMENT_GRACE_MS", default_value_t = defaults::ASSIGNMENT_GRACE_MS)]
    pub assignment_grace_ms: u64,
    /// How failed attempts are retried by failure category, unless a task's own `retry` says
    /// otherwise: retry_test_failures, oom_memory_factor, oom_memory_cap_mb, timeout_retries,
    /// infrastructure_retries (docs/FAILURES.md).
    #[arg(long = "retry", env = "HWSCHED_RETRY", default_value_t = hwsched_placement::retry::Retry::default())]
    pub retry: hwsched_placement::retry::Retry,
    /// When a worker failing more than its tests predict is quarantined, and how it comes back:
    /// enabled, alpha, min_failures, window_s, evidence, max_fleet_share, max_class_share,
    /// probe_passes, probe_interval_s, probe_timeout_s (docs/FAILURES.md).
    #[arg(long = "quarantine", env = "HWSCHED_QUARANTINE", default_value_t = hwsched_placement::quarantine::QuarantinePolicy::default())]
    pub quarantine: hwsched_placement::quarantine::QuarantinePolicy,
    /// The probe a quarantined worker runs (words split on spaces), e.g. "nvidia-smi -L".
    #[arg(long = "probe-command", env = "HWSCHED_PROBE_COMMAND", default_value = "true")]
    pub probe_command: String,
    /// When a straggling attempt gets a hedged copy on a free worker: share (of placements,
    /// at most), factor (x the learned p95, else x the expected runtime), min_after_s; or
    /// "off" (docs/FAILURES.md).
    #[arg(long = "hedge", env = "HWSCHED_HEDGE", default_value_t = hwsched_placement::hedge::HedgePolicy::on())]
    pub hedge: hwsched_placement::hedge::HedgePolicy,
}

fn parse_share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=0.5).contains(&x) => Ok(x),
        _ => Err(format!("{s:?}: a share between 0 and 0.5")),
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            worker_timeout_ms: defaults::WORKER_TIMEOUT_MS,
            startup_grace_s: defaults::STARTUP_GRACE_S,
            aging_s: defaults::AGING_S,
            throttle_cooldown_s: defaults::THROTTLE_COOLDOWN_S,
            weights: hwsched_placement::Weights::default(),
            policy: hwsched_placement::Policy::Hwsched,
            fair_share: false,
            pack: false,
            explore_share: hwsched_placement::DEFAULT_EXPLORE_SHARE,
            batch: hwsched_placement::BatchSetting::default(),
            assignment_grace_ms: defaults::ASSIGNMENT_GRACE_MS,
            retry: hwsched_placement::retry::Retry::default(),
            quarantine: hwsched_placement::quarantine::QuarantinePolicy::default(),
            probe_command: "true".into(),
            hedge: hwsched_placement::hedge::HedgePolicy::on(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_equals_the_flag_defaults() {
        hwsched_config::check_flag_defaults(&SchedulerConfig::default()).expect("one set of defaults");
    }
}
