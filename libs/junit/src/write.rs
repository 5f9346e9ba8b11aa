//! One JUnit XML document for a whole submission.
//!
//! The shape CI systems read (GitHub/GitLab test reports, Jenkins, junitparser):
//! a `<testsuites>` with totals, one `<testsuite>` per task or reported suite
//! with its `<properties>`, and per case a `<failure>`, `<error>` or `<skipped>`
//! plus optional `<system-out>`/`<system-err>`. All text is escaped and stripped
//! of the characters XML cannot carry, so any output tail can go in.

use std::fmt::Write as _;

use hwsched_proto::v1::TestCase;

use crate::parse::Status;
use crate::text::{escape, escape_attr};

/// One `<testsuite>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Suite {
    pub name: String,
    /// `<property name value>` pairs, in this order (e.g. worker, hardware class).
    pub properties: Vec<(String, String)>,
    pub cases: Vec<Case>,
}

/// One `<testcase>`: the parsed or made-up case, and what to show with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Case {
    pub case: TestCase,
    /// The body of `<failure>`/`<error>`/`<skipped>` (the message when empty).
    pub detail: String,
    pub system_out: String,
    pub system_err: String,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    tests: u64,
    failures: u64,
    errors: u64,
    skipped: u64,
    time: f64,
}

impl Totals {
    fn of<'a>(cases: impl IntoIterator<Item = &'a Case>) -> Totals {
        let mut t = Totals::default();
        for c in cases {
            t.tests += 1;
            t.time += seconds(c.case.duration_s);
            match Status::of(&c.case.status) {
                Status::Failed => t.failures += 1,
                Status::Error => t.errors += 1,
                Status::Skipped => t.skipped += 1,
                Status::Passed => {}
            }
        }
        t
    }

    fn attributes(&self) -> String {
        format!(
            r#"tests="{}" failures="{}" errors="{}" skipped="{}" time="{:.3}""#,
            self.tests, self.failures, self.errors, self.skipped, self.time
        )
    }
}

/// The report: `<testsuites name="{name}">` holding `suites` in order.
pub fn write(name: &str, suites: &[Suite]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let all = Totals::of(suites.iter().flat_map(|s| &s.cases));
    // Writing to a String cannot fail.
    let _ = writeln!(out, r#"<testsuites name="{}" {}>"#, escape_attr(name), all.attributes());
    for suite in suites {
        write_suite(&mut out, suite);
    }
    out.push_str("</testsuites>\n");
    out
}

fn write_suite(out: &mut String, suite: &Suite) {
    let totals = Totals::of(&suite.cases);
    let _ = writeln!(out, r#"  <testsuite name="{}" {}>"#, escape_attr(&suite.name), totals.attributes());
    if !suite.properties.is_empty() {
        out.push_str("    <properties>\n");
        for (name, value) in &suite.properties {
            let _ = writeln!(out, r#"      <property name="{}" value="{}"/>"#, escape_attr(name), escape_attr(value));
        }
        out.push_str("    </properties>\n");
    }
    for case in &suite.cases {
        write_case(out, case);
    }
    out.push_str("  </testsuite>\n");
}

fn write_case(out: &mut String, c: &Case) {
    let _ = write!(
        out,
        r#"    <testcase name="{}" classname="{}" time="{:.3}""#,
        escape_attr(&c.case.name),
        escape_attr(&c.case.classname),
        seconds(c.case.duration_s)
    );
    let element = match Status::of(&c.case.status) {
        Status::Failed => Some("failure"),
        Status::Error => Some("error"),
        Status::Skipped => Some("skipped"),
        Status::Passed => None,
    };
    if element.is_none() && c.system_out.is_empty() && c.system_err.is_empty() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    if let Some(element) = element {
        let detail = if c.detail.is_empty() { &c.case.message } else { &c.detail };
        let _ = writeln!(
            out,
            r#"      <{element} message="{}">{}</{element}>"#,
            escape_attr(&c.case.message),
            escape(detail)
        );
    }
    for (tag, text) in [("system-out", &c.system_out), ("system-err", &c.system_err)] {
        if !text.is_empty() {
            let _ = writeln!(out, "      <{tag}>{}</{tag}>", escape(text));
        }
    }
    out.push_str("    </testcase>\n");
}

/// A duration fit to print: finite and non-negative, else 0.
fn seconds(s: f64) -> f64 {
    if s.is_finite() && s >= 0.0 {
        s
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::TestCase;

    use super::{write, Case, Suite};
    use crate::parse;

    fn case(name: &str, status: &str, message: &str) -> Case {
        Case {
            case: TestCase {
                suite: "s".into(),
                classname: "cls".into(),
                name: name.into(),
                status: status.into(),
                duration_s: 0.25,
                message: message.into(),
            },
            ..Case::default()
        }
    }

    #[test]
    fn report_round_trips_through_the_parser() {
        let mut failed = case("t<2>", "failed", "boom & \"bang\"");
        failed.detail = "line 1\nline 2 \u{1b}[31mred\u{0}".into();
        failed.system_err = "stderr tail ]]> </testcase>".into();
        let suites = [
            Suite {
                name: "task-1".into(),
                properties: vec![("worker".into(), "w-1".into()), ("hardware_class".into(), "h100".into())],
                cases: vec![case("t1", "passed", ""), failed, case("t3", "skipped", "later")],
            },
            Suite { name: "task-2".into(), properties: vec![], cases: vec![case("t4", "error", "oops")] },
        ];
        let xml = write("hwsched", &suites);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"hwsched\" tests=\"4\" failures=\"1\" errors=\"1\" skipped=\"1\" time=\"1.000\">"), "{xml}");
        assert!(xml.contains(r#"<property name="hardware_class" value="h100"/>"#), "{xml}");
        assert!(xml.contains("line 2 [31mred</failure>"), "{xml}");
        let cases = parse(xml.as_bytes()).expect("our own report parses");
        let got: Vec<_> =
            cases.iter().map(|c| (c.suite.as_str(), c.name.as_str(), c.status.as_str(), c.message.as_str())).collect();
        assert_eq!(
            got,
            [
                ("task-1", "t1", "passed", ""),
                ("task-1", "t<2>", "failed", "boom & \"bang\""),
                ("task-1", "t3", "skipped", "later"),
                ("task-2", "t4", "error", "oops"),
            ]
        );
    }

    #[test]
    fn empty_submission_is_a_valid_document() {
        let xml = write("hwsched", &[]);
        assert!(parse(xml.as_bytes()).expect("parses").is_empty());
    }

    #[test]
    fn bad_durations_print_as_zero() {
        let mut c = case("t", "passed", "");
        c.case.duration_s = f64::NAN;
        let xml = write("x", &[Suite { name: "s".into(), properties: vec![], cases: vec![c] }]);
        assert!(xml.contains(r#"time="0.000"/>"#), "{xml}");
    }
}
