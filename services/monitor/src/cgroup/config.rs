//! The cgroup flags of `hwsched monitor`.

use std::path::PathBuf;

use clap::Args;

/// Default values, shared by the flags and [`CgroupConfig::default`].
pub mod defaults {
    /// Memory limit of an attempt = its requirement × this.
    pub const MEMORY_HEADROOM: f64 = 1.25;
    /// Processes (and threads) an attempt may have at once.
    pub const PIDS_LIMIT: u64 = 4096;
}

/// Whether attempts run in cgroups of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupMode {
    /// Cgroup v2 where the host has its controllers, else v1; none (with a warning) when neither is writable.
    Auto,
    /// No cgroups: no limits, usage sampled only.
    Off,
}

/// How each attempt is isolated and measured.
#[derive(Debug, Clone, Args)]
pub struct CgroupConfig {
    /// Run each attempt in a cgroup of its own (limits, exact usage, nothing left behind): auto or off.
    #[arg(long = "cgroups", env = "HWSCHED_MONITOR_CGROUPS", value_enum, default_value_t = CgroupMode::Auto)]
    pub mode: CgroupMode,
    /// Cgroup under which the attempts' cgroups are made, in each hierarchy: an absolute
    /// path counts from the hierarchy's root, a relative one from the monitor's own cgroup.
    /// Default: hwsched-<worker id> under the monitor's own cgroup. Each monitor makes its
    /// attempts in a child m<pid>-<n> of it, and at start removes those of monitors that are gone.
    #[arg(long = "cgroup-parent", env = "HWSCHED_MONITOR_CGROUP_PARENT")]
    pub parent: Option<PathBuf>,
    /// An attempt's memory limit is its task's requirements.memory_mb times this (at least 1.0);
    /// a task without a memory requirement gets no limit.
    #[arg(long = "memory-headroom", env = "HWSCHED_MONITOR_MEMORY_HEADROOM",
          default_value_t = defaults::MEMORY_HEADROOM, value_parser = headroom)]
    pub memory_headroom: f64,
    /// Processes and threads an attempt may have at once (0 = no limit).
    #[arg(long = "pids-limit", env = "HWSCHED_MONITOR_PIDS_LIMIT", default_value_t = defaults::PIDS_LIMIT)]
    pub pids_limit: u64,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            mode: CgroupMode::Auto,
            parent: None,
            memory_headroom: defaults::MEMORY_HEADROOM,
            pids_limit: defaults::PIDS_LIMIT,
        }
    }
}

impl CgroupConfig {
    /// Checks what clap cannot (a value set other than through the flags).
    pub fn validate(&self) -> Result<(), String> {
        headroom(&self.memory_headroom.to_string()).map(|_| ())
    }
}

fn headroom(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h >= 1.0 => Ok(h),
        _ => Err(format!("--memory-headroom / HWSCHED_MONITOR_MEMORY_HEADROOM {s:?} must be a number >= 1.0")),
    }
}

#[cfg(test)]
mod tests {
    use super::CgroupConfig;

    #[test]
    fn headroom_below_one_is_refused() {
        let mut c = CgroupConfig::default();
        assert!(c.validate().is_ok());
        c.memory_headroom = 0.9;
        assert!(c.validate().expect_err("below 1").contains("--memory-headroom"));
        c.memory_headroom = f64::NAN;
        assert!(c.validate().is_err());
        c.memory_headroom = 1.0;
        assert!(c.validate().is_ok());
    }
}
