//! Per-task resource accounting: each running task's whole process tree is
//! sampled (CPU, memory, disk I/O, GPU memory of its processes), so tasks that
//! share a worker each get their own numbers.

use std::collections::HashMap;

use hwsched_proto::v1::ResourceUsage;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::{gpu::GpuSample, rapl::Rapl};

/// Samples process trees; owns its own process table.
pub struct Tracker {
    sys: System,
    rapl: Option<Rapl>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker with an empty process table, reading RAPL under `powercap_root` when present.
    pub fn new(powercap_root: &std::path::Path) -> Result<Self, sysinfo::Error> {
        let rapl = Rapl::discover(powercap_root);
        if rapl.is_none() {
            tracing::info!("RAPL energy counters not readable: tasks report no CPU energy");
        }
        Ok(Self { sys: System::new()?, rapl })
    }

    /// Samples the process trees rooted at `roots` into their accumulators.
    pub fn track(&mut self, roots: &mut HashMap<u32, TaskUsage>, gpus: &[GpuSample]) {
        if roots.is_empty() {
            return;
        }
        // Only what is read below; and no threads: sysinfo lists each thread
        // as a process of its own with the whole process's memory, which
        // counted a test's memory once per thread (Chromium: 14 GB for 0.9).
        let what = ProcessRefreshKind::nothing().with_cpu().with_memory().with_disk_usage().without_tasks();
        self.sys.refresh_processes_specifics(ProcessesToUpdate::All, true, what);
        let procs: HashMap<Pid, &sysinfo::Process> =
            self.sys.processes().iter().filter(|(_, p)| p.thread_kind().is_none()).map(|(k, v)| (*k, v)).collect();
        // CPU package energy since the last sample, shared out by CPU time
        let package_j = self.rapl.as_mut().and_then(Rapl::delta_j);
        let host_cpu: f64 = procs.values().map(|p| f64::from(p.cpu_usage())).sum();
        // parent -> children, to walk each task's tree
        let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
        for (pid, p) in &procs {
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
            if let Some(j) = package_j {
                usage.add_cpu_energy(energy_share(j, cpu, host_cpu));
            }
            usage.add_gpus(gpus);
        }
    }
}

/// A task's part of the package energy of one interval: by its share of all CPU time.
fn energy_share(joules: f64, task_cpu_pct: f64, host_cpu_pct: f64) -> f64 {
    if host_cpu_pct > 0.0 {
        joules * (task_cpu_pct / host_cpu_pct).clamp(0.0, 1.0)
    } else {
        0.0
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
    /// GPUs reserved for the task (their utilisation and energy are the task's).
    pub gpus: Vec<u32>,
    cpu_sum: f64,
    gpu_util_sum: f64,
    gpu_samples: u32,
    gpu_energy_first_mj: HashMap<u32, u64>,
    gpu_energy_last_mj: HashMap<u32, u64>,
    usage: ResourceUsage,
}

impl TaskUsage {
    /// An empty aggregate for `task_id` running on `gpus`.
    pub fn new(task_id: &str, gpus: &[u32]) -> Self {
        Self { task_id: task_id.to_string(), gpus: gpus.to_vec(), ..Default::default() }
    }

    fn add_cpu_energy(&mut self, joules: f64) {
        self.usage.cpu_energy_j = Some(self.usage.cpu_energy_j.unwrap_or(0.0) + joules);
    }

    /// Utilisation and energy counters of the task's own GPUs.
    fn add_gpus(&mut self, samples: &[GpuSample]) {
        let mine: Vec<&GpuSample> = samples.iter().filter(|g| self.gpus.contains(&g.index)).collect();
        if mine.is_empty() {
            return;
        }
        let util = mine.iter().map(|g| g.util_pct).sum::<f64>() / mine.len() as f64;
        self.gpu_samples += 1;
        self.gpu_util_sum += util;
        self.usage.gpu_util_avg_pct = self.gpu_util_sum / f64::from(self.gpu_samples);
        self.usage.gpu_util_peak_pct = self.usage.gpu_util_peak_pct.max(util);
        for g in mine {
            if let Some(mj) = g.energy_mj {
                self.gpu_energy_first_mj.entry(g.index).or_insert(mj);
                self.gpu_energy_last_mj.insert(g.index, mj);
            }
        }
        if !self.gpu_energy_last_mj.is_empty() {
            let mj: u64 = self
                .gpu_energy_last_mj
                .iter()
                .map(|(i, last)| last.saturating_sub(self.gpu_energy_first_mj.get(i).copied().unwrap_or(*last)))
                .sum();
            self.usage.gpu_energy_j = Some(mj as f64 / 1000.0);
        }
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
    fn gpu_numbers_come_from_the_tasks_own_gpus() {
        let mut u = TaskUsage::new("t", &[1]);
        let gpu = |index, util, mj| GpuSample { index, util_pct: util, energy_mj: Some(mj), ..Default::default() };
        u.add_gpus(&[gpu(0, 100.0, 5_000), gpu(1, 40.0, 10_000)]);
        u.add_gpus(&[gpu(0, 100.0, 9_000), gpu(1, 80.0, 12_500)]);
        let r = u.usage();
        assert_eq!(r.gpu_util_peak_pct, 80.0);
        assert_eq!(r.gpu_util_avg_pct, 60.0);
        assert_eq!(r.gpu_energy_j, Some(2.5), "only GPU 1's counter, 12.5 J - 10 J");
        let none = TaskUsage::new("cpu-only", &[]).usage();
        assert_eq!((none.gpu_energy_j, none.cpu_energy_j), (None, None), "absent, not zero");
    }

    #[test]
    fn cpu_energy_is_shared_by_cpu_time() {
        let root = tempfile::tempdir().expect("tmp");
        let d = root.path().join("intel-rapl:0");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("name"), "package-0").expect("name");
        std::fs::write(d.join("energy_uj"), "0").expect("e");
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("python3")
            .args(["-c", "import time\nt = time.time()\nwhile time.time() - t < 5: pass"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let mut tracker = Tracker::new(root.path()).expect("tracker");
        let mut roots = HashMap::from([(child.id(), TaskUsage::new("burn", &[]))]);
        // process CPU needs two samples; energy is shared from the third on
        for _ in 0..2 {
            tracker.track(&mut roots, &[]);
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        std::fs::write(d.join("energy_uj"), "10000000").expect("e"); // 10 J over the last interval
        tracker.track(&mut roots, &[]);
        let _ = child.kill();
        let _ = child.wait();
        let j = roots[&child.id()].usage().cpu_energy_j.expect("measured");
        // some, never more than all, of the 10 J (its share depends on what else runs)
        assert!(j > 0.0 && j <= 10.0, "{j} J");
    }

    #[test]
    fn energy_is_split_by_cpu_time() {
        assert_eq!(energy_share(10.0, 50.0, 200.0), 2.5);
        assert_eq!(energy_share(10.0, 300.0, 200.0), 10.0, "never more than the whole");
        assert_eq!(energy_share(10.0, 0.0, 0.0), 0.0);
    }

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
    fn a_threaded_process_counts_its_memory_once() {
        // 150 MB touched once, shared by 8 threads: still 150 MB, not 9 x 150
        use std::os::unix::process::CommandExt;
        let script = "import threading, time\nb = bytearray(150 << 20)\nfor _ in range(8):\n    threading.Thread(target=time.sleep, args=(20,)).start()\ntime.sleep(20)";
        let mut child =
            std::process::Command::new("python3").args(["-c", script]).process_group(0).spawn().expect("spawn");
        let mut s = Tracker::new(std::path::Path::new(crate::rapl::POWERCAP_ROOT)).expect("sysinfo");
        let mut roots = HashMap::from([(child.id(), TaskUsage::default())]);
        let threads = || std::fs::read_dir(format!("/proc/{}/task", child.id())).map(|d| d.count()).unwrap_or(0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (roots[&child.id()].usage().memory_peak_mb < 150 || threads() < 9) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(200));
            s.track(&mut roots, &[]);
        }
        s.track(&mut roots, &[]);
        let seen_threads = threads();
        let _ =
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        let u = roots[&child.id()].usage();
        assert!(seen_threads >= 9, "the test process had {seen_threads} threads");
        assert!(u.memory_peak_mb >= 150 && u.memory_peak_mb < 300, "{u:?}");
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
        let mut s = Tracker::new(std::path::Path::new(crate::rapl::POWERCAP_ROOT)).expect("sysinfo");
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
        assert_eq!(u.gpu_energy_j, None, "no GPU reserved: no GPU energy");
        assert!(u.memory_peak_mb >= 150 && u.memory_peak_mb < 1024, "{u:?}");
    }
}
