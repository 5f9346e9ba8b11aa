//! JUnit XML -> `TestCase`s.
//!
//! One streaming pass over quick-xml events. The dialects differ only in
//! details this parser tolerates: `<testsuites>` or a single `<testsuite>` as
//! the root, suites nested in suites, `time` written as seconds with or without
//! decimals (anything else counts as 0), the failure text in a `message`
//! attribute or in the element (text or CDATA), and extra elements
//! (`<properties>`, `<system-out>`, pytest-rerunfailures' `<rerunFailure>`,
//! nextest's `<flakyFailure>`) that do not change a case's outcome.

use hwsched_proto::v1::TestCase;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};

use crate::text::{first_line, truncate_on_char_boundary, xml_safe};
use crate::{JunitError, MAX_CASES, MAX_MESSAGE_BYTES, MAX_NAME_BYTES, MAX_REPORT_BYTES};

/// Most bytes of an outcome element's text kept to find its first line.
const MAX_OUTCOME_TEXT: usize = 4 * MAX_MESSAGE_BYTES;

/// The outcome of one test case, ordered by how much it tells: an error
/// outranks a failure, which outranks a skip, which outranks a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Passed,
    Skipped,
    Failed,
    Error,
}

impl Status {
    /// The name `TestCase.status` carries.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Passed => "passed",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Error => "error",
        }
    }

    /// The status named by `TestCase.status`; unknown names read as passed.
    pub fn of(name: &str) -> Status {
        match name {
            "skipped" => Status::Skipped,
            "failed" => Status::Failed,
            "error" => Status::Error,
            _ => Status::Passed,
        }
    }

    fn of_element(local_name: &str) -> Option<Status> {
        match local_name {
            "failure" => Some(Status::Failed),
            "error" => Some(Status::Error),
            "skipped" => Some(Status::Skipped),
            _ => None,
        }
    }
}

/// What an open element is, for the parser.
#[derive(Debug)]
enum Frame {
    Suite,
    Case,
    /// The `<failure>`/`<error>`/`<skipped>` that set the case's status; its text is collected.
    Outcome,
    Other,
}

/// The case being read.
#[derive(Debug)]
struct Open {
    case: TestCase,
    status: Status,
    text: String,
}

/// Reads a JUnit XML report into its test cases, in document order.
pub fn parse(xml: &[u8]) -> Result<Vec<TestCase>, JunitError> {
    if xml.len() > MAX_REPORT_BYTES {
        return Err(JunitError::TooLarge { size: xml.len() as u64, limit: MAX_REPORT_BYTES });
    }
    let mut parser = Parser::default();
    let mut reader = Reader::from_reader(xml);
    loop {
        let event =
            reader.read_event().map_err(|source| JunitError::Xml { position: reader.error_position(), source })?;
        if !parser.event(event)? {
            break;
        }
    }
    Ok(parser.cases)
}

#[derive(Debug, Default)]
struct Parser {
    stack: Vec<(Frame, String)>,
    suites: Vec<String>,
    open: Option<Open>,
    cases: Vec<TestCase>,
    root_seen: bool,
}

impl Parser {
    /// Handles one event; false at the end of the document.
    fn event(&mut self, event: Event<'_>) -> Result<bool, JunitError> {
        match event {
            Event::Start(e) => self.start(&e, false)?,
            Event::Empty(e) => self.start(&e, true)?,
            Event::End(_) => self.end()?,
            Event::Text(t) => self.text(&t.xml10_content()),
            Event::CData(t) => self.text(&t.xml10_content()),
            Event::GeneralRef(r) => self.reference(&r)?,
            Event::DocType(_) => return Err(JunitError::Dtd),
            Event::Eof => return self.eof().map(|()| false),
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
        Ok(true)
    }

    fn start(&mut self, e: &BytesStart<'_>, empty: bool) -> Result<(), JunitError> {
        let local = e.local_name();
        let name = local.as_ref();
        if !self.root_seen {
            self.root_seen = true;
            if name != "testsuites" && name != "testsuite" {
                return Err(JunitError::NotJunit { root: truncate_on_char_boundary(name, 64).to_owned() });
            }
        }
        let frame = if name == "testsuite" && self.open.is_none() {
            self.suites.push(attr(e, "name")?.unwrap_or_default());
            Frame::Suite
        } else if name == "testcase" && self.open.is_none() {
            self.open_case(e)?;
            Frame::Case
        } else if self.in_case_directly() {
            self.outcome(e, name)?
        } else {
            Frame::Other
        };
        self.stack.push((frame, name.to_owned()));
        if empty {
            self.end()?;
        }
        Ok(())
    }

    /// Whether the innermost open element is the `<testcase>` itself.
    fn in_case_directly(&self) -> bool {
        matches!(self.stack.last(), Some((Frame::Case, _)))
    }

    fn open_case(&mut self, e: &BytesStart<'_>) -> Result<(), JunitError> {
        if self.cases.len() >= MAX_CASES {
            return Err(JunitError::TooManyCases { limit: MAX_CASES });
        }
        let suite = self.suites.last().map(String::as_str).unwrap_or("");
        let case = TestCase {
            suite: name_field(suite),
            classname: name_field(&attr(e, "classname")?.unwrap_or_default()),
            name: name_field(&attr(e, "name")?.unwrap_or_default()),
            status: String::new(),
            duration_s: seconds(attr(e, "time")?.as_deref()),
            message: String::new(),
        };
        self.open = Some(Open { case, status: Status::Passed, text: String::new() });
        Ok(())
    }

    /// A child of `<testcase>`: an outcome element, or something to skip.
    fn outcome(&mut self, e: &BytesStart<'_>, name: &str) -> Result<Frame, JunitError> {
        let (Some(status), Some(open)) = (Status::of_element(name), self.open.as_mut()) else {
            return Ok(Frame::Other);
        };
        if status <= open.status {
            return Ok(Frame::Other);
        }
        open.status = status;
        open.case.message = first_line(&attr(e, "message")?.unwrap_or_default(), MAX_MESSAGE_BYTES);
        open.text.clear();
        Ok(Frame::Outcome)
    }

    fn end(&mut self) -> Result<(), JunitError> {
        let Some((frame, _)) = self.stack.pop() else {
            return Ok(());
        };
        match frame {
            Frame::Suite => {
                self.suites.pop();
            }
            Frame::Case => {
                if let Some(open) = self.open.take() {
                    let mut case = open.case;
                    case.status = open.status.as_str().to_owned();
                    self.cases.push(case);
                }
            }
            Frame::Outcome => {
                if let Some(open) = self.open.as_mut() {
                    if open.case.message.is_empty() {
                        open.case.message = first_line(&open.text, MAX_MESSAGE_BYTES);
                    }
                    open.text = String::new();
                }
            }
            Frame::Other => {}
        }
        Ok(())
    }

    /// Text anywhere inside the outcome element is its message's candidate.
    fn text(&mut self, s: &str) {
        let collecting = self.stack.iter().any(|(f, _)| matches!(f, Frame::Outcome));
        if let Some(open) = self.open.as_mut().filter(|_| collecting) {
            let room = MAX_OUTCOME_TEXT.saturating_sub(open.text.len());
            open.text.push_str(truncate_on_char_boundary(&xml_safe(s), room));
        }
    }

    /// `&lt;`, `&#10;` and the like; anything else would need a DTD, which is refused.
    fn reference(&mut self, r: &BytesRef<'_>) -> Result<(), JunitError> {
        let unknown = || JunitError::UnknownEntity { name: truncate_on_char_boundary(r, 64).to_owned() };
        if r.is_char_ref() {
            let c = r.resolve_char_ref().ok().flatten().ok_or_else(unknown)?;
            self.text(c.encode_utf8(&mut [0; 4]));
        } else {
            let s = quick_xml::escape::resolve_predefined_entity(r).ok_or_else(unknown)?;
            self.text(s);
        }
        Ok(())
    }

    fn eof(&self) -> Result<(), JunitError> {
        if let Some((_, open)) = self.stack.last() {
            return Err(JunitError::Unclosed { open: open.clone() });
        }
        if !self.root_seen {
            return Err(JunitError::Empty);
        }
        Ok(())
    }
}

/// The value of attribute `key` (local name), with references resolved and
/// characters XML cannot carry (a `&#1;` slips through quick-xml) removed.
fn attr(e: &BytesStart<'_>, key: &str) -> Result<Option<String>, JunitError> {
    for a in e.attributes() {
        let a = a.map_err(|err| JunitError::Xml { position: 0, source: err.into() })?;
        if a.key.local_name().as_ref() == key {
            let value = a.normalized_value(XmlVersion::Implicit1_0).map_err(|err| match err {
                quick_xml::Error::Escape(_) => JunitError::UnknownEntity { name: format!("in attribute {key}") },
                other => JunitError::Xml { position: 0, source: other },
            })?;
            return Ok(Some(xml_safe(&value).into_owned()));
        }
    }
    Ok(None)
}

fn name_field(s: &str) -> String {
    truncate_on_char_boundary(s.trim(), MAX_NAME_BYTES).to_owned()
}

/// Seconds from a `time` attribute: a finite, non-negative number, else 0.
fn seconds(value: Option<&str>) -> f64 {
    value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(0.0)
}

#[cfg(test)]
mod tests;
