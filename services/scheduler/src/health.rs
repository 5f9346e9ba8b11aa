//! What the state's worker health did (`hwsched_placement::state::health`):
//! quarantines, restores and the breaker, logged, counted and put on the
//! metrics stream (`scheduler.quarantined`, `scheduler.quarantine_breaker_open`)
//! for the dashboards and the `QuarantineBreakerOpen` alert rule.

use hwsched_placement::state::HealthEvent;
use hwsched_proto::{
    v1::{MetricSample, QuarantinedWorker},
    Message as _,
};

use crate::scheduler::Scheduler;

impl Scheduler {
    /// Logs and counts the health events since the last call, and announces
    /// each quarantine on `hws.health.quarantined` (the learner then blames
    /// the worker's failures in the evidence window, not the tests); returns
    /// whether the breaker opened or closed (its metric is then published at once).
    pub(crate) async fn health_events(&mut self) -> bool {
        let mut breaker_changed = false;
        for ev in self.state.take_health_events() {
            match ev {
                HealthEvent::Quarantined { worker_id, reason } => {
                    tracing::warn!(worker_id, reason, "worker quarantined: no new tasks, probes only");
                    self.io.metrics.quarantines.inc();
                    self.announce_quarantine(worker_id, reason).await;
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

    /// Publishes one quarantine (core NATS: lost, the worker's failures keep
    /// counting toward the tests' flakiness).
    async fn announce_quarantine(&self, worker_id: String, reason: String) {
        let now = hwsched_bus::now_ms();
        let q = QuarantinedWorker {
            hardware_class: self.class_of(&worker_id),
            worker_id,
            since_ms: now,
            reason,
            evidence_from_ms: now - self.state.quarantine.window_ms,
            ..Default::default()
        };
        let subject = self.io.bus.subjects().health_quarantined();
        if let Err(e) = self.io.bus.client().publish(subject, q.encode_to_vec().into()).await {
            tracing::warn!(worker_id = %q.worker_id, error = %e, "quarantine not announced to the learner");
        }
    }

    /// A known worker's hardware class (empty when unknown).
    pub(crate) fn class_of(&self, worker_id: &str) -> String {
        let caps = self.state.workers.get(worker_id).and_then(|w| w.caps.as_ref());
        caps.map(|c| c.hardware_class.clone()).unwrap_or_default()
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
