//! Bundles end to end on a real nats-server with real (in-process) monitors:
//! twenty tasks sharing one bundle cause one upload and at most one download
//! per worker (the monitors' own Prometheus counters), and each task reads a
//! file from it; a missing, corrupt, oversized and hostile bundle each fail
//! their task at once with a clear error, as bad input (no retry), while the
//! tasks submitted with them succeed.

use std::{collections::HashMap, io::Write, path::Path, time::Duration};

use hwsched_client::{Client, Finished, Update};
use hwsched_monitor::metrics;
use hwsched_proto::v1::{TaskRequest, TaskStatus};
use hwsched_testkit::NatsServer;
use hwsched_tests::{bus, counter, monitor_config, monitor_with, scheduler, sh_task, InProcess};

const WAIT: Duration = Duration::from_secs(60);

struct Rig {
    nats: NatsServer,
    sched: InProcess,
    monitors: Vec<InProcess>,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Rig {
    /// A scheduler and `workers` monitors with 4 slots and their own caches; bundles over `max_bundle` bytes are refused.
    async fn start(workers: usize, max_bundle: u64) -> anyhow::Result<Self> {
        let nats = NatsServer::start()?;
        let dir = tempfile::tempdir()?;
        let sched = scheduler(&nats.url()).await?;
        let mut monitors = Vec::new();
        for i in 0..workers {
            let mut cfg = monitor_config(&format!("w-bundle-{i}"), 4);
            cfg.bundle_cache_dir = Some(dir.path().join(format!("cache-{i}")));
            cfg.max_bundle_bytes = max_bundle;
            monitors.push(monitor_with(&nats.url(), cfg).await?);
        }
        let client = Client::from_bus(bus(&nats.url()).await?);
        Ok(Self { nats, sched, monitors, client, _dir: dir })
    }

    /// Submits `tasks` and follows each to its end.
    async fn run(&self, tasks: Vec<TaskRequest>) -> anyhow::Result<HashMap<String, Finished>> {
        let n = tasks.len();
        let mut run = self.client.submit(tasks).await?;
        let mut done = HashMap::new();
        let mut last: HashMap<String, String> = HashMap::new();
        while done.len() < n {
            let next = tokio::time::timeout(WAIT, run.next()).await;
            let Ok(next) = next else {
                let why = match last.keys().next() {
                    Some(id) => format!("{:?}", self.client.explain(id).await?.map(|r| r.reason)),
                    None => String::new(),
                };
                anyhow::bail!("waiting because {why}: no update for {WAIT:?}; {} of {n} ended; last events of the others: {last:?}; counts {:?}", done.len(), self.counts());
            };
            match next? {
                Some(Update::Finished(f)) => {
                    last.remove(&f.task_id);
                    done.insert(f.task_id.clone(), *f);
                }
                Some(Update::Event(ev)) => {
                    last.insert(ev.task_id.clone(), format!("{:?} {} {}", ev.kind(), ev.worker_id, ev.reason));
                }
                Some(_) => {}
                None => break,
            }
        }
        anyhow::ensure!(done.len() == n, "only {} of {n} tasks ended", done.len());
        Ok(done)
    }

    /// (downloads, cache hits) counted by each monitor.
    fn counts(&self) -> Vec<(u64, u64)> {
        self.monitors
            .iter()
            .map(|m| {
                let text = m.telemetry.render();
                (
                    counter(&text, &metrics::exposed_counter(metrics::BUNDLE_DOWNLOADS)),
                    counter(&text, &metrics::exposed_counter(metrics::BUNDLE_CACHE_HITS)),
                )
            })
            .collect()
    }

    async fn stop(self) -> anyhow::Result<()> {
        for m in self.monitors {
            m.stop().await?;
        }
        self.sched.stop().await?;
        drop(self.nats);
        Ok(())
    }
}

fn task(id: &str, script: &str, bundle: &str) -> TaskRequest {
    TaskRequest { bundle: bundle.into(), max_attempts: 3, ..sh_task(id, script) }
}

fn project(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("tests"))?;
    std::fs::write(dir.join("tests/data.txt"), "from the bundle\n")?;
    std::fs::write(dir.join(".hwschedignore"), "*.log\n")?;
    std::fs::write(dir.join("noise.log"), "left out\n")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_share_one_upload_and_one_download_per_worker() -> anyhow::Result<()> {
    let rig = Rig::start(2, 1 << 30).await?;
    let src = tempfile::tempdir()?;
    project(src.path())?;
    let first = rig.client.upload_bundle(src.path()).await?;
    assert!(first.uploaded);
    let again = rig.client.upload_bundle(src.path()).await?;
    assert_eq!((again.digest.as_str(), again.uploaded), (first.digest.as_str(), false), "one upload");

    // each task reads a file of the bundle from its working directory, writes into its own copy,
    // and finds what .hwschedignore left out absent; a workdir is relative to the bundle
    let mut tasks: Vec<TaskRequest> = (0..19)
        .map(|i| {
            task(
                &format!("shared-{i}"),
                "cat tests/data.txt && echo x >> tests/data.txt && test ! -e noise.log",
                &first.digest,
            )
        })
        .collect();
    tasks.push(TaskRequest { workdir: "tests".into(), ..task("shared-in-tests", "cat data.txt", &first.digest) });
    let done = rig.run(tasks).await?;
    for f in done.values() {
        let r = f.result.as_ref().expect("a result");
        assert!(f.succeeded(), "{}: {:?} {} {}", f.task_id, f.status, r.error, r.stderr_tail);
        assert_eq!(r.stdout_tail, "from the bundle\n", "{}: each attempt gets a pristine copy", f.task_id);
    }
    let ran_on: std::collections::HashSet<&str> = done.values().map(|f| f.worker_id.as_str()).collect();
    let counts = rig.counts();
    for (i, (downloads, hits)) in counts.iter().enumerate() {
        assert!(*downloads <= 1, "worker {i} downloaded {downloads} times: {counts:?}");
        let ran = done.values().filter(|f| f.worker_id == format!("w-bundle-{i}")).count() as u64;
        assert_eq!(downloads + hits, ran, "worker {i}: every attempt is a download or a hit: {counts:?}");
    }
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), ran_on.len() as u64, "{counts:?}");
    rig.stop().await
}

/// A gzip tar with one regular entry whose raw name is `name`.
fn hostile_archive(name: &str) -> anyhow::Result<Vec<u8>> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(b"owned");
    raw.resize(512 * 2, 0);
    raw.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw)?;
    Ok(gz.finish()?)
}

fn digest_of(bytes: &[u8]) -> String {
    let mut w = hwsched_bundle::DigestWriter::new(std::io::sink());
    w.write_all(bytes).expect("sink");
    w.finish().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bundles_fail_at_once_without_retry_and_block_nothing() -> anyhow::Result<()> {
    let rig = Rig::start(2, 256 << 10).await?;
    let store = hwsched_bus::streams::object_store(rig.client.bus(), "hws_bundles").await?;
    // missing: never uploaded
    let missing = digest_of(b"never uploaded");
    // corrupt: bytes stored under a digest they do not have
    let corrupt = digest_of(b"what was meant");
    store.put(corrupt.as_str(), &mut &b"something else entirely"[..]).await?;
    // oversized: 1 MB of incompressible bytes against a 256 KiB limit
    let big = tempfile::tempdir()?;
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(big.path().join("noise.bin"), noise)?;
    let oversized = rig.client.upload_bundle(big.path()).await?.digest;
    // hostile: an entry escaping the sandbox, stored under its true digest
    let archive = hostile_archive("../../escaped-by-bundle")?;
    let hostile = digest_of(&archive);
    store.put(hostile.as_str(), &mut archive.as_slice()).await?;
    // and good work at the same time
    let good_dir = tempfile::tempdir()?;
    project(good_dir.path())?;
    let good = rig.client.upload_bundle(good_dir.path()).await?.digest;

    let mut tasks = vec![
        task("bad-missing", "true", &missing),
        task("bad-corrupt", "true", &corrupt),
        task("bad-oversized", "true", &oversized),
        task("bad-hostile", "true", &hostile),
    ];
    tasks.extend((0..4).map(|i| task(&format!("good-{i}"), "cat tests/data.txt", &good)));
    let started = std::time::Instant::now();
    let done = rig.run(tasks).await?;
    assert!(started.elapsed() < Duration::from_secs(30), "bad bundles fail fast: {:?}", started.elapsed());
    for (id, needle) in [
        ("bad-missing", "not in the bundle store"),
        ("bad-corrupt", "is corrupt"),
        ("bad-oversized", "too large"),
        ("bad-hostile", "hostile bundle"),
    ] {
        let f = &done[id];
        let r = f.result.as_ref().expect("a result");
        assert_eq!((f.status, r.status()), (TaskStatus::Error, TaskStatus::Error), "{id}: {}", r.error);
        assert!(r.bad_input, "{id} is bad input: {}", r.error);
        assert!(r.error.contains(needle), "{id}: {:?} lacks {needle:?}", r.error);
        assert_eq!(f.attempts, 1, "{id} was not retried: {:?}", f.reasons);
    }
    for i in 0..4 {
        let f = &done[&format!("good-{i}")];
        assert!(f.succeeded(), "good-{i}: {:?}", f.result.as_ref().map(|r| &r.error));
    }
    // the hostile entry aimed two levels above the cache's unpack directory
    for i in 0..2 {
        assert!(!rig._dir.path().join(format!("cache-{i}/escaped-by-bundle")).exists(), "escaped on worker {i}");
    }
    rig.stop().await
}
