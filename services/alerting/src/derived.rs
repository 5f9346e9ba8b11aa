//! Series the alerting service derives itself, fed to the rules like any
//! sample: a worker's silence (`worker.heartbeat_age_s`), task failure rates
//! per worker and per hardware class, and the recorder's lag. The scheduler's
//! queue age (`scheduler.oldest_queued_s`) comes on the metrics stream.

use std::collections::{HashMap, VecDeque};

use hwsched_proto::{
    metric,
    v1::{ExecutionResult, TaskStatus, WorkerState},
};

/// One derived sample: worker id, device, metric, value.
pub type Sample = (String, String, &'static str, f64);

/// Seconds since each worker's last heartbeat (device `node`). A worker that
/// stopped cleanly (an offline heartbeat) is forgotten rather than reported.
#[derive(Debug, Default)]
pub struct Liveness {
    last_ms: HashMap<String, i64>,
}

impl Liveness {
    /// Records a heartbeat; returns the sample it makes (age 0), so that a
    /// worker coming back resolves at once.
    pub fn heartbeat(&mut self, worker_id: &str, state: WorkerState, now_ms: i64) -> Sample {
        if state == WorkerState::Offline {
            self.last_ms.remove(worker_id);
        } else {
            self.last_ms.insert(worker_id.to_string(), now_ms);
        }
        (worker_id.to_string(), "node".into(), metric::WORKER_HEARTBEAT_AGE_S, 0.0)
    }

    /// The age of every known worker's last heartbeat.
    pub fn samples(&self, now_ms: i64) -> Vec<Sample> {
        self.last_ms
            .iter()
            .map(|(w, at)| {
                (w.clone(), "node".into(), metric::WORKER_HEARTBEAT_AGE_S, (now_ms - at).max(0) as f64 / 1000.0)
            })
            .collect()
    }

    /// Workers known.
    pub fn len(&self) -> usize {
        self.last_ms.len()
    }

    /// Whether no worker is known.
    pub fn is_empty(&self) -> bool {
        self.last_ms.is_empty()
    }
}

/// Results a failure rate is computed over (the last ones per worker or class).
pub const OUTCOME_WINDOW: usize = 20;
/// Fewer results than this make no rate (one failure is not 100%).
pub const MIN_OUTCOMES: usize = 5;

/// Failure rates over the last [`OUTCOME_WINDOW`] results: per worker as
/// `tasks.failure_rate_pct` (device `tasks`) and per hardware class as
/// `tasks.class_failure_rate_pct` (worker id empty, device = the class).
/// Failed, timed out and unstartable attempts count as failures; cancelled
/// ones are left out.
#[derive(Debug, Default)]
pub struct Outcomes {
    per_worker: HashMap<String, VecDeque<bool>>,
    per_class: HashMap<String, VecDeque<bool>>,
}

impl Outcomes {
    /// Records one result; returns the rates it changed.
    pub fn record(&mut self, r: &ExecutionResult) -> Vec<Sample> {
        let failed = match r.status() {
            TaskStatus::Succeeded => false,
            TaskStatus::Failed | TaskStatus::TimedOut | TaskStatus::Error => true,
            TaskStatus::Cancelled | TaskStatus::Unspecified => return Vec::new(),
        };
        let mut out = Vec::new();
        let push = |map: &mut HashMap<String, VecDeque<bool>>, key: &str| {
            let w = map.entry(key.to_string()).or_default();
            if w.len() == OUTCOME_WINDOW {
                w.pop_front();
            }
            w.push_back(failed);
            (w.len() >= MIN_OUTCOMES).then(|| 100.0 * w.iter().filter(|f| **f).count() as f64 / w.len() as f64)
        };
        if !r.worker_id.is_empty() {
            if let Some(rate) = push(&mut self.per_worker, &r.worker_id) {
                out.push((r.worker_id.clone(), "tasks".into(), "tasks.failure_rate_pct", rate));
            }
        }
        if !r.hardware_class.is_empty() {
            if let Some(rate) = push(&mut self.per_class, &r.hardware_class) {
                out.push((String::new(), r.hardware_class.clone(), "tasks.class_failure_rate_pct", rate));
            }
        }
        out
    }
}

/// The recorder's lag on one of its streams, from its durable consumer:
/// `recorder.pending` (messages not yet confirmed written) and
/// `recorder.lag_s` (while any wait: seconds since it last confirmed a
/// write, or since the consumer was created if it never did; else 0), both
/// under worker id `hwsched-recorder`, device = the stream. A stopped
/// recorder or an unreachable ClickHouse shows as a growing lag.
pub fn recorder_lag(stream: &str, pending: u64, last_ack_ms: Option<i64>, created_ms: i64, now_ms: i64) -> [Sample; 2] {
    let lag_s = if pending == 0 { 0.0 } else { (now_ms - last_ack_ms.unwrap_or(created_ms)).max(0) as f64 / 1000.0 };
    [
        (RECORDER_ID.into(), stream.to_string(), metric::RECORDER_PENDING, pending as f64),
        (RECORDER_ID.into(), stream.to_string(), metric::RECORDER_LAG_S, lag_s),
    ]
}

/// The worker id recorder lag samples carry.
pub const RECORDER_ID: &str = "hwsched-recorder";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_ages_grow_and_a_clean_stop_is_forgotten() {
        let mut l = Liveness::default();
        assert_eq!(l.heartbeat("a", WorkerState::Active, 1_000).3, 0.0);
        l.heartbeat("b", WorkerState::Draining, 3_000);
        let mut s = l.samples(11_000);
        s.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(s.iter().map(|x| (x.0.as_str(), x.3)).collect::<Vec<_>>(), [("a", 10.0), ("b", 8.0)]);
        l.heartbeat("a", WorkerState::Offline, 12_000);
        assert_eq!(l.len(), 1, "a stopped cleanly");
    }

    fn result(worker: &str, class: &str, status: TaskStatus) -> ExecutionResult {
        ExecutionResult {
            worker_id: worker.into(),
            hardware_class: class.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn failure_rates_need_enough_results_and_slide() {
        let mut o = Outcomes::default();
        for _ in 0..4 {
            assert!(o.record(&result("w", "a100", TaskStatus::Failed)).is_empty(), "too few results");
        }
        assert!(o.record(&result("w", "a100", TaskStatus::Cancelled)).is_empty(), "cancelled: left out");
        let s = o.record(&result("w", "a100", TaskStatus::Succeeded));
        assert_eq!(s[0], ("w".into(), "tasks".into(), "tasks.failure_rate_pct", 80.0));
        assert_eq!(s[1], (String::new(), "a100".into(), "tasks.class_failure_rate_pct", 80.0));
        for _ in 0..OUTCOME_WINDOW {
            o.record(&result("w", "a100", TaskStatus::Succeeded));
        }
        assert_eq!(o.record(&result("w", "a100", TaskStatus::TimedOut))[0].3, 5.0, "the old failures slid out");
    }

    #[test]
    fn recorder_lag_counts_only_while_work_waits() {
        let [pending, lag] = recorder_lag("METRICS", 0, Some(1_000), 0, 60_000);
        assert_eq!((pending.3, lag.3), (0.0, 0.0));
        let [_, lag] = recorder_lag("METRICS", 500, Some(1_000), 0, 61_000);
        assert_eq!(lag.3, 60.0);
        let [_, lag] = recorder_lag("METRICS", 500, None, 31_000, 61_000);
        assert_eq!(lag.3, 30.0, "never acked: since the consumer was created");
    }
}
