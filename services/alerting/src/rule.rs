//! Threshold rules with a `for` duration, evaluated per (worker, device).
//! Pure: samples and time go in, state transitions come out.

use std::collections::HashMap;

/// A threshold rule: `metric > threshold` for at least `for_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Rule name, e.g. "HighCpu".
    pub name: String,
    /// Metric name, e.g. "cpu.util_pct".
    pub metric: String,
    /// Fires above this value.
    pub threshold: f64,
    /// How long the condition must hold before firing.
    pub for_ms: i64,
    /// "warning" or "critical".
    pub severity: String,
}

/// A change of an alert's state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Condition held for `for_ms`: notify.
    Firing {
        /// Worker.
        worker_id: String,
        /// Device.
        device: String,
        /// Value that fired it.
        value: f64,
        /// When the condition started.
        since_ms: i64,
    },
    /// Condition cleared after firing.
    Resolved {
        /// Worker.
        worker_id: String,
        /// Device.
        device: String,
        /// Value that cleared it.
        value: f64,
        /// When it started firing.
        since_ms: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending { since_ms: i64 },
    Firing { since_ms: i64 },
}

/// Evaluation state of one rule across all series.
#[derive(Debug, Clone)]
pub struct Evaluator {
    /// The rule.
    pub rule: Rule,
    series: HashMap<(String, String), Phase>,
}

impl Evaluator {
    /// A fresh evaluator (everything inactive).
    pub fn new(rule: Rule) -> Self {
        Self { rule, series: HashMap::new() }
    }

    /// Feeds one sample; returns a transition when the alert fires or resolves.
    pub fn observe(
        &mut self,
        worker_id: &str,
        device: &str,
        metric: &str,
        value: f64,
        now_ms: i64,
    ) -> Option<Transition> {
        if metric != self.rule.metric || !value.is_finite() {
            return None;
        }
        let key = (worker_id.to_string(), device.to_string());
        let above = value > self.rule.threshold;
        match (self.series.get(&key).copied(), above) {
            (None, true) => {
                self.series.insert(key, Phase::Pending { since_ms: now_ms });
                (self.rule.for_ms == 0).then(|| self.fire(worker_id, device, value, now_ms, now_ms))
            }
            (Some(Phase::Pending { since_ms }), true) if now_ms - since_ms >= self.rule.for_ms => {
                Some(self.fire(worker_id, device, value, since_ms, now_ms))
            }
            (Some(Phase::Pending { .. }), false) => {
                self.series.remove(&key);
                None
            }
            (Some(Phase::Firing { since_ms }), false) => {
                self.series.remove(&key);
                Some(Transition::Resolved { worker_id: worker_id.into(), device: device.into(), value, since_ms })
            }
            _ => None,
        }
    }

    fn fire(&mut self, worker_id: &str, device: &str, value: f64, since_ms: i64, now_ms: i64) -> Transition {
        self.series.insert((worker_id.to_string(), device.to_string()), Phase::Firing { since_ms: now_ms });
        Transition::Firing { worker_id: worker_id.into(), device: device.into(), value, since_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(for_ms: i64) -> Evaluator {
        Evaluator::new(Rule {
            name: "HighCpu".into(),
            metric: "cpu.util_pct".into(),
            threshold: 90.0,
            for_ms,
            severity: "warning".into(),
        })
    }

    #[test]
    fn fires_once_after_for_and_resolves_once() {
        let mut e = ev(30_000);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 95.0, 0), None);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 96.0, 29_000), None);
        assert!(matches!(
            e.observe("w", "cpu", "cpu.util_pct", 97.0, 30_000),
            Some(Transition::Firing { since_ms: 0, .. })
        ));
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 99.0, 31_000), None, "no repeat while firing");
        assert!(matches!(e.observe("w", "cpu", "cpu.util_pct", 10.0, 32_000), Some(Transition::Resolved { .. })));
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 10.0, 33_000), None);
    }

    #[test]
    fn a_dip_resets_pending() {
        let mut e = ev(30_000);
        e.observe("w", "cpu", "cpu.util_pct", 95.0, 0);
        e.observe("w", "cpu", "cpu.util_pct", 50.0, 10_000);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 95.0, 31_000), None);
    }

    #[test]
    fn series_are_independent_and_other_metrics_ignored() {
        let mut e = ev(0);
        assert!(e.observe("a", "cpu", "cpu.util_pct", 95.0, 0).is_some());
        assert!(e.observe("b", "cpu", "cpu.util_pct", 95.0, 0).is_some());
        assert_eq!(e.observe("a", "cpu", "mem.used_pct", 99.0, 0), None);
    }
}
