//! Configuration values an operator types: score weights, NATS URLs and the
//! redaction of credentials in them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = text.parse::<hwsched_placement::Weights>();
    let shown = hwsched_config::redact_url(text);
    let cfg = hwsched_config::NatsConfig::new(text);
    let _ = cfg.validate();
    // a password a URL parser finds in any of the comma-separated URLs is not shown
    let shown_parts: Vec<&str> = shown.split(',').collect();
    let parts: Vec<&str> = text.split(',').collect();
    assert_eq!(parts.len(), shown_parts.len(), "{shown:?}");
    for (part, shown) in parts.iter().zip(shown_parts) {
        let Ok(u) = url::Url::parse(part.trim()) else { continue };
        let Some(pw) = u.password() else { continue };
        // a URL parser reading what is shown finds no password, or another one
        if let Ok(s) = url::Url::parse(shown.trim()) {
            assert_ne!(s.password(), Some(pw), "{shown:?} still carries the password");
        }
        // nor is it there verbatim. The parser drops tabs and newlines and gives the
        // password percent-encoded, so the text is compared as the parser reads it,
        // only for a password without '%', and only where it cannot also be part
        // of what may be shown (host, path, scheme) or appear twice
        let parsed = |t: &str| t.replace(['\t', '\n', '\r'], "");
        let (part, shown) = (parsed(part), parsed(shown));
        let visible = format!("{}{}{}", u.scheme(), u.host_str().unwrap_or(""), u.path());
        if pw.len() > 3 && !pw.contains('%') && !visible.contains(pw) && !pw.contains("***") && part.matches(pw).count() == 1 {
            assert!(!shown.contains(pw), "{shown:?} shows the password {pw:?}");
        }
    }
});
