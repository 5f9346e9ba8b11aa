//! JetStream provisioning: every stream and bucket hwsched needs, created or
//! updated idempotently by whichever service starts first.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    kv, object_store,
    stream::{Config, DiscardPolicy, RetentionPolicy, StorageType},
};

use crate::{Bus, BusError, Stream};

/// Largest accepted task request, in bytes (also the stream's message limit).
pub const MAX_TASK_BYTES: i32 = 1024 * 1024;
/// How long JetStream remembers a `Nats-Msg-Id` to drop a resubmission.
pub const TASK_DEDUP_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What the dead-letter stream keeps at most, in bytes.
pub const DEAD_LETTER_BYTES: i64 = 256 * 1024 * 1024;

/// What the live-log stream keeps at most, in bytes (followers read from it;
/// the whole output is kept in the `hws_logs` Object Store).
pub const LIVE_LOG_BYTES: i64 = 1024 * 1024 * 1024;

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A lease not renewed for this long expires (the `hws_leases` bucket's max age).
pub const LEASE_TTL: Duration = Duration::from_secs(5);

fn config(bus: &Bus, s: Stream) -> Config {
    let sub = bus.subjects();
    let (subjects, retention, max_age, dup) = match s {
        Stream::Tasks => (vec![sub.tasks_submit()], RetentionPolicy::WorkQueue, 7 * DAY, TASK_DEDUP_WINDOW),
        Stream::Rejected => (vec![sub.tasks_rejected()], RetentionPolicy::Limits, 7 * DAY, Duration::from_secs(120)),
        Stream::Assign => (vec![sub.assign("*")], RetentionPolicy::WorkQueue, 7 * DAY, TASK_DEDUP_WINDOW),
        Stream::Results => (vec![sub.results_all()], RetentionPolicy::Limits, 7 * DAY, TASK_DEDUP_WINDOW),
        Stream::Events => (vec![sub.events_all()], RetentionPolicy::Limits, 7 * DAY, Duration::from_secs(120)),
        Stream::Alerts => (vec![sub.alerts_all()], RetentionPolicy::Limits, 30 * DAY, Duration::from_secs(120)),
        // A buffer for the recorder: survives a ClickHouse outage of hours.
        Stream::Metrics => (vec![sub.metrics_all()], RetentionPolicy::Limits, DAY, Duration::from_secs(120)),
        Stream::DeadLetter => {
            (vec![sub.dead_letters_all()], RetentionPolicy::Limits, 7 * DAY, Duration::from_secs(120))
        }
        Stream::Logs => (vec![sub.logs_all()], RetentionPolicy::Limits, DAY, Duration::from_secs(120)),
    };
    // a flood of garbage or of output must not fill the server's disk: the oldest goes first
    let max_bytes = match s {
        Stream::DeadLetter => DEAD_LETTER_BYTES,
        Stream::Logs => LIVE_LOG_BYTES,
        _ => -1,
    };
    Config {
        name: sub.stream(s),
        subjects,
        retention,
        max_age,
        duplicate_window: dup,
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_bytes,
        max_message_size: MAX_TASK_BYTES,
        num_replicas: bus.replicas(),
        ..Default::default()
    }
}

/// Every KV bucket hwsched uses: (name, history kept per key, max age; zero = forever).
fn buckets(bus: &Bus) -> [(String, i64, Duration); 8] {
    let sub = bus.subjects();
    [
        (sub.tasks_bucket(), 1, 7 * DAY),
        (sub.attempts_bucket(), 1, 7 * DAY),
        (sub.model_bucket(), 5, Duration::ZERO),
        (sub.alerts_bucket(), 1, Duration::ZERO),
        (sub.silences_bucket(), 1, Duration::ZERO),
        (sub.drains_bucket(), 1, Duration::ZERO),
        (sub.mutes_bucket(), 1, Duration::ZERO),
        (sub.leases_bucket(), 1, LEASE_TTL),
    ]
}

/// Every Object Store hwsched uses: (name, max age).
fn object_stores(bus: &Bus) -> [(String, Duration); 3] {
    let (sub, keep) = (bus.subjects(), bus.retention());
    [(sub.bundles_bucket(), keep.bundles), (sub.logs_bucket(), keep.outputs), (sub.artifacts_bucket(), keep.outputs)]
}

/// Creates an Object Store, or sets the max age and replica count of an
/// existing one (the server allows changing both of a stream in place).
async fn provision_object_store(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
) -> Result<(), BusError> {
    let what = || format!("provision object store {bucket}");
    match js.get_stream(format!("OBJ_{bucket}")).await {
        Ok(mut stream) => {
            let mut cfg = stream.info().await.map_err(|e| BusError::js(what(), e))?.config.clone();
            if cfg.max_age != max_age || cfg.num_replicas != replicas {
                cfg.max_age = max_age;
                cfg.num_replicas = replicas;
                js.update_stream(cfg).await.map_err(|e| BusError::js(what(), e))?;
            }
        }
        Err(_) => {
            let cfg = object_store::Config {
                bucket: bucket.to_string(),
                max_age,
                storage: StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            };
            js.create_object_store(cfg).await.map_err(|e| BusError::js(what(), e))?;
        }
    }
    Ok(())
}

/// Opens an Object Store provisioned by [`provision`].
pub async fn object_store(bus: &Bus, name: &str) -> Result<object_store::ObjectStore, BusError> {
    bus.jetstream().get_object_store(name).await.map_err(|e| BusError::js(format!("open object store {name}"), e))
}

/// Creates or updates every stream and bucket, with [`Bus::replicas`] copies
/// each (an existing one changes its replica count in place; a single,
/// non-clustered server refuses more than one copy, and this fails with its
/// error). Safe to call from every service at start.
pub async fn provision(bus: &Bus) -> Result<(), BusError> {
    let js = bus.jetstream();
    for s in Stream::ALL {
        let cfg = config(bus, s);
        let name = cfg.name.clone();
        js.create_or_update_stream(cfg).await.map_err(|e| {
            let hint = match bus.replicas() {
                1 => String::new(),
                n => format!(" (--js-replicas {n} needs a JetStream cluster of at least {n} servers)"),
            };
            BusError::js(format!("provision stream {name}{hint}"), e)
        })?;
    }
    for (bucket, history, max_age) in buckets(bus) {
        js.create_or_update_key_value(kv::Config {
            bucket: bucket.clone(),
            history,
            max_age,
            storage: StorageType::File,
            num_replicas: bus.replicas(),
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::js(format!("provision bucket {bucket}"), e))?;
    }
    for (bucket, max_age) in object_stores(bus) {
        provision_object_store(js, &bucket, max_age, bus.replicas()).await?;
    }
    Ok(())
}

/// Provisions only what is missing: for a service whose NATS user may read
/// stream information but not change streams (the monitor). When everything
/// exists nothing is written; else [`provision`] runs and its error says that
/// this user may not create them.
pub async fn provision_if_missing(bus: &Bus) -> Result<(), BusError> {
    let js = bus.jetstream();
    let sub = bus.subjects();
    let mut missing = Vec::new();
    for s in Stream::ALL {
        if js.get_stream(sub.stream(s)).await.is_err() {
            missing.push(sub.stream(s));
        }
    }
    for (b, _, _) in buckets(bus) {
        if js.get_key_value(&b).await.is_err() {
            missing.push(b);
        }
    }
    for (b, _) in object_stores(bus) {
        if js.get_object_store(&b).await.is_err() {
            missing.push(b);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    provision(bus).await.map_err(|e| {
        BusError::js(format!("create {} (missing; a scheduler creates them at its start)", missing.join(", ")), e)
    })
}

/// The recorder's durable consumer name on every stream it writes to
/// ClickHouse (alerting reads its lag from them).
pub const RECORDER_DURABLE: &str = "recorder";

/// The recorder's consumer on `stream`: `None` when it does not exist (the
/// recorder never ran: ClickHouse not configured) or cannot be read.
pub async fn recorder_consumer(bus: &Bus, stream: Stream) -> Option<jetstream::consumer::Info> {
    let s = bus.jetstream().get_stream(bus.subjects().stream(stream)).await.ok()?;
    s.consumer_info(RECORDER_DURABLE).await.ok()
}

/// Messages the recorder has not yet written from `stream`: pending plus
/// delivered but unacknowledged.
pub fn backlog(info: &jetstream::consumer::Info) -> u64 {
    info.num_pending + info.num_ack_pending as u64
}

/// A durable pull consumer description.
#[derive(Debug, Clone)]
pub struct Durable {
    /// Stream to read.
    pub stream: Stream,
    /// Durable name (also identifies the reader in `nats consumer ls`).
    pub name: String,
    /// Subject filter; empty = whole stream.
    pub filter: String,
    /// Redelivery after this long without an ack.
    pub ack_wait: Duration,
    /// Unacknowledged messages the server hands out at once.
    pub max_ack_pending: i64,
    /// Deliveries before the server gives up on a message.
    pub max_deliver: i64,
}

impl Durable {
    /// Defaults: 30 s ack wait, 10 000 in flight, unlimited redelivery.
    pub fn new(stream: Stream, name: impl Into<String>) -> Self {
        Self {
            stream,
            name: name.into(),
            filter: String::new(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            max_deliver: -1,
        }
    }

    /// Restricts to `filter`.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = filter.into();
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }

    /// Sets max in flight.
    pub fn max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = n;
        self
    }
}

/// Worker `worker_id`'s assignment consumer: one per worker, whoever executes
/// its assignments (the monitor, or an external executor beside a monitor in
/// observe-only mode), so a worker's queue survives a switch between them.
pub fn assignments(bus: &Bus, worker_id: &str, slots: u32, ack_wait: Duration) -> Durable {
    Durable::new(Stream::Assign, format!("monitor-{worker_id}"))
        .filter(bus.subjects().assign(worker_id))
        .max_ack_pending(i64::from(slots.max(1)))
        .ack_wait(ack_wait)
}

/// Creates (or updates) the durable consumer and returns it.
pub async fn durable(bus: &Bus, d: &Durable) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
    let stream_name = bus.subjects().stream(d.stream);
    let what = || format!("consumer {} on {stream_name}", d.name);
    let stream = bus.jetstream().get_stream(&stream_name).await.map_err(|e| BusError::js(what(), e))?;
    let cfg = pull::Config {
        durable_name: Some(d.name.clone()),
        filter_subject: d.filter.clone(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: d.ack_wait,
        max_ack_pending: d.max_ack_pending,
        max_deliver: d.max_deliver,
        ..Default::default()
    };
    stream.create_consumer(cfg).await.map_err(|e| BusError::js(what(), e))
}

/// Creates (or updates) the durable consumer and reads its messages; the
/// stream ends when the consumer is deleted (see [`crate::consume`]).
pub async fn consume(bus: &Bus, d: &Durable) -> Result<crate::consume::Messages, BusError> {
    crate::consume::messages(durable(bus, d).await?).await
}

/// Opens a KV bucket provisioned by [`provision`].
pub async fn bucket(bus: &Bus, name: &str) -> Result<kv::Store, BusError> {
    bus.jetstream().get_key_value(name).await.map_err(|e| BusError::js(format!("open bucket {name}"), e))
}
