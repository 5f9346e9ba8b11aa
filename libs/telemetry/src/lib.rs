//! Logging, tracing and the operational HTTP endpoint of every hwsched process:
//! structured `tracing` logs (text or JSON), spans exported over OTLP/HTTP when
//! a collector is configured, and `/metrics` (Prometheus text format),
//! `/healthz` and `/readyz` on one listener.
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
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};
pub use prometheus_client;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Keeps the trace exporter alive; dropping it flushes and stops the export.
#[must_use = "dropping the guard stops trace export"]
pub struct Guard {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("otlp", &self.provider.is_some()).finish()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace export did not flush: {e}");
            }
        }
    }
}

/// Installs the process's TLS crypto provider (ring, which the NATS client
/// uses too). HTTP clients built on rustls without a provider of their own
/// (the OTLP exporter, alert webhooks) need it; call before building one.
/// Idempotent.
pub fn install_crypto_provider() {
    // an error only says a provider is installed already
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Initialises logging, and trace export over OTLP/HTTP when `otlp_endpoint`
/// (the collector's base URL, e.g. `http://otel-collector:4318`) is given.
/// `format` is "text" or "json"; `filter` uses `EnvFilter` syntax.
/// A second call (tests, `hwsched all`) keeps the first subscriber.
pub fn init(format: &str, filter: &str, otlp_endpoint: Option<&str>, service: &str) -> Result<Guard, String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("log filter {filter:?}: {e}"))?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt_layer: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = if format == "json" {
        Box::new(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))
    } else {
        Box::new(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
    };
    let provider = match otlp_endpoint {
        None => None,
        Some(base) => {
            install_crypto_provider();
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')))
                .build()
                .map_err(|e| format!("OTLP exporter for {base}: {e}"))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder_empty().with_service_name(service.to_string()).build())
                    .build(),
            )
        }
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("hwsched")));
    let _ = tracing_subscriber::registry().with(fmt_layer).with(otel).with(filter).try_init();
    Ok(Guard { provider })
}

/// Makes `span` a child of the W3C `traceparent` carried in NATS headers, so
/// exported spans of scheduler and monitor join the producer's trace. Call it
/// before the span is first entered.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let carrier = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// The W3C `traceparent` naming `span` itself, to send on a message so that the
/// receiver's span (through [`set_parent`]) becomes its child. `None` when
/// spans are not exported (no OTLP endpoint): the caller sends what it received.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut carrier = std::collections::HashMap::new();
    // injects nothing for a span without a valid context
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
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

    #[test]
    fn a_span_not_exported_has_no_traceparent_to_send() {
        let _d = tracing::subscriber::set_default(tracing_subscriber::registry());
        let span = tracing::info_span!("not_exported");
        assert_eq!(traceparent(&span), None);
    }
}
