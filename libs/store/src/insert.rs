//! Inserts: one statement per call, with the time columns written as the
//! server stores them ([`Store::insert_versioned`] picks milliseconds or
//! seconds once for all the timed tables).

use clickhouse::RowOwned;
use hwsched_proto::v1::{Alert, ExecutionResult, MetricsBatch, TaskEvent, TaskEventKind};
use serde::Serialize;

use crate::{
    rows::{
        alert_row, decision_rows, metric_rows, run_row, test_case_rows, AlertRow, AttemptCases, DecisionRow, MetricRow,
        RunRow, TestCaseRow, TimeColumn, WorkerRow,
    },
    Store, StoreError,
};

/// Messages stored as rows with time columns: the rows for either kind of
/// time column ([`TimeColumn`]).
trait Timed {
    /// The row, for a time column `T`.
    type Row<T: TimeColumn>: RowOwned + Serialize;
    /// The rows of the messages.
    fn rows<T: TimeColumn>(&self) -> Vec<Self::Row<T>>;
}

/// `hw_metrics`: one row per sample.
struct Metrics<'a>(&'a [MetricsBatch]);

impl Timed for Metrics<'_> {
    type Row<T: TimeColumn> = MetricRow<T>;
    fn rows<T: TimeColumn>(&self) -> Vec<MetricRow<T>> {
        self.0.iter().flat_map(metric_rows).collect()
    }
}

/// `task_runs`: one row per result.
struct Runs<'a>(&'a [ExecutionResult]);

impl Timed for Runs<'_> {
    type Row<T: TimeColumn> = RunRow<T>;
    fn rows<T: TimeColumn>(&self) -> Vec<RunRow<T>> {
        self.0.iter().map(run_row).collect()
    }
}

/// `scheduler_decisions`: one row per candidate of each event.
struct Decisions<'a>(Vec<&'a TaskEvent>);

impl Timed for Decisions<'_> {
    type Row<T: TimeColumn> = DecisionRow<T>;
    fn rows<T: TimeColumn>(&self) -> Vec<DecisionRow<T>> {
        self.0.iter().flat_map(|e| decision_rows(e)).collect()
    }
}

/// `alerts`: one row per transition.
struct Alerts<'a>(&'a [Alert]);

impl Timed for Alerts<'_> {
    type Row<T: TimeColumn> = AlertRow<T>;
    fn rows<T: TimeColumn>(&self) -> Vec<AlertRow<T>> {
        self.0.iter().map(alert_row).collect()
    }
}

/// `test_cases`: one row per case of each attempt.
struct Cases<'a>(&'a [AttemptCases<'a>]);

impl Timed for Cases<'_> {
    type Row<T: TimeColumn> = TestCaseRow<T>;
    fn rows<T: TimeColumn>(&self) -> Vec<TestCaseRow<T>> {
        self.0.iter().flat_map(|a| test_case_rows(*a)).collect()
    }
}

impl Store {
    /// Inserts metric rows in one statement.
    pub async fn insert_metrics(&self, batches: &[MetricsBatch]) -> Result<usize, StoreError> {
        self.insert_versioned("hw_metrics", Metrics(batches)).await
    }

    /// Inserts task-run rows in one statement.
    pub async fn insert_runs(&self, results: &[ExecutionResult]) -> Result<usize, StoreError> {
        self.insert_versioned("task_runs", Runs(results)).await
    }

    /// Inserts one row per candidate of each ASSIGNED event's decision (other
    /// events carry none and add no rows).
    pub async fn insert_decisions(&self, events: &[TaskEvent]) -> Result<usize, StoreError> {
        let assigned = events.iter().filter(|e| e.kind() == TaskEventKind::Assigned).collect();
        self.insert_versioned("scheduler_decisions", Decisions(assigned)).await
    }

    /// Inserts `workers` rows (the latest per worker wins).
    pub async fn insert_workers(&self, rows: &[WorkerRow]) -> Result<usize, StoreError> {
        self.insert_all("workers", rows.iter().cloned()).await
    }

    /// Inserts one `alerts` row per alert transition (a redelivered one
    /// collapses with its first copy under `FINAL`).
    pub async fn insert_alerts(&self, alerts: &[Alert]) -> Result<usize, StoreError> {
        self.insert_versioned("alerts", Alerts(alerts)).await
    }

    /// Inserts one `test_cases` row per case of each attempt (a redelivered
    /// result's rows collapse with the first copy's under `FINAL`).
    pub async fn insert_test_cases(&self, attempts: &[AttemptCases<'_>]) -> Result<usize, StoreError> {
        if attempts.iter().all(|a| a.cases.is_empty()) {
            return Ok(0);
        }
        self.insert_versioned("test_cases", Cases(attempts)).await
    }

    /// Inserts the rows of `source` with the time columns this server's
    /// schema has: milliseconds on modern servers, seconds on old ones.
    async fn insert_versioned<S: Timed>(&self, table: &str, source: S) -> Result<usize, StoreError> {
        if self.version().is_modern() {
            self.insert_all(table, source.rows::<i64>().into_iter()).await
        } else {
            self.insert_all(table, source.rows::<u32>().into_iter()).await
        }
    }

    /// Inserts `rows` into `table` in one statement; returns how many.
    pub(crate) async fn insert_all<R>(&self, table: &str, rows: impl Iterator<Item = R>) -> Result<usize, StoreError>
    where
        R: RowOwned + Serialize,
    {
        let err = |source| StoreError::Server { what: "insert", source };
        let mut insert = self.client().insert::<R>(table).await.map_err(err)?;
        let mut n = 0;
        for row in rows {
            insert.write(&row).await.map_err(err)?;
            n += 1;
        }
        insert.end().await.map_err(err)?;
        Ok(n)
    }
}
