//! Validation of the files a task brings and sends back: its bundle digest,
//! its output globs and its JUnit path. They are read on the worker inside the
//! attempt's sandbox, so each must be a relative path that stays there.

use hwsched_proto::{is_valid_digest, v1::TaskRequest};

/// Most output globs one task may declare.
pub const MAX_OUTPUTS: usize = 32;
/// Longest output glob or JUnit path, in bytes.
const MAX_PATH: usize = 1024;

/// Checks `bundle`, `outputs` and `junit`, reporting each problem through `bad`.
pub(crate) fn check_files(bad: &mut impl FnMut(&str, String), t: &TaskRequest) {
    if !t.bundle.is_empty() && !is_valid_digest(&t.bundle) {
        bad(
            "bundle",
            format!(
                "{:?} must be \"sha256:\" and 64 lower-case hex digits (from `hwsched submit --bundle`)",
                short(&t.bundle)
            ),
        );
    }
    if !t.bundle.is_empty() && !t.workdir.is_empty() {
        if let Err(why) = relative_pattern(&t.workdir) {
            bad(
                "workdir",
                format!("{:?} {why} (with a bundle, the workdir is a directory of the bundle)", short(&t.workdir)),
            );
        }
    }
    if t.outputs.len() > MAX_OUTPUTS {
        bad("outputs", format!("has {} globs, at most {MAX_OUTPUTS}", t.outputs.len()));
    }
    for g in &t.outputs {
        if let Err(why) = relative_pattern(g) {
            bad("outputs", format!("{:?} {why}", short(g)));
        }
    }
    if !t.junit.is_empty() {
        if let Err(why) = relative_pattern(&t.junit) {
            bad("junit", format!("{:?} {why}", short(&t.junit)));
        }
    }
}

/// A path or glob that names files below the working directory only.
pub fn relative_pattern(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.len() > MAX_PATH {
        return Err("is longer than 1024 bytes");
    }
    if p.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    if p.starts_with('/') || p.starts_with('\\') {
        return Err("must be relative to the working directory");
    }
    if p.split(['/', '\\']).any(|c| c == "..") {
        return Err("must not contain \"..\": outputs stay inside the sandbox");
    }
    Ok(())
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(t: &TaskRequest) -> Vec<String> {
        let mut v = Vec::new();
        check_files(&mut |f: &str, r: String| v.push(format!("{f}: {r}")), t);
        v
    }

    #[test]
    fn a_bundle_workdir_is_relative() {
        let mut t = TaskRequest {
            bundle: format!("sha256:{}", "ab".repeat(32)),
            workdir: "/srv/tests".into(),
            ..Default::default()
        };
        assert!(problems(&t).iter().any(|p| p.starts_with("workdir:")), "{:?}", problems(&t));
        t.workdir = "tests/unit".into();
        assert_eq!(problems(&t), Vec::<String>::new());
        t.bundle.clear();
        t.workdir = "/srv/tests".into();
        assert_eq!(problems(&t), Vec::<String>::new(), "without a bundle a workdir is the worker's");
    }

    #[test]
    fn relative_globs_and_a_digest_pass() {
        let t = TaskRequest {
            bundle: format!("sha256:{}", "ab".repeat(32)),
            outputs: vec!["report.xml".into(), "out/**/*.png".into(), "a..b/c".into()],
            junit: "reports/*.xml".into(),
            ..Default::default()
        };
        assert_eq!(problems(&t), Vec::<String>::new());
    }

    #[test]
    fn escaping_paths_bad_digests_and_too_many_globs_are_named() {
        let t = TaskRequest {
            bundle: "sha256:xyz".into(),
            outputs: vec!["/etc/passwd".into(), "../up".into(), "a/../../b".into(), String::new(), "a\nb".into()],
            junit: "..\\x.xml".into(),
            ..Default::default()
        };
        let p = problems(&t);
        assert_eq!(p.iter().filter(|l| l.starts_with("outputs:")).count(), 5, "{p:#?}");
        assert!(p.iter().any(|l| l.starts_with("bundle:")), "{p:#?}");
        assert!(p.iter().any(|l| l.starts_with("junit:")), "{p:#?}");
        let many = TaskRequest { outputs: vec!["x".into(); MAX_OUTPUTS + 1], ..Default::default() };
        assert_eq!(problems(&many), vec![format!("outputs: has {} globs, at most {MAX_OUTPUTS}", MAX_OUTPUTS + 1)]);
    }
}
