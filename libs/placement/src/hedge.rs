//! Hedging stragglers: when an attempt has run well past what is expected of
//! it (its pair's learned p95 times a factor, else its predicted or declared
//! duration times that factor) and a capable worker is free, a second copy
//! runs beside it; the first copy to succeed wins and the other is cancelled.
//! Bounded: hedged copies are at most a share of all placements, one per task.
//! The rules are here; `state::hedging` applies them.

use std::{fmt, str::FromStr};

use hwsched_proto::v1::{HedgeAttempt, ModelEntry, TaskRecord};

/// Runs a pair needs in its recent window before its p95 is trusted.
pub const MIN_RUNS_FOR_P95: usize = 5;

/// The hedging settings (scheduler flag `--hedge`, the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct HedgePolicy {
    /// The most hedged copies as a share of all placements (0: never hedge).
    pub share: f64,
    /// An attempt straggles past this multiple of what is expected of it.
    pub factor: f64,
    /// And never before it has run this long, ms.
    pub min_after_ms: i64,
}

impl Default for HedgePolicy {
    /// Off: the state machine hedges only when told to (the scheduler's flag
    /// defaults to [`HedgePolicy::on`]).
    fn default() -> Self {
        Self { share: 0.0, ..Self::on() }
    }
}

impl HedgePolicy {
    /// The scheduler's default: up to 5 % of placements, past 1.5x, after 10 s at least.
    pub fn on() -> Self {
        Self { share: 0.05, factor: 1.5, min_after_ms: 10_000 }
    }

    /// Whether anything is ever hedged.
    pub fn enabled(&self) -> bool {
        self.share > 0.0
    }

    /// Whether one more hedged copy stays within the share of `placements`
    /// when `hedged` copies were made already.
    pub fn within_budget(&self, hedged: u64, placements: u64) -> bool {
        self.enabled() && (hedged + 1) as f64 <= self.share * placements as f64
    }

    /// Seconds after which an attempt straggles: `factor` x the pair's p95
    /// when known, else x the expected runtime; never before the minimum.
    /// `None` when nothing is expected of it (no model, no prediction, no
    /// declared duration): such an attempt is never hedged.
    pub fn straggles_after_s(&self, p95_s: Option<f64>, expected_s: Option<f64>) -> Option<f64> {
        let base = p95_s.filter(|s| *s > 0.0).or(expected_s.filter(|s| *s > 0.0))?;
        Some((base * self.factor).max(self.min_after_ms as f64 / 1000.0))
    }
}

/// The p95 of a pair's recent runtimes, once it has [`MIN_RUNS_FOR_P95`] of them.
pub fn p95_s(e: &ModelEntry) -> Option<f64> {
    (e.recent_runtimes_s.len() >= MIN_RUNS_FOR_P95).then(|| hwsched_model::recent_quantile(e, 0.95)).flatten()
}

/// The record as its hedged copy's own: its attempt, worker, GPUs, start and
/// prediction in the current attempt's fields (what an assignment, a
/// reservation or a result of that copy reads), without the hedge.
pub fn copy_view(rec: &TaskRecord) -> Option<TaskRecord> {
    // (checked before the clone: insert and release ask of every record)
    rec.hedge.as_ref()?;
    let mut v = rec.clone();
    swap_copies(&mut v)?;
    v.hedge = None;
    Some(v)
}

/// Exchanges the current attempt and its hedged copy in `rec`; `None` (and
/// no change) when it has none.
pub fn swap_copies(rec: &mut TaskRecord) -> Option<()> {
    let h = rec.hedge.as_mut()?;
    std::mem::swap(&mut rec.attempt, &mut h.attempt);
    std::mem::swap(&mut rec.worker_id, &mut h.worker_id);
    std::mem::swap(&mut rec.gpu_indices, &mut h.gpu_indices);
    std::mem::swap(&mut rec.assigned_at_ms, &mut h.assigned_at_ms);
    std::mem::swap(&mut rec.predicted_runtime_s, &mut h.predicted_runtime_s);
    Some(())
}

/// The hedged copy of `rec` on `worker_id`.
pub fn hedge_of(
    rec: &TaskRecord,
    worker_id: String,
    gpus: Vec<u32>,
    predicted_s: f64,
    now_ms: i64,
    why: String,
) -> HedgeAttempt {
    HedgeAttempt {
        attempt: rec.attempt + 1,
        worker_id,
        gpu_indices: gpus,
        assigned_at_ms: now_ms,
        predicted_runtime_s: predicted_s,
        reason: why,
    }
}

impl fmt::Display for HedgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "share={},factor={},min_after_s={}", self.share, self.factor, self.min_after_ms as f64 / 1000.0)
    }
}

impl FromStr for HedgePolicy {
    type Err = String;

    /// Parses "share=0.1,factor=2" (fields not named keep the scheduler's
    /// defaults) or "off".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "off" {
            return Ok(Self::default());
        }
        let mut p = Self::on();
        for f in crate::settings::fields(s, "field=value, or \"off\"") {
            let f = f?;
            match f.name {
                "share" => p.share = f.num(0.0, 1.0)?,
                "factor" => p.factor = f.num(1.0, 100.0)?,
                "min_after_s" => p.min_after_ms = (f.num(0.0, 86_400.0)? * 1000.0) as i64,
                _ => return Err(f.unknown("hedge")),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_parses_prints_and_turns_off() {
        let p: HedgePolicy = "share=0.1, factor=2, min_after_s=1.5".parse().expect("parses");
        assert_eq!((p.share, p.factor, p.min_after_ms), (0.1, 2.0, 1500));
        assert_eq!(p.to_string().parse::<HedgePolicy>(), Ok(p));
        assert!(!"off".parse::<HedgePolicy>().expect("off").enabled());
        assert!("share=0".parse::<HedgePolicy>().is_ok_and(|p| !p.enabled()));
        for bad in ["share=2", "factor=0.5", "copies=2", "share"] {
            assert!(bad.parse::<HedgePolicy>().is_err(), "{bad}");
        }
        assert!(!HedgePolicy::default().enabled() && HedgePolicy::on().enabled());
    }

    #[test]
    fn the_budget_is_a_share_of_placements() {
        let p = HedgePolicy { share: 0.05, ..HedgePolicy::on() };
        assert!(!p.within_budget(0, 19), "under 20 placements, 5 % is less than one copy");
        assert!(p.within_budget(0, 20));
        assert!(!p.within_budget(1, 20));
        assert!(p.within_budget(4, 100) && !p.within_budget(5, 100));
        assert!(!HedgePolicy::default().within_budget(0, 1_000_000), "off never hedges");
    }

    #[test]
    fn straggling_reads_p95_before_the_expectation_and_never_before_the_minimum() {
        let p = HedgePolicy { share: 0.1, factor: 1.5, min_after_ms: 10_000 };
        assert_eq!(p.straggles_after_s(Some(40.0), Some(20.0)), Some(60.0));
        assert_eq!(p.straggles_after_s(None, Some(20.0)), Some(30.0));
        assert_eq!(p.straggles_after_s(Some(2.0), None), Some(10.0), "the minimum");
        assert_eq!(p.straggles_after_s(Some(0.0), Some(0.0)), None, "nothing expected: never hedged");
        assert_eq!(p.straggles_after_s(None, None), None);
    }

    #[test]
    fn p95_needs_enough_recent_runs() {
        let mut e = ModelEntry { recent_runtimes_s: vec![1.0, 2.0, 3.0, 4.0], ..Default::default() };
        assert_eq!(p95_s(&e), None);
        e.recent_runtimes_s.extend([5.0, 6.0, 7.0, 8.0, 9.0, 100.0]);
        assert_eq!(p95_s(&e), Some(100.0));
    }

    #[test]
    fn a_copy_view_and_a_swap_exchange_the_two_attempts() {
        let rec = TaskRecord {
            attempt: 1,
            worker_id: "slow".into(),
            gpu_indices: vec![0],
            assigned_at_ms: 5,
            predicted_runtime_s: 3.0,
            ..Default::default()
        };
        assert_eq!(copy_view(&rec), None);
        let mut rec = rec;
        rec.hedge = Some(hedge_of(&rec, "fast".into(), vec![1], 2.0, 9, "why".into()));
        let v = copy_view(&rec).expect("a copy");
        assert_eq!((v.attempt, v.worker_id.as_str(), v.gpu_indices.clone()), (2, "fast", vec![1]));
        assert_eq!((v.assigned_at_ms, v.predicted_runtime_s, v.hedge.is_none()), (9, 2.0, true));
        let mut swapped = rec.clone();
        swap_copies(&mut swapped);
        assert_eq!((swapped.attempt, swapped.worker_id.as_str()), (2, "fast"));
        assert_eq!(swapped.hedge.as_ref().map(|h| (h.attempt, h.worker_id.as_str())), Some((1, "slow")));
        swap_copies(&mut swapped);
        assert_eq!(swapped, rec, "two swaps are none");
    }
}
