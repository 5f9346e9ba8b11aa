//! The rules file (YAML): parsing and validation. Every problem is reported
//! with the rule (position and name) and the field, all at once, so an
//! operator fixes a file in one go; a file with any problem is refused whole.
//!
//! ```yaml
//! rules:
//!   - name: HotGpu               # unique
//!     metric: gpu.temp_c
//!     op: ">"                    # >, >=, <, <= (default >)
//!     threshold: 85
//!     clear: 80                  # optional hysteresis: resolves only below 80
//!     for: 30s                   # how long before firing (ms, s, m, h; default 0s)
//!     keep_firing_for: 1m        # how long clear before resolving (default 0s)
//!     severity: warning          # info, warning, critical
//!     worker: "gpu-*"            # optional; `*` ends a prefix
//!     device: "gpu*"             # optional
//!     labels: {team: ml}
//!     summary: "{worker_id}/{device} at {value} °C"
//! route:                         # optional; these are the defaults
//!   group_by: [alertname]        # alerts with the same values are sent together
//!   group_wait: 200ms            # a new group waits this long for more alerts
//!   group_interval: 5s           # then changes go out at most this often
//!   repeat_interval: 4h          # an unchanged firing group is sent again after this
//! inhibit:                       # optional; without the key, the defaults below
//!   - source: {severity: critical}         # matchers: exact, or a prefix ending in `*`
//!     target: {severity: warning}
//!     equal: [worker_id, device, metric]   # a critical alert mutes the warning of the same resource
//!   - source: {alertname: WorkerOffline}
//!     target: {}
//!     equal: [worker_id]                   # an offline worker's other alerts are muted
//! ```
//!
//! Alert labels: the rule's `labels`, then `alertname`, `severity`,
//! `worker_id`, `device` and `metric`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::{
    dispatch::{Inhibit, Route},
    rule::{Op, Rule, PLACEHOLDERS},
};
use hwsched_proto::v1::Matcher;

/// The built-in rules (used when no file is given).
pub const DEFAULTS: &str = include_str!("../rules/defaults.yaml");

/// Severities a rule may have.
pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rules: Vec<RawRule>,
    #[serde(default)]
    route: Option<RawRoute>,
    #[serde(default)]
    inhibit: Option<Vec<RawInhibit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(default)]
    group_by: Option<Vec<String>>,
    #[serde(default)]
    group_wait: Option<String>,
    #[serde(default)]
    group_interval: Option<String>,
    #[serde(default)]
    repeat_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    #[serde(default)]
    source: BTreeMap<String, String>,
    #[serde(default)]
    target: BTreeMap<String, String>,
    #[serde(default)]
    equal: Vec<String>,
}

/// A parsed rules file: the rules, how their alerts are grouped, and what inhibits what.
#[derive(Debug, Clone)]
pub struct Config {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Grouping and notification timing.
    pub route: Route,
    /// Inhibit rules.
    pub inhibits: Vec<Inhibit>,
}

/// The inhibit rules used when a file has no `inhibit` key.
pub fn default_inhibits() -> Vec<Inhibit> {
    let m = |k: &str, v: &str| vec![Matcher { label: k.into(), value: v.into() }];
    vec![
        Inhibit {
            source: m("severity", "critical"),
            target: m("severity", "warning"),
            equal: vec!["worker_id".into(), "device".into(), "metric".into()],
        },
        Inhibit { source: m("alertname", "WorkerOffline"), target: vec![], equal: vec!["worker_id".into()] },
    ]
}

fn matchers(m: BTreeMap<String, String>) -> Vec<Matcher> {
    m.into_iter().map(|(label, value)| Matcher { label, value }).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: String,
    #[serde(default)]
    metric: String,
    #[serde(default)]
    op: Option<String>,
    threshold: Option<f64>,
    #[serde(default)]
    clear: Option<f64>,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    severity: String,
    #[serde(default)]
    worker: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    summary: Option<String>,
}

/// Parses a duration: `500ms`, `30s`, `5m`, `1h`, or `0`.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map(|i| s.split_at(i))?;
    let n: i64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(ms).filter(|v| *v <= 7 * 86_400_000)
}

/// Parses and validates a rules file. `Err` lists every problem, one per line.
pub fn parse(text: &str) -> Result<Config, String> {
    let file: File = serde_yaml::from_str(text).map_err(|e| format!("not a rules file: {e}"))?;
    let mut problems = Vec::new();
    let route = parse_route(file.route, &mut problems);
    let inhibits = parse_inhibits(file.inhibit, &mut problems);
    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, r) in file.rules.into_iter().enumerate() {
        rules.extend(parse_rule(i, r, &mut names, &mut problems));
    }
    if problems.is_empty() {
        Ok(Config { rules, route, inhibits })
    } else {
        Err(problems.join("\n"))
    }
}

/// The `inhibit` key, or the default inhibit rules without it.
fn parse_inhibits(raw: Option<Vec<RawInhibit>>, problems: &mut Vec<String>) -> Vec<Inhibit> {
    match raw {
        None => default_inhibits(),
        Some(raw) => raw
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                if r.source.is_empty() {
                    problems.push(format!("inhibit {}: field `source`: needs at least one matcher", i + 1));
                }
                Inhibit { source: matchers(r.source), target: matchers(r.target), equal: r.equal }
            })
            .collect(),
    }
}

/// Checks rule `i` (from 0) and its name against the `names` used before it; its problems
/// go to `problems`. `None` when it has no usable op or threshold.
fn parse_rule(i: usize, r: RawRule, names: &mut BTreeSet<String>, problems: &mut Vec<String>) -> Option<Rule> {
    let at = if r.name.is_empty() { format!("rule {}", i + 1) } else { format!("rule {} ({})", i + 1, r.name) };
    let mut bad = |field: &str, why: String| problems.push(format!("{at}: field `{field}`: {why}"));
    if r.name.is_empty() {
        bad("name", "missing".into());
    } else if !names.insert(r.name.clone()) {
        bad("name", format!("{:?} is used by another rule", r.name));
    }
    if r.metric.is_empty() {
        bad("metric", "missing".into());
    }
    let op = match r.op.as_deref() {
        None => Some(Op::Gt),
        Some(s) => Op::parse(s).or_else(|| {
            bad("op", format!("{s:?} is not one of >, >=, <, <="));
            None
        }),
    };
    let threshold = match r.threshold {
        Some(t) if t.is_finite() => Some(t),
        Some(t) => {
            bad("threshold", format!("{t} is not a number"));
            None
        }
        None => {
            bad("threshold", "missing".into());
            None
        }
    };
    if let (Some(c), Some(t), Some(op)) = (r.clear, threshold, op) {
        if let Some(why) = clear_problem(c, t, op) {
            bad("clear", why);
        }
    }
    let mut duration = |field: &str, v: &Option<String>| match v {
        None => 0,
        Some(s) => parse_duration_ms(s).unwrap_or_else(|| {
            bad(field, format!("{s:?} is not a duration like 30s, 5m or 1h (at most 7 days)"));
            0
        }),
    };
    let for_ms = duration("for", &r.for_);
    let keep_firing_for_ms = duration("keep_firing_for", &r.keep_firing_for);
    if !SEVERITIES.contains(&r.severity.as_str()) {
        bad("severity", format!("{:?} is not one of {}", r.severity, SEVERITIES.join(", ")));
    }
    let summary =
        r.summary.unwrap_or_else(|| "{rule} on {worker_id}/{device}: {metric} {value} {op} {threshold}".into());
    for placeholder in placeholders(&summary) {
        if !PLACEHOLDERS.contains(&placeholder.as_str()) {
            bad("summary", format!("unknown placeholder {{{placeholder}}} (known: {})", PLACEHOLDERS.join(", ")));
        }
    }
    let (Some(op), Some(threshold)) = (op, threshold) else { return None };
    Some(Rule {
        name: r.name,
        metric: r.metric,
        op,
        threshold,
        clear: r.clear,
        for_ms,
        keep_firing_for_ms,
        severity: r.severity,
        worker: r.worker,
        device: r.device,
        labels: r.labels,
        summary,
    })
}

/// What is wrong with a `clear` level `c` for threshold `t` and `op`, if anything:
/// hysteresis must lie on the side the value comes back from.
fn clear_problem(c: f64, t: f64, op: Op) -> Option<String> {
    if !c.is_finite() {
        Some(format!("{c} is not a number"))
    } else if op.upward() && c > t {
        Some(format!("{c} must be at or below the threshold {t} for `{}`", op.symbol()))
    } else if !op.upward() && c < t {
        Some(format!("{c} must be at or above the threshold {t} for `{}`", op.symbol()))
    } else {
        None
    }
}

fn parse_route(raw: Option<RawRoute>, problems: &mut Vec<String>) -> Route {
    let mut route = Route::default();
    let Some(raw) = raw else { return route };
    if let Some(g) = raw.group_by {
        route.group_by = g;
    }
    for (field, value, slot, min) in [
        ("group_wait", raw.group_wait, &mut route.group_wait_ms, 0),
        ("group_interval", raw.group_interval, &mut route.group_interval_ms, 100),
        ("repeat_interval", raw.repeat_interval, &mut route.repeat_interval_ms, 1_000),
    ] {
        let Some(v) = value else { continue };
        match parse_duration_ms(&v) {
            Some(ms) if ms >= min => *slot = ms,
            _ => problems.push(format!("route: field `{field}`: {v:?} is not a duration of at least {min} ms")),
        }
    }
    route
}

/// The `{name}` placeholders of a template.
fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else { break };
        out.push(rest[start + 1..start + len].to_string());
        rest = &rest[start + len + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_cover_what_the_seed_lacked() {
        let rules = parse(DEFAULTS).expect("defaults").rules;
        let metric = |m: &str| rules.iter().filter(|r| r.metric == m).count();
        for m in ["cpu.util_pct", "mem.used_pct", "gpu.util_pct", "gpu.mem_used_pct", "disk.used_pct"] {
            assert_eq!(metric(m), 2, "{m}: warning and critical");
        }
        for m in [
            "gpu.temp_c",
            "cpu.temp_c",
            "gpu.throttle_thermal",
            "gpu.ecc_uncorrected",
            "learner.degraded",
            "worker.heartbeat_age_s",
            "tasks.failure_rate_pct",
            "tasks.class_failure_rate_pct",
            "scheduler.oldest_queued_s",
            "scheduler.quarantine_breaker_open",
            "recorder.lag_s",
        ] {
            assert!(metric(m) > 0, "{m}");
        }
        let cpu: Vec<f64> = rules.iter().filter(|r| r.metric == "cpu.util_pct").map(|r| r.threshold).collect();
        assert_eq!(cpu, [90.0, 95.0]);
    }

    #[test]
    fn a_full_rule_parses() {
        let rules = parse(
            r#"
rules:
  - name: LowMemory
    metric: mem.available_mb
    op: "<"
    threshold: 512
    clear: 1024
    for: 30s
    keep_firing_for: 2m
    severity: critical
    worker: "gpu-*"
    labels: {team: ml}
    summary: "{worker_id} has {value} MB left"
"#,
        )
        .expect("valid")
        .rules;
        let r = &rules[0];
        assert_eq!(
            (r.op, r.threshold, r.clear, r.for_ms, r.keep_firing_for_ms),
            (Op::Lt, 512.0, Some(1024.0), 30_000, 120_000)
        );
        assert_eq!(r.labels["team"], "ml");
        assert_eq!(r.render("gpu-1", "mem", 300.0), "gpu-1 has 300.0 MB left");
    }

    #[test]
    fn every_problem_is_named_by_rule_and_field() {
        let err = parse(
            r#"
rules:
  - {name: A, metric: cpu.util_pct, threshold: 90, clear: 95, severity: warning}
  - {name: A, metric: cpu.util_pct, op: "=>", threshold: 90, severity: loud, for: soon}
  - {metric: "", severity: info, summary: "{host}"}
"#,
        )
        .expect_err("invalid");
        for expected in [
            "rule 1 (A): field `clear`: 95 must be at or below the threshold 90",
            "rule 2 (A): field `name`: \"A\" is used by another rule",
            "rule 2 (A): field `op`: \"=>\" is not one of",
            "rule 2 (A): field `for`: \"soon\" is not a duration",
            "rule 2 (A): field `severity`: \"loud\" is not one of info, warning, critical",
            "rule 3: field `name`: missing",
            "rule 3: field `metric`: missing",
            "rule 3: field `threshold`: missing",
            "rule 3: field `summary`: unknown placeholder {host}",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        assert!(parse("rules: [{name: A, metric: m, threshold: 1, severity: info, colour: red}]")
            .expect_err("unknown field")
            .contains("colour"));
        assert!(parse("not: yaml: [").is_err());
    }

    #[test]
    fn route_and_inhibit_rules_parse_with_defaults() {
        let c = parse("rules: []").expect("empty");
        assert_eq!((c.route, c.inhibits), (Route::default(), default_inhibits()));
        let c = parse(
            r#"
rules: []
route: {group_by: [alertname, worker_id], group_wait: 1s, repeat_interval: 1h}
inhibit:
  - {source: {alertname: "Critical*"}, target: {severity: warning}, equal: [worker_id]}
"#,
        )
        .expect("valid");
        assert_eq!(c.route.group_by, ["alertname", "worker_id"]);
        assert_eq!(
            (c.route.group_wait_ms, c.route.group_interval_ms, c.route.repeat_interval_ms),
            (1_000, 5_000, 3_600_000)
        );
        assert_eq!(c.inhibits.len(), 1);
        assert_eq!(c.inhibits[0].source[0].value, "Critical*");
        assert!(parse("rules: []\ninhibit: []").expect("none").inhibits.is_empty());
        let err =
            parse("rules: []\nroute: {group_interval: 0s}\ninhibit: [{target: {severity: info}}]").expect_err("bad");
        assert!(err.contains("route: field `group_interval`"), "{err}");
        assert!(err.contains("inhibit 1: field `source`"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("0"), Some(0));
        assert_eq!(parse_duration_ms("250ms"), Some(250));
        assert_eq!(parse_duration_ms("30s"), Some(30_000));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("1h"), Some(3_600_000));
        assert_eq!(parse_duration_ms("8d"), None);
        assert_eq!(parse_duration_ms("s"), None);
        assert_eq!(parse_duration_ms("10"), None);
    }
}
