//! Cgroup v1: one directory per controller hierarchy (memory required; cpu,
//! cpuacct and pids used where mounted), each attempt a child of the parent in each.

use std::path::{Path, PathBuf};

use super::{keyed, mkdir, mounts, read_u64, write, CgroupError, Counters, Limits};

/// A cgroup's directory in each v1 hierarchy the monitor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Memory controller: limit, peak, OOM kills; its `cgroup.procs` lists the attempt's processes.
    pub memory: PathBuf,
    /// CPU controller: the weight.
    pub cpu: Option<PathBuf>,
    /// CPU accounting: CPU time (often the same hierarchy as `cpu`).
    pub cpuacct: Option<PathBuf>,
    /// Pids controller: the process limit.
    pub pids: Option<PathBuf>,
}

impl Dirs {
    /// The same-named child in each hierarchy.
    pub fn child(&self, name: &str) -> Dirs {
        let join = |d: &Option<PathBuf>| d.as_ref().map(|d| d.join(name));
        Dirs {
            memory: self.memory.join(name),
            cpu: join(&self.cpu),
            cpuacct: join(&self.cpuacct),
            pids: join(&self.pids),
        }
    }

    /// Every directory once (cpu and cpuacct are often one hierarchy), memory first.
    pub fn all(&self) -> Vec<&Path> {
        let mut out = vec![self.memory.as_path()];
        for d in [&self.cpu, &self.cpuacct, &self.pids].into_iter().flatten() {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        out
    }
}

/// The parent's directories in the v1 hierarchies, made if missing; why not when
/// there is no writable memory hierarchy.
pub fn detect(
    mounts: &[mounts::Mount],
    own_text: &str,
    parent: Option<&Path>,
    name: &str,
) -> Result<Dirs, CgroupError> {
    let dir = |controller: &str| -> Option<PathBuf> {
        let mount = mounts.iter().find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))?;
        let own = mounts::own_cgroup(own_text, controller)?;
        let own_dir = mounts::dir_of(mount, &own)?;
        Some(mounts::parent_dir(&mount.point, &own_dir, parent, name))
    };
    let memory = dir("memory").ok_or_else(|| CgroupError::Unusable("no memory controller mounted".into()))?;
    let dirs = Dirs { memory, cpu: dir("cpu"), cpuacct: dir("cpuacct"), pids: dir("pids") };
    for d in dirs.all() {
        mkdir(d)?;
    }
    Ok(dirs)
}

/// Writes `limits` into a fresh attempt cgroup.
pub fn write_limits(d: &Dirs, limits: &Limits) -> Result<(), CgroupError> {
    if let Some(bytes) = limits.memory_bytes() {
        write(&d.memory.join("memory.limit_in_bytes"), &bytes.to_string())?;
        // memory + swap may not exceed memory: no swap beyond the limit. Written after
        // memory.limit_in_bytes, which the kernel requires to stay <= memsw.
        let memsw = d.memory.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write(&memsw, &bytes.to_string())?;
        }
    }
    if let Some(cpu) = &d.cpu {
        write(&cpu.join("cpu.shares"), &limits.v1_shares().to_string())?;
    }
    if let (Some(pids), Some(max)) = (&d.pids, limits.pids) {
        write(&pids.join("pids.max"), &max.to_string())?;
    }
    Ok(())
}

/// What the attempt's cgroup counted.
pub fn counters(d: &Dirs) -> Counters {
    let oom = std::fs::read_to_string(d.memory.join("memory.oom_control")).unwrap_or_default();
    Counters {
        memory_peak_bytes: read_u64(&d.memory.join("memory.max_usage_in_bytes")),
        cpu_time_ns: d.cpuacct.as_ref().and_then(|c| read_u64(&c.join("cpuacct.usage"))).unwrap_or(0),
        oom_kills: keyed(&oom, "oom_kill").map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        memory_limit_mb: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::{counters, write_limits, Dirs, Limits};
    use std::fs;

    fn dirs(root: &std::path::Path) -> Dirs {
        let d = Dirs {
            memory: root.join("memory/a"),
            cpu: Some(root.join("cpu,cpuacct/a")),
            cpuacct: Some(root.join("cpu,cpuacct/a")),
            pids: Some(root.join("pids/a")),
        };
        for p in d.all() {
            fs::create_dir_all(p).expect("dir");
        }
        d
    }

    #[test]
    fn limits_are_written_to_their_files() {
        let root = tempfile::tempdir().expect("tmp");
        let d = dirs(root.path());
        assert_eq!(d.all().len(), 3, "cpu and cpuacct share a hierarchy: one directory");
        fs::write(d.memory.join("memory.memsw.limit_in_bytes"), "").expect("memsw");
        let l = Limits { memory_mb: Some(64), cpu_cores: 2.0, pids: Some(20) };
        write_limits(&d, &l).expect("write");
        let read = |p: std::path::PathBuf| fs::read_to_string(p).expect("read");
        assert_eq!(read(d.memory.join("memory.limit_in_bytes")), (64u64 << 20).to_string());
        assert_eq!(read(d.memory.join("memory.memsw.limit_in_bytes")), (64u64 << 20).to_string(), "no swap beyond");
        assert_eq!(read(d.memory.join("../../cpu,cpuacct/a/cpu.shares")), "2048");
        assert_eq!(read(d.memory.join("../../pids/a/pids.max")), "20");
    }

    #[test]
    fn no_memory_requirement_no_memory_limit_and_no_memsw_file_invented() {
        let root = tempfile::tempdir().expect("tmp");
        let d = dirs(root.path());
        write_limits(&d, &Limits { memory_mb: None, cpu_cores: 1.0, pids: None }).expect("write");
        assert!(!d.memory.join("memory.limit_in_bytes").exists());
        assert!(!d.memory.join("memory.memsw.limit_in_bytes").exists());
        assert!(!root.path().join("pids/a/pids.max").exists(), "pids limit 0: none");
        write_limits(&d, &Limits { memory_mb: Some(1), cpu_cores: 1.0, pids: None }).expect("write");
        assert!(!d.memory.join("memory.memsw.limit_in_bytes").exists(), "only where the kernel has swap accounting");
    }

    #[test]
    fn counters_are_read_from_the_v1_files() {
        let root = tempfile::tempdir().expect("tmp");
        let d = dirs(root.path());
        assert_eq!(counters(&d), Default::default(), "nothing readable: zeros, no peak");
        fs::write(d.memory.join("memory.max_usage_in_bytes"), "67104768\n").expect("w");
        fs::write(d.memory.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").expect("w");
        fs::write(root.path().join("cpu,cpuacct/a/cpuacct.usage"), "1234567890\n").expect("w");
        let c = counters(&d);
        assert_eq!((c.memory_peak_bytes, c.cpu_time_ns, c.oom_kills), (Some(67_104_768), 1_234_567_890, 3));
    }
}
