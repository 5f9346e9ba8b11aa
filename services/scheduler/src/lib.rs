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

use hwsched_bus::{now_ms, streams, Bus};
use hwsched_telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use active::{run_active, Stepped};
use lease::Lease;
use metrics::Metrics;

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(
    cfg: SchedulerConfig,
    bus: Bus,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    streams::provision(&bus).await?;
    let metrics = Metrics::default();
    metrics.register(&telemetry);
    let leases = streams::bucket(&bus, &bus.subjects().leases_bucket()).await?;
    let holder = format!(
        "{}-{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into()),
        std::process::id(),
        now_ms()
    );
    telemetry.set_ready(true);
    loop {
        let Some(mut lease) = Lease::acquire(leases.clone(), &holder, &shutdown).await else { break };
        tracing::info!(holder, "became the active scheduler");
        match run_active(cfg.clone(), &bus, metrics.clone(), &shutdown, &mut lease).await {
            Ok(Stepped::Shutdown) => {
                lease.release().await;
                break;
            }
            Ok(Stepped::LostLease) => continue,
            Err(e) => {
                lease.release().await;
                return Err(e);
            }
        }
    }
    telemetry.set_ready(false);
    tracing::info!("scheduler stopped");
    Ok(())
}
