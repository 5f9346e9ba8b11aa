//! Each attempt in a cgroup of its own: a memory limit (its requirement ×
//! headroom, no swap beyond it), a CPU weight, a pids limit; its peak memory,
//! CPU time and OOM kills read from the cgroup's own counters; and when it
//! ends, everything in it killed and the cgroup removed. Cgroup v2 where the
//! host has the controllers ([`v2`]), else v1 ([`v1`]); without either the
//! monitor says so once at start and runs attempts as before (no limits,
//! sampled usage). How a child joins before its program runs: [`crate::process::start`].

pub mod config;
mod mounts;
mod v1;
mod v2;

#[cfg(test)]
mod real_tests;

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use hwsched_proto::v1::{Requirements, ResourceUsage};

pub use config::{CgroupConfig, CgroupMode};

/// Instances of [`Cgroups`] made by this process.
static INSTANCES: AtomicU32 = AtomicU32::new(0);
/// How long killing an attempt's processes may take before giving up.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long removing an emptied cgroup is retried (the kernel may lag behind the last exit).
const REMOVE_WAIT: Duration = Duration::from_secs(1);

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be read, written or made.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// To which file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Cgroups cannot be used here (the reason says why).
    #[error("{0}")]
    Unusable(String),
    /// A cgroup still holds processes or cannot be removed.
    #[error("cgroup {} could not be emptied and removed", .0.display())]
    NotRemoved(PathBuf),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(io("read", path))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io("write", path))
}

fn mkdir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(io("create", path))
}

/// A number in a cgroup file (`None` when absent or not a number).
fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.split_once(' ').filter(|(k, _)| *k == key).and_then(|(_, v)| v.trim().parse().ok()))
}

/// The limits of one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Memory limit, MB (`None`: no limit, the task declared no memory).
    pub memory_mb: Option<u64>,
    /// Cores the task asked for (1 when it did not say): its CPU weight.
    pub cpu_cores: f64,
    /// Processes and threads at once (`None`: no limit).
    pub pids: Option<u64>,
}

impl Limits {
    /// The limits of a task with `req`: memory × `headroom`, the cores as a weight, `pids_limit` (0 = none).
    pub fn for_task(req: Option<&Requirements>, headroom: f64, pids_limit: u64) -> Self {
        let memory_mb = req.map_or(0, |r| r.memory_mb);
        Limits {
            memory_mb: (memory_mb > 0).then(|| (memory_mb as f64 * headroom).ceil() as u64),
            cpu_cores: req.map(|r| r.cpu_cores).filter(|c| c.is_finite() && *c > 0.0).unwrap_or(1.0),
            pids: (pids_limit > 0).then_some(pids_limit),
        }
    }

    fn memory_bytes(&self) -> Option<u64> {
        self.memory_mb.map(|mb| mb.saturating_mul(1 << 20))
    }

    /// v1 `cpu.shares`: 1024 per core, at least 2 (the kernel's minimum).
    /// A weight, not a quota (`cpu.cfs_quota_us`): a test may use idle cores, and is
    /// held to its share only when the worker is busy, so it is never throttled for nothing.
    pub fn v1_shares(&self) -> u64 {
        ((1024.0 * self.cpu_cores).round() as u64).max(2)
    }

    /// v2 `cpu.weight`: 100 per core, within the kernel's 1..=10000 (a weight, not
    /// `cpu.max`, for the same reason as [`Limits::v1_shares`]).
    pub fn v2_weight(&self) -> u64 {
        ((100.0 * self.cpu_cores).round() as u64).clamp(1, 10_000)
    }
}

/// What an attempt's cgroup counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// Peak memory, bytes (`None` where the kernel does not keep it: v2 before `memory.peak`).
    pub memory_peak_bytes: Option<u64>,
    /// CPU time of all its processes, nanoseconds.
    pub cpu_time_ns: u64,
    /// Processes the OOM killer killed in it.
    pub oom_kills: u32,
    /// The memory limit it ran under, MB (0 = none).
    pub memory_limit_mb: u64,
}

impl Counters {
    /// Puts the counters into `usage` (peak memory: the larger of sampled and counted).
    pub fn apply(&self, usage: &mut ResourceUsage) {
        if let Some(peak) = self.memory_peak_bytes {
            usage.memory_peak_mb = usage.memory_peak_mb.max(peak.div_ceil(1 << 20));
        }
        usage.cpu_time_s = self.cpu_time_ns as f64 / 1e9;
        usage.oom_kills = self.oom_kills;
        usage.memory_limit_mb = self.memory_limit_mb;
        usage.cgroup = true;
    }
}

/// Where this monitor makes its attempts' cgroups, and with which settings.
#[derive(Debug)]
pub struct Cgroups {
    /// hwsched-<worker id>, or --cgroup-parent.
    base: Dirs,
    /// This monitor's own child of `base`, where its attempts' cgroups are made.
    parent: Dirs,
    headroom: f64,
    pids_limit: u64,
}

/// The directories of one cgroup (a parent or an attempt) in each hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dirs {
    V1(v1::Dirs),
    V2(PathBuf),
}

impl Dirs {
    fn child(&self, name: &str) -> Dirs {
        match self {
            Dirs::V1(d) => Dirs::V1(d.child(name)),
            Dirs::V2(d) => Dirs::V2(d.join(name)),
        }
    }

    fn all(&self) -> Vec<&Path> {
        match self {
            Dirs::V1(d) => d.all(),
            Dirs::V2(d) => vec![d.as_path()],
        }
    }

    /// The directory whose `cgroup.procs` lists every process (v1: the memory hierarchy's).
    fn primary(&self) -> &Path {
        match self {
            Dirs::V1(d) => &d.memory,
            Dirs::V2(d) => d,
        }
    }
}

/// Detects the cgroups attempts can use, once at start, and logs one line saying which or why none.
pub fn setup(cfg: &CgroupConfig, worker_id: &str) -> Option<Arc<Cgroups>> {
    if cfg.mode == CgroupMode::Off {
        tracing::info!("cgroups off (--cgroups off): attempts run without limits, usage is sampled");
        return None;
    }
    match Cgroups::detect(cfg, worker_id) {
        Ok(c) => {
            let parents: Vec<String> = c.parent.all().iter().map(|p| p.display().to_string()).collect();
            tracing::info!(version = c.version(), parent = ?parents, memory_headroom = cfg.memory_headroom,
                pids_limit = cfg.pids_limit, "each attempt runs in a cgroup of its own");
            Some(Arc::new(c))
        }
        Err(e) => {
            tracing::warn!(reason = %e, "cgroups not usable: attempts run without memory, CPU or pids limits, usage is sampled");
            None
        }
    }
}

impl Cgroups {
    /// Finds a usable hierarchy (v2 with memory, cpu and pids, else v1 with memory),
    /// makes the parent cgroups, and removes those left by monitors that are gone.
    pub fn detect(cfg: &CgroupConfig, worker_id: &str) -> Result<Self, CgroupError> {
        let mounts = mounts::parse_mountinfo(&read(Path::new("/proc/self/mountinfo"))?);
        let own = read(Path::new("/proc/self/cgroup"))?;
        let name = format!("hwsched-{}", crate::detect::sanitize(worker_id));
        let base = match v2::detect(&mounts, &own, cfg.parent.as_deref(), &name) {
            Ok(dir) => Dirs::V2(dir),
            Err(v2_why) => match v1::detect(&mounts, &own, cfg.parent.as_deref(), &name) {
                Ok(dirs) => Dirs::V1(dirs),
                Err(v1_why) => return Err(CgroupError::Unusable(format!("v2: {v2_why}; v1: {v1_why}"))),
            },
        };
        sweep(&base);
        // One level per monitor process (and per instance: tests start several in
        // one), so that two monitors never share an attempt's cgroup, even with one
        // worker id or one --cgroup-parent, and a later one knows what is stale.
        let instance = format!("m{}-{}", std::process::id(), INSTANCES.fetch_add(1, Ordering::Relaxed));
        let parent = base.child(&instance);
        for d in parent.all() {
            mkdir(d)?;
        }
        if let Dirs::V2(d) = &parent {
            v2::enable(d)?;
        }
        Ok(Cgroups { base, parent, headroom: cfg.memory_headroom, pids_limit: cfg.pids_limit })
    }

    /// "v1" or "v2".
    pub fn version(&self) -> &'static str {
        match self.parent {
            Dirs::V1(_) => "v1",
            Dirs::V2(_) => "v2",
        }
    }

    /// This monitor's parent cgroup's directories (where its attempts' cgroups are made).
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        self.parent.all().into_iter().map(Path::to_path_buf).collect()
    }

    /// Makes the cgroup of `attempt` of `task_id`, with the limits its requirements give.
    pub fn create(&self, task_id: &str, attempt: u32, req: Option<&Requirements>) -> Result<Attempt, CgroupError> {
        let name = format!("{}-{attempt}", crate::detect::sanitize(task_id));
        self.create_named(&name, Limits::for_task(req, self.headroom, self.pids_limit))
    }

    /// Makes cgroup `name` under the parent with `limits`. One of that name already
    /// there (it cannot be an attempt still running: names are unique per attempt) is
    /// emptied and removed first.
    pub fn create_named(&self, name: &str, limits: Limits) -> Result<Attempt, CgroupError> {
        let mut attempt = Attempt { dirs: self.parent.child(name), limits, done: false };
        if attempt.dirs.all().iter().any(|d| d.exists()) {
            tracing::warn!(cgroup = name, "cgroup of that name left over: emptying and removing it");
            if !(attempt.kill() && attempt.remove()) {
                // left for an operator to look at; dropping it must not try again
                attempt.done = true;
                return Err(CgroupError::NotRemoved(attempt.dirs.primary().to_path_buf()));
            }
        }
        for d in attempt.dirs.all() {
            mkdir(d)?;
        }
        match &attempt.dirs {
            Dirs::V1(d) => v1::write_limits(d, &limits)?,
            Dirs::V2(d) => v2::write_limits(d, &limits)?,
        }
        Ok(attempt)
    }
}

/// Empties and removes the monitor cgroups under `base` (and their attempts') whose
/// monitor process is gone: what a crashed monitor left. A pid in use again keeps
/// its cgroup until a later start: garbage, never a live monitor's attempt killed.
fn sweep(base: &Dirs) {
    let Ok(entries) = std::fs::read_dir(base.primary()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix('m').and_then(|n| n.split_once('-')).and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let instance = base.child(&name);
        let attempts = std::fs::read_dir(instance.primary()).into_iter().flatten().flatten();
        for a in attempts.filter(|a| a.path().is_dir()) {
            let attempt = a.file_name().to_string_lossy().into_owned();
            tracing::warn!(cgroup = %a.path().display(), "cgroup left by a monitor that is gone: emptying and removing it");
            drop(Attempt { dirs: instance.child(&attempt), limits: Limits::default(), done: false });
        }
        for d in instance.all() {
            if !remove_dir(d) {
                tracing::warn!(cgroup = %d.display(), "cgroup left by a monitor that is gone not removed");
            }
        }
    }
}

impl Drop for Cgroups {
    /// Removes the parents when the monitor stops (only if empty: nothing is killed here).
    fn drop(&mut self) {
        for d in self.parent.all().into_iter().chain(self.base.all()) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// One attempt's cgroup. Dropped unfinished (the attempt's future was dropped),
/// it still kills what is in it and removes itself.
#[derive(Debug)]
pub struct Attempt {
    dirs: Dirs,
    limits: Limits,
    done: bool,
}

impl Attempt {
    /// Moves process `pid` into the cgroup (in every hierarchy).
    pub fn join(&self, pid: u32) -> Result<(), CgroupError> {
        for d in self.dirs.all() {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The cgroup's directories.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.dirs.all().into_iter().map(Path::to_path_buf).collect()
    }

    /// The limits it was made with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Kills everything still in it, reads its counters and removes it.
    pub fn finish(mut self) -> Counters {
        let emptied = self.kill();
        let mut counters = match &self.dirs {
            Dirs::V1(d) => v1::counters(d),
            Dirs::V2(d) => v2::counters(d),
        };
        counters.memory_limit_mb = self.limits.memory_mb.unwrap_or(0);
        if emptied {
            self.remove();
        }
        self.done = true;
        counters
    }

    /// Kills and removes; whether it is gone.
    fn clean_up(&mut self) -> bool {
        self.done = true;
        self.kill() && self.remove()
    }

    /// Kills every process in it; whether it is empty.
    fn kill(&self) -> bool {
        if let Dirs::V2(d) = &self.dirs {
            v2::kill(d);
        }
        let procs = self.dirs.primary().join("cgroup.procs");
        let emptied = kill_all(&procs);
        if !emptied {
            tracing::warn!(cgroup = %procs.display(), "processes of the attempt survived SIGKILL");
        }
        emptied
    }

    /// Removes its directories; whether all are gone.
    fn remove(&self) -> bool {
        let mut all = true;
        for d in self.dirs.all() {
            if !remove_dir(d) {
                tracing::warn!(cgroup = %d.display(), "attempt cgroup not removed");
                all = false;
            }
        }
        all
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            self.clean_up();
        }
    }
}

/// Whether process `pid` runs (a zombie, killed but not yet reaped, does not).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).is_some_and(|state| state != "Z")
}

/// SIGKILLs the processes listed in `procs` until none are left or [`KILL_WAIT`] passed.
fn kill_all(procs: &Path) -> bool {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        let text = match std::fs::read_to_string(procs) {
            Ok(t) => t,
            Err(e) => return e.kind() == std::io::ErrorKind::NotFound,
        };
        let pids: Vec<i32> = text.split_whitespace().filter_map(|p| p.parse().ok()).filter(|p| *p > 1).collect();
        if pids.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes an empty cgroup directory, retrying for [`REMOVE_WAIT`]; whether it is gone.
fn remove_dir(dir: &Path) -> bool {
    let deadline = Instant::now() + REMOVE_WAIT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{keyed, Counters, Limits};
    use hwsched_proto::v1::{Requirements, ResourceUsage};

    #[test]
    fn limits_follow_the_requirements() {
        let req = Requirements { memory_mb: 1000, cpu_cores: 2.5, ..Default::default() };
        let l = Limits::for_task(Some(&req), 1.25, 4096);
        assert_eq!(l.memory_mb, Some(1250));
        assert_eq!(l.memory_bytes(), Some(1250 << 20));
        assert_eq!((l.v1_shares(), l.v2_weight()), (2560, 250));
        assert_eq!(l.pids, Some(4096));
        let none = Limits::for_task(None, 1.25, 0);
        assert_eq!((none.memory_mb, none.pids, none.cpu_cores), (None, None, 1.0), "unset cores count as one");
        assert_eq!((none.v1_shares(), none.v2_weight()), (1024, 100));
        let tiny = Limits { cpu_cores: 0.001, ..none };
        assert_eq!((tiny.v1_shares(), tiny.v2_weight()), (2, 1), "kernel minimums");
        let huge = Limits { cpu_cores: 512.0, ..none };
        assert_eq!(huge.v2_weight(), 10_000, "kernel maximum");
        let odd = Requirements { memory_mb: 3, cpu_cores: f64::NAN, ..Default::default() };
        let l = Limits::for_task(Some(&odd), 1.1, 1);
        assert_eq!((l.memory_mb, l.cpu_cores), (Some(4), 1.0), "rounded up; NaN cores count as one");
    }

    #[test]
    fn counters_fill_the_usage() {
        let mut u = ResourceUsage { memory_peak_mb: 10, ..Default::default() };
        let c = Counters {
            memory_peak_bytes: Some(64 << 20),
            cpu_time_ns: 1_500_000_000,
            oom_kills: 2,
            memory_limit_mb: 64,
        };
        c.apply(&mut u);
        assert_eq!((u.memory_peak_mb, u.cpu_time_s, u.oom_kills, u.memory_limit_mb, u.cgroup), (64, 1.5, 2, 64, true));
        let mut sampled = ResourceUsage { memory_peak_mb: 100, ..Default::default() };
        Counters { memory_peak_bytes: None, ..c }.apply(&mut sampled);
        assert_eq!(sampled.memory_peak_mb, 100, "no counted peak: the sampled one stays");
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while super::alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!super::alive(pid), "exited, not reaped yet: a zombie");
        child.wait().expect("reap");
        assert!(!super::alive(pid));
        assert!(super::alive(std::process::id()));
    }

    #[test]
    fn keyed_files_are_read_by_key() {
        assert_eq!(keyed("oom 3\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(keyed("oom_kill_disable 0\noom_kill 7", "oom_kill"), Some(7));
        assert_eq!(keyed("usage_usec x\n", "usage_usec"), None);
    }
}
