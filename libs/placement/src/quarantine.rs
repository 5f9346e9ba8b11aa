//! The quarantine policy: when a suspect worker (`suspect`) is taken out of
//! service, how it is probed back, and the circuit breaker that stops
//! quarantining when too much of the fleet or of one hardware class would go
//! (a bad driver roll-out must raise an alert, not drain the farm).
//! `state::health` applies it.

use std::{fmt, str::FromStr};

/// The quarantine settings (scheduler flag `--quarantine`, the same names).
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinePolicy {
    /// Judge and quarantine workers at all (off: no evidence is kept, no one is quarantined).
    pub enabled: bool,
    /// Significance of the failure test (`suspect::judge`).
    pub alpha: f64,
    /// Failures a worker needs in its window before it can be suspect.
    pub min_failures: u32,
    /// The window: the evidence kept per worker, and the breaker's window, ms.
    pub window_ms: i64,
    /// Attempts kept as evidence per worker (the most recent).
    pub evidence: usize,
    /// The most of the fleet quarantined in a window (at least one worker, never the last).
    pub max_fleet_share: f64,
    /// The most of one hardware class quarantined in a window (at least one worker, never the last).
    pub max_class_share: f64,
    /// Passing probes in a row that restore a worker.
    pub probe_passes: u32,
    /// Time between probes of a quarantined worker, ms.
    pub probe_interval_ms: i64,
    /// The probe's timeout, s.
    pub probe_timeout_s: u32,
    /// The probe's command (argv), run on the quarantined worker like a task.
    pub probe_command: Vec<String>,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            enabled: true,
            alpha: 1e-3,
            min_failures: 3,
            window_ms: 3_600_000,
            evidence: 50,
            max_fleet_share: 0.2,
            max_class_share: 0.4,
            probe_passes: 3,
            probe_interval_ms: 30_000,
            probe_timeout_s: 120,
            probe_command: vec!["true".into()],
        }
    }
}

impl QuarantinePolicy {
    /// How many workers of `n` may be quarantined at once under `share`: at
    /// least one, but never the last one in service (a class or a fleet of one
    /// worker is never emptied: the breaker opens instead).
    pub fn allowed(share: f64, n: usize) -> usize {
        ((share * n as f64).floor() as usize).max(1).min(n.saturating_sub(1))
    }
}

impl fmt::Display for QuarantinePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enabled={},alpha={},min_failures={},window_s={},evidence={},max_fleet_share={},max_class_share={},\
             probe_passes={},probe_interval_s={},probe_timeout_s={}",
            self.enabled,
            self.alpha,
            self.min_failures,
            self.window_ms / 1000,
            self.evidence,
            self.max_fleet_share,
            self.max_class_share,
            self.probe_passes,
            self.probe_interval_ms / 1000,
            self.probe_timeout_s
        )
    }
}

impl FromStr for QuarantinePolicy {
    type Err = String;

    /// Parses "alpha=0.01,probe_passes=2" (fields not named keep their defaults).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut p = QuarantinePolicy::default();
        for f in crate::settings::fields(s, "field=value") {
            let f = f?;
            match f.name {
                "enabled" => p.enabled = f.parse()?,
                "alpha" => p.alpha = f.num(1e-12, 0.5)?,
                "min_failures" => p.min_failures = f.num(1.0, 1000.0)? as u32,
                "window_s" => p.window_ms = f.num(1.0, 7.0 * 86_400.0)? as i64 * 1000,
                "evidence" => p.evidence = f.num(5.0, 10_000.0)? as usize,
                "max_fleet_share" => p.max_fleet_share = f.num(0.0, 1.0)?,
                "max_class_share" => p.max_class_share = f.num(0.0, 1.0)?,
                "probe_passes" => p.probe_passes = f.num(1.0, 100.0)? as u32,
                "probe_interval_s" => p.probe_interval_ms = f.num(1.0, 86_400.0)? as i64 * 1000,
                "probe_timeout_s" => p.probe_timeout_s = f.num(1.0, 86_400.0)? as u32,
                _ => return Err(f.unknown("quarantine")),
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_parses_and_prints_the_same_fields() {
        let p: QuarantinePolicy = "alpha=0.01, probe_passes=2, window_s=600".parse().expect("parses");
        assert_eq!((p.alpha, p.probe_passes, p.window_ms), (0.01, 2, 600_000));
        let back: QuarantinePolicy = p.to_string().parse().expect("round trip");
        assert_eq!(back, p);
        assert!("alpha=0".parse::<QuarantinePolicy>().is_err());
        assert!("max_fleet_share=2".parse::<QuarantinePolicy>().is_err());
        assert!("probes=2".parse::<QuarantinePolicy>().is_err());
    }

    #[test]
    fn at_least_one_worker_may_be_quarantined() {
        assert_eq!(QuarantinePolicy::allowed(0.2, 3), 1);
        assert_eq!(QuarantinePolicy::allowed(0.2, 10), 2);
        assert_eq!(QuarantinePolicy::allowed(0.4, 5), 2);
        assert_eq!(QuarantinePolicy::allowed(0.0, 100), 1);
        assert_eq!(QuarantinePolicy::allowed(0.4, 2), 1);
        assert_eq!(QuarantinePolicy::allowed(0.9, 1), 0, "never the only worker");
    }
}
