//! A JUnit XML report as a task wrote it (read by the recorder and `hwsched
//! submit --junit`): test cases or an error, never a panic; and whatever it
//! yields, written back as one report, parses again to the same outcomes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cases) = hwsched_junit::parse(data) else { return };
    let suite = hwsched_junit::Suite {
        name: "fuzz".into(),
        properties: vec![],
        cases: cases.iter().map(|c| hwsched_junit::Case { case: c.clone(), ..Default::default() }).collect(),
    };
    let xml = hwsched_junit::write("fuzz", &[suite]);
    let again = hwsched_junit::parse(xml.as_bytes()).expect("our own report parses");
    let outcomes = |cs: &[hwsched_proto::v1::TestCase]| cs.iter().map(|c| c.status.clone()).collect::<Vec<_>>();
    assert_eq!(outcomes(&cases), outcomes(&again));
});
