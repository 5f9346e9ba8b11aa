//! What an attempt brings back: its output (a tail for the result, the whole
//! stream spooled to a file, live batches on `hws.logs.<task>.<attempt>`),
//! then, once it ended, the stored logs in `hws_logs`, the files its
//! `outputs` and `junit` globs name in `hws_artifacts`, and its JUnit summary.
//!
//! The order of one attempt: [`capture`] reads both pipes while the command
//! runs and hands batches to [`live`]; when the command ended, [`store`]
//! uploads the two spools, [`artifacts`] finds and uploads the files, and
//! [`Outputs::bring_back`] puts what they did on the result, all before the
//! sandbox is removed and the result published, each upload bounded in time.

pub mod artifacts;
pub mod capture;
pub mod live;
pub mod store;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream::object_store::ObjectStore;
use clap::Args;
use hwsched_bus::{streams, Bus};
use hwsched_proto::v1::{Artifact, ExecutionResult, OutputStream, TaskRequest, TestSummary};

use self::capture::{Capture, Streams};

/// Default values, shared by the flags and [`OutputConfig::default`].
pub mod defaults {
    /// Bytes of each output stream kept (spooled, stored); 64 MiB.
    pub const LOG_CAP: u64 = 64 << 20;
    /// Largest single artifact; 256 MiB.
    pub const ARTIFACT_MAX_FILE: u64 = 256 << 20;
    /// Most artifact bytes per attempt; 1 GiB.
    pub const ARTIFACT_MAX_TOTAL: u64 = 1 << 30;
    /// Most artifact files per attempt.
    pub const ARTIFACT_MAX_FILES: usize = 1000;
    /// Time the log uploads, and then the artifact uploads, may each take (s).
    pub const UPLOAD_TIMEOUT_S: u64 = 120;
}

/// Output flags of `hwsched monitor`.
#[derive(Debug, Clone, Args)]
pub struct OutputConfig {
    /// Directory for the spool files of running attempts' output (unlinked
    /// files: nothing is left behind, even after a crash). Default: the system temp dir.
    #[arg(long = "spool-dir", env = "HWSCHED_MONITOR_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Bytes of stdout and of stderr kept per attempt (e.g. 64M); beyond it a marker line says how much was not kept.
    #[arg(long = "log-cap", env = "HWSCHED_MONITOR_LOG_CAP", default_value = "64M", value_parser = byte_size)]
    pub log_cap: u64,
    /// Largest artifact stored (e.g. 256M); bigger matches are listed as skipped in the result's error.
    #[arg(long = "artifact-max-file", env = "HWSCHED_MONITOR_ARTIFACT_MAX_FILE", default_value = "256M", value_parser = byte_size)]
    pub artifact_max_file: u64,
    /// Most artifact bytes stored per attempt (e.g. 1G).
    #[arg(long = "artifact-max-total", env = "HWSCHED_MONITOR_ARTIFACT_MAX_TOTAL", default_value = "1G", value_parser = byte_size)]
    pub artifact_max_total: u64,
    /// Most artifact files stored per attempt.
    #[arg(long = "artifact-max-files", env = "HWSCHED_MONITOR_ARTIFACT_MAX_FILES", default_value_t = defaults::ARTIFACT_MAX_FILES)]
    pub artifact_max_files: usize,
    /// Seconds the log uploads, and then the artifact uploads, may each take
    /// before the result is published without them.
    #[arg(long = "upload-timeout-s", env = "HWSCHED_MONITOR_UPLOAD_TIMEOUT_S", default_value_t = defaults::UPLOAD_TIMEOUT_S,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upload_timeout_s: u64,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            spool_dir: None,
            log_cap: defaults::LOG_CAP,
            artifact_max_file: defaults::ARTIFACT_MAX_FILE,
            artifact_max_total: defaults::ARTIFACT_MAX_TOTAL,
            artifact_max_files: defaults::ARTIFACT_MAX_FILES,
            upload_timeout_s: defaults::UPLOAD_TIMEOUT_S,
        }
    }
}

impl OutputConfig {
    /// The spool directory, created if missing.
    pub fn spool_dir(&self) -> Result<PathBuf, String> {
        let dir = self.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("--spool-dir / HWSCHED_MONITOR_SPOOL_DIR {}: {e}", dir.display()))?;
        Ok(dir)
    }

    /// How long each upload phase may take.
    pub fn upload_timeout(&self) -> Duration {
        Duration::from_secs(self.upload_timeout_s)
    }
}

/// Most characters the notes on left-out outputs add to a result's `error`.
const NOTES_MAX: usize = 2000;

/// What the executor brings outputs back with: the settings, the live
/// publisher's bus and the two output stores.
pub struct Outputs {
    cfg: OutputConfig,
    spool_dir: PathBuf,
    bus: Bus,
    logs: ObjectStore,
    artifacts: ObjectStore,
    refuse_hard_links: bool,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outputs").field("cfg", &self.cfg).field("spool_dir", &self.spool_dir).finish_non_exhaustive()
    }
}

/// What was brought back, to put on the result.
#[derive(Debug, Default)]
pub struct Brought {
    /// Both streams are in `hws_logs` (an empty one needs no object).
    pub logs_stored: bool,
    /// Bytes written to stdout.
    pub stdout_bytes: u64,
    /// Bytes written to stderr.
    pub stderr_bytes: u64,
    /// Stored files, by path.
    pub artifacts: Vec<Artifact>,
    /// The JUnit summary, when the task names a report.
    pub tests: Option<TestSummary>,
    /// What was left out, and why.
    pub notes: Vec<String>,
}

impl Brought {
    /// Puts it on `r`; the notes are appended to its `error`.
    pub fn apply(self, r: &mut ExecutionResult) {
        r.logs_stored = self.logs_stored;
        r.stdout_bytes = self.stdout_bytes;
        r.stderr_bytes = self.stderr_bytes;
        r.artifacts = self.artifacts;
        r.tests = self.tests;
        if self.notes.is_empty() {
            return;
        }
        let mut text = format!("outputs: {}", self.notes.join("; "));
        if text.len() > NOTES_MAX {
            let cut = (0..=NOTES_MAX).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            text.truncate(cut);
            text.push_str(" ...");
        }
        r.error = if r.error.is_empty() { text } else { format!("{}; {text}", r.error) };
    }
}

impl Outputs {
    /// Opens the output stores (`hws_logs`, `hws_artifacts`) and the spool directory.
    /// `refuse_hard_links`: tasks run as another user than the monitor's.
    pub async fn open(bus: &Bus, cfg: &OutputConfig, refuse_hard_links: bool) -> anyhow::Result<Self> {
        let spool_dir = cfg.spool_dir().map_err(anyhow::Error::msg)?;
        let s = bus.subjects();
        Ok(Self {
            cfg: cfg.clone(),
            spool_dir,
            bus: bus.clone(),
            logs: streams::object_store(bus, &s.logs_bucket()).await.context("output logs store")?,
            artifacts: streams::object_store(bus, &s.artifacts_bucket()).await.context("artifacts store")?,
            refuse_hard_links,
        })
    }

    /// Where the output of `task_id`'s `attempt` goes while it runs.
    pub fn capture(&self, task_id: &str, attempt: u32) -> Capture {
        Capture::new(self.cfg.log_cap, &self.spool_dir, Some(live::start(&self.bus, task_id, attempt)))
    }

    fn limits(&self) -> artifacts::Limits {
        artifacts::Limits {
            max_file: self.cfg.artifact_max_file,
            max_total: self.cfg.artifact_max_total,
            max_files: self.cfg.artifact_max_files,
            refuse_hard_links: self.refuse_hard_links,
        }
    }

    /// After the command ended, before its sandbox goes: stores the logs, the
    /// artifacts and reads the JUnit report. Each upload phase is bounded by
    /// `--upload-timeout-s`; whatever fails is noted, never lost with the result.
    pub async fn bring_back(&self, task: &TaskRequest, attempt: u32, mut s: Streams) -> Brought {
        if let Some(p) = s.publisher.take() {
            p.drain().await;
        }
        let mut b = Brought { stdout_bytes: s.stdout.total, stderr_bytes: s.stderr.total, ..Default::default() };
        let limit = self.cfg.upload_timeout();
        let id = task.task_id.as_str();
        let logs = store::store_logs(
            &self.logs,
            id,
            attempt,
            [(OutputStream::Stdout, &mut s.stdout), (OutputStream::Stderr, &mut s.stderr)],
        );
        match tokio::time::timeout(limit, logs).await {
            Ok(Ok(())) => b.logs_stored = true,
            Ok(Err(e)) => b.notes.push(format!("logs not stored: {e}")),
            Err(_) => b.notes.push(format!("logs not stored: the store took over {}s", limit.as_secs())),
        }
        if !b.logs_stored {
            tracing::warn!(reason = %b.notes.join("; "), "output not stored: only the tails are on the result");
        }
        if task.outputs.is_empty() && task.junit.is_empty() {
            return b;
        }
        let Some(workdir) = s.workdir.clone().or_else(|| std::env::current_dir().ok()) else {
            b.notes.push("artifacts not collected: no working directory".into());
            return b;
        };
        let (outputs, junit, limits) = (task.outputs.clone(), task.junit.clone(), self.limits());
        let dir = workdir.clone();
        let found = tokio::task::spawn_blocking(move || artifacts::find(&dir, &outputs, &junit, limits)).await;
        let (found, notes) = found.unwrap_or_else(|e| (vec![], vec![format!("artifact search failed: {e}")]));
        b.notes.extend(notes);
        if !task.junit.is_empty() {
            let reports: Vec<PathBuf> = found.iter().filter(|f| f.junit).map(|f| PathBuf::from(&f.path)).collect();
            b.tests = Some(junit_summary(&task.junit, workdir, reports).await);
        }
        let upload = artifacts::upload(&self.artifacts, id, attempt, &found, limits, &mut b.artifacts, &mut b.notes);
        if tokio::time::timeout(limit, upload).await.is_err() {
            b.notes.push(format!("artifact upload stopped after {}s: the rest not stored", limit.as_secs()));
        }
        if !b.notes.is_empty() {
            tracing::warn!(notes = %b.notes.join("; "), "outputs left out");
        }
        b
    }
}

/// The per-test results of the JUnit report(s) found for `pattern` (paths
/// relative to `workdir`, regular files the walk found), parsed off the async workers.
async fn junit_summary(pattern: &str, workdir: PathBuf, reports: Vec<PathBuf>) -> TestSummary {
    if reports.is_empty() {
        return TestSummary { error: format!("no JUnit report matched {pattern:?}"), ..Default::default() };
    }
    tokio::task::spawn_blocking(move || hwsched_junit::summarize_files_in(&workdir, &reports))
        .await
        .unwrap_or_else(|e| TestSummary { error: format!("JUnit reports not read: {e}"), ..Default::default() })
}

/// Parses a byte size: a number with an optional K, M or G suffix (powers of 1024).
pub fn byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 10),
        Some('M') => (&t[..t.len() - 1], 20),
        Some('G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{s:?}: expected a size such as 65536, 512K, 64M or 1G"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(byte_size("65536"), Ok(65536));
        assert_eq!(byte_size("64M"), Ok(defaults::LOG_CAP));
        assert_eq!(byte_size("1g"), Ok(1 << 30));
        assert_eq!(byte_size(" 512K "), Ok(512 << 10));
        assert!(byte_size("lots").is_err());
        assert!(byte_size("-1M").is_err());
        assert!(byte_size("99999999999999G").is_err());
    }
}
