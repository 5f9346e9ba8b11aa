//! The `workers` table: every worker's capabilities and when it was first and
//! last seen. Registrations and heartbeats are core NATS (not streams), so the
//! inventory is rewritten from what the recorder holds: a worker whose
//! capabilities or state changed at the next write, every other one once a
//! minute while it sends heartbeats. A worker heard only by heartbeat (the
//! recorder started after it registered) is asked for its capabilities.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use hwsched_bus::{now_ms, Bus};
use hwsched_proto::{
    v1::{WorkerCapabilities, WorkerHeartbeat, WorkerState},
    Message,
};
use hwsched_store::{Store, WorkerRow};
use tokio_util::sync::CancellationToken;

/// How often changed workers are written.
const WRITE_EVERY: Duration = Duration::from_secs(5);
/// A worker that keeps sending heartbeats is written again after this long (its `last_seen`).
const REFRESH_MS: i64 = 60_000;
/// A worker's capabilities are asked for at most this often.
const ASK_EVERY_MS: i64 = 60_000;

#[derive(Debug, Default)]
struct Entry {
    row: Option<WorkerRow>,
    state: String,
    first_seen: u32,
    last_seen: u32,
    dirty: bool,
    written_ms: i64,
    asked_ms: i64,
}

/// What the recorder knows of the fleet (pure: messages in, rows out).
#[derive(Debug, Default)]
pub struct Inventory {
    workers: HashMap<String, Entry>,
}

fn state_name(s: WorkerState) -> &'static str {
    match s {
        WorkerState::Active | WorkerState::Unspecified => "active",
        WorkerState::Draining => "draining",
        WorkerState::Offline => "offline",
    }
}

impl Inventory {
    /// Carries forward when workers were first seen (from the table).
    pub fn seed(&mut self, first_seen: Vec<(String, u32)>) {
        for (id, at) in first_seen {
            self.workers.entry(id).or_default().first_seen = at;
        }
    }

    fn entry(&mut self, id: &str, now_s: u32) -> &mut Entry {
        let e = self.workers.entry(id.to_string()).or_default();
        if e.first_seen == 0 {
            e.first_seen = now_s;
        }
        e.last_seen = now_s;
        e
    }

    /// A registration (or a capabilities reply).
    pub fn capabilities(&mut self, c: &WorkerCapabilities, now_ms: i64) {
        let row = WorkerRow::from_capabilities(c);
        let e = self.entry(&c.worker_id, (now_ms / 1000) as u32);
        if e.state.is_empty() {
            e.state = "active".into();
        }
        if e.row.as_ref() != Some(&row) {
            e.row = Some(row);
            e.dirty = true;
        }
    }

    /// A heartbeat; returns true when the worker's capabilities should be asked for.
    pub fn heartbeat(&mut self, hb: &WorkerHeartbeat, now_ms: i64) -> bool {
        let e = self.entry(&hb.worker_id, (now_ms / 1000) as u32);
        let state = state_name(hb.state());
        if e.state != state {
            e.state = state.into();
            e.dirty = true;
        }
        if e.row.is_none() && now_ms - e.asked_ms >= ASK_EVERY_MS {
            e.asked_ms = now_ms;
            return true;
        }
        false
    }

    /// The rows to write now: changed workers, and the others not written for a minute.
    pub fn due(&mut self, now_ms: i64) -> Vec<WorkerRow> {
        let mut out = Vec::new();
        for e in self.workers.values_mut() {
            let Some(row) = &e.row else { continue };
            if e.dirty || now_ms - e.written_ms >= REFRESH_MS {
                out.push(WorkerRow {
                    state: e.state.clone(),
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    ..row.clone()
                });
                e.dirty = false;
                e.written_ms = now_ms;
            }
        }
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        out
    }

    /// Marks rows as not written (the insert failed): they are retried next time.
    pub fn unwritten(&mut self, rows: &[WorkerRow]) {
        for r in rows {
            if let Some(e) = self.workers.get_mut(&r.worker_id) {
                e.dirty = true;
            }
        }
    }
}

/// Keeps the `workers` table current until `shutdown`.
pub async fn run(bus: &Bus, store: &Store, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut inv = Inventory::default();
    match store.workers_first_seen().await {
        Ok(seen) => inv.seed(seen),
        Err(e) => tracing::warn!(error = %e, "first sightings of workers not read: counted from now"),
    }
    let subjects = bus.subjects().clone();
    let mut registrations = bus.client().subscribe(subjects.workers_register_all()).await?;
    let mut heartbeats = bus.client().subscribe(subjects.workers_heartbeat_all()).await?;
    let (caps_tx, mut caps_rx) = tokio::sync::mpsc::channel::<WorkerCapabilities>(256);
    let mut write = tokio::time::interval(WRITE_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(m) = registrations.next() => {
                if let Ok(c) = WorkerCapabilities::decode(m.payload.as_ref()) {
                    inv.capabilities(&c, now_ms());
                }
            }
            Some(c) = caps_rx.recv() => inv.capabilities(&c, now_ms()),
            Some(m) = heartbeats.next() => {
                let Ok(hb) = WorkerHeartbeat::decode(m.payload.as_ref()) else { continue };
                if inv.heartbeat(&hb, now_ms()) {
                    let (client, subject, tx) = (bus.client().clone(), subjects.worker_capabilities(&hb.worker_id), caps_tx.clone());
                    tokio::spawn(async move {
                        let asked = tokio::time::timeout(Duration::from_secs(2), client.request(subject, Default::default())).await;
                        if let Ok(Ok(reply)) = asked {
                            if let Ok(c) = WorkerCapabilities::decode(reply.payload.as_ref()) {
                                let _ = tx.send(c).await;
                            }
                        }
                    });
                }
            }
            _ = write.tick() => {
                let rows = inv.due(now_ms());
                if rows.is_empty() {
                    continue;
                }
                if let Err(e) = store.insert_workers(&rows).await {
                    tracing::warn!(error = %e, workers = rows.len(), "worker inventory not written, retrying");
                    inv.unwritten(&rows);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(id: &str, slots: u32) -> WorkerCapabilities {
        WorkerCapabilities { worker_id: id.into(), hostname: "h".into(), slots, ..Default::default() }
    }

    fn hb(id: &str, state: WorkerState) -> WorkerHeartbeat {
        WorkerHeartbeat { worker_id: id.into(), state: state as i32, ..Default::default() }
    }

    #[test]
    fn changes_are_written_at_once_and_the_rest_once_a_minute() {
        let mut inv = Inventory::default();
        inv.seed(vec![("w1".into(), 100)]);
        inv.capabilities(&caps("w1", 2), 500_000);
        let rows = inv.due(500_000);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].first_seen, rows[0].last_seen, rows[0].state.as_str()), (100, 500, "active"));
        assert!(!inv.heartbeat(&hb("w1", WorkerState::Active), 510_000), "capabilities known");
        assert!(inv.due(510_000).is_empty(), "nothing changed");
        assert!(inv.heartbeat(&hb("w2", WorkerState::Active), 520_000), "unknown: ask");
        assert!(!inv.heartbeat(&hb("w2", WorkerState::Active), 521_000), "asked already");
        assert!(inv.due(521_000).is_empty(), "no capabilities, no row");
        inv.heartbeat(&hb("w1", WorkerState::Draining), 530_000);
        let rows = inv.due(530_000);
        assert_eq!((rows.len(), rows[0].state.as_str(), rows[0].last_seen), (1, "draining", 530));
        inv.heartbeat(&hb("w1", WorkerState::Draining), 595_000);
        assert_eq!(inv.due(595_000)[0].last_seen, 595, "refreshed after a minute");
        inv.capabilities(&caps("w1", 4), 596_000);
        assert_eq!(inv.due(596_000)[0].slots, 4, "new capabilities at once");
        inv.unwritten(&[WorkerRow { worker_id: "w1".into(), ..Default::default() }]);
        assert_eq!(inv.due(597_000).len(), 1, "a failed write is retried");
    }
}
