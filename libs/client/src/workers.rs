//! The live workers: who sends heartbeats, with what hardware and load.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use hwsched_proto::{
    v1::{DrainReply, WorkerCapabilities, WorkerHeartbeat},
    Message,
};

use crate::{Client, Error};

/// One live worker.
#[derive(Debug, Clone)]
pub struct WorkerView {
    /// Its last heartbeat.
    pub heartbeat: WorkerHeartbeat,
    /// Its capabilities, when its monitor answered in time.
    pub capabilities: Option<WorkerCapabilities>,
    /// Its drain, when drained (reason, since when).
    pub drain: Option<DrainReply>,
}

impl WorkerView {
    /// Worker id.
    pub fn id(&self) -> &str {
        &self.heartbeat.worker_id
    }

    /// Hardware class (`?` when its capabilities are unknown).
    pub fn hardware_class(&self) -> &str {
        self.capabilities.as_ref().map_or("?", |c| c.hardware_class.as_str())
    }
}

impl Client {
    /// Listens to heartbeats for `listen` (monitors send one a second by
    /// default), then asks each worker heard for its capabilities.
    pub async fn workers(&self, listen: Duration) -> Result<Vec<WorkerView>, Error> {
        let s = self.bus.subjects();
        let mut hbs = self
            .bus
            .client()
            .subscribe(s.workers_heartbeat_all())
            .await
            .map_err(|e| Error::bus("subscribe to heartbeats", e))?;
        let mut seen: BTreeMap<String, WorkerHeartbeat> = BTreeMap::new();
        let until = tokio::time::Instant::now() + listen;
        while let Ok(Some(m)) = tokio::time::timeout_at(until, hbs.next()).await {
            if let Ok(hb) = WorkerHeartbeat::decode(m.payload.as_ref()) {
                seen.insert(hb.worker_id.clone(), hb);
            }
        }
        let drains = hwsched_bus::streams::bucket(&self.bus, &s.drains_bucket()).await.ok();
        let asks = seen.into_values().map(|heartbeat| {
            let (client, drains) = (self.bus.client().clone(), drains.clone());
            let subject = s.worker_capabilities(&heartbeat.worker_id);
            async move {
                let capabilities =
                    tokio::time::timeout(Duration::from_secs(2), client.request(subject, Default::default()))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .and_then(|m| WorkerCapabilities::decode(m.payload.as_ref()).ok());
                let drain = match drains {
                    Some(kv) => kv
                        .get(&heartbeat.worker_id)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|b| DrainReply::decode(b.as_ref()).ok())
                        .filter(|d| d.draining),
                    None => None,
                };
                WorkerView { heartbeat, capabilities, drain }
            }
        });
        Ok(futures::stream::iter(asks).buffered(32).collect().await)
    }
}
