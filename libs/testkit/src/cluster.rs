//! A JetStream cluster on loopback owned by one test: N nats-servers joined
//! by routes, each with its own store directory and ports, any of which can
//! be killed, frozen (SIGSTOP), resumed and restarted with its store.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::spawn;

/// How long a cluster (or a restarted node) may take to be healthy.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// One node of a [`NatsCluster`].
#[derive(Debug)]
struct Node {
    name: String,
    child: Mutex<Option<Child>>,
    port: u16,
    store: tempfile::TempDir,
    /// Everything but the store and client port: cluster, routes, monitoring.
    args: Vec<String>,
    http_port: u16,
}

/// A JetStream cluster on loopback.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
}

/// A free loopback port (the OS's pick, released for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("pick a free port")?;
    Ok(l.local_addr()?.port())
}

impl NatsCluster {
    /// Starts `n` nodes (`n1`..) of cluster `hws-test` and waits until every
    /// one reports JetStream healthy (a metadata leader is elected).
    pub fn start(n: usize) -> anyhow::Result<Self> {
        let ports =
            (0..n).map(|_| Ok((free_port()?, free_port()?, free_port()?))).collect::<anyhow::Result<Vec<_>>>()?;
        let routes = ports
            .iter()
            .map(|(_, cluster, _)| format!("nats-route://127.0.0.1:{cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(n);
        for (i, (port, cluster, http)) in ports.into_iter().enumerate() {
            let name = format!("n{}", i + 1);
            let args = vec![
                "--name".into(),
                name.clone(),
                "--cluster_name".into(),
                "hws-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cluster}"),
                "--routes".into(),
                routes.clone(),
                "-m".into(),
                http.to_string(),
            ];
            let store = tempfile::tempdir().context("temp store dir")?;
            nodes.push(Node { name, child: Mutex::new(None), port, store, args, http_port: http });
        }
        let c = Self { nodes };
        for i in 0..n {
            c.spawn(i)?;
        }
        c.wait_healthy()?;
        Ok(c)
    }

    fn spawn(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let (child, _) = spawn(node.store.path(), Some(node.port), None, &node.args, true)
            .with_context(|| format!("start cluster node {}", node.name))?;
        *node.child.lock().expect("node lock") = Some(child);
        Ok(())
    }

    /// Every node's URL, comma separated (what a service's `--nats-url` takes).
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s URL alone.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node whose server name is `name` (as JetStream reports leaders).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s server name.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Kills node `i` (SIGKILL), keeping its store.
    pub fn kill(&self, i: usize) {
        let child = self.nodes[i].child.lock().expect("node lock").take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again on its ports with its store, and waits until the
    /// cluster is healthy again.
    pub fn restart(&self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy()
    }

    /// Freezes node `i` (SIGSTOP): its sockets stay open, it answers nothing.
    pub fn freeze(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-STOP")
    }

    /// Resumes a frozen node `i` (SIGCONT).
    pub fn resume(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-CONT")
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let pid = self.nodes[i].child.lock().expect("node lock").as_ref().context("node not running")?.id();
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().context("run kill")?.success();
        if !ok {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// Waits until every running node answers its JetStream health check.
    pub fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        for n in self.nodes.iter().filter(|n| n.child.lock().is_ok_and(|c| c.is_some())) {
            loop {
                match healthz(n.http_port) {
                    Ok(true) => break,
                    _ if Instant::now() >= deadline => {
                        bail!("cluster node {} not healthy within {READY_WITHIN:?}", n.name)
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
        Ok(())
    }

    /// Node `i`'s store directory.
    pub fn store(&self, i: usize) -> PathBuf {
        self.nodes[i].store.path().to_path_buf()
    }
}

/// Whether `GET /healthz` on the monitoring port answers 200 (JetStream up,
/// its metadata leader known, its assets current).
fn healthz(port: u16) -> anyhow::Result<bool> {
    let answer = http_get(port, "/healthz")?;
    Ok(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
}

/// `GET path` on a nats-server's monitoring port: the whole answer, headers included.
pub(crate) fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    Ok(answer)
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // a frozen process ignores nothing but SIGKILL, which ends it anyway
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn three_nodes_keep_a_replicated_stream_through_a_node_kill() {
        let c = NatsCluster::start(3).expect("cluster");
        let client = async_nats::connect(c.node_url(0)).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut s = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "S".into(),
                subjects: vec!["s.>".into()],
                num_replicas: 3,
                ..Default::default()
            })
            .await
            .expect("R3 stream");
        js.publish("s.1", "x".into()).await.expect("publish").await.expect("ack");
        let leader = s.info().await.expect("info").cluster.as_ref().and_then(|c| c.leader.clone()).expect("leader");
        let i = c.index_of(&leader).expect("leader is a node");
        c.kill(i);
        // a new leader is elected among the other two; the message is there
        let client = async_nats::connect(c.node_url((i + 1) % 3)).await.expect("connect to a survivor");
        let js = async_nats::jetstream::new(client);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(mut s) = js.get_stream("S").await {
                if let Ok(info) = s.info().await {
                    let new_leader = info.cluster.as_ref().and_then(|c| c.leader.clone()).unwrap_or_default();
                    if !new_leader.is_empty() && new_leader != leader {
                        assert_eq!(info.state.messages, 1);
                        break;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no new leader");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        c.restart(i).expect("restart the old leader");
    }
}
