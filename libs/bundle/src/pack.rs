//! Packs a directory as a deterministic tar.gz, streamed to a temporary file
//! and hashed on the way: entries in byte order of their names, depth first;
//! mtime 0, uid/gid 0, no owner names; files 0644, or 0755 when the owner may
//! execute; directories 0755; a fixed gzip header (no name, mtime 0, OS
//! "unknown") at a fixed level. So the same tree gives the same digest on any
//! machine running the same hwsched (another compressor version could change
//! the bytes; that costs one upload, never a wrong tree).
//!
//! `.hwschedignore` files (gitignore syntax, at any level, applying below
//! their directory) leave paths out. `.gitignore` is NOT read: what a test
//! needs is often ignored by git (generated fixtures, built extensions), and a
//! silent difference between the checkout and the bundle is harder to debug
//! than a few extra bytes; copy the lines that matter into `.hwschedignore`.
//!
//! A symlink is kept when its target is relative and stays inside the tree
//! (`..` only leading); one pointing out, and fifos, sockets and devices, are
//! refused with an error naming the file.

use std::{
    ffi::OsString,
    fs::File,
    io::{BufWriter, Read, Write},
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use flate2::{Compression, GzBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tar::{EntryType, Header};

use crate::{paths, BundleError, DigestWriter};

/// The ignore file read in every directory of a bundled tree.
pub const IGNORE_FILE: &str = ".hwschedignore";
/// The fixed gzip level (fast: bundles cross a LAN, and packing time counts).
const LEVEL: u32 = 1;

/// A packed bundle in a temporary file (removed on drop).
#[derive(Debug)]
pub struct Packed {
    /// `sha256:<hex>` of the archive's bytes.
    pub digest: String,
    /// Size of the archive.
    pub bytes: u64,
    /// Entries in it (files, directories, symlinks).
    pub entries: u64,
    /// The archive.
    pub path: tempfile::TempPath,
}

/// Packs `dir` into a temporary file in `tmp_dir` (the system's when `None`).
pub fn pack(dir: &Path, tmp_dir: Option<&Path>) -> Result<Packed, BundleError> {
    let meta = std::fs::metadata(dir).map_err(BundleError::io(dir))?;
    if !meta.is_dir() {
        return Err(BundleError::Unpackable { path: dir.into(), why: "is not a directory".into() });
    }
    let tmp = match tmp_dir {
        Some(d) => tempfile::NamedTempFile::new_in(d),
        None => tempfile::NamedTempFile::new(),
    }
    .map_err(BundleError::io(tmp_dir.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir)))?;
    let (file, path) = tmp.into_parts();
    let tmp_path = path.to_path_buf();
    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(DigestWriter::new(BufWriter::new(file)), Compression::new(LEVEL));
    let mut walker = Walker { root: dir.to_path_buf(), tar: tar::Builder::new(gz), ignores: Vec::new(), entries: 0 };
    walker.dir(Path::new(""))?;
    let entries = walker.entries;
    let io = BundleError::io(&tmp_path);
    let done = walker.tar.into_inner().and_then(|gz| gz.finish());
    let (buf, digest, bytes) = done.map_err(io)?.finish();
    buf.into_inner().map_err(|e| BundleError::Io { path: tmp_path, source: e.into_error() })?;
    Ok(Packed { digest, bytes, entries, path })
}

struct Walker<W: Write> {
    root: PathBuf,
    tar: tar::Builder<W>,
    /// The ignore files of the directories being walked, outermost first.
    ignores: Vec<Gitignore>,
    entries: u64,
}

impl<W: Write> Walker<W> {
    fn dir(&mut self, rel: &Path) -> Result<(), BundleError> {
        let abs = self.root.join(rel);
        let pushed = self.load_ignore(&abs)?;
        let mut names: Vec<OsString> = std::fs::read_dir(&abs)
            .map_err(BundleError::io(&abs))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(BundleError::io(&abs))?;
        names.sort();
        for name in names {
            let (rel_child, abs_child) = (rel.join(&name), abs.join(&name));
            let meta = std::fs::symlink_metadata(&abs_child).map_err(BundleError::io(&abs_child))?;
            if self.ignored(&abs_child, meta.is_dir()) {
                continue;
            }
            self.entry(&rel_child, &abs_child, &meta)?;
        }
        if pushed {
            self.ignores.pop();
        }
        Ok(())
    }

    fn entry(&mut self, rel: &Path, abs: &Path, meta: &std::fs::Metadata) -> Result<(), BundleError> {
        let ft = meta.file_type();
        let unpackable = |why: &str| BundleError::Unpackable { path: rel.into(), why: why.into() };
        self.entries += 1;
        let io = BundleError::io(abs);
        if ft.is_dir() {
            let mut h = header(EntryType::Directory, 0o755, 0);
            self.tar.append_data(&mut h, rel, std::io::empty()).map_err(io)?;
            self.dir(rel)
        } else if ft.is_file() {
            let mode = if meta.permissions().mode() & 0o100 != 0 { 0o755 } else { 0o644 };
            let mut h = header(EntryType::Regular, mode, meta.len());
            let f = File::open(abs).map_err(BundleError::io(abs))?;
            let exact = Exact { inner: f.take(meta.len()), left: meta.len() };
            self.tar.append_data(&mut h, rel, exact).map_err(io)
        } else if ft.is_symlink() {
            let target = std::fs::read_link(abs).map_err(BundleError::io(abs))?;
            paths::symlink_target(rel, &target)
                .map_err(|why| unpackable(&format!("{why} ({}); a bundle stays inside its tree", target.display())))?;
            let mut h = header(EntryType::Symlink, 0o777, 0);
            self.tar.append_link(&mut h, rel, &target).map_err(io)
        } else if ft.is_fifo() {
            Err(unpackable("is a fifo: only files, directories and symlinks can be bundled"))
        } else if ft.is_socket() {
            Err(unpackable("is a socket: only files, directories and symlinks can be bundled"))
        } else {
            Err(unpackable("is a device: only files, directories and symlinks can be bundled"))
        }
    }

    /// Reads `dir/.hwschedignore` onto the stack; whether there was one.
    fn load_ignore(&mut self, dir: &Path) -> Result<bool, BundleError> {
        let file = dir.join(IGNORE_FILE);
        if !std::fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
            return Ok(false);
        }
        let mut b = GitignoreBuilder::new(dir);
        if let Some(e) = b.add(&file) {
            return Err(BundleError::Ignore { path: file, why: e.to_string() });
        }
        let g = b.build().map_err(|e| BundleError::Ignore { path: file, why: e.to_string() })?;
        self.ignores.push(g);
        Ok(true)
    }

    /// The innermost ignore file that has an opinion decides (`!pattern` re-includes).
    fn ignored(&self, abs: &Path, is_dir: bool) -> bool {
        for g in self.ignores.iter().rev() {
            let m = g.matched(abs, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Reads exactly `left` bytes, failing when the file shrank while it was packed.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while it was packed"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tree(root: &Path) {
        std::fs::create_dir_all(root.join("src/pkg")).expect("mkdir");
        std::fs::write(root.join("src/pkg/test_a.py"), "def test_a():\n    pass\n").expect("write");
        std::fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").expect("write");
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).expect("chmod");
        std::fs::create_dir(root.join("empty")).expect("mkdir");
        symlink("src/pkg/test_a.py", root.join("link.py")).expect("symlink");
    }

    fn names(p: &Path) -> Vec<String> {
        let f = File::open(p).expect("open");
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        a.entries().expect("entries").map(|e| e.expect("entry").path().expect("path").display().to_string()).collect()
    }

    #[test]
    fn the_same_tree_gives_the_same_digest_whatever_its_times_and_modes() {
        let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        tree(a.path());
        // the second copy: created in another order, other mtimes, other group/other bits
        std::fs::create_dir_all(b.path().join("src/pkg")).expect("mkdir");
        std::fs::write(b.path().join("src/pkg/test_a.py"), "stale").expect("write");
        tree(b.path());
        std::fs::set_permissions(b.path().join("run.sh"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(b.path().join("src/pkg/test_a.py"))
            .expect("open")
            .set_modified(old)
            .expect("mtime");
        let (pa, pb) = (pack(a.path(), None).expect("pack a"), pack(b.path(), None).expect("pack b"));
        assert_eq!(pa.digest, pb.digest);
        assert_eq!(pa.entries, 6);
        assert_eq!(names(&pa.path), ["empty", "link.py", "run.sh", "src", "src/pkg", "src/pkg/test_a.py"]);
        // and a changed byte changes it
        std::fs::write(b.path().join("run.sh"), "#!/bin/sh\necho ho\n").expect("write");
        assert_ne!(pack(b.path(), None).expect("pack").digest, pa.digest);
    }

    #[test]
    fn hwschedignore_applies_at_every_level_and_gitignore_does_not() {
        let d = tempfile::tempdir().expect("tmp");
        tree(d.path());
        std::fs::write(d.path().join(IGNORE_FILE), "*.log\nbuild/\n").expect("write");
        std::fs::write(d.path().join("src").join(IGNORE_FILE), "pkg/\n!keep.log\n").expect("write");
        std::fs::write(d.path().join(".gitignore"), "run.sh\n").expect("write");
        std::fs::create_dir(d.path().join("build")).expect("mkdir");
        std::fs::write(d.path().join("build/out.o"), "x").expect("write");
        std::fs::write(d.path().join("a.log"), "x").expect("write");
        std::fs::write(d.path().join("src/keep.log"), "x").expect("write");
        let p = pack(d.path(), None).expect("pack");
        let n = names(&p.path);
        assert!(!n.iter().any(|n| n.starts_with("build") || n == "a.log" || n.starts_with("src/pkg")), "{n:?}");
        assert!(n.contains(&"src/keep.log".to_string()) && n.contains(&"run.sh".to_string()), "{n:?}");
        assert!(n.contains(&".hwschedignore".to_string()), "{n:?}");
    }

    #[test]
    fn outward_symlinks_and_fifos_are_refused_naming_the_file() {
        let d = tempfile::tempdir().expect("tmp");
        tree(d.path());
        symlink("../../etc/passwd", d.path().join("src/escape")).expect("symlink");
        let e = pack(d.path(), None).expect_err("refused").to_string();
        assert!(e.contains("src/escape") && e.contains("outside"), "{e}");
        std::fs::remove_file(d.path().join("src/escape")).expect("rm");
        symlink("/etc/passwd", d.path().join("abs")).expect("symlink");
        let e = pack(d.path(), None).expect_err("refused").to_string();
        assert!(e.contains("abs") && e.contains("absolute"), "{e}");
        std::fs::remove_file(d.path().join("abs")).expect("rm");
        nix::unistd::mkfifo(&d.path().join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let e = pack(d.path(), None).expect_err("refused").to_string();
        assert!(e.contains("pipe") && e.contains("fifo"), "{e}");
    }
}
