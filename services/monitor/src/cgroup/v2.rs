//! Cgroup v2: one unified hierarchy; usable where the monitor's own cgroup
//! offers the memory, cpu and pids controllers.

use std::path::{Path, PathBuf};

use super::{io, keyed, mkdir, mounts, read, read_u64, write, CgroupError, Counters, Limits};

/// Controllers an attempt's cgroup needs.
const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// The parent cgroup's directory, made and with the controllers enabled for its
/// children; why not when v2 is not mounted or lacks the controllers.
pub fn detect(
    mounts: &[mounts::Mount],
    own_text: &str,
    parent: Option<&Path>,
    name: &str,
) -> Result<PathBuf, CgroupError> {
    let unusable = |why: String| CgroupError::Unusable(why);
    let mount = mounts.iter().find(|m| m.fstype == "cgroup2").ok_or_else(|| unusable("not mounted".into()))?;
    let own = mounts::own_cgroup(own_text, "").ok_or_else(|| unusable("no 0:: line in /proc/self/cgroup".into()))?;
    let own_dir =
        mounts::dir_of(mount, &own).ok_or_else(|| unusable(format!("own cgroup {own} not under the mount")))?;
    let available = read(&own_dir.join("cgroup.controllers"))?;
    let missing: Vec<&str> =
        CONTROLLERS.into_iter().filter(|c| !available.split_whitespace().any(|a| a == *c)).collect();
    if !missing.is_empty() {
        return Err(unusable(format!("{} has no {} controller", own_dir.display(), missing.join(", "))));
    }
    let parent = mounts::parent_dir(&mount.point, &own_dir, parent, name);
    match prepare(&mount.point, &parent) {
        Err(CgroupError::Io { path, source, .. })
            if source.raw_os_error() == Some(nix::errno::Errno::EBUSY as i32)
                && path.parent() == Some(own_dir.as_path()) =>
        {
            // v2's no-internal-process rule: a cgroup other than the root that holds
            // processes cannot hand controllers to its children. The monitor owns its
            // cgroup (a service unit or a container), so it moves itself into a leaf
            // `monitor` child, as systemd asks of a delegated subtree's owner; its own
            // usage stays visible there. If other processes still sit in the cgroup
            // (a container's init), enabling fails again and the monitor runs
            // without cgroups, saying why, rather than moving processes it does not own.
            let leaf = own_dir.join("monitor");
            mkdir(&leaf)?;
            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
            prepare(&mount.point, &parent)?;
        }
        other => other?,
    }
    Ok(parent)
}

/// Makes `parent` (and the cgroups between it and the root), enabling the
/// controllers in each one from `root` down to `parent` itself where missing.
pub fn prepare(root: &Path, parent: &Path) -> Result<(), CgroupError> {
    let rel = parent
        .strip_prefix(root)
        .map_err(|_| CgroupError::Unusable(format!("{} is not under {}", parent.display(), root.display())))?;
    let mut dir = root.to_path_buf();
    enable(&dir)?;
    for part in rel.components() {
        dir.push(part);
        mkdir(&dir)?;
        enable(&dir)?;
    }
    Ok(())
}

/// Enables [`CONTROLLERS`] in `dir`'s `cgroup.subtree_control`, writing only the missing ones.
pub fn enable(dir: &Path) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&file).unwrap_or_default();
    let missing: Vec<String> =
        CONTROLLERS.into_iter().filter(|c| !on.split_whitespace().any(|o| o == *c)).map(|c| format!("+{c}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::write(&file, missing.join(" ")).map_err(io("write", &file))
}

/// Writes `limits` into a fresh attempt cgroup.
pub fn write_limits(dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    if let Some(bytes) = limits.memory_bytes() {
        write(&dir.join("memory.max"), &bytes.to_string())?;
        // no swap beyond the limit (the file is absent without swap accounting)
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
    }
    write(&dir.join("cpu.weight"), &limits.v2_weight().to_string())?;
    if let Some(max) = limits.pids {
        write(&dir.join("pids.max"), &max.to_string())?;
    }
    Ok(())
}

/// What the attempt's cgroup counted (`memory.peak` exists from Linux 5.19).
pub fn counters(dir: &Path) -> Counters {
    let cpu = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
    let events = std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default();
    Counters {
        memory_peak_bytes: read_u64(&dir.join("memory.peak")),
        cpu_time_ns: keyed(&cpu, "usage_usec").unwrap_or(0).saturating_mul(1000),
        oom_kills: keyed(&events, "oom_kill").map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        memory_limit_mb: 0,
    }
}

/// Kills everything in the cgroup at once (`cgroup.kill`, Linux 5.14+); older
/// kernels fall back to the caller's loop over `cgroup.procs`.
pub fn kill(dir: &Path) {
    let file = dir.join("cgroup.kill");
    if file.exists() {
        let _ = std::fs::write(file, "1");
    }
}

#[cfg(test)]
mod tests {
    use super::{counters, prepare, write_limits, Limits};
    use std::fs;

    #[test]
    fn limits_are_written_to_their_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        fs::write(d.join("memory.swap.max"), "max").expect("swap");
        write_limits(d, &Limits { memory_mb: Some(80), cpu_cores: 0.5, pids: Some(20) }).expect("write");
        let read = |f: &str| fs::read_to_string(d.join(f)).expect(f);
        assert_eq!(read("memory.max"), (80u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0", "no swap beyond the limit");
        assert_eq!(read("cpu.weight"), "50");
        assert_eq!(read("pids.max"), "20");
    }

    #[test]
    fn no_requirement_no_memory_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        write_limits(dir.path(), &Limits { memory_mb: None, cpu_cores: 1.0, pids: None }).expect("write");
        assert!(!dir.path().join("memory.max").exists());
        assert!(!dir.path().join("memory.swap.max").exists());
        assert!(!dir.path().join("pids.max").exists());
        assert_eq!(fs::read_to_string(dir.path().join("cpu.weight")).expect("weight"), "100");
    }

    #[test]
    fn counters_are_read_from_the_v2_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        fs::write(d.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n").expect("w");
        fs::write(d.join("memory.events"), "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n").expect("w");
        let c = counters(d);
        assert_eq!((c.memory_peak_bytes, c.cpu_time_ns, c.oom_kills), (None, 1_500_000_000, 1), "no memory.peak: none");
        fs::write(d.join("memory.peak"), "67108864\n").expect("w");
        assert_eq!(counters(d).memory_peak_bytes, Some(64 << 20));
    }

    #[test]
    fn controllers_are_enabled_down_to_the_parent() {
        let root = tempfile::tempdir().expect("tmp");
        let r = root.path();
        fs::write(r.join("cgroup.subtree_control"), "cpu memory pids").expect("w");
        fs::create_dir_all(r.join("svc")).expect("dir");
        fs::write(r.join("svc/cgroup.subtree_control"), "memory").expect("w");
        prepare(r, &r.join("svc/hwsched-w")).expect("prepare");
        let read = |f: &str| fs::read_to_string(r.join(f)).expect(f);
        assert_eq!(read("cgroup.subtree_control"), "cpu memory pids", "already on: not written");
        assert_eq!(read("svc/cgroup.subtree_control"), "+cpu +pids", "only the missing ones");
        assert_eq!(read("svc/hwsched-w/cgroup.subtree_control"), "+memory +cpu +pids");
        assert!(prepare(r, std::path::Path::new("/elsewhere")).is_err());
    }
}
