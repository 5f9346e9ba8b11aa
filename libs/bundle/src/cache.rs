//! A worker's content-addressed cache of unpacked bundles.
//!
//! Layout under its directory: `trees/<hex>/` is a complete unpacked tree,
//! `trees/<hex>.meta` holds its byte count and, as its mtime, its last use
//! (written after the tree is in place, so a crash never leaves a half tree
//! that looks whole); `tmp/` holds downloads and unpacks in progress and is
//! emptied at start. So the cache survives a monitor restart.
//!
//! A download is verified against its digest before it is unpacked (a
//! mismatch is downloaded once more, then reported); concurrent requests of
//! one digest wait for a single download. Trees are evicted least recently
//! used first once the byte cap is exceeded, never while an attempt copies one.

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use crate::{digest_of_file, unpack, BundleError, Limits};

/// Where the cache lives and how much it holds.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Its directory (created when missing).
    pub dir: PathBuf,
    /// Most bytes of unpacked trees kept; also the most one bundle may unpack to.
    pub max_bytes: u64,
    /// Most entries one bundle may unpack to.
    pub max_entries: u64,
}

#[derive(Debug)]
struct Tree {
    bytes: u64,
    last_use: SystemTime,
    in_use: usize,
}

#[derive(Debug, Default)]
struct State {
    trees: HashMap<String, Tree>,
    total: u64,
    flights: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    last_use: Option<SystemTime>,
    tmp_seq: u64,
}

/// The cache; share it as `Arc<Cache>`.
#[derive(Debug)]
pub struct Cache {
    cfg: CacheConfig,
    state: Mutex<State>,
}

/// A cached tree, held in the cache while this lives.
#[derive(Debug)]
pub struct Fetched {
    /// The unpacked tree (read it, copy it: never change it).
    pub tree: PathBuf,
    /// Whether this request downloaded it (else a cache hit, perhaps after waiting for another's download).
    pub downloaded: bool,
    /// Its unpacked size.
    pub bytes: u64,
    _lease: Lease,
}

#[derive(Debug)]
struct Lease {
    cache: Arc<Cache>,
    hex: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(t) = self.cache.lock().trees.get_mut(&self.hex) {
            t.in_use = t.in_use.saturating_sub(1);
        }
    }
}

impl Cache {
    /// Opens the cache at `cfg.dir`: finds the complete trees a previous run
    /// left, removes anything incomplete, and evicts down to the cap.
    pub fn open(cfg: CacheConfig) -> Result<Arc<Self>, BundleError> {
        let (trees_dir, tmp) = (cfg.dir.join("trees"), cfg.dir.join("tmp"));
        let _ = std::fs::remove_dir_all(&tmp);
        for d in [&trees_dir, &tmp] {
            std::fs::create_dir_all(d).map_err(BundleError::io(d))?;
        }
        let mut state = State::default();
        for e in std::fs::read_dir(&trees_dir).map_err(BundleError::io(&trees_dir))? {
            let path = e.map_err(BundleError::io(&trees_dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else { continue };
            if let Some(hex) = name.strip_suffix(".meta") {
                if !trees_dir.join(hex).is_dir() {
                    let _ = std::fs::remove_file(&path);
                }
            } else if let Some(tree) = read_meta(&trees_dir.join(format!("{name}.meta"))) {
                state.total += tree.bytes;
                state.trees.insert(name, tree);
            } else {
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
            }
        }
        let cache = Arc::new(Self { cfg, state: Mutex::new(state) });
        cache.evict();
        Ok(cache)
    }

    /// The tree of `digest`: from the cache, or downloaded by `download` (which
    /// writes the bytes stored under the digest to the path it is given and
    /// returns their count), verified and unpacked. Concurrent calls for one
    /// digest share one download.
    pub async fn fetch<F, Fut>(self: &Arc<Self>, digest: &str, download: F) -> Result<Fetched, BundleError>
    where
        F: Fn(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64, BundleError>>,
    {
        let hex = digest
            .strip_prefix(hwsched_proto::DIGEST_PREFIX)
            .filter(|_| hwsched_proto::is_valid_digest(digest))
            .ok_or_else(|| BundleError::InvalidDigest(digest.into()))?;
        if let Some(f) = self.hit(hex) {
            return Ok(f);
        }
        let flight = self.lock().flights.entry(hex.to_string()).or_default().clone();
        let _one_at_a_time = flight.lock().await;
        if let Some(f) = self.hit(hex) {
            return Ok(f);
        }
        let filled = self.fill(digest, hex, &download).await;
        self.lock().flights.remove(hex);
        filled?;
        let mut f = self.hit(hex).ok_or_else(|| BundleError::Io {
            path: self.tree_path(hex),
            source: std::io::Error::other("evicted as soon as it was cached"),
        })?;
        f.downloaded = true;
        Ok(f)
    }

    /// Bytes of unpacked trees held now.
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }

    /// Whether the tree of `digest` is cached.
    pub fn contains(&self, digest: &str) -> bool {
        digest.strip_prefix(hwsched_proto::DIGEST_PREFIX).is_some_and(|hex| self.lock().trees.contains_key(hex))
    }

    /// Requests waiting on (or running) the download of `digest`, for tests.
    #[doc(hidden)]
    pub fn waiting(&self, digest: &str) -> usize {
        let hex = digest.strip_prefix(hwsched_proto::DIGEST_PREFIX).unwrap_or(digest);
        self.lock().flights.get(hex).map_or(0, |f| Arc::strong_count(f) - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tree_path(&self, hex: &str) -> PathBuf {
        self.cfg.dir.join("trees").join(hex)
    }

    /// A cached tree, marked used now and held.
    fn hit(self: &Arc<Self>, hex: &str) -> Option<Fetched> {
        let mut st = self.lock();
        let now = next_use(&mut st);
        let t = st.trees.get_mut(hex)?;
        t.in_use += 1;
        t.last_use = now;
        let bytes = t.bytes;
        drop(st);
        let meta = self.cfg.dir.join("trees").join(format!("{hex}.meta"));
        if let Err(e) = std::fs::File::options().write(true).open(&meta).and_then(|f| f.set_modified(now)) {
            tracing::debug!(error = %e, "bundle cache: last use not recorded");
        }
        let lease = Lease { cache: self.clone(), hex: hex.to_string() };
        Some(Fetched { tree: self.tree_path(hex), downloaded: false, bytes, _lease: lease })
    }

    /// Downloads (twice at most on a digest mismatch), verifies, unpacks and records `hex`.
    async fn fill<F, Fut>(self: &Arc<Self>, digest: &str, hex: &str, download: &F) -> Result<(), BundleError>
    where
        F: Fn(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64, BundleError>>,
    {
        let seq = {
            let mut st = self.lock();
            st.tmp_seq += 1;
            st.tmp_seq
        };
        let tmp = self.cfg.dir.join("tmp");
        let (archive, staging) = (tmp.join(format!("{hex}-{seq}.tar.gz")), tmp.join(format!("{hex}-{seq}")));
        let result = self.download_verified(digest, &archive, download).await;
        let result = match result {
            Ok(()) => {
                let (a, s, me) = (archive.clone(), staging.clone(), self.clone());
                let hex = hex.to_string();
                tokio::task::spawn_blocking(move || me.install(&a, &s, &hex)).await.unwrap_or_else(|e| {
                    Err(BundleError::Io { path: staging.clone(), source: std::io::Error::other(e) })
                })
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&archive);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        result
    }

    async fn download_verified<F, Fut>(&self, digest: &str, archive: &Path, download: &F) -> Result<(), BundleError>
    where
        F: Fn(PathBuf) -> Fut,
        Fut: Future<Output = Result<u64, BundleError>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            let mismatch = match download(archive.to_path_buf()).await {
                Ok(_) => {
                    let a = archive.to_path_buf();
                    let (actual, _) = tokio::task::spawn_blocking(move || digest_of_file(&a))
                        .await
                        .map_err(|e| BundleError::Io { path: archive.into(), source: std::io::Error::other(e) })??;
                    if actual == digest {
                        return Ok(());
                    }
                    BundleError::DigestMismatch { expected: digest.into(), actual }
                }
                Err(e @ BundleError::DigestMismatch { .. }) => e,
                Err(e) => return Err(e),
            };
            tracing::warn!(digest, error = %mismatch, tries, "bundle download does not match its digest");
            if tries == 2 {
                return Err(mismatch);
            }
        }
    }

    /// Unpacks into `staging`, moves it in place, writes its meta, evicts to the cap.
    fn install(&self, archive: &Path, staging: &Path, hex: &str) -> Result<(), BundleError> {
        std::fs::create_dir(staging).map_err(BundleError::io(staging))?;
        let limits = Limits { max_bytes: self.cfg.max_bytes, max_entries: self.cfg.max_entries };
        let u = unpack(archive, staging, limits)?;
        let (tree, meta) = (self.tree_path(hex), self.cfg.dir.join("trees").join(format!("{hex}.meta")));
        let _ = std::fs::remove_dir_all(&tree);
        std::fs::rename(staging, &tree).map_err(BundleError::io(&tree))?;
        let tmp_meta = staging.with_extension("meta");
        std::fs::write(&tmp_meta, u.bytes.to_string()).map_err(BundleError::io(&tmp_meta))?;
        std::fs::rename(&tmp_meta, &meta).map_err(BundleError::io(&meta))?;
        {
            let mut st = self.lock();
            let last_use = next_use(&mut st);
            st.total += u.bytes;
            if let Some(old) = st.trees.insert(hex.to_string(), Tree { bytes: u.bytes, last_use, in_use: 0 }) {
                st.total -= old.bytes;
            }
        }
        self.evict_except(Some(hex));
        Ok(())
    }

    fn evict(&self) {
        self.evict_except(None);
    }

    /// Removes least recently used trees not in use (nor `keep`) until under the cap.
    fn evict_except(&self, keep: Option<&str>) {
        let mut gone = Vec::new();
        {
            let mut st = self.lock();
            while st.total > self.cfg.max_bytes {
                let victim = st
                    .trees
                    .iter()
                    .filter(|(h, t)| t.in_use == 0 && Some(h.as_str()) != keep)
                    .min_by_key(|(_, t)| t.last_use)
                    .map(|(h, _)| h.clone());
                let Some(hex) = victim else { break };
                if let Some(t) = st.trees.remove(&hex) {
                    st.total -= t.bytes;
                }
                st.tmp_seq += 1;
                let trash = self.cfg.dir.join("tmp").join(format!("evicted-{hex}-{}", st.tmp_seq));
                let _ = std::fs::remove_file(self.cfg.dir.join("trees").join(format!("{hex}.meta")));
                let _ = std::fs::rename(self.tree_path(&hex), &trash);
                tracing::debug!(digest = %hex, "bundle cache: evicted");
                gone.push(trash);
            }
        }
        for trash in gone {
            let _ = std::fs::remove_dir_all(trash);
        }
    }
}

/// Now, or just after the last use handed out (uses stay strictly ordered).
fn next_use(st: &mut State) -> SystemTime {
    let now = SystemTime::now();
    let t = match st.last_use {
        Some(last) if last >= now => last + Duration::from_micros(1),
        _ => now,
    };
    st.last_use = Some(t);
    t
}

fn read_meta(meta: &Path) -> Option<Tree> {
    let bytes = std::fs::read_to_string(meta).ok()?.trim().parse().ok()?;
    let last_use = std::fs::metadata(meta).ok()?.modified().ok()?;
    Some(Tree { bytes, last_use, in_use: 0 })
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
