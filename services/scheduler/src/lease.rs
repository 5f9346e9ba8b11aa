//! Active/standby: the scheduler that holds the lease (a key in the KV bucket
//! `hws_leases`, expiring after [`LEASE_TTL`] unless renewed) consumes and
//! places; the others wait and take over when it expires or is released.

use std::time::Duration;

use async_nats::jetstream::kv;
pub use hwsched_bus::streams::LEASE_TTL;
use tokio_util::sync::CancellationToken;

/// Key of the scheduler lease.
pub const KEY: &str = "scheduler";

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    kv: kv::Store,
    holder: String,
    revision: u64,
}

/// How long a release may take before the lease is left to expire.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// How often the holder renews (well inside the TTL).
pub fn renew_every() -> Duration {
    LEASE_TTL / 4
}

impl Lease {
    /// Waits until this process holds the lease; `None` on shutdown (at once,
    /// even while a request to an unreachable server waits out its timeout).
    pub async fn acquire(kv: kv::Store, holder: &str, shutdown: &CancellationToken) -> Option<Self> {
        let mut announced = false;
        loop {
            let created = tokio::select! {
                _ = shutdown.cancelled() => return None,
                created = kv.create(KEY, holder.as_bytes().to_vec().into()) => created,
            };
            match created {
                Ok(revision) => return Some(Self { kv, holder: holder.to_string(), revision }),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if !announced {
                        let current = tokio::select! {
                            _ = shutdown.cancelled() => return None,
                            got = kv.get(KEY) => got.ok().flatten().map(|b| String::from_utf8_lossy(&b).into_owned()),
                        };
                        tracing::info!(
                            active = current.as_deref().unwrap_or("?"),
                            "standby: another scheduler is active"
                        );
                        announced = true;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lease not readable, retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(renew_every()) => {}
            }
        }
    }

    /// Renews; false when the lease was lost (expired and taken, or unreachable).
    pub async fn renew(&mut self) -> bool {
        match self.kv.update(KEY, self.holder.as_bytes().to_vec().into(), self.revision).await {
            Ok(rev) => {
                self.revision = rev;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduler lease lost: stepping down");
                false
            }
        }
    }

    /// Gives the lease up at once (clean shutdown), so a standby takes over
    /// without waiting for the TTL. Bounded by [`RELEASE_WAIT`]: a server that
    /// does not answer lets the lease expire instead.
    pub async fn release(self) {
        let release = async {
            if let Ok(Some(b)) = self.kv.get(KEY).await {
                if b.as_ref() == self.holder.as_bytes() {
                    let _ = self.kv.delete(KEY).await;
                }
            }
        };
        if tokio::time::timeout(RELEASE_WAIT, release).await.is_err() {
            tracing::warn!("scheduler lease not released in time: it expires after its TTL");
        }
    }
}
