//! The path rules packing and unpacking share: entry paths are relative and
//! plain; a symlink's target is relative, may go up only at its start, and
//! never above the bundle's root.

use std::path::{Component, Path, PathBuf};

/// `p` as plain relative components (`.` dropped); why not, when it is
/// absolute, has `..`, or is empty.
pub(crate) fn entry_path(p: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a \"..\" component"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

/// Whether a symlink at `link` (relative to the root) pointing to `target`
/// stays inside the root. The target must be relative, and its `..`
/// components may only lead (`../../lib/x`), at most as many as `link` has
/// parents. Because every other symlink obeys the same rule and the link's
/// parents are real directories, following any chain of them stays inside.
pub(crate) fn symlink_target(link: &Path, target: &Path) -> Result<(), &'static str> {
    if target.as_os_str().is_empty() {
        return Err("is a symlink with an empty target");
    }
    let depth = link.components().filter(|c| matches!(c, Component::Normal(_))).count().saturating_sub(1);
    let mut ups = 0usize;
    let mut descended = false;
    for c in target.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err("is a symlink to an absolute path"),
            Component::CurDir => {}
            Component::ParentDir if descended => return Err("is a symlink whose target has \"..\" after a name"),
            Component::ParentDir => ups += 1,
            Component::Normal(_) => descended = true,
        }
    }
    if ups > depth {
        return Err("is a symlink pointing outside the bundle");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_relative_and_plain() {
        assert_eq!(entry_path(Path::new("./a/./b")), Ok(PathBuf::from("a/b")));
        assert!(entry_path(Path::new("/etc/passwd")).is_err());
        assert!(entry_path(Path::new("a/../../x")).is_err());
        assert_eq!(entry_path(Path::new(".")), Ok(PathBuf::new()));
    }

    #[test]
    fn symlink_targets_stay_inside() {
        let ok = |l: &str, t: &str| symlink_target(Path::new(l), Path::new(t));
        assert!(ok("a", "b").is_ok());
        assert!(ok("a", ".").is_ok());
        assert!(ok("d/a", "../b").is_ok());
        assert!(ok("d/e/a", "../../lib/x").is_ok());
        assert!(ok("a", "..").is_err());
        assert!(ok("d/a", "../../etc").is_err());
        assert!(ok("a", "/etc").is_err());
        // up after a name could climb out through a symlink: refused
        assert!(ok("d/a", "sub/../..").is_err());
        assert!(ok("a", "").is_err());
    }
}
