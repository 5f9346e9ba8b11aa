//! Moving bundles through the Object Store, named by their digest: upload
//! only what is not there yet; download in a stream to a file, checking the
//! size limit while reading and the digest at the end.

use std::path::Path;

use async_nats::jetstream::object_store::{GetErrorKind, InfoErrorKind, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{hex_of, BundleError};

/// Uploads the archive at `path` as `digest` unless that digest is stored
/// already; whether it was uploaded.
pub async fn upload(store: &ObjectStore, digest: &str, path: &Path) -> Result<bool, BundleError> {
    if exists(store, digest).await? {
        return Ok(false);
    }
    let mut f = tokio::fs::File::open(path).await.map_err(BundleError::io(path))?;
    store
        .put(digest, &mut f)
        .await
        .map_err(|e| BundleError::Store { op: format!("upload {digest}"), why: e.to_string() })?;
    Ok(true)
}

/// Whether `digest` is stored (and not deleted).
pub async fn exists(store: &ObjectStore, digest: &str) -> Result<bool, BundleError> {
    match store.info(digest).await {
        Ok(info) => Ok(!info.deleted),
        Err(e) if e.kind() == InfoErrorKind::NotFound => Ok(false),
        Err(e) => Err(BundleError::Store { op: format!("look up {digest}"), why: e.to_string() }),
    }
}

/// Downloads `digest` into `dest` (created or truncated); its size. Refuses a
/// bundle over `max_bytes` before reading when the store says so, and while
/// reading otherwise; a digest mismatch is [`BundleError::DigestMismatch`].
pub async fn download(store: &ObjectStore, digest: &str, dest: &Path, max_bytes: u64) -> Result<u64, BundleError> {
    if !hwsched_proto::is_valid_digest(digest) {
        return Err(BundleError::InvalidDigest(digest.into()));
    }
    let too_large =
        |size: u64| BundleError::TooLarge { what: format!("bundle {digest} ({size} bytes)"), limit: max_bytes };
    let mut object = match store.get(digest).await {
        Ok(o) => o,
        Err(e) if e.kind() == GetErrorKind::NotFound => return Err(BundleError::Missing(digest.into())),
        Err(e) => return Err(BundleError::Store { op: format!("download {digest}"), why: e.to_string() }),
    };
    if object.info().size as u64 > max_bytes {
        return Err(too_large(object.info().size as u64));
    }
    let mut out = tokio::fs::File::create(dest).await.map_err(BundleError::io(dest))?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match object.read(&mut buf).await {
            Ok(n) => n,
            // the store's own checksum of the chunks failed: the stored bytes are damaged
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(BundleError::DigestMismatch { expected: digest.into(), actual: format!("unknown ({e})") })
            }
            Err(e) => return Err(BundleError::Store { op: format!("download {digest}"), why: e.to_string() }),
        };
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_bytes {
            return Err(too_large(total));
        }
        hash.update(&buf[..n]);
        out.write_all(&buf[..n]).await.map_err(BundleError::io(dest))?;
    }
    out.flush().await.map_err(BundleError::io(dest))?;
    let actual = format!("{}{}", hwsched_proto::DIGEST_PREFIX, hex_of(&hash.finalize()));
    if actual != digest {
        return Err(BundleError::DigestMismatch { expected: digest.into(), actual });
    }
    Ok(total)
}
