use hwsched_proto::v1::TestCase;
use proptest::prelude::*;

use super::parse;
use crate::{JunitError, MAX_CASES, MAX_MESSAGE_BYTES, MAX_REPORT_BYTES};

fn statuses(cases: &[TestCase]) -> Vec<(&str, &str)> {
    cases.iter().map(|c| (c.name.as_str(), c.status.as_str())).collect()
}

#[test]
fn pytest_report() {
    let cases = parse(include_bytes!("../../tests/fixtures/pytest.xml")).expect("parses");
    assert_eq!(
        statuses(&cases),
        [
            ("test_add", "passed"),
            ("test_div[0-1]", "failed"),
            ("test_gpu", "skipped"),
            ("test_open", "error"),
            // pytest-rerunfailures: the reruns failed, the last try passed.
            ("test_flaky", "passed"),
        ]
    );
    let div = &cases[1];
    assert_eq!(div.suite, "pytest");
    assert_eq!(div.classname, "tests.test_math");
    assert_eq!(div.message, "assert 0.5 == 1");
    assert!((div.duration_s - 0.002).abs() < 1e-12);
    assert_eq!(cases[2].message, "no CUDA device");
    assert_eq!(cases[3].message, "failed on setup with \"FileNotFoundError: data.bin\"");
    assert_eq!(cases[4].message, "");
}

#[test]
fn pytest_legacy_root_is_a_testsuite() {
    let cases = parse(include_bytes!("../../tests/fixtures/pytest-legacy.xml")).expect("parses");
    assert_eq!(statuses(&cases), [("test_one", "passed"), ("test_two", "passed")]);
    assert_eq!(cases[0].suite, "pytest");
}

#[test]
fn nextest_report() {
    let cases = parse(include_bytes!("../../tests/fixtures/nextest.xml")).expect("parses");
    assert_eq!(
        statuses(&cases),
        [
            ("score::tests::prefers_fast_worker", "passed"),
            ("score::tests::breaks_ties", "failed"),
            ("score::tests::ignored_one", "skipped"),
            ("roundtrip", "passed"),
        ]
    );
    // No message attribute: the first line of the element text.
    assert_eq!(cases[1].message, "thread 'score::tests::breaks_ties' panicked at libs/placement/src/score.rs:88:9:");
    assert_eq!(cases[3].suite, "hwsched-bus::codec");
}

#[test]
fn jest_report_with_cdata() {
    let cases = parse(include_bytes!("../../tests/fixtures/jest.xml")).expect("parses");
    assert_eq!(
        statuses(&cases),
        [("math utils adds", "passed"), ("math utils divides", "failed"), ("math utils later", "skipped")]
    );
    assert_eq!(cases[1].message, "Error: expect(received).toBe(expected) // Object.is equality");
}

#[test]
fn go_junit_report() {
    let cases = parse(include_bytes!("../../tests/fixtures/go.xml")).expect("parses");
    assert_eq!(
        statuses(&cases),
        [
            ("TestParse", "passed"),
            ("TestParse/empty_input", "failed"),
            ("TestSlow", "skipped"),
            ("[build failed]", "error"),
        ]
    );
    assert_eq!(cases[1].message, "Failed");
    assert_eq!(cases[3].suite, "example.com/broken");
}

#[test]
fn nested_suites_name_the_innermost() {
    let xml = br#"<testsuites><testsuite name="outer"><testsuite name="inner"><testcase name="a"/></testsuite>
        <testcase name="b"/></testsuite><testcase name="c"/></testsuites>"#;
    let cases = parse(xml).expect("parses");
    let suites: Vec<_> = cases.iter().map(|c| c.suite.as_str()).collect();
    assert_eq!(suites, ["inner", "outer", ""]);
}

#[test]
fn error_outranks_failure_and_its_message_wins() {
    let xml = br#"<testsuite><testcase name="t"><failure message="first"/><error message="teardown broke"/>
        <skipped message="late"/></testcase></testsuite>"#;
    let cases = parse(xml).expect("parses");
    assert_eq!(cases[0].status, "error");
    assert_eq!(cases[0].message, "teardown broke");
}

#[test]
fn bad_times_are_zero() {
    let xml = br#"<testsuite><testcase name="a" time="1,234.5"/><testcase name="b" time="NaN"/>
        <testcase name="c" time="-3"/><testcase name="d" time="inf"/><testcase name="e" time=""/>
        <testcase name="f"/><testcase name="g" time=" 2.5 "/><testcase name="h" time="1e400"/></testsuite>"#;
    let times: Vec<f64> = parse(xml).expect("parses").iter().map(|c| c.duration_s).collect();
    assert_eq!(times, [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.5, 0.0]);
}

#[test]
fn long_messages_are_cut_on_a_char_boundary() {
    let long = "é".repeat(400);
    let xml = format!(r#"<testsuite><testcase name="t"><failure message="{long}"/></testcase></testsuite>"#);
    let cases = parse(xml.as_bytes()).expect("parses");
    assert_eq!(cases[0].message.len(), MAX_MESSAGE_BYTES);
    let text =
        format!("<testsuite><testcase name=\"t\"><failure>\n\n{}</failure></testcase></testsuite>", "ü".repeat(5000));
    let cases = parse(text.as_bytes()).expect("parses");
    assert_eq!(cases[0].message.len(), MAX_MESSAGE_BYTES);
}

#[test]
fn other_roots_and_empty_input_are_refused() {
    assert!(matches!(parse(b"<html><body/></html>"), Err(JunitError::NotJunit { root }) if root == "html"));
    assert!(matches!(parse(b""), Err(JunitError::Empty)));
    assert!(matches!(parse(b"   <!-- nothing -->  "), Err(JunitError::Empty)));
    assert!(matches!(parse(b"just words"), Err(JunitError::Empty | JunitError::Xml { .. })));
}

#[test]
fn malformed_xml_is_an_error() {
    for xml in [
        &b"<testsuite><testcase name=\"a\">"[..],
        b"<testsuite><testcase></testsuite>",
        b"<testsuite name=\"x></testsuite>",
        b"<testsuite a=\"1\" a=\"2\"></testsuite>",
        b"<testsuite>&bogus;</testsuite>",
        b"<testsuite>&#0;</testsuite>",
        b"<testsuite><testcase name=\"&nope;\"/></testsuite>",
        b"\xff\xfe<\x00t\x00e\x00s\x00t\x00",
    ] {
        let err = parse(xml).expect_err(&String::from_utf8_lossy(xml));
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn entity_tricks_are_refused_not_expanded() {
    let billion_laughs = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<testsuite><testcase name="&lol3;"><failure>&lol3;</failure></testcase></testsuite>"#;
    assert!(matches!(parse(billion_laughs), Err(JunitError::Dtd)));
    let external = br#"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuite><testcase name="a"><failure>&xxe;</failure></testcase></testsuite>"#;
    assert!(matches!(parse(external), Err(JunitError::Dtd)));
    // Without a DTD an undeclared entity is simply unknown.
    let undeclared = b"<testsuite><testcase name=\"a\"><failure>&xxe;</failure></testcase></testsuite>";
    assert!(matches!(parse(undeclared), Err(JunitError::UnknownEntity { name }) if name == "xxe"));
}

#[test]
fn predefined_and_character_references_resolve() {
    let xml = b"<testsuite><testcase name=\"a&amp;b\"><failure>&lt;x&gt; &#x41;&#66;</failure></testcase></testsuite>";
    let cases = parse(xml).expect("parses");
    assert_eq!(cases[0].name, "a&b");
    assert_eq!(cases[0].message, "<x> AB");
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![b' '; MAX_REPORT_BYTES + 1];
    assert!(matches!(parse(&big), Err(JunitError::TooLarge { .. })));
}

#[test]
fn too_many_cases_is_a_clear_error() {
    let mut xml = String::from("<testsuite>");
    for _ in 0..=MAX_CASES {
        xml.push_str("<testcase/>");
    }
    xml.push_str("</testsuite>");
    let err = parse(xml.as_bytes()).expect_err("over the cap");
    assert!(matches!(err, JunitError::TooManyCases { limit } if limit == MAX_CASES));
    assert_eq!(err.to_string(), format!("report has more than {MAX_CASES} test cases"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn junit_like_fragments_never_panic(parts in proptest::collection::vec(prop_oneof![
        Just("<testsuites>"), Just("</testsuites>"), Just("<testsuite name=\"s\">"), Just("</testsuite>"),
        Just("<testcase name=\"c\" time=\"0.1\">"), Just("<testcase/>"), Just("</testcase>"),
        Just("<failure message=\"m\">"), Just("</failure>"), Just("<error/>"), Just("<skipped/>"),
        Just("<![CDATA[x\ny]]>"), Just("&amp;"), Just("&#1114112;"), Just("text\n"), Just("<!DOCTYPE x>"),
        Just("é"), Just("\u{0}"), Just("<?xml version=\"1.0\"?>"), Just("<!--c-->"),
    ], 0..64)) {
        let xml: String = parts.concat();
        if let Ok(cases) = parse(xml.as_bytes()) {
            for c in &cases {
                prop_assert!(["passed", "failed", "error", "skipped"].contains(&c.status.as_str()));
                prop_assert!(c.message.len() <= MAX_MESSAGE_BYTES);
            }
            // what we read, written back as one report, reads the same
            let cases_out = cases.iter().map(|c| crate::Case { case: c.clone(), ..crate::Case::default() }).collect();
            let suite = crate::Suite { name: "s".into(), properties: vec![], cases: cases_out };
            let again = parse(crate::write("r", &[suite]).as_bytes()).expect("our own report parses");
            let outcome = |c: &TestCase| (c.name.clone(), c.status.clone(), c.message.clone());
            prop_assert_eq!(cases.iter().map(outcome).collect::<Vec<_>>(), again.iter().map(outcome).collect::<Vec<_>>());
        }
    }
}
