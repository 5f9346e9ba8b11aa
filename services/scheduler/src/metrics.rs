//! The scheduler's Prometheus metrics (`hwsched_scheduler_*`) and the id its
//! own samples carry on the metrics stream.

use hwsched_telemetry::{
    prometheus_client::metrics::counter::Counter, prometheus_client::metrics::gauge::Gauge, Telemetry,
};

/// The id the scheduler's own metrics carry on the metrics stream.
pub const METRICS_ID: &str = "hwsched-scheduler";

/// The scheduler's counters and gauges; clones share the same values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) accepted: Counter,
    pub(crate) rejected: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) assigned: Counter,
    pub(crate) retried: Counter,
    pub(crate) succeeded: Counter,
    pub(crate) failed: Counter,
    pub(crate) queued: Gauge,
    pub(crate) workers: Gauge,
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
            r.register("tasks_succeeded", "Tasks finished successfully", self.succeeded.clone());
            r.register("tasks_failed", "Tasks failed with no attempts left", self.failed.clone());
            r.register("queue_depth", "Tasks waiting for a worker", self.queued.clone());
            r.register("workers_known", "Workers known (any state)", self.workers.clone());
        });
    }
}
