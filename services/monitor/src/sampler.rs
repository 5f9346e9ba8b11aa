//! Host telemetry: one refresh per interval produces the metrics batch (as much
//! as the configured [`Level`] asks for) and the heartbeat's load summary.

use hwsched_proto::{metric, v1::MetricSample};
use sysinfo::{Components, Disks, Networks, System};

use crate::{
    config::Level,
    gpu::{self, GpuSample, Gpus},
};

/// Everything one tick measured.
#[derive(Debug, Default)]
pub struct Reading {
    /// Long-format samples for `hws.metrics.<worker_id>`.
    pub samples: Vec<MetricSample>,
    /// Overall CPU utilisation, percent.
    pub cpu_util_pct: f64,
    /// Memory used, percent.
    pub memory_used_pct: f64,
    /// Hottest sensor, °C (0 = none readable).
    pub max_temp_c: f64,
    /// Any GPU slowed down for heat (software, hardware or HW slowdown).
    pub throttling: bool,
    /// GPU state, for per-task GPU accounting.
    pub gpus: Vec<GpuSample>,
}

/// Owns the sysinfo handles between ticks (CPU and I/O rates need the previous reading).
pub struct Sampler {
    level: Level,
    sys: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    last: std::time::Instant,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").field("level", &self.level).finish_non_exhaustive()
    }
}

struct Out<'a> {
    level: Level,
    samples: &'a mut Vec<MetricSample>,
}

impl Out<'_> {
    /// Adds a sample when the configured level includes `needs`.
    fn push(&mut self, needs: Level, metric: &str, device: &str, value: f64) {
        if self.level >= needs && value.is_finite() {
            self.samples.push(MetricSample { metric: metric.into(), device: device.into(), value });
        }
    }
}

impl Sampler {
    /// Takes the first reading (rates start at the next tick).
    pub fn new(level: Level) -> Result<Self, sysinfo::Error> {
        let mut sys = System::new()?;
        sys.refresh_cpu_all();
        sys.refresh_memory();
        Ok(Self {
            level,
            sys,
            disks: Disks::new_with_refreshed_list()?,
            networks: Networks::new_with_refreshed_list()?,
            components: Components::new_with_refreshed_list()?,
            last: std::time::Instant::now(),
        })
    }

    /// Logical cores the host's CPU utilisation is a share of.
    pub fn cores(&self) -> usize {
        self.sys.cpus().len().max(1)
    }

    /// The host's memory, MB (of the latest reading).
    pub fn total_memory_mb(&self) -> f64 {
        self.sys.total_memory() as f64 / 1048576.0
    }

    /// Refreshes what the level needs and returns the reading.
    pub fn tick(&mut self, gpus: Option<&Gpus>) -> Reading {
        use Level::*;
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        self.last = std::time::Instant::now();
        let level = self.level;
        self.sys.refresh_cpu_usage();
        if level >= Detailed {
            self.sys.refresh_cpu_frequency();
        }
        self.sys.refresh_memory();
        // Temperatures feed the heartbeat at every level (the scheduler avoids hot workers).
        self.components.refresh(true);

        let mut r = Reading::default();
        let mut out = Out { level, samples: &mut r.samples };
        let cpu = f64::from(self.sys.global_cpu_usage());
        out.push(Basic, metric::CPU_UTIL_PCT, "cpu", cpu);
        for (i, c) in self.sys.cpus().iter().enumerate() {
            let device = format!("cpu{i}");
            out.push(Detailed, metric::CPU_UTIL_PCT, &device, f64::from(c.usage()));
            out.push(Detailed, metric::CPU_FREQ_MHZ, &device, c.frequency() as f64);
        }
        if let Ok(load) = System::load_average() {
            out.push(Standard, metric::CPU_LOAD1, "cpu", load.one);
            out.push(Standard, metric::CPU_LOAD5, "cpu", load.five);
            out.push(Standard, metric::CPU_LOAD15, "cpu", load.fifteen);
        }
        let total = self.sys.total_memory() as f64;
        let used = self.sys.used_memory() as f64;
        let mem_pct = if total > 0.0 { 100.0 * used / total } else { 0.0 };
        out.push(Basic, metric::MEM_USED_PCT, "mem", mem_pct);
        out.push(Basic, metric::MEM_USED_MB, "mem", used / 1048576.0);
        out.push(Basic, metric::MEM_AVAILABLE_MB, "mem", self.sys.available_memory() as f64 / 1048576.0);
        if self.sys.total_swap() > 0 {
            out.push(
                Standard,
                metric::SWAP_USED_PCT,
                "swap",
                100.0 * self.sys.used_swap() as f64 / self.sys.total_swap() as f64,
            );
        }
        if level >= Standard {
            self.io(&mut out, elapsed);
        }
        let cpu_temp = self.temperatures(&mut out);
        let gpu_samples = gpus.map(Gpus::sample).unwrap_or_default();
        for g in &gpu_samples {
            gpu::to_samples(g, level, &mut r.samples);
        }
        r.cpu_util_pct = cpu;
        r.memory_used_pct = mem_pct;
        r.max_temp_c = gpu_samples.iter().map(|g| g.temp_c).fold(cpu_temp, f64::max);
        r.throttling = gpu_samples.iter().any(|g| g.thermal_throttle);
        r.gpus = gpu_samples;
        r
    }

    /// Disk use and I/O rates, network rates (over `elapsed` seconds) and the process count.
    fn io(&mut self, out: &mut Out<'_>, elapsed: f64) {
        use Level::Standard;
        self.disks.refresh(true);
        self.networks.refresh(true);
        let mut seen = Vec::new();
        for d in self.disks.iter() {
            let name = d.name().to_string_lossy().trim_start_matches("/dev/").to_string();
            if d.total_space() == 0 || seen.contains(&name) {
                continue;
            }
            let u = d.usage();
            out.push(
                Standard,
                metric::DISK_USED_PCT,
                &name,
                100.0 * (1.0 - d.available_space() as f64 / d.total_space() as f64),
            );
            out.push(Standard, metric::DISK_READ_BYTES_PER_S, &name, u.read_bytes as f64 / elapsed);
            out.push(Standard, metric::DISK_WRITTEN_BYTES_PER_S, &name, u.written_bytes as f64 / elapsed);
            seen.push(name);
        }
        for (name, n) in self.networks.iter() {
            let name = &*name.to_string_lossy();
            if name != "lo" {
                out.push(Standard, metric::NET_RX_BYTES_PER_S, name, n.received() as f64 / elapsed);
                out.push(Standard, metric::NET_TX_BYTES_PER_S, name, n.transmitted() as f64 / elapsed);
            }
        }
        out.push(Standard, metric::HOST_PROCESSES, "host", process_count() as f64);
    }

    /// Every sensor's temperature; the CPU's is the hottest of them, 0 when none reads.
    fn temperatures(&self, out: &mut Out<'_>) -> f64 {
        use Level::{Detailed, Standard};
        let mut cpu_temp: f64 = 0.0;
        for c in self.components.iter() {
            let Some(t) = c.temperature().map(f64::from).filter(|t| t.is_finite() && *t > 0.0) else { continue };
            cpu_temp = cpu_temp.max(t);
            out.push(Detailed, metric::SENSOR_TEMP_C, &sensor_device(c.label()), t);
        }
        if cpu_temp > 0.0 {
            out.push(Standard, metric::CPU_TEMP_C, "cpu", cpu_temp);
        }
        cpu_temp
    }
}

/// Processes on the host: numeric entries of /proc (cheaper than a process table refresh).
fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .count()
        })
        .unwrap_or(0)
}

/// A sensor label as a device name: "coretemp Package id 0" -> "coretemp-package-id-0".
fn sensor_device(label: &str) -> String {
    let s: String = label.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if s.is_empty() {
        "sensor".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics_at(level: Level) -> Vec<MetricSample> {
        let mut s = Sampler::new(level).expect("sysinfo");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        s.tick(None).samples
    }

    #[test]
    fn first_tick_reports_real_cpu_and_memory() {
        let mut s = Sampler::new(Level::Standard).expect("sysinfo");
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let r = s.tick(None);
        let mem = r.samples.iter().find(|m| m.metric == "mem.used_mb").expect("mem");
        assert!(mem.value > 0.0);
        assert!((0.0..=100.0).contains(&r.cpu_util_pct));
        assert!(r.samples.iter().all(|m| m.value.is_finite()));
        let procs = r.samples.iter().find(|m| m.metric == "host.processes").expect("procs").value;
        assert!(procs >= 1.0);
    }

    #[test]
    fn levels_add_metrics_in_order() {
        let names =
            |l| metrics_at(l).into_iter().map(|m| (m.metric, m.device)).collect::<std::collections::HashSet<_>>();
        let (basic, standard, detailed) = (names(Level::Basic), names(Level::Standard), names(Level::Detailed));
        assert!(basic.contains(&("cpu.util_pct".into(), "cpu".into())));
        assert!(!basic.iter().any(|(m, _)| m == "cpu.load1" || m.starts_with("disk.")));
        assert!(standard.iter().any(|(m, _)| m == "cpu.load1"));
        assert!(standard.iter().any(|(m, _)| m == "disk.used_pct"));
        assert!(!standard.contains(&("cpu.util_pct".into(), "cpu0".into())));
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        for i in 0..cores {
            assert!(detailed.contains(&("cpu.util_pct".into(), format!("cpu{i}"))), "core {i}");
        }
        assert!(basic.len() < standard.len() && standard.len() < detailed.len());
    }

    #[test]
    fn sensor_labels_become_device_names() {
        assert_eq!(sensor_device("coretemp Package id 0"), "coretemp-package-id-0");
        assert_eq!(sensor_device("  "), "sensor");
    }
}
