//! Hostile archives, crafted with raw tar headers, and the limits.

use std::io::Write;

use tar::{EntryType, Header};

use super::*;

const ROOMY: Limits = Limits { max_bytes: 1 << 30, max_entries: 10_000 };

/// A tar.gz of raw entries: (name bytes, kind, link name bytes, data).
fn archive(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    gz.finish().expect("gzip")
}

/// A sandbox `dest` and a sibling `outside` that nothing may reach.
struct Rig {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Rig {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let (dest, outside) = (tmp.path().join("dest"), tmp.path().join("outside"));
        std::fs::create_dir(&dest).expect("mkdir");
        std::fs::create_dir(&outside).expect("mkdir");
        Self { _tmp: tmp, dest, outside }
    }

    fn unpack(&self, bytes: &[u8], limits: Limits) -> Result<Unpacked, BundleError> {
        let r = unpack_from(bytes, &self.dest, limits);
        let left: Vec<_> = std::fs::read_dir(&self.outside).expect("read").collect();
        assert!(left.is_empty(), "something was written outside: {left:?}");
        assert!(!Path::new("/tmp/hwsched-hostile").exists(), "an absolute path was written");
        r
    }

    fn refused(&self, entries: &[(&str, EntryType, &str, &[u8])], needle: &str) {
        let e = self.unpack(&archive(entries), ROOMY).expect_err("refused");
        assert!(e.is_bad_input(), "{e}");
        assert!(e.to_string().contains(needle), "{e} lacks {needle:?}");
    }
}

#[test]
fn a_packed_tree_round_trips_with_modes_and_symlinks() {
    let src = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(src.path().join("d/e")).expect("mkdir");
    std::fs::write(src.path().join("d/e/f.txt"), "hello").expect("write");
    std::fs::write(src.path().join("x.sh"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(src.path().join("x.sh"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::os::unix::fs::symlink("../x.sh", src.path().join("d/run")).expect("symlink");
    let packed = crate::pack(src.path(), None).expect("pack");
    let rig = Rig::new();
    let u = unpack(&packed.path, &rig.dest, ROOMY).expect("unpack");
    assert_eq!(u, Unpacked { bytes: 15, entries: 5 });
    assert_eq!(std::fs::read_to_string(rig.dest.join("d/e/f.txt")).expect("read"), "hello");
    let mode = |p: &str| std::fs::metadata(rig.dest.join(p)).expect("meta").permissions().mode() & 0o7777;
    assert_eq!((mode("x.sh"), mode("d/e/f.txt"), mode("d")), (0o755, 0o644, 0o755));
    assert_eq!(std::fs::read_link(rig.dest.join("d/run")).expect("link"), Path::new("../x.sh"));
}

#[test]
fn paths_outside_are_refused() {
    let rig = Rig::new();
    rig.refused(&[("/tmp/hwsched-hostile", EntryType::Regular, "", b"x")], "absolute");
    let rig = Rig::new();
    rig.refused(&[("../outside/x", EntryType::Regular, "", b"x")], "\"..\"");
    let rig = Rig::new();
    rig.refused(&[("a/../../outside/x", EntryType::Regular, "", b"x")], "\"..\"");
}

#[test]
fn links_devices_and_fifos_are_refused() {
    for (kind, needle) in [
        (EntryType::Link, "hard link"),
        (EntryType::Char, "device"),
        (EntryType::Block, "device"),
        (EntryType::Fifo, "fifo"),
    ] {
        let rig = Rig::new();
        rig.refused(&[("f", EntryType::Regular, "", b"x"), ("h", kind, "f", b"")], needle);
    }
}

#[test]
fn symlinks_pointing_out_are_refused() {
    for target in ["/etc", "..", "../outside", "d/../..", "./../outside"] {
        let rig = Rig::new();
        rig.refused(&[("a", EntryType::Symlink, target, b"")], "symlink");
    }
}

#[test]
fn nothing_is_written_through_a_symlink() {
    // `a -> .` is harmless itself, but `a/x` would write through it
    let rig = Rig::new();
    rig.refused(&[("a", EntryType::Symlink, ".", b""), ("a/x", EntryType::Regular, "", b"x")], "symlink");
    // a symlink into a directory, then a file under it
    let rig = Rig::new();
    rig.refused(
        &[
            ("d", EntryType::Directory, "", b""),
            ("l", EntryType::Symlink, "d", b""),
            ("l/f", EntryType::Regular, "", b"x"),
        ],
        "symlink",
    );
    // a file over a planted symlink is never opened through it
    let rig = Rig::new();
    rig.refused(&[("l", EntryType::Symlink, "t", b""), ("l", EntryType::Regular, "", b"x")], "twice");
    // a directory over a symlink
    let rig = Rig::new();
    rig.refused(&[("l", EntryType::Symlink, "t", b""), ("l", EntryType::Directory, "", b"")], "symlink");
}

#[test]
fn limits_are_checked_before_writing() {
    let rig = Rig::new();
    let many: Vec<(String, EntryType, &str, &[u8])> =
        (0..20).map(|i| (format!("f{i}"), EntryType::Regular, "", &b"x"[..])).collect();
    let many: Vec<_> = many.iter().map(|(n, k, l, d)| (n.as_str(), *k, *l, *d)).collect();
    let e = rig.unpack(&archive(&many), Limits { max_bytes: 1 << 20, max_entries: 10 }).expect_err("too many");
    assert!(matches!(e, BundleError::TooLarge { limit: 10, .. }), "{e}");
    // a gzip bomb: 8 MiB of zeros compress to a few KiB
    let rig = Rig::new();
    let zeros = vec![0u8; 8 << 20];
    let bomb = archive(&[("z", EntryType::Regular, "", &zeros)]);
    assert!(bomb.len() < 64 << 10);
    let e = rig.unpack(&bomb, Limits { max_bytes: 1 << 20, max_entries: 10 }).expect_err("too big");
    assert!(matches!(e, BundleError::TooLarge { .. }) && e.is_bad_input(), "{e}");
    assert!(!rig.dest.join("z").exists(), "nothing written past the limit");
}

#[test]
fn garbage_is_a_corrupt_bundle() {
    let rig = Rig::new();
    let e = rig.unpack(b"this is not a tar.gz at all", ROOMY).expect_err("corrupt");
    assert!(matches!(e, BundleError::Corrupt(_)) && e.is_bad_input(), "{e}");
}
