//! `hwsched bench bundle`: bundle transfer on a running nats-server. It
//! writes a tree of `--mb` MB in `--files` files (incompressible bytes: the
//! worst case for gzip), then times, per run: pack (tar.gz + sha256), upload
//! (`hwsched_bundle::store::upload`), download (`store::download`, digest
//! checked) next to a raw Object Store put and get of the same archive bytes;
//! and what a cached bundle adds between assignment and start on a monitor:
//! a cache hit plus copying the tree into a fresh sandbox, the same calls the
//! monitor makes (`hwsched_bundle::{Cache::fetch, place}`). The objects it
//! wrote are deleted at the end.

use std::{
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Args;
use hwsched_bundle::{store, BundleError, Cache, CacheConfig};
use hwsched_bus::{streams, Bus};
use tokio::io::AsyncReadExt;

use crate::bench::shared::{percentile, run_id};

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Size of the bundled tree, MB.
    #[arg(long, default_value_t = 50)]
    mb: usize,
    /// Files it is spread over.
    #[arg(long, default_value_t = 50)]
    files: usize,
    /// Transfer runs (each with a fresh tree, so each upload is real).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Cached starts measured.
    #[arg(long, default_value_t = 20)]
    starts: usize,
    /// Where to write the trees, caches and sandboxes (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

pub async fn run(bus: &Bus, args: BundleArgs) -> anyhow::Result<()> {
    streams::provision(bus).await?;
    let os = streams::object_store(bus, &bus.subjects().bundles_bucket()).await?;
    let work = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }?;
    let run = run_id();
    let mb = |bytes: u64, s: f64| bytes as f64 / 1e6 / s;
    println!("bundle bench {run}: {} MB in {} files, {} runs", args.mb, args.files, args.runs);
    let mut last = None;
    for i in 0..args.runs {
        let tree = work.path().join(format!("tree-{i}"));
        write_tree(&tree, args.mb, args.files, i as u64 + 1)?;
        let t = Instant::now();
        let d = tree.clone();
        let packed = tokio::task::spawn_blocking(move || hwsched_bundle::pack(&d, None)).await??;
        let pack_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        anyhow::ensure!(store::upload(&os, &packed.digest, &packed.path).await?, "digest already stored");
        let up_s = t.elapsed().as_secs_f64();
        let raw_name = format!("bench-raw-{run}-{i}");
        let t = Instant::now();
        os.put(raw_name.as_str(), &mut tokio::fs::File::open(&packed.path).await?).await?;
        let raw_put_s = t.elapsed().as_secs_f64();
        let dl = work.path().join(format!("dl-{i}"));
        let t = Instant::now();
        store::download(&os, &packed.digest, &dl, u64::MAX).await?;
        let down_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut sink = Vec::with_capacity(packed.bytes as usize);
        os.get(raw_name.as_str()).await?.read_to_end(&mut sink).await?;
        let raw_get_s = t.elapsed().as_secs_f64();
        let n = packed.bytes;
        println!(
            "run {i}: archive {n} bytes; pack {pack_s:.2}s ({:.0} MB/s of tree); upload {:.0} MB/s vs raw put {:.0} MB/s (ratio {:.2}); \
             download {:.0} MB/s vs raw get {:.0} MB/s (ratio {:.2}); pack+upload {:.0} MB/s",
            mb((args.mb * 1_000_000) as u64, pack_s),
            mb(n, up_s),
            mb(n, raw_put_s),
            raw_put_s / up_s,
            mb(n, down_s),
            mb(n, raw_get_s),
            raw_get_s / down_s,
            mb(n, pack_s + up_s),
        );
        let _ = os.delete(raw_name.as_str()).await;
        last = Some(packed);
    }
    let packed = last.context("no run")?;
    cached_starts(&os, &packed.digest, work.path(), args.starts).await?;
    let _ = os.delete(packed.digest.as_str()).await;
    Ok(())
}

/// Cache hit + copy into a fresh sandbox, as the monitor does per attempt.
async fn cached_starts(
    os: &async_nats::jetstream::object_store::ObjectStore,
    digest: &str,
    work: &Path,
    starts: usize,
) -> anyhow::Result<()> {
    let cache = Cache::open(CacheConfig { dir: work.join("cache"), max_bytes: 10 << 30, max_entries: 1_000_000 })?;
    let t = Instant::now();
    let first = cache.fetch(digest, |to| async move { store::download(os, digest, &to, u64::MAX).await }).await?;
    println!("first start (download, verify, unpack into the cache): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
    drop(first);
    let mut samples: Vec<Duration> = Vec::with_capacity(starts);
    for i in 0..starts {
        let sandbox = work.join("cache").join("sandboxes").join(format!("s-{i}"));
        std::fs::create_dir_all(&sandbox)?;
        let t = Instant::now();
        let hit =
            cache.fetch(digest, |_| async { Err::<u64, _>(BundleError::Missing("a hit was expected".into())) }).await?;
        let tree = hit.tree.clone();
        let s = sandbox.clone();
        tokio::task::spawn_blocking(move || hwsched_bundle::place(&tree, &s, None)).await??;
        samples.push(t.elapsed());
        drop(hit);
        std::fs::remove_dir_all(&sandbox)?;
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "cached start (cache hit + copy into the sandbox), {starts} starts: p50 {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.9)),
        ms(percentile(&samples, 1.0)),
    );
    Ok(())
}

/// `files` files of incompressible bytes, `mb` MB in all, in a few directories.
fn write_tree(dir: &Path, mb: usize, files: usize, seed: u64) -> anyhow::Result<()> {
    let per_file = mb * 1_000_000 / files.max(1);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for f in 0..files.max(1) {
        let sub = dir.join(format!("d{}", f % 5));
        std::fs::create_dir_all(&sub)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create(sub.join(format!("f{f}.bin")))?);
        let mut buf = vec![0u8; per_file];
        for chunk in buf.chunks_mut(8) {
            // xorshift64
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        out.write_all(&buf)?;
    }
    Ok(())
}
