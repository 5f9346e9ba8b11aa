//! Output formats of the client commands: tables for people (`render`),
//! JSON for scripts (proto3 JSON of the contracts, one object per line for streams).

use clap::ValueEnum;
use hwsched_client::{Update, WorkerView};
use serde_json::{json, Value};

/// `-o table|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

/// Any contract message as proto3 JSON.
pub fn proto<M: serde::Serialize>(m: &M) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// One update of `submit --wait -o json`.
pub fn update_json(u: &Update) -> Value {
    match u {
        Update::Accepted { task_id } => json!({"update": "accepted", "taskId": task_id}),
        Update::Duplicate { task_id } => json!({"update": "duplicate", "taskId": task_id}),
        Update::Rejected { task_id, reasons } => json!({"update": "rejected", "taskId": task_id, "reasons": reasons}),
        Update::Event(ev) => json!({"update": "event", "event": proto(ev)}),
        Update::Finished(f) => json!({
            "update": "finished",
            "taskId": f.task_id,
            "status": f.status.as_str_name(),
            "succeeded": f.succeeded(),
            "workerId": f.worker_id,
            "exitCode": f.exit_code,
            "durationS": f.duration_s,
            "attempts": f.attempts,
            "reasons": f.reasons,
            "result": f.result.as_ref().map(proto),
            "parts": f.parts.iter().map(proto).collect::<Vec<_>>(),
        }),
    }
}

/// `hwsched workers -o json`.
pub fn workers_json(ws: &[WorkerView]) -> Value {
    Value::Array(
        ws.iter()
            .map(|w| {
                json!({
                    "workerId": w.id(),
                    "hardwareClass": w.capabilities.as_ref().map(|c| c.hardware_class.clone()),
                    "heartbeat": proto(&w.heartbeat),
                    "drain": w.drain.as_ref().map(proto),
                })
            })
            .collect(),
    )
}
