//! Bundles: the code a task runs, shipped as a content-addressed archive
//! through the JetStream Object Store `hws_bundles`.
//!
//! A producer [`pack`]s a directory into a deterministic tar.gz (the same
//! tree gives the same `sha256:` digest on any machine) and
//! [`store::upload`]s it unless that digest is already stored. A worker's
//! [`Cache`] downloads each digest once ([`store::download`] checks the size
//! limit while reading and the digest at the end), [`unpack`]s it safely
//! (nothing lands outside the target, never through a symlink) and keeps the
//! tree; [`place`] copies a cached tree into an attempt's sandbox.
#![forbid(unsafe_code)]

pub mod cache;
mod digest;
mod error;
pub mod pack;
mod paths;
pub mod place;
pub mod store;
pub mod unpack;

pub use cache::{Cache, CacheConfig, Fetched};
pub use digest::{digest_of_file, hex_of, DigestWriter};
pub use error::BundleError;
pub use pack::{pack, Packed, IGNORE_FILE};
pub use place::place;
pub use unpack::{unpack, Limits, Unpacked};
