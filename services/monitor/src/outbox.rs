//! A bounded buffer between the telemetry loop and NATS: while NATS is
//! unreachable the newest batches are kept (oldest dropped beyond the bound,
//! and counted) and sent in order once it is back, without ever blocking the
//! sampling loop.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use hwsched_bus::Bus;
use hwsched_proto::v1::MetricsBatch;
use hwsched_shutdown::Backoff;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// First wait before resending after a failed send; it doubles up to [`SEND_BACKOFF_CAP`].
const SEND_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between sends while they fail.
const SEND_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// Pending metrics batches.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<MetricsBatch>>,
    capacity: usize,
    dropped: AtomicU64,
    ready: Notify,
}

impl Outbox {
    /// Keeps at most `capacity` batches (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Queues a batch, dropping the oldest when full. Returns how many were dropped so far.
    pub fn push(&self, batch: MetricsBatch) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(batch);
        while q.len() > self.capacity {
            q.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(q);
        self.ready.notify_one();
        self.dropped()
    }

    /// Batches dropped because the buffer was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn front(&self) -> Option<MetricsBatch> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).front().cloned()
    }

    fn pop_sent(&self, sent: &MetricsBatch) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        // the front may have been dropped meanwhile; remove only what was sent
        if q.front().is_some_and(|f| f.timestamp_ms == sent.timestamp_ms) {
            q.pop_front();
        }
    }

    /// Sends queued batches in order until `stop`; a failed send is retried with backoff.
    pub async fn run(&self, bus: Bus, stop: CancellationToken) {
        let mut backoff = Backoff::doubling(SEND_BACKOFF, SEND_BACKOFF_CAP);
        let mut failing = false;
        loop {
            let Some(batch) = self.front() else {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.ready.notified() => continue,
                }
            };
            let subject = bus.subjects().metrics(&batch.worker_id);
            // A publish that timed out may still land: the id makes the retry a no-op then.
            let id = format!("{}:{}", batch.worker_id, batch.timestamp_ms);
            match bus.publish_durable(subject, &batch, Some(&id), None).await {
                Ok(()) => {
                    self.pop_sent(&batch);
                    if failing {
                        tracing::info!(queued = self.len(), dropped = self.dropped(), "metrics flowing again");
                        failing = false;
                    }
                    backoff.reset();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "metrics not stored, buffering");
                        failing = true;
                    }
                    if !backoff.wait(&stop).await {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ts: i64) -> MetricsBatch {
        MetricsBatch { timestamp_ms: ts, worker_id: "w".into(), ..Default::default() }
    }

    #[test]
    fn full_buffer_drops_oldest_and_counts() {
        let o = Outbox::new(3);
        for ts in 1..=5 {
            o.push(batch(ts));
        }
        assert_eq!(o.dropped(), 2);
        assert_eq!(o.len(), 3);
        assert_eq!(o.front().map(|b| b.timestamp_ms), Some(3));
    }

    #[test]
    fn sent_batch_is_removed_only_if_still_first() {
        let o = Outbox::new(2);
        o.push(batch(1));
        let sent = o.front().expect("front");
        o.push(batch(2));
        o.push(batch(3)); // drops 1 while it was "in flight"
        o.pop_sent(&sent);
        assert_eq!(o.len(), 2, "batch 2 must not be removed for 1");
    }
}
