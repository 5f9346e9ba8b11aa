//! Per-task resource accounting: each running task's whole process tree is
//! sampled (CPU, memory, disk I/O, GPU memory of its processes), so tasks that
//! share a worker each get their own numbers.

use std::collections::HashMap;

use hwsched_proto::v1::ResourceUsage;
use sysinfo::{Pid, ProcessesToUpdate, System};

use crate::gpu::GpuSample;

/// Samples process trees; owns its own process table.
pub struct Tracker {
    sys: System,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker with an empty process table.
    pub fn new() -> Result<Self, sysinfo::Error> {
        Ok(Self { sys: System::new()? })
    }

    /// Samples the process trees rooted at `roots` into their accumulators.
    pub fn track(&mut self, roots: &mut HashMap<u32, TaskUsage>, gpus: &[GpuSample]) {
        if roots.is_empty() {
            return;
        }
        self.sys.refresh_processes(ProcessesToUpdate::All, true);
        let procs = self.sys.processes();
        // parent -> children, to walk each task's tree
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, p) in procs {
            if let Some(parent) = p.parent() {
                children.entry(parent).or_default().push(*pid);
            }
        }
        for (root, usage) in roots.iter_mut() {
            let (mut cpu, mut mem, mut read, mut written, mut gpu_mem) = (0.0, 0u64, 0u64, 0u64, 0u64);
            let mut stack = vec![Pid::from_u32(*root)];
            while let Some(pid) = stack.pop() {
                if let Some(p) = procs.get(&pid) {
                    cpu += f64::from(p.cpu_usage());
                    mem += p.memory();
                    let d = p.disk_usage();
                    read += d.total_read_bytes;
                    written += d.total_written_bytes;
                    gpu_mem += gpus.iter().filter_map(|g| g.process_memory_mb.get(&pid.as_u32())).sum::<u64>();
                }
                if let Some(c) = children.get(&pid) {
                    stack.extend(c);
                }
            }
            usage.add(cpu, mem / (1024 * 1024), gpu_mem, read, written);
        }
    }
}

/// Running aggregate of one task's resource use.
#[derive(Debug, Clone, Default)]
pub struct TaskUsage {
    /// The task measured.
    pub task_id: String,
    /// CPU of the latest sample, percent of one core.
    pub last_cpu_pct: f64,
    /// Memory of the latest sample, MB.
    pub last_memory_mb: u64,
    cpu_sum: f64,
    usage: ResourceUsage,
}

impl TaskUsage {
    /// An empty aggregate for `task_id`.
    pub fn new(task_id: &str) -> Self {
        Self { task_id: task_id.to_string(), ..Default::default() }
    }

    fn add(&mut self, cpu_pct: f64, mem_mb: u64, gpu_mem_mb: u64, read: u64, written: u64) {
        self.last_cpu_pct = cpu_pct;
        self.last_memory_mb = mem_mb;
        let u = &mut self.usage;
        u.samples += 1;
        self.cpu_sum += cpu_pct;
        u.cpu_peak_pct = u.cpu_peak_pct.max(cpu_pct);
        u.cpu_avg_pct = self.cpu_sum / f64::from(u.samples);
        u.memory_peak_mb = u.memory_peak_mb.max(mem_mb);
        u.gpu_memory_peak_mb = u.gpu_memory_peak_mb.max(gpu_mem_mb);
        u.disk_read_bytes = u.disk_read_bytes.max(read);
        u.disk_written_bytes = u.disk_written_bytes.max(written);
    }

    /// The aggregate so far.
    pub fn usage(&self) -> ResourceUsage {
        self.usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_tracks_peak_and_average() {
        let mut u = TaskUsage::default();
        u.add(50.0, 100, 0, 0, 0);
        u.add(150.0, 300, 0, 10, 5);
        let r = u.usage();
        assert_eq!(r.samples, 2);
        assert_eq!(r.cpu_peak_pct, 150.0);
        assert_eq!(r.cpu_avg_pct, 100.0);
        assert_eq!(r.memory_peak_mb, 300);
        assert_eq!(r.disk_read_bytes, 10);
    }

    #[test]
    fn tracking_measures_a_child_process_tree() {
        // a shell (the task's root) whose child allocates and touches 150 MB
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "python3 -c 'b = bytearray(150 << 20); import time; time.sleep(20)'"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let mut s = Tracker::new().expect("sysinfo");
        let mut roots = HashMap::from([(child.id(), TaskUsage::default())]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while roots[&child.id()].usage().memory_peak_mb < 150 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            s.track(&mut roots, &[]);
        }
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let u = roots[&child.id()].usage();
        assert!(u.memory_peak_mb >= 150 && u.memory_peak_mb < 1024, "{u:?}");
    }
}
