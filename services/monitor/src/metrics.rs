//! The monitor's Prometheus metrics (`hwsched_monitor_*`), each name written once here.

use hwsched_telemetry::{
    prometheus_client::metrics::{counter::Counter, gauge::Gauge},
    Telemetry,
};

/// Prefix of every metric the monitor exposes.
pub const PREFIX: &str = "hwsched_monitor";
/// Bundles downloaded into the cache (a counter).
pub const BUNDLE_DOWNLOADS: &str = "bundle_downloads";
/// Attempts whose bundle was already cached, or downloaded by a concurrent attempt (a counter).
pub const BUNDLE_CACHE_HITS: &str = "bundle_cache_hits";
/// Attempts failed because of their bundle: missing, corrupt, oversized or hostile (a counter).
pub const BUNDLE_REFUSED: &str = "bundle_refused";
/// Bytes of unpacked bundles in the cache (a gauge).
pub const BUNDLE_CACHE_BYTES: &str = "bundle_cache_bytes";

/// The name a counter is exposed under (`<prefix>_<name>_total`).
pub fn exposed_counter(name: &str) -> String {
    format!("{PREFIX}_{name}_total")
}

/// The bundle metrics; clones share the same values.
#[derive(Debug, Clone, Default)]
pub struct BundleMetrics {
    /// See [`BUNDLE_DOWNLOADS`].
    pub downloads: Counter,
    /// See [`BUNDLE_CACHE_HITS`].
    pub hits: Counter,
    /// See [`BUNDLE_REFUSED`].
    pub refused: Counter,
    /// See [`BUNDLE_CACHE_BYTES`].
    pub cache_bytes: Gauge,
}

impl BundleMetrics {
    /// Registers them with `t`.
    pub fn register(&self, t: &Telemetry) {
        t.register(|r| {
            let r = r.sub_registry_with_prefix(PREFIX);
            r.register(BUNDLE_DOWNLOADS, "Bundles downloaded into this worker's cache", self.downloads.clone());
            r.register(BUNDLE_CACHE_HITS, "Attempts that found their bundle cached", self.hits.clone());
            r.register(
                BUNDLE_REFUSED,
                "Attempts failed by their bundle (missing, corrupt, too large, hostile)",
                self.refused.clone(),
            );
            r.register(BUNDLE_CACHE_BYTES, "Bytes of unpacked bundles in the cache", self.cache_bytes.clone());
        });
    }
}
