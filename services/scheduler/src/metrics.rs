//! The scheduler's Prometheus metrics (`hwsched_scheduler_*`) and the id its
//! own samples carry on the metrics stream.

use hwsched_telemetry::{
    prometheus_client::metrics::counter::Counter,
    prometheus_client::metrics::gauge::Gauge,
    prometheus_client::metrics::histogram::{exponential_buckets, Histogram},
    Telemetry,
};

/// The id the scheduler's own metrics carry on the metrics stream.
pub const METRICS_ID: &str = "hwsched-scheduler";

/// The scheduler's counters, gauges and histogram; clones share the same values.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) accepted: Counter,
    pub(crate) rejected: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) assigned: Counter,
    pub(crate) retried: Counter,
    pub(crate) hedged: Counter,
    pub(crate) succeeded: Counter,
    pub(crate) failed: Counter,
    pub(crate) queued: Gauge,
    pub(crate) workers: Gauge,
    pub(crate) quarantined: Gauge,
    pub(crate) breaker_open: Gauge,
    pub(crate) quarantines: Counter,
    /// Seconds a finished task's last attempt ran, as its worker measured it.
    pub(crate) task_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            accepted: Counter::default(),
            rejected: Counter::default(),
            duplicates: Counter::default(),
            assigned: Counter::default(),
            retried: Counter::default(),
            hedged: Counter::default(),
            succeeded: Counter::default(),
            failed: Counter::default(),
            queued: Gauge::default(),
            workers: Gauge::default(),
            quarantined: Gauge::default(),
            breaker_open: Gauge::default(),
            quarantines: Counter::default(),
            // 0.1 s .. 3276.8 s (~55 min), doubling: unit tests up to long GPU suites
            task_duration: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
        }
    }
}

impl Metrics {
    /// Registers the metrics under the prefix `hwsched_scheduler`.
    pub(crate) fn register(&self, t: &Telemetry) {
        t.register(|r| {
            let r = r.sub_registry_with_prefix("hwsched_scheduler");
            r.register("tasks_accepted", "Submissions accepted", self.accepted.clone());
            r.register("tasks_rejected", "Submissions rejected (invalid or fitting no worker)", self.rejected.clone());
            r.register(
                "tasks_duplicate",
                "Submissions dropped as duplicates of a known task_id",
                self.duplicates.clone(),
            );
            r.register("assignments", "Attempts assigned to workers", self.assigned.clone());
            r.register("retries", "Attempts queued again after a failure or a lost worker", self.retried.clone());
            r.register("hedged_copies", "Hedged copies of straggling attempts sent", self.hedged.clone());
            r.register("tasks_succeeded", "Tasks finished successfully", self.succeeded.clone());
            r.register("tasks_failed", "Tasks failed with no attempts left", self.failed.clone());
            r.register("queue_depth", "Tasks waiting for a worker", self.queued.clone());
            r.register("workers_known", "Workers known (any state)", self.workers.clone());
            r.register(
                "workers_quarantined",
                "Workers quarantined now (no new tasks, probes only)",
                self.quarantined.clone(),
            );
            r.register(
                "quarantine_breaker_open",
                "1 while the breaker stops quarantines (too much of the fleet or a class suspect)",
                self.breaker_open.clone(),
            );
            r.register("quarantines", "Workers quarantined since start", self.quarantines.clone());
            r.register(
                "task_duration_seconds",
                "Runtime of finished tasks' last attempt, as the worker measured it",
                self.task_duration.clone(),
            );
        });
    }
}
