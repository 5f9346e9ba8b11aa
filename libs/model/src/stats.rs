//! The statistics of one (workload, hardware) pair: how a result updates its
//! moving averages (success, timeouts, flakiness, clipped ln-runtime mean and
//! variance, recent runtimes, peak memory) and how many runs stand behind them.

use hwsched_proto::v1::{ExecutionResult, ModelEntry};

/// Weight of the newest observation in the moving averages.
pub const ALPHA: f64 = 0.2;

/// Runs before a deviation is clipped: an outlier moves the estimate by at most
/// three of its standard deviations' worth.
const CLIP_AFTER: u64 = 5;
const CLIP_SD: f64 = 3.0;
/// The standard deviation of ln(runtime) assumed for a pair with one run, and
/// the least any pair is taken to have.
pub(crate) const MIN_LOG_SD: f64 = 0.05;
/// Recent runtimes kept per pair.
const RECENT: usize = 16;

/// Whether a pair has a learned runtime.
pub(crate) fn learned(e: &ModelEntry) -> bool {
    e.runtime_observations > 0 || e.log_runtime_mean != 0.0 || e.log_runtime_var != 0.0
}

/// Successful runs behind a pair's runtime (snapshots from before the field
/// existed count every observation).
pub(crate) fn runs(e: &ModelEntry) -> u64 {
    if e.runtime_observations > 0 {
        e.runtime_observations
    } else if learned(e) {
        e.observations.max(1)
    } else {
        0
    }
}

/// EWMA weight for the n-th value (1-based): a plain mean until it falls to `floor`.
pub(crate) fn weight(n: u64, floor: f64) -> f64 {
    (1.0 / n.max(1) as f64).max(floor)
}

/// Updates a pair with one result: `ok` and `timed_out` are its outcome,
/// `runtime` its ln(duration) when it succeeded.
pub(crate) fn update_entry(e: &mut ModelEntry, r: &ExecutionResult, ok: bool, timed_out: bool, runtime: Option<f64>) {
    e.observations += 1;
    let a = weight(e.observations, ALPHA);
    e.success_rate +=
        if e.observations == 1 { f64::from(u8::from(ok)) } else { a * (f64::from(u8::from(ok)) - e.success_rate) };
    e.timeout_rate += if e.observations == 1 {
        f64::from(u8::from(timed_out))
    } else {
        a * (f64::from(u8::from(timed_out)) - e.timeout_rate)
    };
    if e.observations > 1 {
        let flipped = f64::from(u8::from(ok != e.last_succeeded));
        e.flakiness += ALPHA * (flipped - e.flakiness);
    }
    e.last_succeeded = ok;
    // Only successful runs say how long the work takes.
    if let Some(x) = runtime {
        update_runtime(e, x, r.duration_s);
    }
    if let Some(u) = &r.resources {
        e.memory_peak_mb = e.memory_peak_mb.max(u.memory_peak_mb);
    }
    e.updated_at_ms = r.finished_at_ms;
}

/// Folds one successful run (`x` = ln of its `duration_s`) into the pair's
/// ln-runtime mean and variance, clipping outliers once the pair has a few runs.
fn update_runtime(e: &mut ModelEntry, x: f64, duration_s: f64) {
    let n = runs(e);
    if n == 0 {
        e.log_runtime_mean = x;
        e.log_runtime_var = 0.0;
    } else {
        let sd = e.log_runtime_var.sqrt().max(MIN_LOG_SD);
        let mut d = x - e.log_runtime_mean;
        if n >= CLIP_AFTER {
            d = d.clamp(-CLIP_SD * sd, CLIP_SD * sd);
        }
        let a = weight(n + 1, ALPHA);
        e.log_runtime_mean += a * d;
        e.log_runtime_var = (1.0 - a) * (e.log_runtime_var + a * d * d);
    }
    e.runtime_observations = n + 1;
    e.recent_runtimes_s.push(duration_s);
    if e.recent_runtimes_s.len() > RECENT {
        e.recent_runtimes_s.remove(0);
    }
}

/// The `q` quantile (0..=1) of a pair's recent runtimes, s.
pub fn recent_quantile(e: &ModelEntry, q: f64) -> Option<f64> {
    let mut v = e.recent_runtimes_s.clone();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    Some(v[i])
}
