//! A worker site joined to a hub by a leaf node, on loopback: the hub is a
//! nats-server with JetStream that accepts leaf connections; the site's leaf
//! server has no JetStream of its own (its clients' JetStream requests go to
//! the hub's) and reaches the hub through a [`Link`] that a test can cut and
//! restore, like a WAN link between a lab and the data centre.

use std::{
    io::Write,
    net::{Shutdown, TcpListener, TcpStream},
    path::PathBuf,
    process::Child,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    cluster::{free_port, http_get},
    spawn, NatsServer,
};

/// The hub's JetStream domain: what a site's services name to reach it
/// (`HWSCHED_JS_DOMAIN`), the leaf server having no JetStream of its own.
pub const HUB_DOMAIN: &str = "hub";

/// How long the leaf may take to (re)connect to the hub.
const LINK_WITHIN: Duration = Duration::from_secs(30);

/// A hub and one site behind a leaf node.
#[derive(Debug)]
pub struct Site {
    /// The hub: JetStream, the scheduler's server.
    pub hub: NatsServer,
    /// The link between the site's leaf server and the hub.
    pub link: Link,
    leaf: Child,
    leaf_port: u16,
    leaf_http: u16,
    _dir: tempfile::TempDir,
}

/// Users for a [`Site`]: the hub's `authorization` block and the environment
/// it reads (passwords), the user the leaf logs in to the hub with, and the
/// leaf server's own users for the site's clients.
#[derive(Debug, Clone, Default)]
pub struct SiteAuth {
    /// The hub's `authorization { ... }` block (e.g. `hwsched nats-auth`'s).
    pub hub_authorization: String,
    /// Environment of the hub (the passwords the block references).
    pub hub_env: Vec<(String, String)>,
    /// User and password of the leaf link at the hub.
    pub leaf_user: (String, String),
    /// Users and passwords of the leaf server's own clients.
    pub local_users: Vec<(String, String)>,
}

impl Site {
    /// Starts the hub, the link and the leaf, and waits until the leaf is connected.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// [`Site::start`] with users at the hub and at the leaf (`auth`).
    pub fn start_with(auth: Option<&SiteAuth>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let hub_leaf_port = free_port()?;
        // not advertised: the leaf must reconnect through the link, not around it
        let hub_conf = dir.path().join("hub.conf");
        let authorization = auth.map_or("", |a| a.hub_authorization.as_str());
        write(
            &hub_conf,
            &format!(
                "jetstream {{\n  domain: {HUB_DOMAIN}\n}}\nleafnodes {{\n  listen: \"127.0.0.1:{hub_leaf_port}\"\n  no_advertise: true\n}}\n{authorization}\n"
            ),
        )?;
        let hub = NatsServer::start_with_config(&hub_conf, auth.map_or(&[][..], |a| &a.hub_env))?;
        let link = Link::start(hub_leaf_port)?;
        let leaf_conf = dir.path().join("leaf.conf");
        let login = auth.map_or(String::new(), |a| format!("{}:{}@", a.leaf_user.0, a.leaf_user.1));
        let local = auth.filter(|a| !a.local_users.is_empty()).map_or(String::new(), |a| {
            let users: Vec<String> =
                a.local_users.iter().map(|(u, p)| format!("{{ user: \"{u}\", password: \"{p}\" }}")).collect();
            format!("authorization {{\n  users = [ {} ]\n}}\n", users.join(", "))
        });
        write(
            &leaf_conf,
            &format!(
                "leafnodes {{\n  reconnect: 1\n  remotes: [ {{ url: \"nats-leaf://{login}127.0.0.1:{}\" }} ]\n}}\n{local}",
                link.port
            ),
        )?;
        let leaf_http = free_port()?;
        let (leaf, leaf_port) =
            spawn(dir.path(), None, Some(&(leaf_conf, vec![])), &["-m".to_string(), leaf_http.to_string()], false)?;
        let site = Self { hub, link, leaf, leaf_port, leaf_http, _dir: dir };
        site.wait_linked()?;
        Ok(site)
    }

    /// The hub's URL (the scheduler and the other services).
    pub fn hub_url(&self) -> String {
        self.hub.url()
    }

    /// The site's leaf server URL (the site's monitors).
    pub fn leaf_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.leaf_port)
    }

    /// Whether the leaf server has its connection to the hub.
    pub fn linked(&self) -> bool {
        http_get(self.leaf_http, "/leafz").is_ok_and(|a| leaf_count(&a) > 0)
    }

    /// Waits until the leaf server is connected to the hub.
    pub fn wait_linked(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + LINK_WITHIN;
        while !self.linked() {
            if Instant::now() >= deadline {
                bail!("the leaf did not connect to the hub within {LINK_WITHIN:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.leaf.kill();
        let _ = self.leaf.wait();
    }
}

/// `"leafnodes": N` of a `/leafz` answer.
fn leaf_count(answer: &str) -> u64 {
    answer
        .split("\"leafnodes\":")
        .nth(1)
        .and_then(|rest| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn write(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("write {}", path.display()))
}

/// A TCP link to a loopback port that can be cut (every connection closed,
/// new ones refused) and restored.
#[derive(Debug)]
pub struct Link {
    port: u16,
    state: Arc<LinkState>,
}

#[derive(Debug, Default)]
struct LinkState {
    cut: AtomicBool,
    stopped: AtomicBool,
    open: Mutex<Vec<TcpStream>>,
}

impl Link {
    /// Forwards a new loopback port to `upstream`.
    pub fn start(upstream: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the link")?;
        let port = listener.local_addr()?.port();
        let state = Arc::new(LinkState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                if st.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = down else { continue };
                if st.cut.load(Ordering::SeqCst) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (Ok(d2), Ok(u2), Ok(d3), Ok(u3)) =
                    (down.try_clone(), up.try_clone(), down.try_clone(), up.try_clone())
                else {
                    continue;
                };
                st.open.lock().unwrap_or_else(|p| p.into_inner()).extend([d3, u3]);
                pipe(down, up);
                pipe(u2, d2);
            }
        });
        Ok(Self { port, state })
    }

    /// The port the link listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts the link: open connections are closed and new ones refused until [`Link::restore`].
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for c in self.state.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.cut();
        // wakes the accept loop so that it sees `stopped`
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leafz_counts_are_read() {
        assert_eq!(leaf_count(r#"{"server_id":"x","leafnodes": 1,"leafs":[]}"#), 1);
        assert_eq!(leaf_count(r#"{"leafnodes":0}"#), 0);
        assert_eq!(leaf_count("garbage"), 0);
    }

    #[tokio::test]
    async fn a_cut_link_separates_the_site_and_a_restored_one_joins_it_again() {
        let site = Site::start().expect("site");
        let hub = async_nats::connect(site.hub_url()).await.expect("hub");
        let leaf = async_nats::connect(site.leaf_url()).await.expect("leaf");
        let mut sub = hub.subscribe("site.>").await.expect("subscribe");
        hub.flush().await.expect("flush");
        // interest reaches the leaf over the link
        let deadline = Instant::now() + LINK_WITHIN;
        let got = loop {
            leaf.publish("site.ping", "1".into()).await.expect("publish");
            leaf.flush().await.expect("flush");
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), futures_next(&mut sub)).await {
                break m;
            }
            assert!(Instant::now() < deadline, "nothing crossed the link");
        };
        assert_eq!(got.payload.as_ref(), b"1");
        site.link.cut();
        let deadline = Instant::now() + LINK_WITHIN;
        while site.linked() {
            assert!(Instant::now() < deadline, "still linked after the cut");
            std::thread::sleep(Duration::from_millis(100));
        }
        site.link.restore();
        site.wait_linked().expect("linked again");
    }

    async fn futures_next(sub: &mut async_nats::Subscriber) -> Option<async_nats::Message> {
        use futures::StreamExt;
        sub.next().await
    }
}
