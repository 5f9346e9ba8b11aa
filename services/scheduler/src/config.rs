//! The scheduler's settings (command line and environment).

use clap::Args;

/// Scheduler settings.
#[derive(Debug, Clone, Args)]
pub struct SchedulerConfig {
    /// A worker silent for this long is lost and its tasks are placed again (ms).
    #[arg(long = "worker-timeout-ms", env = "HWSCHED_WORKER_TIMEOUT_MS", default_value_t = 10_000)]
    pub worker_timeout_ms: u64,
    /// After start, tasks that fit no registered worker wait this long for more workers to join
    /// before they are rejected (s).
    #[arg(long = "startup-grace-s", env = "HWSCHED_STARTUP_GRACE_S", default_value_t = 30)]
    pub startup_grace_s: u64,
    /// Waiting this long raises a task one priority level, so low priorities never starve (s; 0 = off).
    #[arg(long = "aging-s", env = "HWSCHED_AGING_S", default_value_t = 60)]
    pub aging_s: u64,
    /// A worker that reported throttling gets no task until it has not throttled for this long (s).
    #[arg(long = "throttle-cooldown-s", env = "HWSCHED_THROTTLE_COOLDOWN_S", default_value_t = 60)]
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
    /// An assignment its (live) worker has not reported running for this long is placed again (ms).
    #[arg(long = "assignment-grace-ms", env = "HWSCHED_ASSIGNMENT_GRACE_MS", default_value_t = 30_000)]
    pub assignment_grace_ms: u64,
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
            worker_timeout_ms: 10_000,
            startup_grace_s: 30,
            aging_s: 60,
            throttle_cooldown_s: 60,
            weights: hwsched_placement::Weights::default(),
            policy: hwsched_placement::Policy::Hwsched,
            fair_share: false,
            pack: false,
            explore_share: hwsched_placement::DEFAULT_EXPLORE_SHARE,
            assignment_grace_ms: 30_000,
        }
    }
}
