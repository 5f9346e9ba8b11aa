//! Monitor configuration.

use std::path::PathBuf;

use clap::Args;

/// Parses "key=value".
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} must be key=value")),
    }
}

/// Parses "kind=count".
fn accelerator(s: &str) -> Result<(String, u32), String> {
    let (k, v) = key_value(s)?;
    let n = v.parse::<u32>().map_err(|_| format!("{s:?}: count must be a whole number"))?;
    Ok((k.to_lowercase(), n))
}

/// Default values, shared by the flags and [`MonitorConfig::for_tests`].
pub mod defaults {
    use super::Level;

    /// Telemetry and heartbeat period (ms).
    pub const INTERVAL_MS: u64 = 1000;
    /// What is measured.
    pub const LEVEL: Level = Level::Standard;
    /// Metrics batches kept while NATS is unreachable.
    pub const BUFFER_BATCHES: usize = 600;
    /// Ack wait of assignments (s).
    pub const ACK_WAIT_S: u64 = 30;
    /// Bytes of unpacked bundles the cache keeps (10 GiB); also the most one bundle may unpack to.
    pub const BUNDLE_CACHE_BYTES: u64 = 10 << 30;
    /// Largest bundle (compressed) this worker downloads (1 GiB).
    pub const MAX_BUNDLE_BYTES: u64 = 1 << 30;
}

/// How much the monitor measures. Each level includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    /// CPU, memory, GPU utilisation and memory.
    Basic,
    /// + load averages, swap, disks, network, temperatures, power, process count.
    Standard,
    /// + per-core CPU and frequency, GPU clocks, fan, memory-controller load, throttle reasons, ECC errors.
    Detailed,
    /// + running tasks' own CPU and memory as metrics, their process trees sampled every 100 ms.
    Intensive,
}

/// Settings of one monitor (one per worker node).
#[derive(Debug, Clone, Args)]
pub struct MonitorConfig {
    /// Worker id (subject token). Default: this host's name with other characters replaced by '-'.
    #[arg(long = "worker-id", env = "HWSCHED_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Node name to derive the worker id from when none is given, with
    /// characters other than letters, digits, '-' and '_' replaced by '-'
    /// (Kubernetes: the downward API's spec.nodeName, e.g. ip-10-0-1-7.ec2.internal).
    #[arg(long = "node-name", env = "HWSCHED_NODE_NAME")]
    pub node_name: Option<String>,
    /// Tasks run at once, at most. Default: logical CPU cores. A task reserves
    /// one core unless it asks for fewer, so more slots than cores only fill
    /// with tasks that ask for less (the monitor warns at start).
    #[arg(long = "slots", env = "HWSCHED_MONITOR_SLOTS")]
    pub slots: Option<u32>,
    /// Memory this worker offers, MB, instead of what it has (capped by a cgroup
    /// limit): to offer less, or to declare a size in tests.
    #[arg(long = "memory-mb", env = "HWSCHED_MONITOR_MEMORY_MB", value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_mb: Option<u64>,
    /// Telemetry and heartbeat period, milliseconds.
    #[arg(long = "interval-ms", env = "HWSCHED_MONITOR_INTERVAL_MS", default_value_t = defaults::INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub interval_ms: u64,
    /// What to measure: basic, standard, detailed or intensive.
    #[arg(long = "level", env = "HWSCHED_MONITOR_LEVEL", value_enum, default_value_t = defaults::LEVEL)]
    pub level: Level,
    /// Metrics batches kept while NATS is unreachable (oldest dropped beyond, and counted).
    #[arg(long = "buffer-batches", env = "HWSCHED_MONITOR_BUFFER", default_value_t = defaults::BUFFER_BATCHES)]
    pub buffer_batches: usize,
    /// Seconds an unacknowledged assignment waits before JetStream redelivers it (after a monitor crash).
    #[arg(long = "ack-wait-s", env = "HWSCHED_MONITOR_ACK_WAIT_S", default_value_t = defaults::ACK_WAIT_S,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ack_wait_s: u64,
    /// Only report telemetry and capabilities; another framework executes the assignments
    /// (it consumes `hws.assign.<worker_id>` and publishes results, see docs/ARCHITECTURE.md).
    #[arg(long = "observe-only", env = "HWSCHED_MONITOR_OBSERVE_ONLY")]
    pub observe_only: bool,
    /// Declared accelerators, e.g. tpu=4,webgpu=1.
    #[arg(long = "accelerator", env = "HWSCHED_ACCELERATORS", value_delimiter = ',', value_parser = accelerator)]
    pub accelerators: Vec<(String, u32)>,
    /// Declared extra backends, e.g. webgpu,rocm ("cpu" and, with NVIDIA GPUs, "cuda" are detected).
    #[arg(long = "backend", env = "HWSCHED_BACKENDS", value_delimiter = ',')]
    pub backends: Vec<String>,
    /// Labels, e.g. zone=a,pool=ci.
    #[arg(long = "label", env = "HWSCHED_LABELS", value_delimiter = ',', value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Software versions overriding detection, e.g. torch=2.4.0.
    #[arg(long = "software", env = "HWSCHED_SOFTWARE", value_delimiter = ',', value_parser = key_value)]
    pub software: Vec<(String, String)>,
    /// Software version probes, name=shell command, e.g. torch='python3 -c "import torch; print(torch.__version__)"'.
    /// Replaces the defaults (python3, gcc, nvcc). Newline-separated in the environment variable.
    #[arg(long = "probe", env = "HWSCHED_PROBES", value_delimiter = '\n', value_parser = key_value)]
    pub probes: Vec<(String, String)>,
    /// Directory tasks run in when they name no workdir. Default: the monitor's own.
    #[arg(long = "task-dir", env = "HWSCHED_TASK_DIR")]
    pub task_dir: Option<PathBuf>,
    /// Cache of unpacked bundles (kept across restarts; give each monitor its own).
    /// Bundle tasks run in sandboxes under its `sandboxes/` when --sandbox-dir is not set,
    /// on the same filesystem as the cache so that copies can be reflinks.
    /// Default: hwsched-<worker id>/bundles in the system's temporary directory.
    #[arg(long = "bundle-cache-dir", env = "HWSCHED_MONITOR_BUNDLE_CACHE_DIR")]
    pub bundle_cache_dir: Option<PathBuf>,
    /// Bytes of unpacked bundles the cache keeps (least recently used evicted beyond);
    /// a bundle unpacking to more is refused.
    #[arg(long = "bundle-cache-bytes", env = "HWSCHED_MONITOR_BUNDLE_CACHE_BYTES", default_value_t = defaults::BUNDLE_CACHE_BYTES,
          value_parser = clap::value_parser!(u64).range(1 << 20..))]
    pub bundle_cache_bytes: u64,
    /// Largest bundle (compressed bytes) this worker downloads; a larger one fails its task as bad input.
    #[arg(long = "max-bundle-bytes", env = "HWSCHED_MONITOR_MAX_BUNDLE_BYTES", default_value_t = defaults::MAX_BUNDLE_BYTES,
          value_parser = clap::value_parser!(u64).range(1 << 10..))]
    pub max_bundle_bytes: u64,
    /// What this worker agrees to run, as whom, where, with which environment.
    #[command(flatten)]
    pub policy: crate::policy::PolicyConfig,
    /// Where output is spooled, how much of it and of the artifacts is kept.
    #[command(flatten)]
    pub output: crate::output::OutputConfig,
    /// How each attempt is isolated and measured (its cgroup).
    #[command(flatten)]
    pub cgroups: crate::cgroup::CgroupConfig,
    /// FAULT INJECTION, FOR TESTS ONLY: while this file exists, every attempt here
    /// (probes included) is reported failed after it ran, as a bad worker would.
    #[arg(long = "test-only-fail-while-file-exists", env = "HWSCHED_MONITOR_TEST_ONLY_FAIL_WHILE_FILE_EXISTS")]
    pub test_only_fail_while: Option<PathBuf>,
}

impl MonitorConfig {
    /// Checks the fields that can be checked before connecting.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_mb == Some(0) {
            return Err("--memory-mb / HWSCHED_MONITOR_MEMORY_MB must be more than 0".into());
        }
        self.cgroups.validate()?;
        let worker_id = crate::detect::worker_id(self.worker_id.as_deref(), self.node_name.as_deref())?;
        let cache_dir = crate::inputs::cache_dir(self, &worker_id);
        std::fs::create_dir_all(&cache_dir).map_err(|e| {
            format!("--bundle-cache-dir / HWSCHED_MONITOR_BUNDLE_CACHE_DIR {}: {e}", cache_dir.display())
        })?;
        self.output.spool_dir()?;
        crate::policy::Policy::from_config(&self.policy).map(|_| ())
    }

    /// Defaults, as for a monitor started with no flags.
    pub fn for_tests() -> Self {
        Self {
            worker_id: None,
            node_name: None,
            slots: None,
            memory_mb: None,
            interval_ms: defaults::INTERVAL_MS,
            level: defaults::LEVEL,
            buffer_batches: defaults::BUFFER_BATCHES,
            ack_wait_s: defaults::ACK_WAIT_S,
            observe_only: false,
            accelerators: vec![],
            backends: vec![],
            labels: vec![],
            software: vec![],
            probes: vec![],
            task_dir: None,
            bundle_cache_dir: None,
            bundle_cache_bytes: defaults::BUNDLE_CACHE_BYTES,
            max_bundle_bytes: defaults::MAX_BUNDLE_BYTES,
            policy: Default::default(),
            output: Default::default(),
            cgroups: Default::default(),
            test_only_fail_while: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_tests_equals_the_flag_defaults() {
        hwsched_config::check_flag_defaults(&MonitorConfig::for_tests()).expect("one set of defaults");
    }

    #[test]
    fn declared_memory_must_be_positive() {
        let mut cfg = MonitorConfig::for_tests();
        cfg.memory_mb = Some(0);
        assert!(cfg.validate().expect_err("zero").contains("--memory-mb"));
        cfg.memory_mb = None;
        cfg.cgroups.memory_headroom = 0.5;
        assert!(cfg.validate().expect_err("headroom").contains("--memory-headroom"));
    }
}
