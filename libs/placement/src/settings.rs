//! The `field=value,field=value` form shared by the policy settings
//! (`--retry`, `--quarantine`, `--hedge`): split, named, and each value
//! parsed with an error that quotes the part it came from.

use std::str::FromStr;

/// One `field=value` of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field<'a> {
    /// The field's name, trimmed.
    pub name: &'a str,
    value: &'a str,
    part: &'a str,
}

impl Field<'_> {
    /// The value as a number within `lo..=hi`.
    pub fn num(&self, lo: f64, hi: f64) -> Result<f64, String> {
        self.value.parse::<f64>().ok().filter(|x| (lo..=hi).contains(x)).ok_or_else(|| self.invalid())
    }

    /// The value parsed as `T`.
    pub fn parse<T: FromStr>(&self) -> Result<T, String> {
        self.value.parse().map_err(|_| self.invalid())
    }

    /// The error for a field this setting does not have.
    pub fn unknown(&self, setting: &str) -> String {
        format!("unknown {setting} field {:?}", self.name)
    }

    fn invalid(&self) -> String {
        format!("{:?}: not a valid value", self.part)
    }
}

/// The fields of `s` (empty parts skipped); a part without `=` is an error
/// that says what it should be (`shape`, e.g. "field=value").
pub(crate) fn fields<'a>(s: &'a str, shape: &'a str) -> impl Iterator<Item = Result<Field<'a>, String>> + 'a {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(move |part| {
        let (name, value) = part.split_once('=').ok_or_else(|| format!("{part:?} must be {shape}"))?;
        Ok(Field { name: name.trim(), value: value.trim(), part })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_trimmed_named_and_checked() {
        let got: Vec<_> = fields(" a = 1 ,, b=x ", "field=value").collect::<Result<_, _>>().expect("fields");
        assert_eq!(got.iter().map(|f| f.name).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(got[0].num(0.0, 2.0), Ok(1.0));
        assert_eq!(got[0].num(2.0, 3.0), Err("\"a = 1\": not a valid value".into()));
        assert_eq!(got[1].parse::<u32>(), Err("\"b=x\": not a valid value".into()));
        assert_eq!(got[1].unknown("retry"), "unknown retry field \"b\"");
        let bad: Result<Vec<_>, _> = fields("a=1,b", "field=value, or \"off\"").collect();
        assert_eq!(bad, Err("\"b\" must be field=value, or \"off\"".into()));
    }
}
