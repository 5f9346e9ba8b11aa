//! NVIDIA GPUs through NVML. Without the NVML library (no driver, no GPU) the
//! monitor reports no GPUs and says so once; it never invents one.

use std::collections::HashMap;

use hwsched_proto::{
    metric,
    v1::{GpuInfo, MetricSample},
};

use crate::config::Level;
use nvml_wrapper::{
    bitmasks::device::ThrottleReasons,
    enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor},
    enums::device::UsedGpuMemory,
    Nvml,
};

/// An initialised NVML handle.
pub struct Gpus {
    nvml: Nvml,
    count: u32,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus").field("count", &self.count).finish()
    }
}

/// Live state of one GPU.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuSample {
    /// NVML index.
    pub index: u32,
    /// Utilisation, percent.
    pub util_pct: f64,
    /// Memory used, MB.
    pub memory_used_mb: f64,
    /// Memory total, MB.
    pub memory_total_mb: f64,
    /// Core temperature, °C.
    pub temp_c: f64,
    /// Power draw, W.
    pub power_w: f64,
    /// SM clock, MHz.
    pub sm_clock_mhz: f64,
    /// Thermal slowdown active (software or hardware).
    pub thermal_throttle: bool,
    /// Power cap / power brake active.
    pub power_throttle: bool,
    /// GPU memory by process id, MB.
    pub process_memory_mb: HashMap<u32, u64>,
    /// Memory-controller utilisation, percent.
    pub mem_util_pct: Option<f64>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<f64>,
    /// Fan 0 speed, percent (None on passively cooled boards).
    pub fan_pct: Option<f64>,
    /// Enforced power limit, W.
    pub power_limit_w: Option<f64>,
    /// Hardware slowdown (e.g. power brake, over-temperature) active.
    pub hw_slowdown: bool,
    /// Volatile ECC error counts since the driver loaded (None without ECC).
    pub ecc_corrected: Option<u64>,
    /// Uncorrected ones.
    pub ecc_uncorrected: Option<u64>,
    /// Energy counter since the driver loaded, millijoules.
    pub energy_mj: Option<u64>,
}

impl Gpus {
    /// Loads NVML. `None` (with one log line) when the library or driver is absent.
    pub fn init() -> Option<Self> {
        match Nvml::init() {
            Ok(nvml) => {
                let count = nvml.device_count().unwrap_or(0);
                tracing::info!(gpus = count, "NVML initialised");
                Some(Self { nvml, count })
            }
            Err(e) => {
                tracing::info!(reason = %e, "NVML not available: this worker reports no NVIDIA GPUs");
                None
            }
        }
    }

    /// Driver version, e.g. "550.54.15".
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }

    /// CUDA driver API version, e.g. "12.4".
    pub fn cuda_version(&self) -> Option<String> {
        self.nvml.sys_cuda_driver_version().ok().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
    }

    /// Static description of every GPU.
    pub fn inventory(&self) -> Vec<GpuInfo> {
        let driver = self.driver_version().unwrap_or_default();
        (0..self.count)
            .filter_map(|i| {
                let d = self
                    .nvml
                    .device_by_index(i)
                    .map_err(|e| tracing::warn!(index = i, error = %e, "GPU not readable"))
                    .ok()?;
                Some(GpuInfo {
                    index: i,
                    uuid: d.uuid().unwrap_or_default(),
                    vendor: "nvidia".into(),
                    model: d.name().unwrap_or_default(),
                    memory_mb: d.memory_info().map(|m| m.total / (1024 * 1024)).unwrap_or(0),
                    compute_capability: d
                        .cuda_compute_capability()
                        .map(|c| format!("{}.{}", c.major, c.minor))
                        .unwrap_or_default(),
                    driver_version: driver.clone(),
                    power_limit_w: d.enforced_power_limit().map(|mw| mw / 1000).unwrap_or(0),
                    mig_enabled: d.mig_mode().map(|m| m.current == 1).unwrap_or(false),
                    pcie_generation: d.current_pcie_link_gen().unwrap_or(0),
                    pcie_width: d.current_pcie_link_width().unwrap_or(0),
                })
            })
            .collect()
    }

    /// Current state of every GPU; unreadable fields are left at 0.
    pub fn sample(&self) -> Vec<GpuSample> {
        (0..self.count)
            .filter_map(|i| {
                let d = self.nvml.device_by_index(i).ok()?;
                let mem = d.memory_info().ok();
                let reasons = d.current_throttle_reasons().unwrap_or(ThrottleReasons::empty());
                let process_memory_mb = d
                    .running_compute_processes()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|p| match p.used_gpu_memory {
                        UsedGpuMemory::Used(b) => Some((p.pid, b / (1024 * 1024))),
                        UsedGpuMemory::Unavailable => None,
                    })
                    .collect();
                Some(GpuSample {
                    index: i,
                    util_pct: d.utilization_rates().map(|u| f64::from(u.gpu)).unwrap_or(0.0),
                    memory_used_mb: mem.as_ref().map_or(0.0, |m| m.used as f64 / 1048576.0),
                    memory_total_mb: mem.as_ref().map_or(0.0, |m| m.total as f64 / 1048576.0),
                    temp_c: d.temperature(TemperatureSensor::Gpu).map(f64::from).unwrap_or(0.0),
                    power_w: d.power_usage().map(|mw| f64::from(mw) / 1000.0).unwrap_or(0.0),
                    sm_clock_mhz: d.clock_info(Clock::SM).map(f64::from).unwrap_or(0.0),
                    thermal_throttle: reasons.intersects(
                        ThrottleReasons::SW_THERMAL_SLOWDOWN
                            | ThrottleReasons::HW_THERMAL_SLOWDOWN
                            | ThrottleReasons::HW_SLOWDOWN,
                    ),
                    power_throttle: reasons
                        .intersects(ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN),
                    process_memory_mb,
                    mem_util_pct: d.utilization_rates().ok().map(|u| f64::from(u.memory)),
                    mem_clock_mhz: d.clock_info(Clock::Memory).ok().map(f64::from),
                    fan_pct: d.num_fans().ok().filter(|n| *n > 0).and_then(|_| d.fan_speed(0).ok()).map(f64::from),
                    power_limit_w: d.enforced_power_limit().ok().map(|mw| f64::from(mw) / 1000.0),
                    hw_slowdown: reasons.intersects(ThrottleReasons::HW_SLOWDOWN),
                    ecc_corrected: d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile).ok(),
                    ecc_uncorrected: d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile).ok(),
                    energy_mj: d.total_energy_consumption().ok(),
                })
            })
            .collect()
    }
}

/// Long-format metric samples of one GPU, as much as `level` asks for.
pub fn to_samples(s: &GpuSample, level: Level, out: &mut Vec<MetricSample>) {
    use Level::*;
    let device = format!("gpu{}", s.index);
    let mut push = |needs: Level, metric: &str, value: Option<f64>| {
        if let Some(value) = value.filter(|v| level >= needs && v.is_finite()) {
            out.push(MetricSample { metric: metric.into(), device: device.clone(), value });
        }
    };
    let flag = |b: bool| Some(f64::from(u8::from(b)));
    push(Basic, metric::GPU_UTIL_PCT, Some(s.util_pct));
    push(Basic, metric::GPU_MEM_USED_MB, Some(s.memory_used_mb));
    push(
        Basic,
        metric::GPU_MEM_USED_PCT,
        (s.memory_total_mb > 0.0).then(|| 100.0 * s.memory_used_mb / s.memory_total_mb),
    );
    push(Standard, metric::GPU_TEMP_C, Some(s.temp_c));
    push(Standard, metric::GPU_POWER_W, Some(s.power_w));
    push(Standard, metric::GPU_POWER_LIMIT_W, s.power_limit_w);
    push(Detailed, metric::GPU_MEM_UTIL_PCT, s.mem_util_pct);
    push(Detailed, metric::GPU_SM_CLOCK_MHZ, Some(s.sm_clock_mhz));
    push(Detailed, metric::GPU_MEM_CLOCK_MHZ, s.mem_clock_mhz);
    push(Detailed, metric::GPU_FAN_PCT, s.fan_pct);
    push(Detailed, metric::GPU_THROTTLE_THERMAL, flag(s.thermal_throttle));
    push(Detailed, metric::GPU_THROTTLE_POWER, flag(s.power_throttle));
    push(Detailed, metric::GPU_THROTTLE_HW_SLOWDOWN, flag(s.hw_slowdown));
    push(Detailed, metric::GPU_ECC_CORRECTED, s.ecc_corrected.map(|v| v as f64));
    push(Detailed, metric::GPU_ECC_UNCORRECTED, s.ecc_uncorrected.map(|v| v as f64));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_samples_are_named_per_device() {
        let mut out = Vec::new();
        let g = GpuSample {
            index: 1,
            memory_used_mb: 50.0,
            memory_total_mb: 100.0,
            thermal_throttle: true,
            ..Default::default()
        };
        to_samples(&g, Level::Detailed, &mut out);
        let get = |m: &str| out.iter().find(|s| s.metric == m).map(|s| (s.device.clone(), s.value));
        assert_eq!(get("gpu.mem_used_pct"), Some(("gpu1".into(), 50.0)));
        assert_eq!(get("gpu.throttle_thermal"), Some(("gpu1".into(), 1.0)));
        // unreadable values are absent, not zero
        assert_eq!(get("gpu.fan_pct"), None);
        let mut basic = Vec::new();
        to_samples(&g, Level::Basic, &mut basic);
        assert!(basic
            .iter()
            .all(|m| ["gpu.util_pct", "gpu.mem_used_mb", "gpu.mem_used_pct"].contains(&m.metric.as_str())));
    }

    /// On a machine with the NVIDIA driver this reads real GPUs; elsewhere it
    /// must return None instead of failing. `HWSCHED_EXPECT_GPUS=N` makes the
    /// expectation explicit (set on GPU runners).
    #[test]
    fn nvml_detects_real_gpus_or_degrades_cleanly() {
        let expected: Option<usize> = std::env::var("HWSCHED_EXPECT_GPUS").ok().and_then(|v| v.parse().ok());
        match (Gpus::init(), expected) {
            (Some(g), _) => {
                let inv = g.inventory();
                if let Some(n) = expected {
                    assert_eq!(inv.len(), n);
                }
                for gpu in &inv {
                    assert!(!gpu.model.is_empty() && gpu.memory_mb > 0, "{gpu:?}");
                }
                let samples = g.sample();
                assert_eq!(samples.len(), inv.len());
                for s in samples {
                    assert!(s.memory_total_mb > 0.0 && s.temp_c > 0.0, "{s:?}");
                }
            }
            (None, Some(n)) => assert_eq!(n, 0, "expected {n} GPUs but NVML is not available"),
            (None, None) => {}
        }
    }
}
