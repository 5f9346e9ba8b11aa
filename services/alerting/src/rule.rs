//! Threshold rules evaluated per (worker, device) series. Pure: samples and
//! time go in, state transitions come out, so every timing is unit-tested with
//! a controllable clock.
//!
//! A series is inactive, pending (the condition holds, not yet for `for`),
//! or firing. A firing series resolves once it has been clear for
//! `keep_firing_for`; with a `clear` threshold (hysteresis) it is clear only
//! past that value, so a metric hovering around the threshold does not flap.

use std::collections::{BTreeMap, HashMap};

/// How a sample is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    /// Parses `>`, `>=`, `<`, `<=`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            ">" => Some(Op::Gt),
            ">=" => Some(Op::Ge),
            "<" => Some(Op::Lt),
            "<=" => Some(Op::Le),
            _ => None,
        }
    }

    /// Its symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    /// Whether alerting is on high values (`>`, `>=`).
    pub fn upward(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }
}

/// A threshold rule: `metric <op> threshold` for at least `for_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Rule name, e.g. "HighCpu".
    pub name: String,
    /// Metric name, e.g. "cpu.util_pct".
    pub metric: String,
    /// Comparison with the threshold.
    pub op: Op,
    /// The threshold.
    pub threshold: f64,
    /// Hysteresis: a firing alert is clear only past this value (below it
    /// for `>`/`>=`, above it for `<`/`<=`); `None`: as soon as the condition fails.
    pub clear: Option<f64>,
    /// How long the condition must hold before firing.
    pub for_ms: i64,
    /// How long a firing alert must be clear before it resolves.
    pub keep_firing_for_ms: i64,
    /// "info", "warning" or "critical".
    pub severity: String,
    /// Only these workers (`*` ends a prefix); `None`: all.
    pub worker: Option<String>,
    /// Only these devices (`*` ends a prefix); `None`: all.
    pub device: Option<String>,
    /// Labels attached to its alerts.
    pub labels: BTreeMap<String, String>,
    /// Summary template: `{worker_id}`, `{device}`, `{metric}`, `{value}`,
    /// `{threshold}`, `{op}`, `{rule}` are replaced.
    pub summary: String,
}

/// The placeholders a summary may use.
pub const PLACEHOLDERS: &[&str] = &["worker_id", "device", "metric", "value", "threshold", "op", "rule"];

/// Whether `name` matches `pattern` (exact, or a prefix when it ends with `*`).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Rule {
    /// Whether the rule applies to this sample's series.
    pub fn selects(&self, worker_id: &str, device: &str, metric: &str) -> bool {
        metric == self.metric
            && self.worker.as_deref().is_none_or(|p| matches(p, worker_id))
            && self.device.as_deref().is_none_or(|p| matches(p, device))
    }

    /// The summary for one series and value.
    pub fn render(&self, worker_id: &str, device: &str, value: f64) -> String {
        let mut s = self.summary.clone();
        for (k, v) in [
            ("worker_id", worker_id.to_string()),
            ("device", device.to_string()),
            ("metric", self.metric.clone()),
            ("value", format!("{value:.1}")),
            ("threshold", format!("{}", self.threshold)),
            ("op", self.op.symbol().to_string()),
            ("rule", self.name.clone()),
        ] {
            s = s.replace(&format!("{{{k}}}"), &v);
        }
        s
    }

    fn is_clear(&self, value: f64) -> bool {
        match self.clear {
            // past the clear threshold, on the other side from the alerting one
            Some(c) if self.op.upward() => value < c,
            Some(c) => value > c,
            None => !self.op.holds(value, self.threshold),
        }
    }
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
    /// Clear for `keep_firing_for_ms` after firing.
    Resolved {
        /// Worker.
        worker_id: String,
        /// Device.
        device: String,
        /// Value that cleared it.
        value: f64,
        /// When the condition started.
        since_ms: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending { since_ms: i64 },
    Firing { since_ms: i64, clear_since_ms: Option<i64> },
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

    /// Marks a series as firing since `since_ms` without notifying: an alert
    /// that was firing when the service stopped (its next sample either keeps it
    /// firing silently or resolves it).
    pub fn restore(&mut self, worker_id: &str, device: &str, since_ms: i64) {
        self.series
            .insert((worker_id.to_string(), device.to_string()), Phase::Firing { since_ms, clear_since_ms: None });
    }

    /// Ends every firing series (the rule was removed): one `Resolved` each,
    /// with a NaN value since no sample cleared it.
    pub fn resolve_all(&mut self) -> Vec<Transition> {
        let mut out: Vec<Transition> = self
            .series
            .drain()
            .filter_map(|((worker_id, device), p)| match p {
                Phase::Firing { since_ms, .. } => {
                    Some(Transition::Resolved { worker_id, device, value: f64::NAN, since_ms })
                }
                Phase::Pending { .. } => None,
            })
            .collect();
        out.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
        out
    }

    /// Series currently firing.
    pub fn firing(&self) -> usize {
        self.series.values().filter(|p| matches!(p, Phase::Firing { .. })).count()
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
        if !value.is_finite() || !self.rule.selects(worker_id, device, metric) {
            return None;
        }
        let key = (worker_id.to_string(), device.to_string());
        let holds = self.rule.op.holds(value, self.rule.threshold);
        let (worker_id, device) = (worker_id.to_string(), device.to_string());
        match self.series.get(&key).copied() {
            None if holds => {
                if self.rule.for_ms == 0 {
                    self.series.insert(key, Phase::Firing { since_ms: now_ms, clear_since_ms: None });
                    return Some(Transition::Firing { worker_id, device, value, since_ms: now_ms });
                }
                self.series.insert(key, Phase::Pending { since_ms: now_ms });
                None
            }
            None => None,
            Some(Phase::Pending { since_ms }) if holds => {
                if now_ms - since_ms < self.rule.for_ms {
                    return None;
                }
                self.series.insert(key, Phase::Firing { since_ms, clear_since_ms: None });
                Some(Transition::Firing { worker_id, device, value, since_ms })
            }
            Some(Phase::Pending { .. }) => {
                self.series.remove(&key);
                None
            }
            Some(Phase::Firing { since_ms, clear_since_ms }) => {
                if !self.rule.is_clear(value) {
                    self.series.insert(key, Phase::Firing { since_ms, clear_since_ms: None });
                    return None;
                }
                let clear_since = clear_since_ms.unwrap_or(now_ms);
                if now_ms - clear_since < self.rule.keep_firing_for_ms {
                    self.series.insert(key, Phase::Firing { since_ms, clear_since_ms: Some(clear_since) });
                    return None;
                }
                self.series.remove(&key);
                Some(Transition::Resolved { worker_id, device, value, since_ms })
            }
        }
    }
}

/// Evaluators indexed by metric, so that a sample is checked only against
/// the rules on its metric.
#[derive(Debug, Default)]
pub struct RuleSet {
    evaluators: Vec<Evaluator>,
    by_metric: HashMap<String, Vec<usize>>,
}

impl RuleSet {
    /// Indexes `evaluators`.
    pub fn new(evaluators: Vec<Evaluator>) -> Self {
        let mut by_metric: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in evaluators.iter().enumerate() {
            by_metric.entry(e.rule.metric.clone()).or_default().push(i);
        }
        Self { evaluators, by_metric }
    }

    /// Feeds one sample to the rules on its metric; each transition comes with its rule.
    pub fn observe<'a>(
        &'a mut self,
        worker_id: &str,
        device: &str,
        metric: &str,
        value: f64,
        now_ms: i64,
    ) -> impl Iterator<Item = (&'a Rule, Transition)> + 'a {
        let idx = self.by_metric.get(metric).map_or(&[][..], Vec::as_slice);
        let mut out = Vec::new();
        for &i in idx {
            if let Some(t) = self.evaluators[i].observe(worker_id, device, metric, value, now_ms) {
                out.push((i, t));
            }
        }
        let evaluators = &self.evaluators;
        out.into_iter().map(move |(i, t)| (&evaluators[i].rule, t))
    }

    /// The evaluators, in file order.
    pub fn evaluators(&self) -> &[Evaluator] {
        &self.evaluators
    }

    /// The evaluator of a rule, by name.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Evaluator> {
        self.evaluators.iter_mut().find(|e| e.rule.name == name)
    }

    /// Takes the evaluators out (a reload keeps those whose rule did not change).
    pub fn into_evaluators(self) -> Vec<Evaluator> {
        self.evaluators
    }

    /// Rules held.
    pub fn len(&self) -> usize {
        self.evaluators.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.evaluators.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(for_ms: i64) -> Rule {
        Rule {
            name: "HighCpu".into(),
            metric: "cpu.util_pct".into(),
            op: Op::Gt,
            threshold: 90.0,
            clear: None,
            for_ms,
            keep_firing_for_ms: 0,
            severity: "warning".into(),
            worker: None,
            device: None,
            labels: BTreeMap::new(),
            summary: "{rule} on {worker_id}/{device}: {metric} {value} {op} {threshold}".into(),
        }
    }

    fn fired(t: Option<Transition>) -> bool {
        matches!(t, Some(Transition::Firing { .. }))
    }

    fn resolved(t: Option<Transition>) -> bool {
        matches!(t, Some(Transition::Resolved { .. }))
    }

    #[test]
    fn fires_once_after_for_and_resolves_once() {
        let mut e = Evaluator::new(rule(30_000));
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 95.0, 0), None);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 96.0, 29_000), None);
        assert!(matches!(
            e.observe("w", "cpu", "cpu.util_pct", 97.0, 30_000),
            Some(Transition::Firing { since_ms: 0, .. })
        ));
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 99.0, 31_000), None, "no repeat while firing");
        assert_eq!(e.firing(), 1);
        assert!(resolved(e.observe("w", "cpu", "cpu.util_pct", 10.0, 32_000)));
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 10.0, 33_000), None);
        assert_eq!(e.firing(), 0);
    }

    #[test]
    fn a_dip_resets_pending() {
        let mut e = Evaluator::new(rule(30_000));
        e.observe("w", "cpu", "cpu.util_pct", 95.0, 0);
        e.observe("w", "cpu", "cpu.util_pct", 50.0, 10_000);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 95.0, 31_000), None);
    }

    #[test]
    fn hysteresis_keeps_a_hovering_metric_from_flapping() {
        let mut r = rule(0);
        r.clear = Some(85.0);
        let mut e = Evaluator::new(r);
        let mut transitions = 0;
        // around the threshold for a while: fires once, never resolves
        for (i, v) in [91.0, 89.0, 92.0, 88.0, 90.5, 86.0, 91.0].into_iter().enumerate() {
            let t = e.observe("w", "cpu", "cpu.util_pct", v, i as i64 * 1000);
            transitions += usize::from(t.is_some());
        }
        assert_eq!(transitions, 1);
        assert!(resolved(e.observe("w", "cpu", "cpu.util_pct", 84.0, 10_000)), "below the clear threshold");
        // without hysteresis the same samples flap
        let mut plain = Evaluator::new(rule(0));
        let flaps = [91.0, 89.0, 92.0, 88.0]
            .into_iter()
            .enumerate()
            .filter(|(i, v)| plain.observe("w", "cpu", "cpu.util_pct", *v, *i as i64 * 1000).is_some())
            .count();
        assert_eq!(flaps, 4);
    }

    #[test]
    fn keep_firing_for_rides_out_a_short_clear() {
        let mut r = rule(0);
        r.keep_firing_for_ms = 10_000;
        let mut e = Evaluator::new(r);
        assert!(fired(e.observe("w", "cpu", "cpu.util_pct", 95.0, 0)));
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 50.0, 1_000), None);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 50.0, 10_999), None);
        // back above: the clear period starts over
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 95.0, 11_000), None);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 50.0, 12_000), None);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 50.0, 21_999), None);
        assert!(resolved(e.observe("w", "cpu", "cpu.util_pct", 50.0, 22_000)));
    }

    #[test]
    fn low_side_rules_and_selectors() {
        let mut r = rule(0);
        r.metric = "mem.available_mb".into();
        r.op = Op::Lt;
        r.threshold = 512.0;
        r.clear = Some(1024.0);
        r.worker = Some("gpu-*".into());
        let mut e = Evaluator::new(r);
        assert_eq!(e.observe("cpu-1", "mem", "mem.available_mb", 100.0, 0), None, "not selected");
        assert!(fired(e.observe("gpu-1", "mem", "mem.available_mb", 100.0, 0)));
        assert_eq!(e.observe("gpu-1", "mem", "mem.available_mb", 800.0, 1), None, "not past the clear value");
        assert!(resolved(e.observe("gpu-1", "mem", "mem.available_mb", 2048.0, 2)));
    }

    #[test]
    fn series_are_independent_and_other_metrics_ignored() {
        let mut e = Evaluator::new(rule(0));
        assert!(fired(e.observe("a", "cpu", "cpu.util_pct", 95.0, 0)));
        assert!(fired(e.observe("b", "cpu", "cpu.util_pct", 95.0, 0)));
        assert_eq!(e.observe("a", "cpu", "mem.used_pct", 99.0, 0), None);
        assert_eq!(e.observe("a", "cpu", "cpu.util_pct", f64::NAN, 0), None);
    }

    #[test]
    fn a_restored_alert_is_not_notified_again_but_resolves() {
        let mut e = Evaluator::new(rule(0));
        e.restore("w", "cpu", 5_000);
        assert_eq!(e.observe("w", "cpu", "cpu.util_pct", 99.0, 10_000), None, "still firing: no new notification");
        assert!(matches!(
            e.observe("w", "cpu", "cpu.util_pct", 10.0, 11_000),
            Some(Transition::Resolved { since_ms: 5_000, .. })
        ));
    }

    #[test]
    fn a_removed_rule_resolves_what_it_fired_and_forgets_what_was_pending() {
        let mut e = Evaluator::new(rule(10_000));
        e.restore("a", "cpu", 0);
        e.observe("b", "cpu", "cpu.util_pct", 95.0, 0);
        let t = e.resolve_all();
        assert_eq!(t.len(), 1);
        assert!(matches!(&t[0], Transition::Resolved { worker_id, since_ms: 0, .. } if worker_id == "a"));
        assert_eq!(e.firing(), 0);
        assert!(e.resolve_all().is_empty());
    }

    #[test]
    fn a_rule_set_routes_samples_by_metric() {
        let mut mem = rule(0);
        mem.name = "HighMem".into();
        mem.metric = "mem.used_pct".into();
        let mut set = RuleSet::new(vec![Evaluator::new(rule(0)), Evaluator::new(mem)]);
        let fired: Vec<String> =
            set.observe("w", "mem", "mem.used_pct", 99.0, 0).map(|(r, _)| r.name.clone()).collect();
        assert_eq!(fired, ["HighMem"]);
        assert_eq!(set.observe("w", "x", "other", 99.0, 0).count(), 0);
        assert_eq!(set.get_mut("HighMem").map(|e| e.firing()), Some(1));
    }

    #[test]
    fn summaries_are_templated() {
        let r = rule(0);
        assert_eq!(r.render("w1", "cpu", 97.25), "HighCpu on w1/cpu: cpu.util_pct 97.2 > 90");
        assert!(matches("gpu*", "gpu0") && !matches("gpu*", "cpu") && matches("cpu", "cpu"));
    }
}
