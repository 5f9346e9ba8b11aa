//! The hwsched scheduler: consumes task requests, rejects invalid ones with
//! reasons, records accepted ones durably, places them on workers with the
//! pure core (`hwsched-placement`), retries failures elsewhere and re-places
//! the tasks of lost workers.
//!
//! [`run`] waits for the lease; the scheduler holding it runs the active loop
//! (`active.rs`), whose inputs are handled by job: submissions
//! (`submissions.rs`, parsed in `intake.rs`), results (`results.rs`), workers
//! (`workers.rs`), placing and supervision (`placing.rs`), the control
//! endpoints (`control.rs`), worker health (`health.rs`) and, on takeover,
//! recovery (`recovery.rs`). All
//! of them share the state in `scheduler.rs` and write through `io.rs`.
#![forbid(unsafe_code)]

mod active;
mod config;
mod control;
mod health;
mod intake;
mod io;
pub mod lease;
mod metrics;
mod placing;
mod recovery;
mod results;
mod scheduler;
mod submissions;
mod workers;

pub use config::SchedulerConfig;
pub use hwsched_placement::state;
pub use intake::{parse as parse_submission, Refusal};
pub use metrics::METRICS_ID;

use std::time::Duration;

use hwsched_bus::{now_ms, streams, Bus};
use hwsched_shutdown::Backoff;
use hwsched_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use active::{run_active, Stepped};
use lease::Lease;
use metrics::Metrics;

/// First wait after a failed takeover; it doubles up to [`TAKEOVER_BACKOFF_CAP`].
const TAKEOVER_BACKOFF: Duration = Duration::from_millis(500);
const TAKEOVER_BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Takeovers in a row that may fail (about two minutes) before the scheduler gives up.
const TAKEOVERS_TRIED: u32 = 15;

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    cfg: SchedulerConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // provisioning waits out request timeouts while the server is gone: it yields to a shutdown
    let provisioned = async {
        streams::provision(&bus).await?;
        streams::bucket(&bus, &bus.subjects().leases_bucket()).await
    };
    let Some(leases) = shutdown.run_until_cancelled(provisioned).await else { return Ok(()) };
    let leases = leases?;
    let metrics = Metrics::default();
    metrics.register(&telemetry);
    let holder = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into()),
        std::process::id(),
        now_ms()
    );
    telemetry.set_ready(true);
    let mut takeover = Backoff::doubling(TAKEOVER_BACKOFF, TAKEOVER_BACKOFF_CAP);
    let mut failed_takeovers = 0;
    loop {
        let Some(mut lease) = Lease::acquire(leases.clone(), &holder, &shutdown).await else { break };
        tracing::info!(holder, "became the active scheduler");
        match run_active(cfg.clone(), &bus, metrics.clone(), &shutdown, &mut lease).await {
            Ok(Stepped::Shutdown) => {
                lease.release().await;
                break;
            }
            Ok(Stepped::LostLease) => takeover.reset(),
            Ok(Stepped::TakeoverFailed(e)) => {
                // handed back, so that a standby may try meanwhile
                lease.release().await;
                failed_takeovers += 1;
                if failed_takeovers > TAKEOVERS_TRIED {
                    return Err(e.context(format!("taking over failed {failed_takeovers} times in a row")));
                }
                tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = takeover.peek().as_millis() as u64,
                    "taking over failed, retrying"
                );
                if !takeover.wait(&shutdown).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        }
        failed_takeovers = 0;
    }
    telemetry.set_ready(false);
    tracing::info!("scheduler stopped");
    Ok(())
}
