//! The bundle step of an attempt: a task naming a bundle always runs in a
//! sandbox (under `--sandbox-dir`, else under the bundle cache's
//! `sandboxes/`); its bundle comes from the worker's cache (downloaded once
//! per worker from the Object Store, verified, unpacked safely) and is copied
//! into the sandbox, which becomes the working directory (a task's `workdir`
//! is then relative to it). A missing, corrupt, oversized or hostile bundle
//! ends the attempt as bad input, which the scheduler does not retry; an
//! unreachable store or a local disk problem is the worker's, and retried.

use std::{
    path::{Component, Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use async_nats::jetstream::object_store::ObjectStore;
use hwsched_bundle::{store, BundleError, Cache, CacheConfig};
use hwsched_bus::{streams, Bus};
use hwsched_proto::v1::TaskRequest;
use hwsched_telemetry::Telemetry;

use crate::{config::MonitorConfig, metrics::BundleMetrics, policy::Policy};

/// Most entries one bundle may unpack to.
pub const MAX_BUNDLE_ENTRIES: u64 = 500_000;

/// Why an attempt could not start.
#[derive(Debug)]
pub struct StartError {
    /// The result's `error` text.
    pub message: String,
    /// The task's own input is at fault: fail it without retrying elsewhere.
    pub bad_input: bool,
    /// This worker's policy refused it: retry it elsewhere, never here.
    pub refused: bool,
}

impl From<String> for StartError {
    fn from(message: String) -> Self {
        Self { message, bad_input: false, refused: false }
    }
}

impl StartError {
    /// A refusal by this worker's policy.
    pub fn refused(message: String) -> Self {
        Self { message, bad_input: false, refused: true }
    }
}

fn bad_input(message: String) -> StartError {
    StartError { message, bad_input: true, refused: false }
}

/// Where an attempt runs.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Its sandbox, when it has one (removed by the caller when the attempt ends).
    pub sandbox: Option<PathBuf>,
    /// Its working directory when decided here (bundle tasks).
    pub workdir: Option<PathBuf>,
}

/// The bundle cache of this worker, and where bundle tasks run.
pub struct Inputs {
    bus: Bus,
    cache: Arc<Cache>,
    store: tokio::sync::OnceCell<ObjectStore>,
    max_bundle_bytes: u64,
    sandbox_root: PathBuf,
    metrics: BundleMetrics,
}

impl std::fmt::Debug for Inputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("cache", &self.cache)
            .field("max_bundle_bytes", &self.max_bundle_bytes)
            .field("sandbox_root", &self.sandbox_root)
            .finish_non_exhaustive()
    }
}

/// The bundle cache directory of this monitor.
pub fn cache_dir(cfg: &MonitorConfig, worker_id: &str) -> PathBuf {
    cfg.bundle_cache_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("hwsched-{worker_id}")).join("bundles"))
}

impl Inputs {
    /// Opens the cache (what a previous run left is kept) and registers the metrics.
    pub fn open(cfg: &MonitorConfig, worker_id: &str, bus: &Bus, telemetry: &Telemetry) -> Result<Self, String> {
        let dir = cache_dir(cfg, worker_id);
        let cache = Cache::open(CacheConfig {
            dir: dir.clone(),
            max_bytes: cfg.bundle_cache_bytes,
            max_entries: MAX_BUNDLE_ENTRIES,
        })
        .map_err(|e| format!("--bundle-cache-dir / HWSCHED_MONITOR_BUNDLE_CACHE_DIR: {e}"))?;
        let sandbox_root = dir.join("sandboxes");
        // sandboxes of attempts a previous run left behind
        let _ = std::fs::remove_dir_all(&sandbox_root);
        std::fs::create_dir_all(&sandbox_root).map_err(|e| format!("{}: {e}", sandbox_root.display()))?;
        let metrics = BundleMetrics::default();
        metrics.register(telemetry);
        metrics.cache_bytes.set(i64::try_from(cache.bytes()).unwrap_or(i64::MAX));
        tracing::info!(dir = %dir.display(), cached_bytes = cache.bytes(), "bundle cache open");
        Ok(Self {
            bus: bus.clone(),
            cache,
            store: Default::default(),
            max_bundle_bytes: cfg.bundle_cache_bytes.min(cfg.max_bundle_bytes),
            sandbox_root,
            metrics,
        })
    }

    /// The attempt's sandbox and, with a bundle, its tree placed in it and the working directory.
    /// On an error nothing made here is left.
    pub async fn prepare(&self, policy: &Policy, task: &TaskRequest, attempt: u32) -> Result<Prepared, StartError> {
        if task.bundle.is_empty() {
            return Ok(Prepared { sandbox: policy.sandbox_for(&task.task_id, attempt)?, workdir: None });
        }
        let rel = relative_workdir(&task.workdir).map_err(bad_input)?;
        let sandbox = match policy.sandbox_for(&task.task_id, attempt)? {
            Some(s) => s,
            None => policy.sandbox_under(&self.sandbox_root, &task.task_id, attempt)?,
        };
        let owner = policy.run_as.as_ref().map(|u| (u.uid, u.gid));
        let placed = self.place(&task.bundle, &sandbox, owner).await.and_then(|()| {
            let workdir = sandbox.join(&rel);
            if workdir.is_dir() {
                Ok(workdir)
            } else {
                Err(bad_input(format!("workdir {:?} is not a directory of bundle {}", task.workdir, task.bundle)))
            }
        });
        match placed {
            Ok(workdir) => Ok(Prepared { sandbox: Some(sandbox), workdir: Some(workdir) }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&sandbox);
                Err(e)
            }
        }
    }

    /// Fetches `digest` through the cache and copies its tree into `sandbox`.
    async fn place(&self, digest: &str, sandbox: &Path, owner: Option<(u32, u32)>) -> Result<(), StartError> {
        let store = self
            .store
            .get_or_try_init(|| async { streams::object_store(&self.bus, &self.bus.subjects().bundles_bucket()).await })
            .await
            .map_err(|e| format!("bundle store unavailable: {e}"))?;
        let began = Instant::now();
        let max = self.max_bundle_bytes;
        let fetched =
            self.cache.fetch(digest, |to| async move { store::download(store, digest, &to, max).await }).await;
        self.metrics.cache_bytes.set(i64::try_from(self.cache.bytes()).unwrap_or(i64::MAX));
        let fetched = fetched.map_err(|e| self.refused(digest, e))?;
        if fetched.downloaded {
            self.metrics.downloads.inc();
            tracing::info!(digest, bytes = fetched.bytes, ms = began.elapsed().as_millis() as u64, "bundle downloaded");
        } else {
            self.metrics.hits.inc();
        }
        let (tree, dest) = (fetched.tree.clone(), sandbox.to_path_buf());
        let placed = tokio::task::spawn_blocking(move || hwsched_bundle::place(&tree, &dest, owner)).await;
        drop(fetched); // the tree may be evicted once copied
        match placed {
            Ok(Ok(bytes)) => {
                tracing::debug!(digest, bytes, ms = began.elapsed().as_millis() as u64, "bundle placed in the sandbox");
                Ok(())
            }
            Ok(Err(e)) => Err(format!("bundle {digest} not placed in the sandbox: {e}").into()),
            Err(e) => Err(format!("bundle {digest} not placed in the sandbox: {e}").into()),
        }
    }

    fn refused(&self, digest: &str, e: BundleError) -> StartError {
        if e.is_bad_input() {
            self.metrics.refused.inc();
            tracing::warn!(digest, error = %e, "bundle refused: the task fails without retry");
            bad_input(format!("bad bundle: {e}"))
        } else {
            tracing::warn!(digest, error = %e, "bundle not fetched");
            format!("bundle {digest} not fetched: {e}").into()
        }
    }
}

/// A bundle task's workdir: a relative path inside the bundle ("" for its root).
fn relative_workdir(workdir: &str) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for c in Path::new(workdir).components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            _ => return Err(format!("workdir {workdir:?} must be a relative path inside the bundle, without \"..\"")),
        }
    }
    Ok(rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_workdir_stays_inside_the_bundle() {
        assert_eq!(relative_workdir(""), Ok(PathBuf::new()));
        assert_eq!(relative_workdir("./tests/unit"), Ok(PathBuf::from("tests/unit")));
        assert!(relative_workdir("/etc").is_err());
        assert!(relative_workdir("a/../../x").is_err());
    }
}
