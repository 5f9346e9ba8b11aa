//! `TestCase`s -> the `TestSummary` an `ExecutionResult` carries.

use std::io::Read;
use std::path::{Path, PathBuf};

use hwsched_proto::v1::{TestCase, TestSummary};

use crate::parse::{parse, Status};
use crate::{JunitError, MAX_REPORT_BYTES, MAX_SUMMARY_FAILURES};

/// Counts of `cases` and their failed and errored cases (at most
/// `MAX_SUMMARY_FAILURES`, in order; `failures_truncated` says more were left out).
pub fn summarize(cases: &[TestCase]) -> TestSummary {
    let mut summary = TestSummary::default();
    add(&mut summary, cases);
    summary
}

fn add(summary: &mut TestSummary, cases: &[TestCase]) {
    for case in cases {
        let count = match Status::of(&case.status) {
            Status::Passed => &mut summary.passed,
            Status::Skipped => &mut summary.skipped,
            Status::Failed => &mut summary.failed,
            Status::Error => &mut summary.errors,
        };
        *count = count.saturating_add(1);
        if matches!(Status::of(&case.status), Status::Failed | Status::Error) {
            if summary.failures.len() < MAX_SUMMARY_FAILURES {
                summary.failures.push(case.clone());
            } else {
                summary.failures_truncated = true;
            }
        }
    }
}

/// Reads, parses and merges the reports at `paths` (as given). See `summarize_files_in`.
pub fn summarize_files(paths: &[PathBuf]) -> TestSummary {
    summarize_files_in(Path::new(""), paths)
}

/// Reads, parses and merges the reports at `paths`, relative to `dir` (or
/// absolute inside it). A report that cannot be read or parsed is named (relative
/// to `dir`) in `error`, one `"<file>: <why>"` per report joined by `"; "`, and
/// the others still count. No paths at all is an error too: the test wrote no report.
pub fn summarize_files_in(dir: &Path, paths: &[PathBuf]) -> TestSummary {
    let mut summary = TestSummary::default();
    let mut errors = Vec::new();
    if paths.is_empty() {
        errors.push("no JUnit report found".to_owned());
    }
    for path in paths {
        let full = dir.join(path);
        let shown = full.strip_prefix(dir).unwrap_or(&full).display().to_string();
        match read_capped(&full, &shown).and_then(|bytes| parse(&bytes)) {
            Ok(cases) => add(&mut summary, &cases),
            Err(err) => errors.push(format!("{shown}: {err}")),
        }
    }
    summary.error = errors.join("; ");
    summary
}

/// The whole file, or an error when it is over `MAX_REPORT_BYTES` or unreadable.
pub(crate) fn read_capped(path: &Path, shown: &str) -> Result<Vec<u8>, JunitError> {
    let io = |source| JunitError::Io { path: shown.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_REPORT_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > MAX_REPORT_BYTES {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return Err(JunitError::TooLarge { size, limit: MAX_REPORT_BYTES });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use hwsched_proto::v1::TestCase;

    use super::{summarize, summarize_files, summarize_files_in};
    use crate::MAX_SUMMARY_FAILURES;

    fn case(name: &str, status: &str) -> TestCase {
        TestCase { name: name.into(), status: status.into(), ..TestCase::default() }
    }

    #[test]
    fn counts_each_status_and_lists_failures() {
        let s = summarize(&[case("a", "passed"), case("b", "failed"), case("c", "skipped"), case("d", "error")]);
        assert_eq!((s.passed, s.failed, s.skipped, s.errors), (1, 1, 1, 1));
        let names: Vec<_> = s.failures.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["b", "d"]);
        assert!(!s.failures_truncated);
        assert!(s.error.is_empty());
    }

    #[test]
    fn failures_are_capped_and_marked() {
        let cases: Vec<_> = (0..MAX_SUMMARY_FAILURES + 5).map(|i| case(&i.to_string(), "failed")).collect();
        let s = summarize(&cases);
        assert_eq!(s.failed as usize, MAX_SUMMARY_FAILURES + 5);
        assert_eq!(s.failures.len(), MAX_SUMMARY_FAILURES);
        assert!(s.failures_truncated);
    }

    #[test]
    fn files_merge_and_a_bad_one_is_named_without_losing_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good =
            "<testsuite><testcase name=\"a\"/><testcase name=\"b\"><failure message=\"x\"/></testcase></testsuite>";
        std::fs::write(dir.path().join("one.xml"), good).expect("write");
        std::fs::create_dir(dir.path().join("out")).expect("mkdir");
        std::fs::write(dir.path().join("out/two.xml"), "<testsuite><testcase name=\"c\"/></testsuite>").expect("write");
        std::fs::write(dir.path().join("bad.xml"), b"\x00\x01binary garbage").expect("write");
        let paths: Vec<PathBuf> =
            ["one.xml", "bad.xml", "out/two.xml", "missing.xml"].iter().map(PathBuf::from).collect();
        let s = summarize_files_in(dir.path(), &paths);
        assert_eq!((s.passed, s.failed), (2, 1));
        assert!(s.error.starts_with("bad.xml: "), "{}", s.error);
        assert!(s.error.contains("; missing.xml: cannot read missing.xml: "), "{}", s.error);
        assert!(!s.error.contains(&dir.path().display().to_string()), "{}", s.error);
        // Absolute paths inside the directory are named relative to it too.
        let s = summarize_files_in(dir.path(), &[dir.path().join("bad.xml")]);
        assert!(s.error.starts_with("bad.xml: "), "{}", s.error);
    }

    #[test]
    fn no_report_is_an_error() {
        assert_eq!(summarize_files(&[]).error, "no JUnit report found");
    }
}
