//! What can go wrong with a bundle, and whose fault it is.

use std::path::PathBuf;

/// A bundle operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A local file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `.hwschedignore` file does not parse.
    #[error("{}: {why}", path.display())]
    Ignore {
        /// The ignore file.
        path: PathBuf,
        /// The parser's message.
        why: String,
    },
    /// Packing: a file that cannot go in a bundle (a symlink pointing out of the tree, a fifo, a device).
    #[error("{}: {why}", path.display())]
    Unpackable {
        /// The file, relative to the bundled directory.
        path: PathBuf,
        /// Why it cannot be bundled.
        why: String,
    },
    /// Unpacking: an archive entry that would reach outside the target or is not a plain file, directory or symlink.
    #[error("hostile bundle: entry {entry:?} {why}")]
    Hostile {
        /// The entry's path as the archive names it.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// The archive is not a readable tar.gz.
    #[error("corrupt bundle: {0}")]
    Corrupt(String),
    /// Over a limit: the bundle's size, its unpacked bytes or its entries.
    #[error("bundle too large: {what} exceeds this worker's limit of {limit}")]
    TooLarge {
        /// What exceeded it.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The bytes stored under a digest do not have that digest.
    #[error("bundle {expected} is corrupt: its bytes have digest {actual}")]
    DigestMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// No bundle with this digest in the store (never uploaded, or expired).
    #[error("bundle {0} is not in the bundle store (not uploaded, or expired: upload it again)")]
    Missing(String),
    /// Not a `sha256:<64 hex>` digest.
    #[error("{0:?} is not a bundle digest (\"sha256:\" and 64 lower-case hex digits)")]
    InvalidDigest(String),
    /// The Object Store could not be reached or refused the operation (transient).
    #[error("bundle store: {op}: {why}")]
    Store {
        /// What was being done.
        op: String,
        /// The server's or client's message.
        why: String,
    },
}

impl BundleError {
    /// Whether the task's own input is at fault (missing, corrupt, oversized or
    /// hostile bundle): running it elsewhere would fail the same way.
    /// Local disk trouble and an unreachable store are the worker's, not the task's.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            BundleError::Hostile { .. }
                | BundleError::Corrupt(_)
                | BundleError::TooLarge { .. }
                | BundleError::DigestMismatch { .. }
                | BundleError::Missing(_)
                | BundleError::InvalidDigest(_)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |source| BundleError::Io { path, source }
    }

    pub(crate) fn hostile(entry: impl std::fmt::Display, why: impl Into<String>) -> BundleError {
        BundleError::Hostile { entry: entry.to_string().chars().take(200).collect(), why: why.into() }
    }
}
