//! Reading what attempts stored in the Object Stores: a whole object with a
//! size cap, and the test cases of a result's JUnit reports (`hws_artifacts`),
//! which the recorder writes to ClickHouse and `hwsched submit --junit` merges.

use async_nats::jetstream::object_store::ObjectStore;
use hwsched_proto::v1::{ExecutionResult, TestCase};
use tokio::io::AsyncReadExt;

use crate::{streams, Bus, BusError};

/// Object `name` of `store`, whole; an error when it is missing, over
/// `max_bytes`, or fails its digest check while being read.
pub async fn read_object(store: &ObjectStore, name: &str, max_bytes: usize) -> Result<Vec<u8>, BusError> {
    let what = || format!("read object {name}");
    let object = store.get(name).await.map_err(|e| BusError::js(what(), e))?;
    if object.info.size > max_bytes {
        return Err(BusError::js(what(), format!("{} bytes, over the limit of {max_bytes}", object.info.size)));
    }
    let mut bytes = Vec::with_capacity(object.info.size);
    object.take(max_bytes as u64 + 1).read_to_end(&mut bytes).await.map_err(|e| BusError::js(what(), e))?;
    if bytes.len() > max_bytes {
        return Err(BusError::js(what(), format!("more than {max_bytes} bytes")));
    }
    Ok(bytes)
}

/// The test cases of a result's JUnit reports, and why any could not be used.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct JunitCases {
    /// Every case of every report that could be read, in artifact then report order.
    pub cases: Vec<TestCase>,
    /// One line per report that could not be read or parsed, naming its path.
    pub errors: Vec<String>,
}

/// Whether `result` lists a JUnit report among its artifacts.
pub fn has_junit(result: &ExecutionResult) -> bool {
    result.artifacts.iter().any(|a| a.junit)
}

/// Reads and parses the JUnit reports `result` lists (`Artifact.junit`) from
/// the artifacts bucket. A report that is missing (expired, never stored),
/// oversized or malformed is named in `errors`; the others still count.
pub async fn junit_cases(bus: &Bus, result: &ExecutionResult) -> JunitCases {
    let mut out = JunitCases::default();
    if !has_junit(result) {
        return out;
    }
    let store = match streams::object_store(bus, &bus.subjects().artifacts_bucket()).await {
        Ok(store) => store,
        Err(e) => {
            out.errors.push(e.to_string());
            return out;
        }
    };
    for artifact in result.artifacts.iter().filter(|a| a.junit) {
        let parsed = read_object(&store, &artifact.object, hwsched_junit::MAX_REPORT_BYTES)
            .await
            .map_err(|e| e.to_string())
            .and_then(|bytes| hwsched_junit::parse(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(cases) => out.cases.extend(cases),
            Err(e) => out.errors.push(format!("{}: {e}", artifact.path)),
        }
    }
    out
}
