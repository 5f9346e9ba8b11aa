//! A suite file as `hwsched submit -f` reads it: the first byte picks YAML or
//! JSON. Any text gets tasks or an error naming where; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let _ = hwsched_client::suite::parse(std::path::Path::new("fuzz"), text, mode & 1 == 1);
});
