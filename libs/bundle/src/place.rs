//! Puts a cached tree into an attempt's sandbox as private copies: the test
//! may change or delete what it was given without touching the cache (hard
//! links would share the inodes, and a test running as the cache's owner, or
//! as root, ignores read-only modes). Files are copied with `std::fs::copy`,
//! which on Linux uses `copy_file_range`: a reflink (no data copied) on
//! btrfs and XFS when the cache and the sandbox share a filesystem, an
//! in-kernel copy elsewhere. Symlinks are recreated, never followed.

use std::path::Path;

use crate::BundleError;

/// Copies the tree at `src` into the existing directory `dest`, chowning
/// everything to `owner` (uid, gid) when given; the number of bytes copied.
pub fn place(src: &Path, dest: &Path, owner: Option<(u32, u32)>) -> Result<u64, BundleError> {
    let mut bytes = 0;
    copy_dir(src, dest, owner, &mut bytes)?;
    Ok(bytes)
}

fn copy_dir(src: &Path, dest: &Path, owner: Option<(u32, u32)>, bytes: &mut u64) -> Result<(), BundleError> {
    for e in std::fs::read_dir(src).map_err(BundleError::io(src))? {
        let e = e.map_err(BundleError::io(src))?;
        let (from, to) = (e.path(), dest.join(e.file_name()));
        let ft = e.file_type().map_err(BundleError::io(&from))?;
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(BundleError::io(&to))?;
            copy_dir(&from, &to, owner, bytes)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&from).map_err(BundleError::io(&from))?;
            std::os::unix::fs::symlink(target, &to).map_err(BundleError::io(&to))?;
        } else if ft.is_file() {
            *bytes += std::fs::copy(&from, &to).map_err(BundleError::io(&to))?;
        } else {
            // unpack never creates anything else: skip whatever else appeared in the cache
            continue;
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&to, Some(uid), Some(gid)).map_err(BundleError::io(&to))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_copied_and_the_copy_is_private() {
        let (src, dest) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
        std::fs::create_dir(src.path().join("d")).expect("mkdir");
        std::fs::write(src.path().join("d/f"), "cached").expect("write");
        std::os::unix::fs::symlink("d/f", src.path().join("l")).expect("symlink");
        assert_eq!(place(src.path(), dest.path(), None).expect("place"), 6);
        assert_eq!(std::fs::read_link(dest.path().join("l")).expect("link"), Path::new("d/f"));
        std::fs::write(dest.path().join("d/f"), "changed by the test").expect("write");
        assert_eq!(std::fs::read_to_string(src.path().join("d/f")).expect("read"), "cached");
    }
}
