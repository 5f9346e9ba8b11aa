//! What the load generators share: a run id, the JetStream submission of a
//! task, percentiles of sorted samples and the generator's own CPU time.

use anyhow::Context as _;
use async_nats::jetstream::context::PublishAckFuture;
use hwsched_bus::{now_ms, Bus};
use hwsched_proto::{v1::TaskRequest, Message};

/// A fresh id for one run's workers and tasks (hex of the clock, ms).
pub(crate) fn run_id() -> String {
    format!("{:x}", now_ms() % 0xffff_ffff)
}

/// Publishes `t` on the submission subject with its task id as
/// `Nats-Msg-Id`; the acknowledgement is left to the caller to await, so
/// that many submissions can be in flight.
pub(crate) async fn submit(bus: &Bus, t: &TaskRequest) -> anyhow::Result<PublishAckFuture> {
    let mut h = hwsched_bus::proto_headers(None);
    h.insert(hwsched_bus::MSG_ID, t.task_id.as_str());
    bus.jetstream()
        .publish_with_headers(bus.subjects().tasks_submit(), h, t.encode_to_vec().into())
        .await
        .context("submit")
}

/// The `p` quantile of `sorted` (nearest rank, rounding up); 0 when empty.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    sorted.get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
}

/// CPU time this process used so far (user + system), s; Linux only.
pub(crate) fn own_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the command name (which may contain spaces) in parentheses
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank_above() {
        let xs: Vec<u64> = (1..=100).collect();
        assert_eq!((percentile(&xs, 0.5), percentile(&xs, 0.99), percentile(&xs, 1.0)), (50, 99, 100));
        assert_eq!(percentile::<u32>(&[], 0.5), 0);
        assert_eq!(percentile(&[7u32], 0.01), 7);
    }
}
