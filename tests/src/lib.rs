//! Helpers for the end-to-end tests: run the real `hwsched` binary as a child
//! process against a test's own nats-server, and services in-process.
#![forbid(unsafe_code)]

use std::{
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use hwsched_bus::Bus;
use hwsched_config::NatsConfig;
use tokio_util::sync::CancellationToken;

/// Path of the `hwsched` binary next to the test executable (built by `make test`).
pub fn hwsched_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(|d| d.parent()).context("target dir")?;
    let bin = dir.join("hwsched");
    if !bin.is_file() {
        bail!("{} not found: build it first (`cargo build -p hwsched`; `make test` does)", bin.display());
    }
    Ok(bin)
}

/// What a finished `hwsched` command left.
#[derive(Debug)]
pub struct Output {
    /// Exit status (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `hwsched <args>` against `nats_url` (blocking: call it from
/// `spawn_blocking` in async tests, or use [`cli_async`]).
pub fn cli(nats_url: &str, args: &[&str]) -> anyhow::Result<Output> {
    cli_with(nats_url, args, &[])
}

/// [`cli`] with more environment (credentials, TLS files).
pub fn cli_with(nats_url: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Output> {
    let out = Command::new(hwsched_bin()?)
        .args(args)
        .env("HWSCHED_NATS_URL", nats_url)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()?;
    Ok(Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// [`cli`] off the async workers.
pub async fn cli_async(nats_url: &str, args: &[&str]) -> anyhow::Result<Output> {
    cli_with_async(nats_url, args, &[]).await
}

/// [`cli_with`] off the async workers.
pub async fn cli_with_async(nats_url: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Output> {
    let url = nats_url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, String)> = envs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        cli_with(&url, &args, &envs)
    })
    .await?
}

/// A running `hwsched` child process; killed on drop, its log printed when the test failed.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
    /// What it runs, for messages.
    pub name: String,
}

impl Proc {
    /// Starts `hwsched <args>` with `envs` (and `HWSCHED_NATS_URL` = `nats_url`).
    pub fn spawn(name: &str, nats_url: &str, args: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("stderr.log");
        let child = Command::new(hwsched_bin()?)
            .args(args)
            .env("HWSCHED_NATS_URL", nats_url)
            .env("HWSCHED_LOG", "info,async_nats=warn")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn hwsched")?;
        Ok(Self { child: Some(child), log, _dir: dir, name: name.to_string() })
    }

    /// Its process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        hwsched_testkit::eventually(timeout, || async { Ok(self.log().contains(needle).then_some(())) })
            .await
            .with_context(|| format!("{} never logged {needle:?}; log:\n{}", self.name, self.log()))
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_ref().context("already stopped")?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.wait_exit(timeout).await.context("after SIGTERM")
    }

    /// Waits for it to exit (killed after `timeout`) and returns the exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let waited = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + timeout;
            loop {
                if let Some(s) = child.try_wait()? {
                    return Ok::<_, std::io::Error>(Some(s));
                }
                if std::time::Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await??;
        waited.with_context(|| format!("{} did not exit within {timeout:?}; log:\n{}", self.name, self.log()))
    }

    /// SIGKILL, no drain.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
    }
}

/// A connected bus for the test itself.
pub async fn bus(url: &str) -> anyhow::Result<Bus> {
    Ok(Bus::connect(&NatsConfig::new(url), "test", Duration::from_secs(10)).await?)
}

/// Submits `t` as protobuf through JetStream (task id as `Nats-Msg-Id`) and waits for the stream's ack.
pub async fn submit(b: &Bus, t: &hwsched_proto::v1::TaskRequest) -> anyhow::Result<()> {
    let mut h = hwsched_bus::proto_headers(None);
    h.insert(hwsched_bus::MSG_ID, t.task_id.as_str());
    let body = prost::Message::encode_to_vec(t);
    b.jetstream().publish_with_headers(b.subjects().tasks_submit(), h, body.into()).await?.await?;
    Ok(())
}

/// Every message stored under `subject` in `stream`, decoded (read from the
/// stream, so a test connection that moved to another node misses nothing).
pub async fn stored<T: prost::Message + Default>(
    b: &Bus,
    stream: hwsched_bus::Stream,
    subject: String,
) -> anyhow::Result<Vec<T>> {
    let s = b.jetstream().get_stream(b.subjects().stream(stream)).await?;
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            filter_subject: subject,
            ..Default::default()
        })
        .await?;
    let mut left = consumer.clone().info().await?.num_pending;
    let mut msgs = consumer.messages().await?;
    let mut out = Vec::new();
    while left > 0 {
        let m = tokio::time::timeout(Duration::from_secs(60), futures::StreamExt::next(&mut msgs))
            .await?
            .context("stream ended")??;
        out.push(T::decode(m.payload.as_ref())?);
        left -= 1;
    }
    Ok(out)
}

/// `hwsched recorder` writing into `db`, flushing every 100 ms.
pub fn recorder(nats_url: &str, db: &hwsched_testkit::TestDb) -> anyhow::Result<Proc> {
    let env = [
        ("HWSCHED_CLICKHOUSE_URL", db.config.url.clone().unwrap_or_default()),
        ("HWSCHED_CLICKHOUSE_DATABASE", db.config.database.clone()),
        ("HWSCHED_RECORDER_FLUSH_MS", "100".to_string()),
    ];
    Proc::spawn("recorder", nats_url, &["recorder"], &env)
}

/// A task running `sh -c script`.
pub fn sh_task(id: &str, script: &str) -> hwsched_proto::v1::TaskRequest {
    hwsched_proto::v1::TaskRequest {
        task_id: id.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// A task running `sleep secs`.
pub fn sleep_task(id: &str, secs: &str) -> hwsched_proto::v1::TaskRequest {
    hwsched_proto::v1::TaskRequest {
        task_id: id.into(),
        command: vec!["sleep".into(), secs.into()],
        ..Default::default()
    }
}

/// Counts results per task id as they arrive on `hws.results.>`.
#[derive(Debug)]
pub struct ResultCount {
    sub: async_nats::Subscriber,
    /// Results seen per task id.
    pub done: std::collections::HashMap<String, usize>,
}

impl ResultCount {
    /// Subscribes before anything is submitted.
    pub async fn subscribe(b: &Bus) -> anyhow::Result<Self> {
        Ok(Self { sub: b.client().subscribe(b.subjects().results_all()).await?, done: Default::default() })
    }

    /// Reads results until `n` distinct tasks have one; every one must have succeeded.
    /// `context` is printed when a result does not come within `timeout`.
    pub async fn until(&mut self, n: usize, timeout: Duration, context: impl Fn() -> String) -> anyhow::Result<()> {
        use futures::StreamExt;
        while self.done.len() < n {
            let Ok(Some(m)) = tokio::time::timeout(timeout, self.sub.next()).await else {
                bail!("only {} of {n} tasks finished\n{}", self.done.len(), context());
            };
            let r: hwsched_proto::v1::ExecutionResult = prost::Message::decode(m.payload.as_ref())?;
            if r.status() != hwsched_proto::v1::TaskStatus::Succeeded {
                bail!("{} ended {:?}: {}", r.task_id, r.status(), r.error);
            }
            *self.done.entry(r.task_id).or_default() += 1;
        }
        Ok(())
    }

    /// Runs beyond the first, over all tasks.
    pub fn duplicates(&self) -> usize {
        self.done.values().map(|n| n - 1).sum()
    }
}

/// A service running in this process; cancelled and awaited on [`InProcess::stop`].
#[derive(Debug)]
pub struct InProcess {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its metrics registry (what its `/metrics` would serve).
    pub telemetry: hwsched_telemetry::Telemetry,
}

impl InProcess {
    /// Starts `run(bus, telemetry, token)` on a fresh connection to `url`.
    pub async fn start<F, Fut>(url: &str, run: F) -> anyhow::Result<Self>
    where
        F: FnOnce(Bus, hwsched_telemetry::Telemetry, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let token = CancellationToken::new();
        let b = bus(url).await?;
        let telemetry = hwsched_telemetry::Telemetry::new();
        let handle = tokio::spawn(run(b, telemetry.clone(), token.clone()));
        Ok(Self { token, handle, telemetry })
    }

    /// Stops it and returns how it ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.token.cancel();
        self.handle.await?
    }
}

/// The scheduler, in-process, with a short worker timeout. Its streams exist
/// when this returns (it creates them too, but in the background), so a test
/// may submit at once.
pub async fn scheduler(url: &str) -> anyhow::Result<InProcess> {
    hwsched_bus::streams::provision(&bus(url).await?).await?;
    let cfg = hwsched_scheduler::SchedulerConfig { worker_timeout_ms: 5_000, startup_grace_s: 0, ..Default::default() };
    InProcess::start(url, |b, t, s| hwsched_scheduler::run(cfg, b, t, s)).await
}

/// A monitor, in-process, reporting every 200 ms.
pub async fn monitor(url: &str, worker_id: &str, slots: u32) -> anyhow::Result<InProcess> {
    monitor_with(url, monitor_config(worker_id, slots)).await
}

/// The configuration [`monitor`] uses, to change before [`monitor_with`].
pub fn monitor_config(worker_id: &str, slots: u32) -> hwsched_monitor::MonitorConfig {
    let mut cfg = hwsched_monitor::MonitorConfig::for_tests();
    cfg.worker_id = Some(worker_id.to_string());
    cfg.slots = Some(slots);
    cfg.interval_ms = 200;
    cfg
}

/// A monitor, in-process, with `cfg`.
pub async fn monitor_with(url: &str, cfg: hwsched_monitor::MonitorConfig) -> anyhow::Result<InProcess> {
    InProcess::start(url, |b, t, s| hwsched_monitor::run(cfg, b, t, s)).await
}

/// The value of counter `name` in a Prometheus text exposition (0 when absent).
pub fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .next()
        .map_or(0, |v| v as u64)
}

/// `GET path` on `addr` (HTTP/1.1, connection closed); the whole response.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

pub use hwsched_testkit::free_port;

/// A private ClickHouse server (Debian's, through `scripts/clickhouse.sh`, as
/// `make test` starts its own) with its data in a temporary directory, for
/// tests that kill it or configure it differently; stopped on drop.
#[derive(Debug)]
pub struct ClickHouse {
    dir: tempfile::TempDir,
    http: u16,
    tcp: u16,
    /// HTTPS port, certificate and key, when it serves HTTPS too.
    https: Option<(u16, PathBuf, PathBuf)>,
}

fn clickhouse_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh")
}

impl ClickHouse {
    /// Starts one on free ports.
    pub fn start() -> anyhow::Result<Self> {
        let ch = Self { dir: tempfile::tempdir()?, http: free_port()?, tcp: free_port()?, https: None };
        ch.up()?;
        Ok(ch)
    }

    /// Starts one that also serves HTTPS with this certificate and key (PEM).
    pub fn start_with_https(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<Self> {
        let https = Some((free_port()?, cert.to_path_buf(), key.to_path_buf()));
        let ch = Self { dir: tempfile::tempdir()?, http: free_port()?, tcp: free_port()?, https };
        ch.up()?;
        Ok(ch)
    }

    /// Starts it (again, after [`ClickHouse::kill`]) with the same data.
    pub fn up(&self) -> anyhow::Result<()> {
        let mut cmd = Command::new("bash");
        cmd.arg(clickhouse_script()).args([
            "start",
            &self.dir.path().to_string_lossy(),
            &self.http.to_string(),
            &self.tcp.to_string(),
        ]);
        if let Some((port, cert, key)) = &self.https {
            cmd.env("CH_HTTPS_PORT", port.to_string()).env("CH_TLS_CERT", cert).env("CH_TLS_KEY", key);
        }
        let out = cmd.output()?;
        anyhow::ensure!(out.status.success(), "ClickHouse did not start: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&self) -> anyhow::Result<()> {
        let pid: i32 = std::fs::read_to_string(self.dir.path().join("pid"))?.trim().parse()?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)?;
        // wait until it is gone
        for _ in 0..100 {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("ClickHouse {pid} still alive after SIGKILL")
    }

    /// Its HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn pid(&self) -> anyhow::Result<nix::unistd::Pid> {
        Ok(nix::unistd::Pid::from_raw(std::fs::read_to_string(self.dir.path().join("pid"))?.trim().parse()?))
    }

    /// SIGSTOP: the server keeps its sockets and accepts connections, but
    /// answers nothing (a frozen or hopelessly slow server).
    pub fn freeze(&self) -> anyhow::Result<()> {
        Ok(nix::sys::signal::kill(self.pid()?, nix::sys::signal::Signal::SIGSTOP)?)
    }

    /// SIGCONT after [`ClickHouse::freeze`].
    pub fn thaw(&self) -> anyhow::Result<()> {
        Ok(nix::sys::signal::kill(self.pid()?, nix::sys::signal::Signal::SIGCONT)?)
    }

    /// Starts one whose data directory is a tmpfs of `mb` MiB (mounting needs
    /// root, as `make test` has), so that [`ClickHouse::fill_disk`] can make
    /// its disk full for real.
    pub fn start_on_small_disk(mb: u32) -> anyhow::Result<Self> {
        let ch = Self { dir: tempfile::tempdir()?, http: free_port()?, tcp: free_port()?, https: None };
        let data = ch.dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        let out =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(&data).output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a {mb} MiB tmpfs for ClickHouse's data needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ch.up()?;
        Ok(ch)
    }

    /// Fills its data disk with one file until the disk refuses more.
    pub fn fill_disk(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.filler())?;
        let block = vec![0u8; 1 << 20];
        loop {
            match f.write_all(&block).and_then(|()| f.sync_data()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Deletes the file [`ClickHouse::fill_disk`] wrote.
    pub fn free_disk(&self) -> anyhow::Result<()> {
        Ok(std::fs::remove_file(self.filler())?)
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("data").join("filler")
    }

    /// Its HTTPS URL, when it serves HTTPS.
    pub fn https_url(&self) -> Option<String> {
        self.https.as_ref().map(|(port, _, _)| format!("https://127.0.0.1:{port}"))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        let _ = self.thaw();
        let _ =
            Command::new("bash").arg(clickhouse_script()).args(["stop", &self.dir.path().to_string_lossy()]).output();
        // the small disk, if any (fails harmlessly when nothing is mounted there)
        let _ = Command::new("umount").arg(self.dir.path().join("data")).stderr(std::process::Stdio::null()).output();
    }
}
