//! Safe extraction of a bundle into an empty directory: only regular files,
//! directories and symlinks whose target stays inside; no absolute path, no
//! `..`, no hard link, device or fifo; never writing through a symlink (every
//! parent of an entry must be a real directory created here, checked with
//! `symlink_metadata`, and files are created with `O_EXCL`); limits on the
//! unpacked bytes and the number of entries, checked before writing.
//! Modes are normalised like packing: 0644, 0755 for executables and directories.

use std::{
    fs::File,
    io::{BufReader, Read},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tar::EntryType;

use crate::{paths, BundleError};

/// How much one bundle may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sum of the file sizes.
    pub max_bytes: u64,
    /// Files, directories and symlinks.
    pub max_entries: u64,
}

/// What was unpacked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Sum of the file sizes.
    pub bytes: u64,
    /// Entries written.
    pub entries: u64,
}

/// Unpacks the tar.gz `archive` into `dest`, an existing empty directory.
/// On an error `dest` may hold part of the tree (nothing outside it): the caller removes it.
pub fn unpack(archive: &Path, dest: &Path, limits: Limits) -> Result<Unpacked, BundleError> {
    let f = File::open(archive).map_err(BundleError::io(archive))?;
    unpack_from(BufReader::new(f), dest, limits)
}

/// [`unpack`] from a reader of the tar.gz bytes.
pub fn unpack_from(r: impl Read, dest: &Path, limits: Limits) -> Result<Unpacked, BundleError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(r));
    let corrupt = |e: std::io::Error| BundleError::Corrupt(e.to_string());
    let mut done = Unpacked::default();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        done.entries += 1;
        if done.entries > limits.max_entries {
            return Err(BundleError::TooLarge {
                what: format!("more than {} entries", limits.max_entries),
                limit: limits.max_entries,
            });
        }
        let raw = entry.path().map_err(corrupt)?.into_owned();
        let shown = raw.display().to_string();
        let rel = paths::entry_path(&raw).map_err(|why| BundleError::hostile(&shown, why))?;
        let kind = entry.header().entry_type();
        if rel.as_os_str().is_empty() {
            if kind.is_dir() {
                continue;
            }
            return Err(BundleError::hostile(&shown, "names the bundle's root"));
        }
        let path = parent_dirs(dest, &rel, &shown)?;
        match kind {
            EntryType::Directory => make_dir(&path, &shown)?,
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.header().size().map_err(corrupt)?;
                done.bytes = done.bytes.saturating_add(size);
                if done.bytes > limits.max_bytes {
                    return Err(BundleError::TooLarge {
                        what: format!("its unpacked size (more than {} bytes)", limits.max_bytes),
                        limit: limits.max_bytes,
                    });
                }
                let mode = if entry.header().mode().map_err(corrupt)? & 0o100 != 0 { 0o755 } else { 0o644 };
                write_file(&mut entry, &path, mode, size, &shown)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name().map_err(corrupt)?.unwrap_or_default().into_owned();
                paths::symlink_target(&rel, &target)
                    .map_err(|why| BundleError::hostile(&shown, format!("{why} ({})", target.display())))?;
                std::os::unix::fs::symlink(&target, &path)
                    .map_err(|e| BundleError::hostile(&shown, format!("cannot be created: {e}")))?;
            }
            EntryType::Link => return Err(BundleError::hostile(&shown, "is a hard link (not allowed in a bundle)")),
            EntryType::Char | EntryType::Block => return Err(BundleError::hostile(&shown, "is a device file")),
            EntryType::Fifo => return Err(BundleError::hostile(&shown, "is a fifo")),
            other => return Err(BundleError::hostile(&shown, format!("has an unsupported entry type {other:?}"))),
        }
    }
    Ok(done)
}

/// `dest/rel`, once every parent of it below `dest` is a real directory
/// (created when missing); an existing symlink or file on the way is refused.
fn parent_dirs(dest: &Path, rel: &Path, shown: &str) -> Result<PathBuf, BundleError> {
    let mut at = dest.to_path_buf();
    let parents: Vec<_> = rel.components().collect();
    for c in &parents[..parents.len().saturating_sub(1)] {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(BundleError::hostile(shown, "goes through a symlink or a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => make_dir(&at, shown)?,
            Err(e) => return Err(BundleError::io(&at)(e)),
        }
    }
    Ok(dest.join(rel))
}

fn make_dir(path: &Path, shown: &str) -> Result<(), BundleError> {
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(BundleError::hostile(shown, "is a directory over an existing symlink or file")),
        },
        Err(e) => Err(BundleError::io(path)(e)),
    }
}

fn write_file(r: &mut impl Read, path: &Path, mode: u32, size: u64, shown: &str) -> Result<(), BundleError> {
    // O_EXCL: an existing entry (a symlink planted earlier) is never opened
    let mut f = File::options().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            BundleError::hostile(shown, "appears twice")
        } else {
            BundleError::io(path)(e)
        }
    })?;
    let n = std::io::copy(&mut r.take(size), &mut f).map_err(|e| BundleError::Corrupt(format!("{shown}: {e}")))?;
    if n != size {
        return Err(BundleError::Corrupt(format!("{shown}: {n} of {size} bytes")));
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(BundleError::io(path))
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
