//! Shipping the code under test: pack a directory as a content-addressed
//! bundle and upload it to the Object Store unless its digest is there
//! already; a task then names it in `TaskRequest.bundle`.

use std::path::Path;

use hwsched_bundle::{store, BundleError};

use crate::{Client, Error};

/// A bundle ready for tasks to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `sha256:<hex>`: what `TaskRequest.bundle` takes.
    pub digest: String,
    /// Compressed size.
    pub bytes: u64,
    /// Files, directories and symlinks in it.
    pub entries: u64,
    /// Whether it was uploaded now (false: the store had it already).
    pub uploaded: bool,
}

impl Client {
    /// Packs `dir` (honouring `.hwschedignore`) and uploads it unless stored.
    pub async fn upload_bundle(&self, dir: &Path) -> Result<Bundle, Error> {
        let d = dir.to_path_buf();
        let packed = tokio::task::spawn_blocking(move || hwsched_bundle::pack(&d, None))
            .await
            .map_err(|e| Error::bus("pack the bundle", e))?
            .map_err(Error::Bundle)?;
        let bucket = self.bus.subjects().bundles_bucket();
        let os =
            hwsched_bus::streams::object_store(&self.bus, &bucket).await.map_err(|e| Error::bus("bundle store", e))?;
        let uploaded = store::upload(&os, &packed.digest, &packed.path).await.map_err(Error::Bundle)?;
        Ok(Bundle { digest: packed.digest, bytes: packed.bytes, entries: packed.entries, uploaded })
    }
}

/// Sets `digest` on every task that names no bundle of its own; how many.
pub fn attach(tasks: &mut [hwsched_proto::v1::TaskRequest], digest: &str) -> usize {
    tasks.iter_mut().filter(|t| t.bundle.is_empty()).map(|t| t.bundle = digest.to_string()).count()
}

impl Error {
    /// Whether a bundle error is the user's to fix (an unpackable file, a bad ignore file).
    pub(crate) fn bundle_exit_code(e: &BundleError) -> u8 {
        match e {
            BundleError::Store { .. } => crate::exit::UNAVAILABLE,
            BundleError::Io { .. } | BundleError::Ignore { .. } | BundleError::Unpackable { .. } => crate::exit::USAGE,
            _ => crate::exit::FAILURE,
        }
    }
}
