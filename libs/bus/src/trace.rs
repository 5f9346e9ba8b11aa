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

/// The incoming trace context as it came, when it is valid: its span is the
/// sender's, and the parent of the span that handles the message.
pub fn incoming(headers: Option<&HeaderMap>) -> Option<&str> {
    headers.and_then(|h| h.get(TRACEPARENT)).map(|v| v.as_str()).filter(|tp| trace_id(tp).is_some())
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
    fn the_incoming_context_is_kept_as_it_came_only_when_valid() {
        let tp = new_traceparent();
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, tp.as_str());
        assert_eq!(incoming(Some(&h)), Some(tp.as_str()));
        let mut bad = HeaderMap::new();
        bad.insert(TRACEPARENT, "00-xyz-abc-01");
        assert_eq!(incoming(Some(&bad)), None);
        assert_eq!(incoming(None), None);
    }

    #[test]
    fn garbage_starts_a_new_trace() {
        assert!(trace_id("00-xyz-abc-01").is_none());
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "garbage");
        assert!(trace_id(&continue_from(Some(&h))).is_some());
    }
}
