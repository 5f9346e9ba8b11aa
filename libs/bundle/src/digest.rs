//! `sha256:<hex>` digests, computed while writing or from a file.

use std::{io::Write, path::Path};

use sha2::{Digest, Sha256};

use crate::BundleError;

/// Lower-case hex of `bytes`.
pub fn hex_of(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A writer that hashes and counts what passes through it.
#[derive(Debug)]
pub struct DigestWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, hash: Sha256::new(), bytes: 0 }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count of what was written.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("{}{}", hwsched_proto::DIGEST_PREFIX, hex_of(&self.hash.finalize()));
        (self.inner, digest, self.bytes)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The `sha256:<hex>` digest and size of a file, read in a stream.
pub fn digest_of_file(path: &Path) -> Result<(String, u64), BundleError> {
    let mut f = std::fs::File::open(path).map_err(BundleError::io(path))?;
    let mut w = DigestWriter::new(std::io::sink());
    std::io::copy(&mut f, &mut w).map_err(BundleError::io(path))?;
    let (_, digest, n) = w.finish();
    Ok((digest, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_the_empty_input_is_the_known_one() {
        let (_, d, n) = DigestWriter::new(Vec::new()).finish();
        assert_eq!(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(n, 0);
        assert!(hwsched_proto::is_valid_digest(&d));
    }
}
