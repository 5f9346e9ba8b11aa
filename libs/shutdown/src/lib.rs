//! One shutdown path for every hwsched process: SIGTERM or SIGINT cancel a
//! [`CancellationToken`] that every component watches; a second signal exits at once;
//! a component that ends before shutdown was requested cancels it ([`Components`]);
//! and the [`Backoff`] that retry loops wait with, cut short by that token.
#![forbid(unsafe_code)]

mod backoff;
mod components;

use std::time::Duration;

pub use backoff::Backoff;
pub use components::{BoxError, ComponentError, Components};
pub use tokio_util::sync::CancellationToken;

/// Default time components get to drain after the token is cancelled.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Returns a token cancelled on the first SIGTERM/SIGINT. A second signal
/// terminates the process with status 130 without waiting for the drain.
pub fn install_signal_handlers() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining (send the signal again to force exit)");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal, exiting without drain");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
