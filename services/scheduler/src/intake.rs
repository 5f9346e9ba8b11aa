//! Intake of submissions: size limit, decoding (protobuf or JSON), validation.
//! Pure functions: the scheduler loop does the IO.

use async_nats::HeaderMap;
use hwsched_bus::{streams::MAX_TASK_BYTES, MSG_ID};
use hwsched_proto::v1::TaskRequest;

/// Why a submission was refused, and the task id it carried (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// Task id from the payload, or from `Nats-Msg-Id` when the payload was unreadable.
    pub task_id: String,
    /// One line per problem.
    pub reasons: Vec<String>,
}

/// Decodes and validates one submission.
pub fn parse(headers: Option<&HeaderMap>, payload: &[u8]) -> Result<TaskRequest, Refusal> {
    let header_id = || headers.and_then(|h| h.get(MSG_ID)).map(|v| v.as_str().to_string()).unwrap_or_default();
    if payload.len() > MAX_TASK_BYTES as usize {
        return Err(Refusal {
            task_id: header_id(),
            reasons: vec![format!("payload: {} bytes exceeds the limit of {MAX_TASK_BYTES} bytes", payload.len())],
        });
    }
    let task: TaskRequest = hwsched_bus::decode(headers, payload)
        .map_err(|e| Refusal { task_id: header_id(), reasons: vec![format!("payload: {e}")] })?;
    hwsched_placement::validate(&task).map_err(|reasons| Refusal { task_id: task.task_id.clone(), reasons })?;
    Ok(task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Content-Type", "application/json");
        h
    }

    #[test]
    fn valid_json_is_accepted() {
        let t = parse(Some(&json()), br#"{"task_id":"a","command":["true"]}"#).expect("valid");
        assert_eq!(t.task_id, "a");
    }

    #[test]
    fn broken_payload_keeps_the_header_task_id() {
        let mut h = json();
        h.insert(MSG_ID, "from-header");
        let r = parse(Some(&h), b"{oops").expect_err("broken");
        assert_eq!(r.task_id, "from-header");
        assert!(r.reasons[0].starts_with("payload:"), "{r:?}");
    }

    #[test]
    fn negative_memory_is_refused_with_the_field() {
        let r = parse(Some(&json()), br#"{"task_id":"a","command":["x"],"requirements":{"memory_mb":-5}}"#)
            .expect_err("neg");
        assert_eq!(r.task_id, "a");
        assert!(r.reasons.iter().any(|l| l.starts_with("requirements.memory_mb")), "{r:?}");
    }

    #[test]
    fn oversized_payload_is_refused_before_decoding() {
        let big = vec![b' '; MAX_TASK_BYTES as usize + 1];
        let r = parse(Some(&json()), &big).expect_err("big");
        assert!(r.reasons[0].contains("exceeds"), "{r:?}");
    }
}
