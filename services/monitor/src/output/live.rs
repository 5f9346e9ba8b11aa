//! Live output: the capture hands [`LogChunk`] batches to a bounded queue and
//! never waits; one publisher per attempt sends them on
//! `hws.logs.<task_id>.<attempt>` (stream `HWS_LOGS`). When NATS is slow the
//! queue fills and further batches are dropped and counted (the spool file is
//! the complete copy), so the command's pipes are never held up.

use std::time::Duration;

use hwsched_bus::Bus;
use hwsched_proto::v1::{LogChunk, OutputStream};
use tokio::sync::mpsc;

/// Batches waiting for the publisher, per attempt (each at most [`super::capture::BATCH_BYTES`]).
pub const QUEUE_BATCHES: usize = 32;
/// How long the last batch of a stream (its end marker) may wait for room in the queue.
const EOF_WAIT: Duration = Duration::from_secs(2);
/// How long the publisher may take to send what is queued once both streams ended.
pub const DRAIN_WAIT: Duration = Duration::from_secs(3);

/// One stream's side of the live queue.
#[derive(Debug, Clone)]
pub struct LiveStream {
    tx: mpsc::Sender<LogChunk>,
    task_id: String,
    attempt: u32,
    stream: OutputStream,
    seq: u64,
    dropped: u64,
}

/// Starts the publisher of one attempt's live output; returns the senders of
/// stdout and stderr and the publisher, which ends once both are dropped.
pub fn start(bus: &Bus, task_id: &str, attempt: u32) -> (LiveStream, LiveStream, Publisher) {
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    let subject = bus.subjects().logs(task_id, attempt);
    let side =
        |stream| LiveStream { tx: tx.clone(), task_id: task_id.to_string(), attempt, stream, seq: 0, dropped: 0 };
    let (out, err) = (side(OutputStream::Stdout), side(OutputStream::Stderr));
    let handle = tokio::spawn(publish(bus.clone(), subject, rx));
    (out, err, Publisher(handle))
}

impl LiveStream {
    fn chunk(&mut self, offset: u64, data: Vec<u8>) -> LogChunk {
        let c = LogChunk {
            task_id: self.task_id.clone(),
            attempt: self.attempt,
            stream: self.stream as i32,
            seq: self.seq,
            offset,
            data,
            ..Default::default()
        };
        self.seq += 1;
        c
    }

    /// Queues a batch, or drops and counts it when the queue is full.
    pub fn send(&mut self, offset: u64, data: Vec<u8>) {
        let c = self.chunk(offset, data);
        if self.tx.try_send(c).is_err() {
            self.dropped += 1;
        }
    }

    /// Queues the stream's last batch (with `eof`), waiting a little for room:
    /// the pipe is closed by now, nothing is held up.
    pub async fn finish(mut self, offset: u64, data: Vec<u8>, total_bytes: u64) {
        let mut c = self.chunk(offset, data);
        c.eof = true;
        c.dropped = self.dropped;
        c.total_bytes = total_bytes;
        if self.dropped > 0 {
            tracing::info!(stream = ?self.stream, dropped = self.dropped, "live output batches dropped: NATS was slower than the command");
        }
        if tokio::time::timeout(EOF_WAIT, self.tx.send(c)).await.is_err() {
            tracing::debug!(stream = ?self.stream, "live end marker not queued in time");
        }
    }
}

/// The publisher task of one attempt.
#[derive(Debug)]
pub struct Publisher(tokio::task::JoinHandle<()>);

impl Publisher {
    /// Waits (at most [`DRAIN_WAIT`]) for the queued batches to be sent; then gives up on them.
    pub async fn drain(self) {
        let mut h = self.0;
        if tokio::time::timeout(DRAIN_WAIT, &mut h).await.is_err() {
            tracing::debug!("live output not all sent in time; the stored logs have it");
            h.abort();
        }
    }
}

async fn publish(bus: Bus, subject: String, mut rx: mpsc::Receiver<LogChunk>) {
    let mut failed = 0u64;
    while let Some(c) = rx.recv().await {
        if let Err(e) = bus.publish(subject.clone(), &c).await {
            failed += 1;
            tracing::debug!(error = %e, "live output batch not sent");
        }
    }
    if failed > 0 {
        tracing::info!(failed, "live output batches not sent");
    }
    // No flush: the result goes out on this same connection after these, and a
    // connection's messages reach the server in order, so the end markers are
    // ahead of the result without a round trip per attempt.
}

#[cfg(test)]
impl LiveStream {
    /// A stream side on a queue the test reads.
    pub(crate) fn for_tests(tx: mpsc::Sender<LogChunk>, stream: OutputStream) -> Self {
        Self { tx, task_id: "t".into(), attempt: 1, stream, seq: 0, dropped: 0 }
    }
}
