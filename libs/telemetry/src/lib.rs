//! Logging and the operational HTTP endpoint of every hwsched process:
//! structured `tracing` logs (text or JSON) and `/metrics` (Prometheus text
//! format), `/healthz` and `/readyz` on one listener.
//!
//! Level policy: ERROR only when an operator must act (a component died, data
//! could not be stored); WARN for recovered faults and rejected input; INFO for
//! lifecycle (start, stop, worker joined/lost); DEBUG for per-message detail.
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
pub use prometheus_client;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{fmt, EnvFilter};

/// Initialises the global logger. `format` is "text" or "json"; `filter` uses
/// `EnvFilter` syntax ("info", "hwsched_scheduler=debug,info").
pub fn init_logging(format: &str, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt().with_env_filter(filter).with_target(true).with_ansi(ansi).with_writer(std::io::stderr);
    // A second init (tests, `hwsched all`) keeps the first logger.
    let _ = if format == "json" { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

/// Shared metrics registry and readiness flag of one process.
#[derive(Clone, Default)]
pub struct Telemetry {
    registry: Arc<Mutex<Registry>>,
    ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").field("ready", &self.ready.load(Ordering::Relaxed)).finish()
    }
}

impl Telemetry {
    /// A fresh registry, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers metrics under a prefix (e.g. "hwsched_scheduler").
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut reg);
    }

    /// Marks the process ready (`/readyz` answers 200).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        let reg = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
            out.clear();
        }
        out
    }

    /// Serves `/metrics`, `/healthz`, `/readyz` on `addr` until `shutdown`.
    pub async fn serve(self, addr: SocketAddr, shutdown: CancellationToken) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(%addr, "metrics endpoint listening");
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .with_state(self);
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
    }
}

async fn metrics(State(t): State<Telemetry>) -> impl IntoResponse {
    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], t.render())
}

async fn readyz(State(t): State<Telemetry>) -> impl IntoResponse {
    if t.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn registered_counter_is_rendered() {
        let t = Telemetry::new();
        let c: Counter = Counter::default();
        t.register(|r| r.register("hwsched_test_things", "Things seen", c.clone()));
        c.inc_by(3);
        let text = t.render();
        assert!(text.contains("hwsched_test_things_total 3"), "{text}");
    }
}
