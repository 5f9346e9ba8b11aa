//! The files an attempt brings back: those below its working directory that
//! match its `outputs` globs, and its JUnit report(s), stored in the Object
//! Store `hws_artifacts` as `<task_id>/<attempt>/<path>` with a SHA-256
//! digest computed while they stream.
//!
//! What a glob can reach: regular files below the working directory, found by
//! a walk that never follows a symbolic link: a symlink that matches is
//! skipped with a note, whether it points inside the sandbox or out of it, and
//! a directory reached only through a symlink is never entered. Each file is
//! opened with `O_NOFOLLOW` and checked again to be a regular file, so a link
//! swapped in after the walk is refused too. When tasks run as another user
//! (`--run-as`), a file with more than one hard link is skipped: it could be a
//! link to a file only the monitor may read. Caps per file, per attempt and on
//! the file count bound what is stored; what is left out is named in a note.

use std::{
    collections::BTreeMap,
    path::{Component, Path, PathBuf},
};

use async_nats::jetstream::object_store::ObjectStore;
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use hwsched_bus::objects;
use hwsched_proto::v1::Artifact;
use tokio::io::AsyncReadExt;

/// Most directory entries one attempt's walk looks at.
pub const MAX_VISITS: usize = 200_000;

/// What is stored at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes per file.
    pub max_file: u64,
    /// Bytes per attempt.
    pub max_total: u64,
    /// Files per attempt.
    pub max_files: usize,
    /// Skip files with several hard links (tasks run as another user).
    pub refuse_hard_links: bool,
}

/// A file to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Relative to the working directory, '/'-separated.
    pub path: String,
    /// Where it is.
    pub abs: PathBuf,
    /// Matched the JUnit pattern.
    pub junit: bool,
}

/// The patterns of one task.
struct Patterns {
    outputs: GlobSet,
    junit: GlobSet,
    roots: Vec<PathBuf>,
}

fn glob(p: &str) -> Result<Glob, globset::Error> {
    // `*` stays within a directory; `**` crosses them
    GlobBuilder::new(p).literal_separator(true).backslash_escape(true).build()
}

impl Patterns {
    fn new(outputs: &[String], junit: &str, notes: &mut Vec<String>) -> Self {
        let mut roots = Vec::new();
        let mut set = |pats: &[&str], what: &str| {
            let mut b = GlobSetBuilder::new();
            for p in pats {
                match glob(p) {
                    Ok(g) => {
                        b.add(g);
                        roots.push(literal_prefix(p));
                    }
                    Err(e) => notes.push(format!("{what} {p:?} is not a valid glob: {e}")),
                }
            }
            b.build().unwrap_or_else(|_| GlobSet::empty())
        };
        let outs: Vec<&str> = outputs.iter().map(String::as_str).collect();
        let outputs = set(&outs, "outputs");
        let junit = if junit.is_empty() { GlobSet::empty() } else { set(&[junit], "junit") };
        roots.sort();
        roots.dedup();
        Self { outputs, junit, roots }
    }
}

/// The directories of `pattern` before its first glob character ("out/**/*.png" -> "out").
fn literal_prefix(pattern: &str) -> PathBuf {
    let parts: Vec<&str> = pattern.split('/').collect();
    let literal = parts.iter().take_while(|c| !c.contains(['*', '?', '[', '{', '\\'])).count();
    // a fully literal pattern names a file: walk its directory
    let dirs = literal.min(parts.len().saturating_sub(1));
    parts[..dirs].iter().filter(|c| !c.is_empty() && **c != ".").collect()
}

/// Finds the files to store (sorted by path) and notes on what was left out.
/// Blocking: run it off the async workers.
pub fn find(workdir: &Path, outputs: &[String], junit: &str, limits: Limits) -> (Vec<Found>, Vec<String>) {
    let mut notes = Vec::new();
    let pats = Patterns::new(outputs, junit, &mut notes);
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut visits = 0usize;
    for root in walk_roots(workdir, &pats.roots) {
        let walk = walkdir::WalkDir::new(&root).follow_links(false).follow_root_links(false);
        for entry in walk {
            visits += 1;
            if visits > MAX_VISITS {
                notes.push(format!("stopped looking after {MAX_VISITS} directory entries"));
                return (finish(found, limits, &mut notes), notes);
            }
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    notes.push(format!("not readable: {e}"));
                    continue;
                }
            };
            let Some(rel) = relative(workdir, entry.path()) else { continue };
            let (is_out, is_junit) = (pats.outputs.is_match(&rel), pats.junit.is_match(&rel));
            if !(is_out || is_junit) || found.contains_key(&rel) {
                continue;
            }
            let ft = entry.file_type();
            if ft.is_symlink() {
                notes.push(format!("{rel} skipped: a symbolic link (never followed)"));
            } else if ft.is_file() {
                if let Some(why) = refuse(&entry, limits) {
                    notes.push(format!("{rel} skipped: {why}"));
                } else {
                    found.insert(rel.clone(), Found { path: rel, abs: entry.path().to_path_buf(), junit: is_junit });
                }
            } else if !ft.is_dir() {
                notes.push(format!("{rel} skipped: not a regular file"));
            }
        }
    }
    (finish(found, limits, &mut notes), notes)
}

/// The directories to walk: no symlink on the way, none below another.
fn walk_roots(workdir: &Path, roots: &[PathBuf]) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = roots.iter().map(|r| safe_root(workdir, r)).collect();
    all.sort();
    let mut kept: Vec<PathBuf> = Vec::new();
    for r in all {
        if !kept.iter().any(|k| r.starts_with(k)) {
            kept.push(r);
        }
    }
    kept
}

/// `root` below `workdir` if no directory on the way is a symlink, else `workdir` itself
/// (whose walk reports the link instead of going through it).
fn safe_root(workdir: &Path, root: &Path) -> PathBuf {
    let mut p = workdir.to_path_buf();
    for c in root.components() {
        let Component::Normal(c) = c else { return workdir.to_path_buf() };
        p.push(c);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return workdir.to_path_buf(),
            // nothing there: the walk finds nothing
            Err(_) => return p,
        }
    }
    p
}

fn relative(workdir: &Path, p: &Path) -> Option<String> {
    let rel = p.strip_prefix(workdir).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let s = parts?.join("/");
    (!s.is_empty()).then_some(s)
}

fn refuse(entry: &walkdir::DirEntry, limits: Limits) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = match entry.metadata() {
        Ok(m) => m,
        Err(e) => return Some(format!("not readable: {e}")),
    };
    if m.len() > limits.max_file {
        return Some(format!("{} bytes, over the {}-byte limit per file", m.len(), limits.max_file));
    }
    if limits.refuse_hard_links && m.nlink() > 1 {
        return Some("has several hard links (refused when tasks run as another user)".into());
    }
    None
}

fn finish(found: BTreeMap<String, Found>, limits: Limits, notes: &mut Vec<String>) -> Vec<Found> {
    let n = found.len();
    if n > limits.max_files {
        notes.push(format!(
            "{} more matching files not stored: at most {} per attempt",
            n - limits.max_files,
            limits.max_files
        ));
    }
    found.into_values().take(limits.max_files).collect()
}

/// Uploads `found` in order onto `stored` (kept when the caller's timeout
/// stops it midway); what could not be stored goes to `notes`.
pub async fn upload(
    store: &ObjectStore,
    task_id: &str,
    attempt: u32,
    found: &[Found],
    limits: Limits,
    stored: &mut Vec<Artifact>,
    notes: &mut Vec<String>,
) {
    let mut total = 0u64;
    for f in found {
        match upload_one(store, task_id, attempt, f, limits, total).await {
            Ok(a) => {
                total += a.size;
                stored.push(a);
            }
            Err(why) => notes.push(format!("{} not stored: {why}", f.path)),
        }
    }
}

async fn upload_one(
    store: &ObjectStore,
    task_id: &str,
    attempt: u32,
    f: &Found,
    limits: Limits,
    total: u64,
) -> Result<Artifact, String> {
    let file = open_regular(&f.abs).await?;
    let size = file.metadata().await.map_err(|e| e.to_string())?.len();
    if size > limits.max_file {
        return Err(format!("{size} bytes, over the {}-byte limit per file", limits.max_file));
    }
    if total + size > limits.max_total {
        return Err(format!("the attempt's artifacts would exceed {} bytes", limits.max_total));
    }
    let object = objects::artifact_object(task_id, attempt, &f.path);
    let mut reader = objects::Hashing::new(file.take(size));
    store.put(object.as_str(), &mut reader).await.map_err(|e| format!("store: {e}"))?;
    let size = reader.bytes();
    Ok(Artifact { path: f.path.clone(), size, digest: reader.digest(), object, junit: f.junit })
}

/// Opens `p` for reading if it is a regular file, never through a symlink and never blocking on a FIFO.
async fn open_regular(p: &Path) -> Result<tokio::fs::File, String> {
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(p)
        .await
        .map_err(|e| format!("cannot open: {e}"))?;
    let m = file.metadata().await.map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    const LIMITS: Limits = Limits { max_file: 1000, max_total: 10_000, max_files: 10, refuse_hard_links: true };

    fn paths(found: &[Found]) -> Vec<(&str, bool)> {
        found.iter().map(|f| (f.path.as_str(), f.junit)).collect()
    }

    #[test]
    fn globs_match_below_the_workdir_and_symlinks_are_never_followed() {
        let d = tempfile::tempdir().expect("dir");
        let w = d.path();
        std::fs::create_dir_all(w.join("out/deep/er")).expect("dirs");
        std::fs::create_dir_all(w.join("reports")).expect("dirs");
        for f in ["report.xml", "out/a.png", "out/deep/er/b.png", "out/c.txt", "reports/r1.xml"] {
            std::fs::write(w.join(f), "x").expect("write");
        }
        std::fs::write(w.join("big.bin"), vec![0u8; 2000]).expect("write");
        symlink("/etc/passwd", w.join("out.txt")).expect("link");
        symlink(w.join("report.xml"), w.join("out/inside.png")).expect("link");
        symlink("/etc", w.join("etc")).expect("link");
        let outputs: Vec<String> = ["report.xml", "out/**/*.png", "out.txt", "big.bin", "etc/*", "missing/*.x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (found, notes) = find(w, &outputs, "reports/*.xml", LIMITS);
        assert_eq!(
            paths(&found),
            vec![("out/a.png", false), ("out/deep/er/b.png", false), ("report.xml", false), ("reports/r1.xml", true)]
        );
        let joined = notes.join("\n");
        assert!(joined.contains("out.txt skipped: a symbolic link"), "{joined}");
        assert!(joined.contains("out/inside.png skipped: a symbolic link"), "{joined}");
        assert!(joined.contains("big.bin skipped: 2000 bytes"), "{joined}");
        assert!(!joined.contains("passwd") && !found.iter().any(|f| f.path.starts_with("etc/")), "{joined}");
    }

    #[test]
    fn hard_links_the_count_cap_and_bad_globs_are_noted() {
        let d = tempfile::tempdir().expect("dir");
        let w = d.path();
        for i in 0..12 {
            std::fs::write(w.join(format!("f{i:02}.log")), "x").expect("write");
        }
        std::fs::hard_link(w.join("f00.log"), w.join("linked.dat")).expect("link");
        let outputs = vec!["*.log".to_string(), "linked.dat".into(), "a[".into()];
        let (found, notes) = find(w, &outputs, "", LIMITS);
        assert_eq!(found.len(), 10);
        let joined = notes.join("\n");
        assert!(joined.contains("not a valid glob"), "{joined}");
        assert!(joined.contains("linked.dat skipped: has several hard links"), "{joined}");
        assert!(joined.contains("more matching files not stored: at most 10"), "{joined}");
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(literal_prefix("out/**/*.png"), PathBuf::from("out"));
        assert_eq!(literal_prefix("report.xml"), PathBuf::from(""));
        assert_eq!(literal_prefix("a/b/c.xml"), PathBuf::from("a/b"));
        assert_eq!(literal_prefix("./x/*.xml"), PathBuf::from("x"));
    }
}
