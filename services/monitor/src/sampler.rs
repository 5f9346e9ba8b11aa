//! Host telemetry: one refresh per interval produces the metrics batch, the
//! heartbeat's load summary and the per-task resource samples.

use std::collections::HashMap;

use hwsched_proto::v1::{MetricSample, ResourceUsage};
use sysinfo::{Components, Disks, Networks, Pid, ProcessesToUpdate, System};

use crate::gpu::{self, GpuSample, Gpus};

/// Everything one tick measured.
#[derive(Debug, Default)]
pub struct Reading {
    /// Long-format samples for `hws.metrics.<worker_id>`.
    pub samples: Vec<MetricSample>,
    /// Overall CPU utilisation, percent.
    pub cpu_util_pct: f64,
    /// Memory used, percent.
    pub memory_used_pct: f64,
    /// Hottest sensor, °C.
    pub max_temp_c: f64,
    /// Any GPU throttling.
    pub throttling: bool,
    /// GPU state, for per-task GPU accounting.
    pub gpus: Vec<GpuSample>,
}

/// Owns the sysinfo handles between ticks (CPU and network rates need the previous reading).
pub struct Sampler {
    sys: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    last: std::time::Instant,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

impl Sampler {
    /// Takes the first reading (rates start at the next tick).
    pub fn new() -> Result<Self, sysinfo::Error> {
        let mut sys = System::new()?;
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        Ok(Self {
            sys,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
            components: Components::new_with_refreshed_list()?,
            last: std::time::Instant::now(),
        })
    }

    /// Refreshes everything and returns the reading.
    pub fn tick(&mut self, gpus: Option<&Gpus>) -> Reading {
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = std::time::Instant::now();
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);

        let mut r = Reading::default();
        let mut push = |metric: &str, device: &str, value: f64| {
            if value.is_finite() {
                r.samples.push(MetricSample { metric: metric.into(), device: device.into(), value });
            }
        };
        let cpu = f64::from(self.sys.global_cpu_usage());
        push("cpu.util_pct", "cpu", cpu);
        if let Ok(load) = System::load_average() {
            push("cpu.load1", "cpu", load.one);
        }
        let total = self.sys.total_memory() as f64;
        let used = self.sys.used_memory() as f64;
        let mem_pct = if total > 0.0 { 100.0 * used / total } else { 0.0 };
        push("mem.used_pct", "mem", mem_pct);
        push("mem.used_mb", "mem", used / 1048576.0);
        push("mem.available_mb", "mem", self.sys.available_memory() as f64 / 1048576.0);
        if self.sys.total_swap() > 0 {
            push("swap.used_pct", "swap", 100.0 * self.sys.used_swap() as f64 / self.sys.total_swap() as f64);
        }
        let mut seen_disks = Vec::new();
        for d in self.disks.iter() {
            let name = d.name().to_string_lossy().trim_start_matches("/dev/").to_string();
            if d.total_space() == 0 || seen_disks.contains(&name) {
                continue;
            }
            let u = d.usage();
            push("disk.used_pct", &name, 100.0 * (1.0 - d.available_space() as f64 / d.total_space() as f64));
            push("disk.read_bytes_per_s", &name, u.read_bytes as f64 / elapsed);
            push("disk.written_bytes_per_s", &name, u.written_bytes as f64 / elapsed);
            seen_disks.push(name);
        }
        for (name, n) in self.networks.iter() {
            let name = &*name.to_string_lossy();
            if name == "lo" {
                continue;
            }
            push("net.rx_bytes_per_s", name, n.received() as f64 / elapsed);
            push("net.tx_bytes_per_s", name, n.transmitted() as f64 / elapsed);
        }
        let cpu_temp = self
            .components
            .iter()
            .filter_map(|c| c.temperature())
            .map(f64::from)
            .filter(|t| t.is_finite() && *t > 0.0)
            .fold(0.0, f64::max);
        if cpu_temp > 0.0 {
            push("cpu.temp_c", "cpu", cpu_temp);
        }
        let gpu_samples = gpus.map(Gpus::sample).unwrap_or_default();
        for g in &gpu_samples {
            gpu::to_samples(g, &mut r.samples);
        }
        r.cpu_util_pct = cpu;
        r.memory_used_pct = mem_pct;
        r.max_temp_c = gpu_samples.iter().map(|g| g.temp_c).fold(cpu_temp, f64::max);
        r.throttling = gpu_samples.iter().any(|g| g.thermal_throttle);
        r.gpus = gpu_samples;
        r
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
    cpu_sum: f64,
    usage: ResourceUsage,
}

impl TaskUsage {
    fn add(&mut self, cpu_pct: f64, mem_mb: u64, gpu_mem_mb: u64, read: u64, written: u64) {
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
    fn first_tick_reports_real_cpu_and_memory() {
        let mut s = Sampler::new().expect("sysinfo");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let r = s.tick(None);
        let mem = r.samples.iter().find(|m| m.metric == "mem.used_mb").expect("mem");
        assert!(mem.value > 0.0);
        assert!((0.0..=100.0).contains(&r.cpu_util_pct));
        assert!(r.samples.iter().all(|m| m.value.is_finite()));
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
    fn tracking_measures_a_child_process_tree() {
        // a shell (the task's root) whose child allocates and touches 150 MB
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sh")
            .args(["-c", "python3 -c 'b = bytearray(150 << 20); import time; time.sleep(20)'"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let mut s = Sampler::new().expect("sysinfo");
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
