//! Per-test results: the results sink stores each result's `task_runs` row,
//! then reads the JUnit reports the result lists among its artifacts (from
//! `hws_artifacts`, `hwsched_bus::objects::junit_cases`) and stores one
//! `test_cases` row per case. A report that is missing, malformed or slow to
//! read is logged and skipped: it never holds back the result row or the batch.

use std::time::Duration;

use hwsched_bus::{objects, Bus};
use hwsched_proto::v1::{ExecutionResult, TestCase};
use hwsched_store::{AttemptCases, Store, StoreError};

/// Longest the reports of one result may take to read before they are skipped.
const READ_WITHIN: Duration = Duration::from_secs(5);

/// Test cases gathered before they are inserted (bounds the memory of a batch of big reports).
const CASES_PER_INSERT: usize = 50_000;

/// Inserts the `task_runs` rows of `batch`, then the `test_cases` rows of its
/// JUnit reports; returns the rows inserted. A failed insert fails the whole
/// batch, which the sink retries (the rows already in collapse with their copies).
pub(crate) async fn insert_results(store: &Store, bus: &Bus, batch: &[ExecutionResult]) -> Result<usize, StoreError> {
    let runs = store.insert_runs(batch).await?;
    let mut cases = 0;
    let mut read: Vec<(&ExecutionResult, Vec<TestCase>)> = Vec::new();
    let mut held = 0;
    for result in batch.iter().filter(|r| objects::has_junit(r)) {
        let found = read_cases(bus, result).await;
        held += found.len();
        read.push((result, found));
        if held >= CASES_PER_INSERT {
            cases += insert(store, &read).await?;
            read.clear();
            held = 0;
        }
    }
    cases += insert(store, &read).await?;
    if cases > 0 {
        tracing::debug!(cases, "test cases stored");
    }
    Ok(runs + cases)
}

async fn insert(store: &Store, read: &[(&ExecutionResult, Vec<TestCase>)]) -> Result<usize, StoreError> {
    let attempts: Vec<AttemptCases<'_>> = read.iter().map(|(result, cases)| AttemptCases { result, cases }).collect();
    store.insert_test_cases(&attempts).await
}

/// The cases of `result`'s reports; whatever could not be read is logged.
async fn read_cases(bus: &Bus, result: &ExecutionResult) -> Vec<TestCase> {
    let (task_id, attempt) = (result.task_id.as_str(), result.attempt);
    match tokio::time::timeout(READ_WITHIN, objects::junit_cases(bus, result)).await {
        Ok(found) => {
            for error in &found.errors {
                tracing::warn!(task_id, attempt, error, "junit report not recorded");
            }
            found.cases
        }
        Err(_) => {
            let error = format!("not read within {} ms", READ_WITHIN.as_millis());
            tracing::warn!(task_id, attempt, error, "junit report not recorded");
            Vec::new()
        }
    }
}
