//! The NATS services API (`$SRV.PING|INFO|STATS`, what `nats micro ls` reads)
//! for hwsched's request/reply endpoints. Each endpoint keeps its hwsched
//! subject (`hws.control.queue`, `hws.workers.<id>.drain`, ...); the service
//! adds discovery and per-endpoint request/error counts on top.

use std::collections::HashMap;

use async_nats::service::{self, ServiceExt};
use bytes::Bytes;
use prost::Message;

use crate::{Bus, BusError};

/// Error code answered for a request that could not be decoded.
pub const BAD_REQUEST: usize = 400;

/// Starts service `name` (e.g. `hwsched-scheduler`) on the bus's connection.
pub async fn start(
    bus: &Bus,
    name: &str,
    description: &str,
    metadata: HashMap<String, String>,
) -> Result<service::Service, BusError> {
    bus.client()
        .service_builder()
        .description(description)
        .metadata(metadata)
        .start(name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| BusError::js(format!("start NATS service {name}"), e))
}

/// Adds endpoint `name` answering on `subject`.
pub async fn endpoint(
    svc: &service::Service,
    name: &str,
    subject: String,
) -> Result<service::endpoint::Endpoint, BusError> {
    svc.endpoint_builder()
        .name(name)
        .add(subject.clone())
        .await
        .map_err(|e| BusError::js(format!("add endpoint {name} on {subject}"), e))
}

/// Answers `req` with `reply` encoded as protobuf.
pub async fn respond<M: Message>(req: &service::Request, reply: &M) {
    if let Err(e) = req.respond(Ok(Bytes::from(reply.encode_to_vec()))).await {
        tracing::debug!(error = %e, subject = %req.message.subject, "reply not sent");
    }
}

/// Answers `req` with an error (`Nats-Service-Error` headers, counted in the endpoint's stats).
pub async fn respond_error(req: &service::Request, code: usize, status: String) {
    if let Err(e) = req.respond(Err(service::error::Error { code, status })).await {
        tracing::debug!(error = %e, subject = %req.message.subject, "error reply not sent");
    }
}
