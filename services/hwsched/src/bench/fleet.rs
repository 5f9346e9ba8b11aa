//! The simulated fleet of `hwsched bench assign`: workers that register,
//! send heartbeats and answer capability requests, and the executor that
//! takes every assignment, records its latency and reports success at once.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use futures::StreamExt;
use hwsched_bus::{now_ms, streams, Bus, Stream};
use hwsched_proto::{
    v1::{CpuInfo, ExecutionResult, TaskAssignment, TaskStatus, WorkerCapabilities, WorkerHeartbeat, WorkerState},
    Message,
};

/// The simulated fleet.
pub(crate) struct Workers {
    slots: u32,
    caps: HashMap<String, WorkerCapabilities>,
}

impl Workers {
    pub(crate) fn new(ids: &[String], slots: u32) -> Self {
        let caps = ids
            .iter()
            .map(|id| {
                let c = WorkerCapabilities {
                    schema_version: 1,
                    worker_id: id.clone(),
                    hostname: id.clone(),
                    cpu: Some(CpuInfo { logical_cores: 64, arch: "x86_64".into(), ..Default::default() }),
                    memory_mb: 256 * 1024,
                    slots,
                    backends: vec!["cpu".into()],
                    hardware_class: "cpu:bench".into(),
                    revision: 1,
                    ..Default::default()
                };
                (id.clone(), c)
            })
            .collect();
        Self { slots, caps }
    }

    pub(crate) async fn register(&self, bus: &Bus) -> anyhow::Result<usize> {
        for (id, c) in &self.caps {
            bus.client().publish(bus.subjects().worker_register(id), c.encode_to_vec().into()).await?;
        }
        bus.client().flush().await?;
        Ok(self.caps.len())
    }

    /// Every worker's heartbeat, once a second.
    pub(crate) async fn heartbeats(self: Arc<Self>, bus: Bus) {
        let mut seq = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            seq += 1;
            for id in self.caps.keys() {
                let hb = WorkerHeartbeat {
                    schema_version: 1,
                    worker_id: id.clone(),
                    state: WorkerState::Active as i32,
                    capabilities_revision: 1,
                    slots_total: self.slots,
                    seq,
                    timestamp_ms: now_ms(),
                    interval_ms: 1000,
                    // an external executor: running tasks are not listed
                    observe_only: true,
                    ..Default::default()
                };
                let _ = bus.client().publish(bus.subjects().worker_heartbeat(id), hb.encode_to_vec().into()).await;
            }
        }
    }

    pub(crate) async fn answer_capabilities(self: Arc<Self>, bus: Bus) {
        let Ok(mut sub) = bus.client().subscribe(bus.subjects().worker_capabilities("*")).await else { return };
        while let Some(m) = sub.next().await {
            let id = m.subject.as_str().split('.').rev().nth(1).unwrap_or("");
            if let (Some(reply), Some(c)) = (m.reply, self.caps.get(id)) {
                let _ = bus.client().publish(reply, c.encode_to_vec().into()).await;
            }
        }
    }
}

/// The fleet's executor: takes every assignment of this run, records its
/// latency, and reports success at once.
pub(crate) async fn execute(
    bus: Bus,
    latencies: Arc<Mutex<Vec<u64>>>,
    assigned: Arc<AtomicU64>,
    duplicates: Arc<AtomicU64>,
    run_id: String,
) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let durable = streams::Durable::new(Stream::Assign, format!("bench-{run_id}"))
        // the only executor on this NATS: every worker's assignments
        .filter(bus.subjects().assign("*"))
        .max_ack_pending(100_000);
    let mut messages = streams::consume(&bus, &durable).await?;
    while let Some(m) = messages.next().await {
        // a missed heartbeat while a cluster elects the consumer's leader is not the end
        // of the stream (the monitor goes on the same way); before, the executor ended here
        // and the bench waited for assignments no one took
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                eprintln!("assignment consumer: {e}; going on");
                continue;
            }
        };
        let received = now_ms();
        let a = TaskAssignment::decode(m.payload.as_ref())?;
        let t = a.task.clone().unwrap_or_default();
        // a task assigned again (a scheduler that took over re-sent it) is counted apart
        let fresh = seen.insert(t.task_id.clone());
        if fresh {
            if let Ok(mut l) = latencies.lock() {
                l.push(u64::try_from(received - t.submitted_at_ms).unwrap_or(0));
            }
            assigned.fetch_add(1, Ordering::Relaxed);
        } else {
            duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let _ = m.ack().await;
        let r = ExecutionResult {
            schema_version: 1,
            task_id: t.task_id.clone(),
            attempt: a.attempt,
            worker_id: a.worker_id.clone(),
            status: TaskStatus::Succeeded as i32,
            started_at_ms: received,
            finished_at_ms: now_ms(),
            hardware_class: "cpu:bench".into(),
            name: t.name.clone(),
            ..Default::default()
        };
        let mut h = hwsched_bus::proto_headers(None);
        h.insert(hwsched_bus::MSG_ID, format!("{}:{}", r.task_id, r.attempt).as_str());
        let _ = bus
            .jetstream()
            .publish_with_headers(bus.subjects().results(&r.worker_id, &r.task_id), h, r.encode_to_vec().into())
            .await;
    }
    Ok(())
}
