//! What the state's worker health did (`hwsched_placement::state::health`):
//! quarantines, restores and the breaker, logged, counted and put on the
//! metrics stream (`scheduler.quarantined`, `scheduler.quarantine_breaker_open`)
//! for the dashboards and the `QuarantineBreakerOpen` alert rule.

use hwsched_placement::state::HealthEvent;
use hwsched_proto::v1::MetricSample;

use crate::scheduler::Scheduler;

impl Scheduler {
    /// Logs and counts the health events since the last call; returns whether
    /// the breaker opened or closed (its metric is then published at once).
    pub(crate) fn health_events(&mut self) -> bool {
        let mut breaker_changed = false;
        for ev in self.state.take_health_events() {
            match ev {
                HealthEvent::Quarantined { worker_id, reason } => {
                    tracing::warn!(worker_id, reason, "worker quarantined: no new tasks, probes only");
                    self.io.metrics.quarantines.inc();
                }
                HealthEvent::Restored { worker_id, how } => {
                    tracing::info!(worker_id, how, "worker back in service");
                }
                HealthEvent::BreakerOpened { reason } => {
                    tracing::error!(reason, "quarantine breaker open: suspect workers stay in service");
                    breaker_changed = true;
                }
                HealthEvent::BreakerClosed => {
                    tracing::info!("quarantine breaker closed");
                    breaker_changed = true;
                }
            }
        }
        self.io.metrics.quarantined.set(self.state.quarantined().len() as i64);
        self.io.metrics.breaker_open.set(i64::from(self.state.breaker().is_some()));
        breaker_changed
    }

    /// The quarantine samples of the scheduler's metrics batch.
    pub(crate) fn health_samples(&self) -> Vec<MetricSample> {
        let sample = |metric: &str, value: f64| MetricSample { metric: metric.into(), device: "fleet".into(), value };
        vec![
            sample("scheduler.quarantined", self.state.quarantined().len() as f64),
            sample("scheduler.quarantine_breaker_open", f64::from(u8::from(self.state.breaker().is_some()))),
        ]
    }
}
