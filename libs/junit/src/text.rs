//! Small text helpers shared by the parser and the writer.

use std::borrow::Cow;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first line of `s` that holds more than whitespace, trimmed, at most `max` bytes.
pub fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    truncate_on_char_boundary(line, max).to_owned()
}

/// Whether XML 1.0 allows `c` in a document at all (escaped or not).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// `s` without the characters XML 1.0 cannot carry (control characters, U+FFFE, U+FFFF).
pub fn xml_safe(s: &str) -> Cow<'_, str> {
    if s.chars().all(is_xml_char) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(s.chars().filter(|c| is_xml_char(*c)).collect())
    }
}

/// `s` with invalid characters removed and `& < > " '` escaped, for text and attribute values.
pub(crate) fn escape(s: &str) -> String {
    quick_xml::escape::escape(xml_safe(s)).into_owned()
}

/// Like `escape`, and tabs and line breaks as character references, which a
/// parser keeps (a literal one in an attribute value reads back as a space).
pub(crate) fn escape_attr(s: &str) -> String {
    let escaped = escape(s);
    if !escaped.contains(['\t', '\n', '\r']) {
        return escaped;
    }
    escaped.replace('\t', "&#9;").replace('\n', "&#10;").replace('\r', "&#13;")
}

#[cfg(test)]
mod tests {
    use super::{escape, escape_attr, first_line, truncate_on_char_boundary, xml_safe};

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate_on_char_boundary("héllo", 2), "h");
        assert_eq!(truncate_on_char_boundary("héllo", 3), "hé");
        assert_eq!(truncate_on_char_boundary("abc", 10), "abc");
        assert_eq!(truncate_on_char_boundary("日本", 4), "日");
    }

    #[test]
    fn first_line_skips_blank_lines_and_trims() {
        assert_eq!(first_line("\n   \r\n  assert 1 == 2  \r\nmore", 512), "assert 1 == 2");
        assert_eq!(first_line("", 512), "");
        assert_eq!(first_line(&"x".repeat(600), 512).len(), 512);
    }

    #[test]
    fn invalid_xml_characters_are_removed_and_markup_escaped() {
        assert_eq!(xml_safe("a\u{0}b\u{1b}[31mc\u{FFFF}"), "ab[31mc");
        assert_eq!(xml_safe("tab\tok\n"), "tab\tok\n");
        assert_eq!(escape("<a href=\"x\">&'</a>\u{7}"), "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;");
        assert_eq!(escape_attr("a\tb\r\nc<"), "a&#9;b&#13;&#10;c&lt;");
    }
}
