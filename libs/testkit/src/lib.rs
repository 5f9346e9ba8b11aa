//! Test harness: a real `nats-server` per test (random port, its own JetStream
//! store, killed on drop, restartable for fault tests), or a JetStream cluster
//! of several on loopback ([`NatsCluster`]), and a fresh database per test on
//! the ClickHouse server that `make test` started.
#![forbid(unsafe_code)]

mod cluster;
mod site;

pub use cluster::{free_port, NatsCluster};
pub use site::{Link, Site, SiteAuth, HUB_DOMAIN};

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context};

/// The nats-server binary: `HWSCHED_TEST_NATS_SERVER`, else the one `make test`
/// installs under `build/venv`, else `nats-server` on PATH.
pub fn nats_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HWSCHED_TEST_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/venv/bin/nats-server");
    if local.is_file() {
        return local;
    }
    PathBuf::from("nats-server")
}

/// A nats-server with JetStream owned by one test.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// A configuration file and environment it was started with.
    config: Option<(PathBuf, Vec<(String, String)>)>,
    /// Whether it runs JetStream (a site's leaf server does not).
    jetstream: bool,
}

impl NatsServer {
    /// Starts a server on a random free port with a fresh store directory.
    pub fn start() -> anyhow::Result<Self> {
        let store = tempfile::tempdir().context("temp store dir")?;
        let (child, port) = spawn(store.path(), None, None, &[], true)?;
        Ok(Self { child: Some(child), port, store, config: None, jetstream: true })
    }

    /// Starts a server with configuration file `conf` (e.g. users and
    /// permissions), `env` set for it (what the file references), on a random
    /// port with JetStream in a fresh store.
    pub fn start_with_config(conf: &std::path::Path, env: &[(String, String)]) -> anyhow::Result<Self> {
        let store = tempfile::tempdir().context("temp store dir")?;
        let config = Some((conf.to_path_buf(), env.to_vec()));
        let (child, port) = spawn(store.path(), None, config.as_ref(), &[], true)?;
        Ok(Self { child: Some(child), port, store, config, jetstream: true })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let (child, _) = spawn(self.store.path(), Some(self.port), self.config.as_ref(), &[], self.jetstream)?;
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a nats-server on `port` (a random one without), with `config` and
/// `extra` arguments and, with `jetstream`, JetStream in `store`; returns once
/// it is ready.
fn spawn(
    store: &std::path::Path,
    port: Option<u16>,
    config: Option<&(PathBuf, Vec<(String, String)>)>,
    extra: &[String],
    jetstream: bool,
) -> anyhow::Result<(Child, u16)> {
    let bin = nats_server_binary();
    let port_arg = port.map_or_else(|| "-1".to_string(), |p| p.to_string());
    let mut cmd = Command::new(&bin);
    if let Some((conf, env)) = config {
        cmd.arg("-c").arg(conf).envs(env.iter().map(|(k, v)| (k, v)));
    }
    let mut child = cmd
        .args(["-a", "127.0.0.1", "-p", &port_arg])
        .args(if jetstream { vec!["-js".as_ref(), "-sd".as_ref(), store.as_os_str()] } else { vec![] })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {} (run `make test`, which installs nats-server 2.15)", bin.display()))?;
    let stderr = child.stderr.take().context("nats-server stderr")?;
    let (tx, rx) = mpsc::channel::<String>();
    // Forward log lines until ready, then keep draining so the pipe never fills.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut found_port = port;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                bail!("nats-server {} did not become ready within 15 s", bin.display());
            }
        };
        if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
            found_port = rest.trim().rsplit(':').next().and_then(|p| p.parse().ok());
        }
        if line.contains("Server is ready") {
            let port = found_port.context("nats-server did not report its port")?;
            return Ok((child, port));
        }
    }
}

/// A fresh ClickHouse database for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Configuration pointing at the database (recorder, store).
    pub config: hwsched_config::ClickHouseConfig,
}

impl TestDb {
    /// Creates `t_<random>` on the server at `HWSCHED_TEST_CLICKHOUSE_URL` (set by `make test`).
    pub async fn create() -> anyhow::Result<Self> {
        let url = std::env::var("HWSCHED_TEST_CLICKHOUSE_URL").context(
            "HWSCHED_TEST_CLICKHOUSE_URL is not set: run the suite with `make test`, which starts ClickHouse",
        )?;
        let database = format!("t_{}", uuid::Uuid::new_v4().simple());
        clickhouse::Client::default()
            .with_url(&url)
            .query(&format!("CREATE DATABASE {database}"))
            .execute()
            .await
            .with_context(|| format!("create database on {url}"))?;
        Ok(Self { config: hwsched_config::ClickHouseConfig { url: Some(url), database, user: None, password: None } })
    }

    /// A client bound to the database (validation off, for old servers).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(self.config.url.clone().unwrap_or_default())
            .with_database(&self.config.database)
            .with_validation(false)
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
/// For state held by an external server (ClickHouse rows), where no event exists to wait on.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_starts_on_its_own_port_and_restarts_with_its_store() {
        let mut a = NatsServer::start().expect("start a");
        let b = NatsServer::start().expect("start b");
        assert_ne!(a.port(), b.port());
        let client = async_nats::connect(a.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("stream");
        js.publish("s.1", "x".into()).await.expect("publish").await.expect("ack");
        let port = a.port();
        a.restart().expect("restart");
        assert_eq!(a.port(), port);
        let client = async_nats::connect(a.url()).await.expect("reconnect");
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream("S").await.expect("stream survives restart");
        assert_eq!(s.info().await.expect("info").state.messages, 1);
    }
}
