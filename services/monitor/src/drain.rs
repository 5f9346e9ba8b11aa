//! Drain: `hws.workers.<id>.drain` requests (`hwsched drain`). A drained
//! worker's heartbeats say DRAINING, so the scheduler places nothing new there,
//! while the tasks already running finish. The drain is kept in KV
//! `hws_drains` (key: worker id), so a restarted monitor stays drained until
//! someone undrains it.

use async_nats::jetstream::kv;
use hwsched_bus::{now_ms, Bus, BusError};
use hwsched_proto::{
    v1::{DrainReply, DrainWorker, WorkerState},
    Message,
};

/// This worker's drain, as stored.
#[derive(Debug)]
pub struct Drain {
    kv: kv::Store,
    worker_id: String,
    current: Option<DrainReply>,
}

impl Drain {
    /// Reads this worker's stored drain (absent = active).
    pub async fn load(bus: &Bus, worker_id: &str) -> Result<Self, BusError> {
        let kv = hwsched_bus::streams::bucket(bus, &bus.subjects().drains_bucket()).await?;
        let current = match kv.get(worker_id).await {
            Ok(Some(b)) => DrainReply::decode(b.as_ref()).ok().filter(|d| d.draining),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "stored drain unreadable: starting active");
                None
            }
        };
        if let Some(d) = &current {
            tracing::info!(reason = %d.reason, since_ms = d.since_ms, "worker is drained: taking no new tasks");
        }
        Ok(Self { kv, worker_id: worker_id.to_string(), current })
    }

    /// The state heartbeats report while the monitor runs.
    pub fn state(&self) -> WorkerState {
        if self.current.is_some() {
            WorkerState::Draining
        } else {
            WorkerState::Active
        }
    }

    /// Applies a request and stores the result; the reply lists what still runs.
    pub async fn apply(&mut self, req: &DrainWorker, running: Vec<String>) -> Result<DrainReply, String> {
        if !req.worker_id.is_empty() && req.worker_id != self.worker_id {
            return Err(format!("this is worker {}, not {}", self.worker_id, req.worker_id));
        }
        if req.drain {
            // asked again (`hwsched drain --wait` polls): nothing to store
            if let Some(d) = &self.current {
                if req.reason.is_empty() || req.reason == d.reason {
                    return Ok(self.reply(running));
                }
            }
            let d = match self.current.take() {
                // drained already: keep when, take the newer reason if one was given
                Some(d) => {
                    DrainReply { reason: if req.reason.is_empty() { d.reason } else { req.reason.clone() }, ..d }
                }
                None => DrainReply {
                    worker_id: self.worker_id.clone(),
                    draining: true,
                    reason: req.reason.clone(),
                    since_ms: now_ms(),
                    running: vec![],
                },
            };
            self.kv
                .put(&self.worker_id, d.encode_to_vec().into())
                .await
                .map_err(|e| format!("drain not stored: {e}"))?;
            tracing::info!(reason = %d.reason, running = running.len(), "drained: taking no new tasks");
            self.current = Some(d);
        } else {
            self.kv.delete(&self.worker_id).await.map_err(|e| format!("undrain not stored: {e}"))?;
            if self.current.take().is_some() {
                tracing::info!("undrained: taking tasks again");
            }
        }
        Ok(self.reply(running))
    }

    /// The current drain, with the tasks running now.
    pub fn reply(&self, running: Vec<String>) -> DrainReply {
        match &self.current {
            Some(d) => DrainReply { running, ..d.clone() },
            None => DrainReply { worker_id: self.worker_id.clone(), running, ..Default::default() },
        }
    }
}
