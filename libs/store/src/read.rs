//! What other services read back: the learner's run history (`task_runs`),
//! the recorder's first-seen times of workers (`workers`) and the row count
//! `hwsched bench ingest` waits for (`hw_metrics`).

use hwsched_proto::v1::{ExecutionResult, ResourceUsage};

use crate::{rows::status_of, Store, StoreError};

/// What the learner relearns from: one attempt of `task_runs`.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct HistoryRow {
    task_id: String,
    attempt: u32,
    name: String,
    test_type: String,
    model_family: String,
    model_id: String,
    worker_id: String,
    hardware_class: String,
    status: String,
    duration_s: f64,
    memory_peak_mb: u64,
    finished_s: u32,
}

impl Store {
    /// How many `hw_metrics` rows have a worker id matching the LIKE
    /// `worker_pattern` (`hwsched bench ingest` waits for its run's rows).
    pub async fn count_metrics_like(&self, worker_pattern: &str) -> Result<u64, StoreError> {
        self.client()
            .query("SELECT count() FROM hw_metrics WHERE worker_id LIKE ?")
            .bind(worker_pattern)
            .fetch_one()
            .await
            .map_err(|source| StoreError::Read { what: "count the run's rows".into(), source })
    }

    /// When each worker was first seen (unix seconds), as recorded so far.
    pub async fn workers_first_seen(&self) -> Result<Vec<(String, u32)>, StoreError> {
        self.client()
            .query("SELECT worker_id, toUInt32(min(first_seen)) FROM workers GROUP BY worker_id")
            .fetch_all()
            .await
            .map_err(|source| StoreError::Server { what: "workers", source })
    }

    /// The latest `limit` attempts of `task_runs` (one row per attempt,
    /// duplicates from redelivery merged), oldest first, as results: the
    /// learner's history when it starts without a snapshot.
    pub async fn run_history(&self, limit: u64) -> Result<Vec<ExecutionResult>, StoreError> {
        let sql = "SELECT task_id, attempt, name, toString(test_type), toString(model_family), toString(model_id), \
                   toString(worker_id), toString(hardware_class), toString(status), duration_s, memory_peak_mb, \
                   toUInt32(toUnixTimestamp(finished_at)) AS finished_s \
                   FROM (SELECT * FROM task_runs FINAL ORDER BY finished_at DESC LIMIT ?) ORDER BY finished_s";
        let rows: Vec<HistoryRow> = self
            .client()
            .query(sql)
            .bind(limit)
            .fetch_all()
            .await
            .map_err(|source| StoreError::Server { what: "read task_runs", source })?;
        Ok(rows
            .into_iter()
            .map(|r| ExecutionResult {
                task_id: r.task_id,
                attempt: r.attempt,
                name: r.name,
                test_type: r.test_type,
                model_family: r.model_family,
                model_id: r.model_id,
                worker_id: r.worker_id,
                hardware_class: r.hardware_class,
                status: status_of(&r.status) as i32,
                duration_s: r.duration_s,
                finished_at_ms: i64::from(r.finished_s) * 1000,
                resources: Some(ResourceUsage { memory_peak_mb: r.memory_peak_mb, ..Default::default() }),
                ..Default::default()
            })
            .collect())
    }
}
