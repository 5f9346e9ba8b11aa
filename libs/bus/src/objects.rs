//! What attempts store in the Object Stores (`hws_logs`, `hws_artifacts`):
//! the object names, a reader that hashes and counts what passes through it
//! (a digest computed while a file streams, never by reading it twice or
//! holding it in memory), a whole-object read with a size cap, and the test
//! cases of a result's JUnit reports, which the recorder writes to ClickHouse
//! and `hwsched submit --junit` merges.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use async_nats::jetstream::object_store::ObjectStore;
use hwsched_proto::{
    v1::{ExecutionResult, OutputStream, TestCase},
    DIGEST_PREFIX,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::{streams, Bus, BusError};

/// `<task_id>/<attempt>/stdout` (or `stderr`): one attempt's stored output in `hws_logs`.
pub fn log_object(task_id: &str, attempt: u32, stream: OutputStream) -> String {
    format!("{task_id}/{attempt}/{}", stream_name(stream))
}

/// `<task_id>/<attempt>/<path>`: one artifact in `hws_artifacts`.
pub fn artifact_object(task_id: &str, attempt: u32, path: &str) -> String {
    format!("{task_id}/{attempt}/{path}")
}

/// "stdout", "stderr" ("output" for an unspecified stream).
pub fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
        OutputStream::Unspecified => "output",
    }
}

/// Reads through `inner`, hashing (SHA-256) and counting every byte.
#[derive(Debug)]
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R> Hashing<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// `sha256:<64 hex>` of what was read.
    pub fn digest(self) -> String {
        format!("{DIGEST_PREFIX}{}", hex(&self.hasher.finalize()))
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Hashing<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = &buf.filled()[before..];
            self.bytes += fresh.len() as u64;
            self.hasher.update(fresh);
        }
        polled
    }
}

/// `sha256:<64 hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("{DIGEST_PREFIX}{}", hex(&Sha256::digest(data)))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

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

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn hashing_reader_matches_the_digest_of_the_bytes() {
        let data = vec![7u8; 300_000];
        let mut r = Hashing::new(&data[..]);
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).await.expect("read");
        assert_eq!(r.bytes(), 300_000);
        let d = r.digest();
        assert_eq!(d, digest_of(&data));
        assert!(hwsched_proto::is_valid_digest(&d), "{d}");
        assert_eq!(
            digest_of(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "the well-known empty digest"
        );
    }

    #[test]
    fn object_names() {
        assert_eq!(log_object("t1", 2, OutputStream::Stderr), "t1/2/stderr");
        assert_eq!(artifact_object("t1", 1, "out/a.png"), "t1/1/out/a.png");
    }
}
