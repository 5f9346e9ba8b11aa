//! An alert rules file (YAML) as the alerting service loads it on start and
//! on every reload: rules or an error naming the rule and field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = hwsched_alerting::rules::parse(text);
});
