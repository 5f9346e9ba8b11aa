//! Names of the long-format samples of a `MetricsBatch` (`MetricSample::metric`),
//! each defined once: monitors write them, alerting rules, the recorder's tables,
//! reports and dashboards read them. The device names the instance (`cpu`, `cpu3`,
//! `gpu0`, a disk, an interface, `task:<id>`).

/// CPU utilisation, percent (device `cpu` for the whole host, `cpuN` per core).
pub const CPU_UTIL_PCT: &str = "cpu.util_pct";
/// CPU core frequency, MHz (per core, `cpuN`).
pub const CPU_FREQ_MHZ: &str = "cpu.freq_mhz";
/// Load average over one minute (runnable tasks).
pub const CPU_LOAD1: &str = "cpu.load1";
/// Load average over five minutes (runnable tasks).
pub const CPU_LOAD5: &str = "cpu.load5";
/// Load average over fifteen minutes (runnable tasks).
pub const CPU_LOAD15: &str = "cpu.load15";
/// Hottest temperature sensor of the host, degrees Celsius.
pub const CPU_TEMP_C: &str = "cpu.temp_c";
/// One temperature sensor, degrees Celsius (device: the sensor's label).
pub const SENSOR_TEMP_C: &str = "sensor.temp_c";
/// Memory in use, percent of total.
pub const MEM_USED_PCT: &str = "mem.used_pct";
/// Memory in use, MiB.
pub const MEM_USED_MB: &str = "mem.used_mb";
/// Memory available to new processes, MiB.
pub const MEM_AVAILABLE_MB: &str = "mem.available_mb";
/// Swap in use, percent of total (only where swap exists).
pub const SWAP_USED_PCT: &str = "swap.used_pct";
/// Disk space in use, percent (device: the disk).
pub const DISK_USED_PCT: &str = "disk.used_pct";
/// Disk reads, bytes per second (device: the disk).
pub const DISK_READ_BYTES_PER_S: &str = "disk.read_bytes_per_s";
/// Disk writes, bytes per second (device: the disk).
pub const DISK_WRITTEN_BYTES_PER_S: &str = "disk.written_bytes_per_s";
/// Network bytes received per second (device: the interface).
pub const NET_RX_BYTES_PER_S: &str = "net.rx_bytes_per_s";
/// Network bytes sent per second (device: the interface).
pub const NET_TX_BYTES_PER_S: &str = "net.tx_bytes_per_s";
/// Processes running on the host, a count.
pub const HOST_PROCESSES: &str = "host.processes";

/// GPU utilisation, percent (device `gpuN`).
pub const GPU_UTIL_PCT: &str = "gpu.util_pct";
/// GPU memory in use, MiB.
pub const GPU_MEM_USED_MB: &str = "gpu.mem_used_mb";
/// GPU memory in use, percent of total.
pub const GPU_MEM_USED_PCT: &str = "gpu.mem_used_pct";
/// GPU temperature, degrees Celsius.
pub const GPU_TEMP_C: &str = "gpu.temp_c";
/// GPU power draw, watts.
pub const GPU_POWER_W: &str = "gpu.power_w";
/// GPU enforced power limit, watts.
pub const GPU_POWER_LIMIT_W: &str = "gpu.power_limit_w";
/// GPU memory-controller utilisation, percent.
pub const GPU_MEM_UTIL_PCT: &str = "gpu.mem_util_pct";
/// GPU SM clock, MHz.
pub const GPU_SM_CLOCK_MHZ: &str = "gpu.sm_clock_mhz";
/// GPU memory clock, MHz.
pub const GPU_MEM_CLOCK_MHZ: &str = "gpu.mem_clock_mhz";
/// GPU fan speed, percent.
pub const GPU_FAN_PCT: &str = "gpu.fan_pct";
/// 1 while the GPU throttles for temperature, else 0.
pub const GPU_THROTTLE_THERMAL: &str = "gpu.throttle_thermal";
/// 1 while the GPU throttles for its power cap, else 0.
pub const GPU_THROTTLE_POWER: &str = "gpu.throttle_power";
/// 1 while the GPU's hardware slowdown is active, else 0.
pub const GPU_THROTTLE_HW_SLOWDOWN: &str = "gpu.throttle_hw_slowdown";
/// Corrected ECC memory errors, a count.
pub const GPU_ECC_CORRECTED: &str = "gpu.ecc_corrected";
/// Uncorrected ECC memory errors, a count.
pub const GPU_ECC_UNCORRECTED: &str = "gpu.ecc_uncorrected";

/// A running task's own CPU use, percent of one core (device `task:<id>`).
pub const TASK_CPU_PCT: &str = "task.cpu_pct";
/// A running task's own memory, MiB (device `task:<id>`).
pub const TASK_MEM_MB: &str = "task.mem_mb";
/// Task slots in use on the worker, a count (device `worker`).
pub const WORKER_SLOTS_USED: &str = "worker.slots_used";
/// Metrics batches the monitor dropped while NATS was unreachable, a count (device `worker`).
pub const MONITOR_DROPPED_BATCHES: &str = "monitor.dropped_batches";

/// Derived by alerting: seconds since a worker's last heartbeat (device `node`).
pub const WORKER_HEARTBEAT_AGE_S: &str = "worker.heartbeat_age_s";
/// Derived by alerting: messages the recorder has not yet confirmed written (device: the stream).
pub const RECORDER_PENDING: &str = "recorder.pending";
/// Derived by alerting: seconds the recorder has been behind on a stream, 0 when caught up.
pub const RECORDER_LAG_S: &str = "recorder.lag_s";
