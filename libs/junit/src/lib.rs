//! JUnit XML of hwsched: `parse` reads the report a test wrote (pytest,
//! cargo-nextest, jest-junit, go-junit-report dialects) into
//! `hwsched_proto::v1::TestCase`s, `summarize`/`summarize_files` turn them into
//! the `TestSummary` an `ExecutionResult` carries, and `write` produces one
//! report for a whole submission (`hwsched submit --wait --junit FILE`).
//!
//! Pure and bounded: inputs are capped in size and case count, DTDs are
//! refused (so no entity expansion of any kind), and malformed or binary input
//! is an error, never a panic.
#![forbid(unsafe_code)]

mod parse;
mod summary;
mod text;
mod write;

pub use parse::{parse, Status};
pub use summary::{summarize, summarize_files, summarize_files_in};
pub use text::{first_line, truncate_on_char_boundary, xml_safe};
pub use write::{write, Case, Suite};

/// Largest report `parse` accepts and `summarize_files` reads, in bytes.
pub const MAX_REPORT_BYTES: usize = 64 * 1024 * 1024;
/// Most test cases one report may hold.
pub const MAX_CASES: usize = 100_000;
/// Most failed or errored cases a `TestSummary` lists (`failures_truncated` says more were left out).
pub const MAX_SUMMARY_FAILURES: usize = 100;
/// Longest `TestCase.message`, in bytes (cut on a character boundary).
pub const MAX_MESSAGE_BYTES: usize = 512;
/// Longest suite, class or test name kept, in bytes (cut on a character boundary).
pub const MAX_NAME_BYTES: usize = 1024;

/// Why a JUnit report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    #[error("report is {size} bytes, over the limit of {limit}")]
    TooLarge { size: u64, limit: usize },
    #[error("report has more than {limit} test cases")]
    TooManyCases { limit: usize },
    #[error("not a JUnit report: the root element is <{root}>, not <testsuites> or <testsuite>")]
    NotJunit { root: String },
    #[error("empty report: no root element")]
    Empty,
    #[error("report ends before <{open}> is closed")]
    Unclosed { open: String },
    #[error("a DOCTYPE (DTD) is not allowed in a JUnit report")]
    Dtd,
    #[error("unknown entity reference &{name};")]
    UnknownEntity { name: String },
    #[error("malformed XML at byte {position}: {source}")]
    Xml { position: u64, source: quick_xml::Error },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}
