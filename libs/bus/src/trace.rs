//! W3C trace-context propagation in NATS headers (`traceparent`), so one test
//! job can be followed across scheduler, monitor and recorder logs.

use async_nats::HeaderMap;

/// Header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A fresh `traceparent` value (version 00, sampled).
pub fn new_traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}

/// The trace id (32 hex characters) of a valid `traceparent`, if any.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2) && trace != "0".repeat(32)).then_some(trace)
}

/// The incoming trace context, continued with a new span id; a new trace when absent or invalid.
pub fn continue_from(headers: Option<&HeaderMap>) -> String {
    let parent = headers.and_then(|h| h.get(TRACEPARENT)).map(|v| v.as_str().to_string());
    match parent.as_deref().and_then(trace_id) {
        Some(trace) => {
            let span = &uuid::Uuid::new_v4().simple().to_string()[..16];
            format!("00-{trace}-{span}-01")
        }
        None => new_traceparent(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_traceparent_is_valid_and_continuation_keeps_trace_id() {
        let tp = new_traceparent();
        let id = trace_id(&tp).expect("valid").to_string();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, tp.as_str());
        let next = continue_from(Some(&h));
        assert_eq!(trace_id(&next), Some(id.as_str()));
        assert_ne!(next, tp);
    }

    #[test]
    fn garbage_starts_a_new_trace() {
        assert!(trace_id("00-xyz-abc-01").is_none());
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "garbage");
        assert!(trace_id(&continue_from(Some(&h))).is_some());
    }
}
