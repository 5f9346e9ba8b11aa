//! The NATS bus of hwsched: connecting (retry with backoff, auth, TLS), the
//! public subject names, JetStream provisioning, and typed publish/decode over
//! the protobuf contracts. Every service talks to the others only through this.
#![forbid(unsafe_code)]

pub mod assignment;
pub mod codec;
pub mod consume;
pub mod micro;
pub mod objects;
pub mod streams;
pub mod subjects;
pub mod trace;
pub mod version;

use std::time::Duration;

pub use async_nats;
use async_nats::{jetstream, HeaderMap};
use hwsched_config::{redact_url, NatsConfig};
use hwsched_proto::v1::{ExecutionResult, TaskEvent, TaskEventKind, TaskRequest};
use hwsched_shutdown::Backoff;
use prost::Message;

pub use codec::{decode, DecodeError, Encoding};
pub use subjects::{Stream, Subjects};

/// Header a producer sets to receive the accept/reject verdict of a submission.
/// (A plain NATS request to `hws.tasks.submit` is answered by JetStream's own
/// publish acknowledgement, since the stream captures the subject.)
pub const REPLY_TO: &str = "Hws-Reply-To";
/// JetStream de-duplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";
/// Header of a dead letter: why it could not be used.
pub const DEAD_REASON: &str = "Hws-Reason";
/// Header of a dead letter: the subject it arrived on.
pub const DEAD_SUBJECT: &str = "Hws-Subject";
/// Longest reason a dead letter carries, in bytes.
const DEAD_REASON_MAX: usize = 512;

/// Bus errors, classified by operation.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration was rejected before connecting.
    #[error(transparent)]
    Config(#[from] hwsched_config::ConfigError),
    /// Could not connect before giving up.
    #[error(
        "cannot connect to NATS at {url}: {reason} (is nats-server running with JetStream, -js? set HWSCHED_NATS_URL)"
    )]
    Connect {
        /// URL tried.
        url: String,
        /// Last error.
        reason: String,
    },
    /// The server is older than the oldest hwsched supports; nothing was created.
    #[error(
        "nats-server {found} at {url} is older than {minimum}, the oldest hwsched supports: upgrade the server (README: supported NATS versions)"
    )]
    ServerTooOld {
        /// URL connected to.
        url: String,
        /// The version the server announced.
        found: String,
        /// [`version::MIN_SERVER`].
        minimum: String,
    },
    /// A JetStream API call (stream, consumer, bucket) failed.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// What was being done.
        what: String,
        /// Server/client error.
        reason: String,
    },
    /// Publishing failed or was not acknowledged.
    #[error("publish to {subject} failed: {reason}")]
    Publish {
        /// Subject.
        subject: String,
        /// Error.
        reason: String,
    },
}

impl BusError {
    pub(crate) fn js(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        BusError::JetStream { what: what.into(), reason: e.to_string() }
    }
}

/// A connected bus: core client, JetStream context and the subject names.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    retention: Retention,
    replicas: usize,
}

/// How long the Object Stores keep what they hold (applied at provisioning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// `hws_bundles`.
    pub bundles: Duration,
    /// `hws_logs` and `hws_artifacts`.
    pub outputs: Duration,
}

/// How long connecting keeps retrying before it reports failure.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// First wait between connection attempts; it doubles up to [`CONNECT_BACKOFF_CAP`].
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between connection attempts.
const CONNECT_BACKOFF_CAP: Duration = Duration::from_secs(5);

impl Bus {
    /// Validates `cfg`, then connects, retrying with exponential backoff until
    /// `deadline`. `name` identifies the connection in server monitoring.
    pub async fn connect(cfg: &NatsConfig, name: &str, deadline: Duration) -> Result<Self, BusError> {
        cfg.validate()?;
        let started = tokio::time::Instant::now();
        let mut backoff = Backoff::doubling(CONNECT_BACKOFF, CONNECT_BACKOFF_CAP);
        loop {
            match connect_once(cfg, name).await {
                Ok(client) => {
                    let server = client.server_info().version;
                    match version::judge(&server) {
                        version::Verdict::Supported => {}
                        version::Verdict::TooOld(found) => {
                            return Err(BusError::ServerTooOld {
                                url: redact_url(&cfg.url),
                                found: found.to_string(),
                                minimum: version::MIN_SERVER.to_string(),
                            })
                        }
                        version::Verdict::Unknown => {
                            tracing::warn!(server = %server, minimum = %version::MIN_SERVER, "nats-server announced no version number: not checked")
                        }
                    }
                    tracing::info!(url = %redact_url(&cfg.url), name, server = %server, "connected to NATS");
                    // at a site behind a leaf node: the hub's JetStream, by its domain
                    let js = match &cfg.js_domain {
                        Some(domain) => jetstream::with_domain(client.clone(), domain),
                        None => jetstream::new(client.clone()),
                    };
                    let retention = Retention {
                        bundles: Duration::from_secs(cfg.bundle_max_age_s),
                        outputs: Duration::from_secs(cfg.output_max_age_s),
                    };
                    return Ok(Self {
                        client,
                        js,
                        subjects: Subjects::new(&cfg.subject_prefix),
                        retention,
                        replicas: cfg.js_replicas,
                    });
                }
                Err(e) if started.elapsed() + backoff.peek() < deadline => {
                    tracing::warn!(url = %redact_url(&cfg.url), error = %e, retry_in_ms = backoff.peek().as_millis() as u64, "NATS not reachable, retrying");
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) => return Err(BusError::Connect { url: redact_url(&cfg.url), reason: e.to_string() }),
            }
        }
    }

    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// How long the Object Stores keep bundles and outputs.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Copies JetStream keeps of every stream, bucket and Object Store (applied at provisioning).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Subject, stream and bucket names.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// Publishes `msg` as protobuf on a core subject (no persistence).
    pub async fn publish<M: Message>(&self, subject: String, msg: &M) -> Result<(), BusError> {
        self.client
            .publish_with_headers(subject.clone(), proto_headers(None), codec::encode(msg))
            .await
            .map_err(|e| BusError::Publish { subject, reason: e.to_string() })
    }

    /// Publishes `msg` as protobuf to a stream and waits for the server's
    /// acknowledgement. `msg_id` enables JetStream de-duplication;
    /// `traceparent` propagates the trace context.
    pub async fn publish_durable<M: Message>(
        &self,
        subject: String,
        msg: &M,
        msg_id: Option<&str>,
        traceparent: Option<&str>,
    ) -> Result<(), BusError> {
        let mut headers = proto_headers(traceparent);
        if let Some(id) = msg_id {
            headers.insert(MSG_ID, id);
        }
        let fail = |e: &dyn std::fmt::Display| BusError::Publish { subject: subject.clone(), reason: e.to_string() };
        let ack =
            self.js.publish_with_headers(subject.clone(), headers, codec::encode(msg)).await.map_err(|e| fail(&e))?;
        ack.await.map_err(|e| fail(&e))?;
        Ok(())
    }

    /// The last result stored for `task_id` on the results stream, by `worker_id`
    /// (`None`: by any worker); `Ok(None)` when there is none.
    pub async fn stored_result(
        &self,
        worker_id: Option<&str>,
        task_id: &str,
    ) -> Result<Option<ExecutionResult>, BusError> {
        let name = self.subjects.stream(Stream::Results);
        let what = || format!("read the last result of {task_id}");
        let stream = self.js.get_stream_no_info(&name).await.map_err(|e| BusError::js(what(), e))?;
        let subject = match worker_id {
            Some(w) => self.subjects.results(w, task_id),
            None => self.subjects.results_of(task_id),
        };
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => decode(Some(&m.headers), &m.payload).map(Some).map_err(|e| BusError::js(what(), e)),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(BusError::js(what(), e)),
        }
    }

    /// Stores a lifecycle event on `hws.events.<task_id>`. Events inform
    /// producers and dashboards: the event is sent at once (in order with
    /// everything else on this connection) and its acknowledgement is awaited
    /// in the background, so the caller does not wait a round trip; a failure
    /// is logged, not returned.
    pub async fn publish_event(&self, ev: &TaskEvent, traceparent: Option<&str>) {
        let subject = self.subjects.events(&ev.task_id);
        let (task_id, kind) = (ev.task_id.clone(), ev.kind().as_str_name());
        let sent = self.js.publish_with_headers(subject, proto_headers(traceparent), codec::encode(ev)).await;
        match sent {
            Ok(ack) => {
                tokio::spawn(async move {
                    if let Err(e) = ack.await {
                        tracing::warn!(error = %e, task_id, kind, "task event not stored");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, task_id, kind, "task event not stored"),
        }
    }

    /// Keeps a message `who` (a service name or a worker id) could not use on
    /// `hws.deadletter.<who>` (stream `HWS_DEADLETTER`, 7 days, 256 MiB at
    /// most), with the reason and the subject it arrived on as headers and its
    /// content type and payload as they were, so that bad input is never
    /// dropped silently. Waits for the store (up to 5 s); logs either way.
    pub async fn dead_letter(
        &self,
        who: &str,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
        reason: &str,
    ) {
        let mut h = HeaderMap::new();
        if let Some(ct) = headers.and_then(|h| h.get(codec::CONTENT_TYPE)) {
            h.insert(codec::CONTENT_TYPE, ct.as_str());
        }
        h.insert(DEAD_SUBJECT, subject);
        h.insert(DEAD_REASON, one_line(reason, DEAD_REASON_MAX).as_str());
        let stored = async {
            let ack = self.js.publish_with_headers(self.subjects.dead_letter(who), h, payload.to_vec().into()).await?;
            tokio::time::timeout(Duration::from_secs(5), ack)
                .await
                .map_err(|_| "no acknowledgement in 5 s".to_string())?
                .map_err(|e| e.to_string())?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }
        .await;
        match stored {
            Ok(()) => {
                tracing::warn!(who, subject, reason, bytes = payload.len(), "unusable message kept as a dead letter")
            }
            Err(e) => {
                tracing::warn!(who, subject, reason, error = %e, "unusable message dropped: dead letter not stored")
            }
        }
    }

    /// A JetStream message `who` cannot use: kept as a dead letter
    /// ([`Bus::dead_letter`]), then terminated so that it is not redelivered.
    pub async fn reject_message(&self, who: &str, msg: &jetstream::Message, reason: &str) {
        self.dead_letter(who, &msg.subject, msg.headers.as_ref(), &msg.payload, reason).await;
        if let Err(e) = msg.ack_with(jetstream::AckKind::Term).await {
            tracing::debug!(error = %e, "terminating an unusable message failed; it will be redelivered");
        }
    }

    /// Flushes buffered publishes and closes the connection (shutdown path).
    pub async fn drain(&self) {
        let drained = tokio::time::timeout(DRAIN_DEADLINE, async {
            if let Err(e) = self.client.flush().await {
                tracing::debug!(error = %e, "flush on shutdown failed");
            }
            if let Err(e) = self.client.drain().await {
                tracing::debug!(error = %e, "drain on shutdown failed");
            }
        })
        .await;
        if drained.is_err() {
            // NATS unreachable: waiting longer would keep the process alive for nothing
            tracing::warn!(
                deadline_s = DRAIN_DEADLINE.as_secs(),
                "NATS connection not drained in time: messages still buffered are dropped"
            );
        }
    }
}

/// How long a shutdown waits for the NATS connection to drain.
pub const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Headers of a protobuf message, with an optional trace context.
pub fn proto_headers(traceparent: Option<&str>) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(codec::CONTENT_TYPE, codec::PROTOBUF);
    if let Some(tp) = traceparent {
        h.insert(trace::TRACEPARENT, tp);
    }
    h
}

async fn connect_once(
    cfg: &NatsConfig,
    name: &str,
) -> Result<async_nats::Client, Box<dyn std::error::Error + Send + Sync>> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .custom_inbox_prefix(cfg.inbox_prefix())
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("NATS connection lost, reconnecting")
                }
                async_nats::Event::Connected => tracing::info!("NATS connection (re)established"),
                // e.g. a permissions violation: what this user may not publish or subscribe
                async_nats::Event::ServerError(e) => tracing::warn!(error = %e, "NATS server refused an operation"),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let Some(path) = &cfg.creds_file {
        opts = opts.credentials_file(path).await?;
    }
    if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone()).require_tls(true);
    }
    let urls: Vec<&str> = cfg.url.split(',').map(str::trim).collect();
    Ok(opts.connect(urls).await?)
}

/// A lifecycle event about `task` (attempt, worker and reason as given), stamped now.
pub fn task_event(
    task: Option<&TaskRequest>,
    kind: TaskEventKind,
    attempt: u32,
    worker_id: &str,
    reason: &str,
) -> TaskEvent {
    TaskEvent {
        schema_version: hwsched_proto::SCHEMA_VERSION,
        task_id: task.map(|t| t.task_id.clone()).unwrap_or_default(),
        kind: kind as i32,
        attempt,
        worker_id: worker_id.to_string(),
        timestamp_ms: now_ms(),
        reason: reason.to_string(),
        name: task.map(|t| t.name.clone()).unwrap_or_default(),
        producer: task.map(|t| t.producer.clone()).unwrap_or_default(),
        test_type: task.map(|t| t.test_type.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// Milliseconds since the Unix epoch, the time unit of every message.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// `s` on one line (control characters as spaces), cut to at most `max`
/// bytes at a character boundary: a header value.
fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

#[cfg(test)]
mod dead_letter_tests {
    use super::*;

    #[test]
    fn a_reason_becomes_one_header_line_of_bounded_size() {
        assert_eq!(one_line("bad\nthing\r\there", 100), "bad thing  here");
        let long = "é".repeat(400);
        let cut = one_line(&long, 511);
        assert!(cut.len() <= 511 && cut.chars().all(|c| c == 'é'));
    }
}
