//! Workers as the scheduler hears of them: heartbeats, registrations, and
//! the capability requests for workers whose capabilities it lacks.

use std::time::Duration;

use futures::StreamExt;
use hwsched_bus::{now_ms, Bus};
use hwsched_proto::{
    v1::{WorkerCapabilities, WorkerHeartbeat, WorkerState},
    Message,
};
use tokio::sync::mpsc;

use crate::scheduler::Scheduler;

/// A worker's capabilities are asked for at most this often (ms).
const CAPS_REQUEST_EVERY_MS: i64 = 5_000;
/// Capability requests in flight at once. A scheduler that starts beside
/// 10,000 running workers hears each one's heartbeat before its capabilities:
/// one request task per worker held about 20 MB at once.
const CAPS_IN_FLIGHT: usize = 64;

/// Asks each worker named on `asks` for its capabilities, [`CAPS_IN_FLIGHT`] at
/// a time, and passes the answers on. Ends when the sender of `asks` is dropped.
pub(crate) async fn ask_capabilities(
    bus: Bus,
    asks: mpsc::UnboundedReceiver<String>,
    answers: mpsc::Sender<WorkerCapabilities>,
) {
    let asks = futures::stream::unfold(asks, |mut rx| async move { rx.recv().await.map(|id| (id, rx)) });
    asks.map(|worker_id| {
        let bus = bus.clone();
        async move {
            let subject = bus.subjects().worker_capabilities(&worker_id);
            match tokio::time::timeout(Duration::from_secs(2), bus.client().request(subject, Default::default())).await
            {
                Ok(Ok(m)) => WorkerCapabilities::decode(m.payload.as_ref())
                    .map_err(|e| tracing::warn!(worker_id, error = %e, "undecodable capabilities"))
                    .ok(),
                _ => {
                    tracing::debug!(worker_id, "capabilities request unanswered");
                    None
                }
            }
        }
    })
    .buffer_unordered(CAPS_IN_FLIGHT)
    .filter_map(|caps| async move { caps })
    .for_each(|caps| {
        let answers = answers.clone();
        async move {
            let _ = answers.send(caps).await;
        }
    })
    .await;
}

impl Scheduler {
    /// A worker's heartbeat: asks for its capabilities when they are missing or
    /// outdated. True when the worker's state changed (placements may change).
    pub(crate) fn on_heartbeat(&mut self, payload: &[u8]) -> bool {
        let hb = match WorkerHeartbeat::decode(payload) {
            Ok(hb) if hwsched_proto::is_valid_id(&hb.worker_id) => hb,
            Ok(_) | Err(_) => {
                tracing::debug!("invalid heartbeat ignored");
                return false;
            }
        };
        let worker_id = hb.worker_id.clone();
        let was = self.state.workers.get(&worker_id).map(|w| w.state);
        let offline = hb.state() == WorkerState::Offline;
        let needs_caps = self.state.heartbeat(hb, now_ms());
        let changed = was != self.state.workers.get(&worker_id).map(|w| w.state);
        // One request per worker at a time: a burst of heartbeats from workers whose
        // registration was missed must not become a burst of requests.
        let now = now_ms();
        let asked_recently = self.caps_asked.get(&worker_id).is_some_and(|at| now - at < CAPS_REQUEST_EVERY_MS);
        if needs_caps && !offline && !asked_recently {
            self.caps_asked.insert(worker_id.clone(), now);
            let _ = self.caps_ask.send(worker_id);
        }
        // a state change (e.g. a worker back or draining) can change placements
        changed
    }

    /// A worker's capabilities (its registration, or the answer to a request).
    /// True when they are new or changed (placements may change).
    pub(crate) fn on_capabilities(&mut self, caps: WorkerCapabilities) -> bool {
        if !hwsched_proto::is_valid_id(&caps.worker_id) {
            return false;
        }
        let id = caps.worker_id.clone();
        self.caps_asked.remove(&id);
        let known = self.state.workers.get(&id).and_then(|w| w.caps.as_deref()) == Some(&caps);
        if self.state.register(caps, now_ms()) {
            tracing::info!(worker_id = id, "worker joined");
        }
        self.io.metrics.workers.set(self.state.workers.len() as i64);
        // placements change only when the worker is new or its capabilities changed
        !known
    }
}
