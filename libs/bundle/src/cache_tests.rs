//! The cache with real archives and real tokio tasks; the "store" is a directory of archives.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A packed bundle holding one file of `size` bytes named `name`.
fn bundle(name: &str, size: usize) -> (tempfile::TempDir, crate::Packed) {
    let d = tempfile::tempdir().expect("tmp");
    std::fs::write(d.path().join(name), vec![b'x'; size]).expect("write");
    let p = crate::pack(d.path(), None).expect("pack");
    (d, p)
}

fn open(dir: &Path, max_bytes: u64) -> Arc<Cache> {
    Cache::open(CacheConfig { dir: dir.into(), max_bytes, max_entries: 1000 }).expect("open")
}

/// A downloader that copies `from` and counts its calls.
fn copier(from: &Path, calls: &Arc<AtomicUsize>) -> impl Fn(PathBuf) -> std::future::Ready<Result<u64, BundleError>> {
    let (from, calls) = (from.to_path_buf(), calls.clone());
    move |to: PathBuf| {
        calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(std::fs::copy(&from, &to).map_err(BundleError::io(to)))
    }
}

#[tokio::test]
async fn a_second_fetch_is_a_hit_and_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_src, b) = bundle("data.txt", 100);
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = open(dir.path(), 10_000);
    let f = cache.fetch(&b.digest, copier(&b.path, &calls)).await.expect("fetch");
    assert!(f.downloaded);
    assert_eq!(std::fs::read(f.tree.join("data.txt")).expect("read").len(), 100);
    let f2 = cache.fetch(&b.digest, copier(&b.path, &calls)).await.expect("fetch");
    assert!(!f2.downloaded);
    drop((f, f2, cache));
    let cache = open(dir.path(), 10_000);
    assert!(cache.contains(&b.digest));
    assert_eq!(cache.bytes(), 100);
    assert!(!cache.fetch(&b.digest, copier(&b.path, &calls)).await.expect("fetch").downloaded);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn least_recently_used_trees_go_first_also_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tmp");
    let calls = Arc::new(AtomicUsize::new(0));
    let (_a_src, a) = bundle("a", 400);
    let (_b_src, b) = bundle("b", 400);
    let (_c_src, c) = bundle("c", 400);
    let cache = open(dir.path(), 1000);
    drop(cache.fetch(&a.digest, copier(&a.path, &calls)).await.expect("a"));
    drop(cache.fetch(&b.digest, copier(&b.path, &calls)).await.expect("b"));
    // a is used again: b is now the least recent
    drop(cache.fetch(&a.digest, copier(&a.path, &calls)).await.expect("a again"));
    drop(cache);
    let cache = open(dir.path(), 1000);
    drop(cache.fetch(&c.digest, copier(&c.path, &calls)).await.expect("c"));
    assert!(cache.contains(&a.digest) && cache.contains(&c.digest), "a and c stay");
    assert!(!cache.contains(&b.digest), "b was the least recently used");
    assert_eq!(cache.bytes(), 800);
    assert!(!dir.path().join("trees").join(b.digest.trim_start_matches("sha256:")).exists());
}

#[tokio::test]
async fn a_tree_in_use_is_not_evicted() {
    let dir = tempfile::tempdir().expect("tmp");
    let calls = Arc::new(AtomicUsize::new(0));
    let (_a_src, a) = bundle("a", 600);
    let (_b_src, b) = bundle("b", 600);
    let cache = open(dir.path(), 1000);
    let held = cache.fetch(&a.digest, copier(&a.path, &calls)).await.expect("a");
    let _b = cache.fetch(&b.digest, copier(&b.path, &calls)).await.expect("b");
    assert!(held.tree.join("a").exists(), "held tree kept while over the cap");
    drop(held);
    let (_c_src, c) = bundle("c", 10);
    drop(cache.fetch(&c.digest, copier(&c.path, &calls)).await.expect("c"));
    assert!(!cache.contains(&a.digest), "released, then evicted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_of_one_digest_share_one_download() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_src, b) = bundle("data.txt", 1000);
    let cache = open(dir.path(), 1 << 20);
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (cache, calls, gate, from, digest) =
            (cache.clone(), calls.clone(), gate.clone(), b.path.to_path_buf(), b.digest.clone());
        tasks.spawn(async move {
            let download = |to: PathBuf| {
                let (calls, gate, from) = (calls.clone(), gate.clone(), from.clone());
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    // held until every request is waiting on this one download
                    let _permit = gate
                        .acquire()
                        .await
                        .map_err(|e| BundleError::Io { path: to.clone(), source: std::io::Error::other(e) })?;
                    std::fs::copy(&from, &to).map_err(BundleError::io(to))
                }
            };
            cache.fetch(&digest, download).await.map(|f| f.downloaded)
        });
    }
    while cache.waiting(&b.digest) < 10 {
        tokio::task::yield_now().await;
    }
    gate.add_permits(10);
    let mut downloaded = 0;
    while let Some(r) = tasks.join_next().await {
        downloaded += usize::from(r.expect("task").expect("fetch"));
    }
    assert_eq!((calls.load(Ordering::SeqCst), downloaded), (1, 1));
}

#[tokio::test]
async fn a_download_that_does_not_match_is_retried_once_then_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_src, good) = bundle("good", 10);
    let (_other, bad) = bundle("bad", 10);
    let cache = open(dir.path(), 1 << 20);
    let calls = Arc::new(AtomicUsize::new(0));
    let e = cache.fetch(&good.digest, copier(&bad.path, &calls)).await.expect_err("mismatch");
    assert!(matches!(e, BundleError::DigestMismatch { .. }) && e.is_bad_input(), "{e}");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one re-download");
    assert!(!cache.contains(&good.digest));
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0, "nothing left over");
}

#[tokio::test]
async fn a_bundle_bigger_than_the_cache_is_too_large() {
    let dir = tempfile::tempdir().expect("tmp");
    let (_src, b) = bundle("big", 5000);
    let cache = open(dir.path(), 1000);
    let e = cache.fetch(&b.digest, copier(&b.path, &Default::default())).await.expect_err("too large");
    assert!(matches!(e, BundleError::TooLarge { .. }) && e.is_bad_input(), "{e}");
}
