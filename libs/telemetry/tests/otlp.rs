//! Spans reach an OTLP/HTTP collector when one is configured, in the trace of
//! the `traceparent` they were given. Unit level: the collector is a plain TCP
//! listener that records the bytes it is sent. A real receiver (rotel) gets one
//! task's spans from scheduler and monitor in `tests/python/test_otlp.py`.
use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::Duration,
};

#[test]
fn spans_are_exported_to_the_configured_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(buf);
        }
    });

    let guard = hwsched_telemetry::init("text", "info", Some(&format!("http://{addr}")), "hwsched-test").expect("init");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let sent_on = {
        let span = tracing::info_span!("otlp_test_span", task_id = "t-1");
        hwsched_telemetry::set_parent(&span, tp);
        let _e = span.enter();
        tracing::info!("inside");
        hwsched_telemetry::traceparent(&span).expect("an exported span has a traceparent")
    };
    // what a message sent from the span carries: the same trace, the span's own id
    let parts: Vec<&str> = sent_on.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[1], parts[3]), (4, "00", &tp[3..35], "01"), "{sent_on}");
    assert_ne!(parts[2], &tp[36..52], "a span id of its own");
    drop(guard); // flushes

    let body = rx.recv_timeout(Duration::from_secs(10)).expect("collector received a request");
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("POST /v1/traces"), "{text}");
    assert!(text.contains("otlp_test_span"), "span name in the payload");
    assert!(text.contains("hwsched-test"), "service name in the payload");
    // the producer's trace id (bytes) is the span's trace id
    let bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect()
    };
    let has = |hex: &str| body.windows(hex.len() / 2).any(|w| w == bytes(hex).as_slice());
    assert!(has(&tp[3..35]), "trace id propagated");
    assert!(has(&tp[36..52]), "the given parent is the span's parent");
    assert!(has(parts[2]), "the traceparent sent on names the exported span");
}
