//! The monitor's clock: every interval it samples the host, queues the metrics
//! batch (sent by the [`Outbox`]), publishes the heartbeat; every 250 ms (100 ms
//! at the intensive level) it samples the running tasks' process trees; every
//! minute it re-detects capabilities and re-registers when they changed.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hwsched_bus::{now_ms, Bus};
use hwsched_proto::{
    metric,
    v1::{MetricSample, MetricsBatch, WorkerCapabilities, WorkerHeartbeat, WorkerState},
    SCHEMA_VERSION,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Level, MonitorConfig},
    detect,
    executor::Running,
    gpu::Gpus,
    outbox::Outbox,
    own::{Attempts, OwnLoad, OwnShare},
    sampler::{Reading, Sampler},
    usage::Tracker,
};

/// How often capabilities are detected again.
pub const REDETECT_EVERY: Duration = Duration::from_secs(60);

/// Everything the loop reads and writes.
#[derive(Debug)]
pub struct Loop {
    /// Bus for heartbeats and registrations.
    pub bus: Bus,
    /// Monitor configuration (level, interval, probes).
    pub cfg: MonitorConfig,
    /// Current capabilities; updated on re-detection.
    pub caps: watch::Sender<WorkerCapabilities>,
    /// NVML handle, when present.
    pub gpus: Option<Arc<Gpus>>,
    /// Running tasks and their usage accumulators.
    pub running: Arc<Running>,
    /// Active, or draining once shutdown was requested.
    pub state: watch::Receiver<WorkerState>,
    /// Metrics waiting to be sent.
    pub outbox: Arc<Outbox>,
    /// The last heartbeat sent, for a state change to be announced at once.
    pub last_heartbeat: Arc<Mutex<Option<WorkerHeartbeat>>>,
}

/// Why the loop ended before `stop`: the worker would send no heartbeats.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The host's statistics cannot be read.
    #[error("cannot read host statistics")]
    Host(#[source] sysinfo::Error),
    /// Sampling the host panicked.
    #[error("host sampling panicked")]
    SamplingPanicked,
}

impl Loop {
    /// Runs until `stop`. An error means no more heartbeats from this worker:
    /// the monitor stops rather than keep taking work unseen.
    pub async fn run(self, stop: CancellationToken) -> Result<(), LoopError> {
        let sampler = Sampler::new(self.cfg.level).map_err(LoopError::Host)?;
        let tracker = Tracker::new(std::path::Path::new(crate::rapl::POWERCAP_ROOT)).map_err(LoopError::Host)?;
        // Sampling reads /proc and NVML synchronously: it runs on the blocking pool.
        let mut sampler = Some((sampler, OwnLoad::default()));
        let tracker = Arc::new(Mutex::new(tracker));
        let mut tick = interval(Duration::from_millis(self.cfg.interval_ms));
        let mut track_tick = interval(if self.cfg.level >= Level::Intensive {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(250)
        });
        let mut redetect = interval(REDETECT_EVERY);
        redetect.reset(); // the first detection happened at start
        let mut last_gpus = Vec::new();
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = track_tick.tick() => {
                    let (usage, tracker, gpus) = (self.running.usage.clone(), tracker.clone(), last_gpus.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
                        if !u.is_empty() {
                            // under the lock, so an ending task never loses its accumulator
                            tracker.lock().unwrap_or_else(|p| p.into_inner()).track(&mut u, &gpus);
                        }
                    })
                    .await;
                }
                _ = redetect.tick() => self.redetect().await,
                _ = tick.tick() => {
                    seq += 1;
                    let (Some((mut s, mut own)), gpus) = (sampler.take(), self.gpus.clone()) else {
                        return Err(LoopError::SamplingPanicked);
                    };
                    let attempts = self.attempts();
                    let (s, own, reading, ours) = tokio::task::spawn_blocking(move || {
                        let r = s.tick(gpus.as_deref());
                        let ours = own.sample(&attempts, s.cores(), s.total_memory_mb());
                        (s, own, r, ours)
                    })
                    .await
                    .map_err(|_| LoopError::SamplingPanicked)?;
                    sampler = Some((s, own));
                    last_gpus = reading.gpus.clone();
                    self.publish(&reading, ours, seq).await;
                }
            }
        }
    }

    /// The running attempts' roots and sampled trees.
    fn attempts(&self) -> Attempts {
        let usage = self.running.usage.lock().unwrap_or_else(|p| p.into_inner());
        Attempts {
            roots: usage.keys().copied().collect(),
            tree_cpu_pct: usage.values().map(|u| u.last_cpu_pct).sum(),
            tree_memory_mb: usage.values().map(|u| u.last_memory_mb).sum(),
        }
    }

    async fn publish(&self, reading: &Reading, ours: OwnShare, seq: u64) {
        let caps = self.caps.borrow().clone();
        let tasks = self.running.task_ids();
        let mut task_samples = {
            let usage = self.running.usage.lock().unwrap_or_else(|p| p.into_inner());
            let samples: Vec<MetricSample> = if self.cfg.level >= Level::Intensive {
                usage
                    .values()
                    .flat_map(|u| {
                        let device = format!("task:{}", u.task_id);
                        [
                            MetricSample {
                                metric: metric::TASK_CPU_PCT.into(),
                                device: device.clone(),
                                value: u.last_cpu_pct,
                            },
                            MetricSample { metric: metric::TASK_MEM_MB.into(), device, value: u.last_memory_mb as f64 },
                        ]
                    })
                    .collect()
            } else {
                Vec::new()
            };
            samples
        };
        let mut samples = reading.samples.clone();
        samples.append(&mut task_samples);
        samples.push(MetricSample {
            metric: metric::WORKER_SLOTS_USED.into(),
            device: "worker".into(),
            value: tasks.len() as f64,
        });
        samples.push(MetricSample {
            metric: metric::MONITOR_DROPPED_BATCHES.into(),
            device: "worker".into(),
            value: self.outbox.dropped() as f64,
        });
        let batch = MetricsBatch {
            schema_version: SCHEMA_VERSION,
            worker_id: caps.worker_id.clone(),
            timestamp_ms: now_ms(),
            samples,
        };
        let before = self.outbox.dropped();
        if self.outbox.push(batch) > before {
            tracing::warn!(
                dropped = self.outbox.dropped(),
                "metrics buffer full while NATS is unreachable: oldest batches dropped"
            );
        }
        let interval_ms = u32::try_from(self.cfg.interval_ms).unwrap_or(u32::MAX);
        let mut hb = heartbeat(&caps, *self.state.borrow(), tasks, reading, seq, interval_ms);
        hb.observe_only = self.cfg.observe_only;
        hb.tasks_cpu_util_pct = ours.cpu_pct.min(reading.cpu_util_pct);
        hb.tasks_memory_used_pct = ours.memory_pct.min(reading.memory_used_pct);
        if let Err(e) = self.bus.publish(self.bus.subjects().worker_heartbeat(&caps.worker_id), &hb).await {
            tracing::debug!(error = %e, "heartbeat not sent");
        }
        *self.last_heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some(hb);
    }

    /// Detects capabilities again (probes run processes: off the async threads)
    /// and registers them when they changed.
    async fn redetect(&self) {
        let (cfg, gpus, current) = (self.cfg.clone(), self.gpus.clone(), self.caps.borrow().clone());
        let fresh = tokio::task::spawn_blocking(move || {
            detect::detect(&cfg, &current.worker_id, gpus.as_deref(), current.started_at_ms)
        })
        .await;
        let Ok(fresh) = fresh else { return };
        if fresh.revision != self.caps.borrow().revision {
            tracing::info!(revision = fresh.revision, "capabilities changed, registering again");
            let _ = self.bus.publish(self.bus.subjects().worker_register(&fresh.worker_id), &fresh).await;
            self.caps.send_replace(fresh);
        }
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut i = tokio::time::interval(period);
    i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    i
}

/// The heartbeat for the current state.
pub fn heartbeat(
    caps: &WorkerCapabilities,
    state: WorkerState,
    tasks: Vec<String>,
    r: &Reading,
    seq: u64,
    interval_ms: u32,
) -> WorkerHeartbeat {
    WorkerHeartbeat {
        schema_version: SCHEMA_VERSION,
        worker_id: caps.worker_id.clone(),
        state: state as i32,
        capabilities_revision: caps.revision,
        slots_total: caps.slots,
        slots_used: tasks.len() as u32,
        running_task_ids: tasks,
        cpu_util_pct: r.cpu_util_pct,
        memory_used_pct: r.memory_used_pct,
        max_temp_c: r.max_temp_c,
        throttling: r.throttling,
        seq,
        timestamp_ms: now_ms(),
        interval_ms,
        observe_only: false,
        gpu_util_pct: if r.gpus.is_empty() {
            0.0
        } else {
            r.gpus.iter().map(|g| g.util_pct).sum::<f64>() / r.gpus.len() as f64
        },
        gpus: r.gpus.len() as u32,
        // set by the loop, which measures them
        tasks_cpu_util_pct: 0.0,
        tasks_memory_used_pct: 0.0,
    }
}
