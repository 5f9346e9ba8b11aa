//! What happens to an alert between its transition and the webhooks, with
//! Alertmanager's semantics: grouping, inhibition and silences. Pure, like
//! the evaluator: transitions and time go in, notifications come out.
//!
//! - **Grouping**: alerts with the same values of the route's `group_by`
//!   labels form a group. A new group is notified `group_wait` after its first
//!   alert (collecting the alerts that arrive with it); after that the group
//!   is looked at every `group_interval` and notified when an alert started
//!   firing or a notified alert resolved; unchanged, it is notified again
//!   every `repeat_interval` while any of its alerts fires. Unlike
//!   Alertmanager, news for a group last notified more than `group_interval`
//!   ago goes out after `group_wait` rather than at the next periodic look:
//!   the interval limits how often a group is sent, it does not delay the
//!   first change after a quiet spell.
//! - **Inhibition**: a firing alert matching an inhibit rule's `source` mutes
//!   the alerts matching its `target` that share the `equal` labels (a
//!   critical alert mutes the warning of the same resource; a worker offline
//!   mutes that worker's other alerts).
//! - **Silences**: an alert matching every matcher of an active silence is
//!   muted.
//!
//! A muted alert is not sent; if it was muted when it resolved and never
//! notified firing, its resolution is not sent either. An alert that becomes
//! unmuted while still firing (the silence expired, the inhibiting alert
//! resolved) is sent at its group's next look.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hwsched_proto::v1::{Alert, AlertState, Matcher, Silence};

use crate::rule::matches;

/// Labels of an alert: the rule's own labels, then `alertname`, `severity`,
/// `worker_id`, `device` and `metric` (these win over a rule label of the same name).
pub fn labels(a: &Alert) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in [
        ("alertname", &a.rule),
        ("severity", &a.severity),
        ("worker_id", &a.worker_id),
        ("device", &a.device),
        ("metric", &a.metric),
    ] {
        l.insert(k.into(), v.clone());
    }
    l
}

/// Whether every matcher holds for `labels` (a missing label matches only `""`).
pub fn matches_all(matchers: &[Matcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|m| matches(&m.value, labels.get(&m.label).map_or("", String::as_str)))
}

/// How alerts are grouped and how often groups are notified.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Labels whose values make a group (empty: one group for everything).
    pub group_by: Vec<String>,
    /// A new group waits this long for more alerts before its first notification.
    pub group_wait_ms: i64,
    /// How often a notified group is looked at for changes.
    pub group_interval_ms: i64,
    /// An unchanged group with firing alerts is notified again after this long.
    pub repeat_interval_ms: i64,
}

impl Default for Route {
    /// Group per rule; 200 ms wait (simultaneous transitions share one
    /// notification, well inside the 1 s latency target), changes at most
    /// every 5 s, repeats every 4 h.
    fn default() -> Self {
        Self {
            group_by: vec!["alertname".into()],
            group_wait_ms: 200,
            group_interval_ms: 5_000,
            repeat_interval_ms: 4 * 3_600_000,
        }
    }
}

/// An inhibit rule: a firing `source` alert mutes the `target` alerts that
/// have the same values of the `equal` labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Inhibit {
    /// Matchers selecting muting alerts.
    pub source: Vec<Matcher>,
    /// Matchers selecting muted alerts.
    pub target: Vec<Matcher>,
    /// Labels source and target must share.
    pub equal: Vec<String>,
}

/// One notification: a group's alerts to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Identifies the group, e.g. `{alertname="HotGpu"}`.
    pub group_key: String,
    /// The group's `group_by` label values.
    pub group_labels: BTreeMap<String, String>,
    /// Firing (unmuted) and newly resolved alerts, by fingerprint.
    pub alerts: Vec<Alert>,
    /// Whether this is a repeat of an unchanged group.
    pub repeat: bool,
}

impl Notification {
    /// "firing" when any alert fires, else "resolved".
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| a.state() == AlertState::Firing) {
            "firing"
        } else {
            "resolved"
        }
    }
}

#[derive(Debug)]
struct Group {
    labels: BTreeMap<String, String>,
    /// The group's alerts: firing ones, and resolved ones not yet sent.
    alerts: BTreeMap<String, Alert>,
    /// Fingerprints the receivers last heard as firing.
    notified: BTreeSet<String>,
    next_look_ms: i64,
    last_sent_ms: Option<i64>,
}

/// Grouping, inhibition and silences over the alerts firing now.
#[derive(Debug, Default)]
pub struct Dispatcher {
    route: Route,
    inhibits: Vec<Inhibit>,
    silences: HashMap<String, Silence>,
    groups: BTreeMap<String, Group>,
    /// Per inhibit rule: the `equal` label values of firing source alerts -> their fingerprints.
    sources: Vec<HashMap<Vec<String>, BTreeSet<String>>>,
}

impl Dispatcher {
    /// A dispatcher with no alerts and no silences.
    pub fn new(route: Route, inhibits: Vec<Inhibit>) -> Self {
        let sources = vec![HashMap::new(); inhibits.len()];
        Self { route, inhibits, sources, ..Default::default() }
    }

    /// Replaces the route and inhibit rules (a rules reload), keeping the alerts:
    /// they are grouped again and every group looked at without delay.
    pub fn configure(&mut self, route: Route, inhibits: Vec<Inhibit>, now_ms: i64) {
        if route == self.route && inhibits == self.inhibits {
            return;
        }
        let old = std::mem::take(&mut self.groups);
        self.route = route;
        self.inhibits = inhibits;
        self.sources = vec![HashMap::new(); self.inhibits.len()];
        for g in old.into_values() {
            for (fp, a) in g.alerts {
                let notified = g.notified.contains(&fp) || a.state() == AlertState::Resolved;
                self.place(a, now_ms, notified);
            }
        }
        for g in self.groups.values_mut() {
            g.next_look_ms = now_ms;
            if !g.notified.is_empty() {
                g.last_sent_ms = Some(now_ms);
            }
        }
    }

    fn group_key(&self, labels: &BTreeMap<String, String>) -> (String, BTreeMap<String, String>) {
        let picked: BTreeMap<String, String> =
            self.route.group_by.iter().map(|k| (k.clone(), labels.get(k).cloned().unwrap_or_default())).collect();
        let inner: Vec<String> = picked.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        (format!("{{{}}}", inner.join(",")), picked)
    }

    /// Takes one transition (firing or resolved) and returns why it is muted,
    /// if it is (`silence:<id>` or `inhibited:<fingerprint>`).
    pub fn ingest(&mut self, alert: Alert, now_ms: i64) -> Option<String> {
        self.place(alert, now_ms, false)
    }

    /// Marks a firing alert as already notified (an alert restored after a
    /// restart): it is not sent again until it changes or repeats.
    pub fn restore(&mut self, alert: Alert, now_ms: i64) {
        let notified = alert.muted_by.is_empty();
        self.place(alert, now_ms, notified);
    }

    /// Files a transition into its group; `notified`: the receivers already
    /// heard of it (a restored or regrouped alert), so it is not sent again.
    fn place(&mut self, alert: Alert, now_ms: i64, notified: bool) -> Option<String> {
        let labels = labels(&alert);
        let firing = alert.state() == AlertState::Firing;
        for (i, rule) in self.inhibits.iter().enumerate() {
            if matches_all(&rule.source, &labels) {
                let key = equal_values(&rule.equal, &labels);
                let set = self.sources[i].entry(key.clone()).or_default();
                if firing {
                    set.insert(alert.fingerprint.clone());
                } else {
                    set.remove(&alert.fingerprint);
                    if set.is_empty() {
                        self.sources[i].remove(&key);
                    }
                }
            }
        }
        let muted = self.muted_by(&alert.fingerprint, &labels, now_ms);
        let (key, group_labels) = self.group_key(&labels);
        let (wait, interval) = (self.route.group_wait_ms, self.route.group_interval_ms);
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels: group_labels,
            alerts: BTreeMap::new(),
            notified: BTreeSet::new(),
            next_look_ms: now_ms + if notified { interval } else { wait },
            last_sent_ms: notified.then_some(now_ms),
        });
        if notified && firing {
            group.notified.insert(alert.fingerprint.clone());
        }
        // news (a new firing alert, or the end of a notified one) for a group
        // that has been quiet for a group interval goes out after the group
        // wait, not at the next periodic look
        let news = !notified && muted.is_none() && (firing || group.notified.contains(&alert.fingerprint));
        if news {
            let earliest = (now_ms + wait).max(group.last_sent_ms.map_or(0, |t| t + interval));
            group.next_look_ms = group.next_look_ms.min(earliest);
        }
        if !firing && !notified && !group.notified.contains(&alert.fingerprint) {
            // never notified firing: its resolution is news to nobody
            group.alerts.remove(&alert.fingerprint);
        } else {
            group.alerts.insert(alert.fingerprint.clone(), alert);
        }
        muted
    }

    /// Why an alert with these labels is muted now, if it is.
    fn muted_by(&self, fingerprint: &str, labels: &BTreeMap<String, String>, now_ms: i64) -> Option<String> {
        let mut silences: Vec<&Silence> = self
            .silences
            .values()
            .filter(|s| s.starts_at_ms <= now_ms && now_ms < s.ends_at_ms && matches_all(&s.matchers, labels))
            .collect();
        silences.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(s) = silences.first() {
            return Some(format!("silence:{}", s.id));
        }
        for (i, rule) in self.inhibits.iter().enumerate() {
            if !matches_all(&rule.target, labels) {
                continue;
            }
            let key = equal_values(&rule.equal, labels);
            if let Some(by) = self.sources[i].get(&key).and_then(|s| s.iter().find(|f| *f != fingerprint)) {
                return Some(format!("inhibited:{by}"));
            }
        }
        None
    }

    /// Adds or replaces a silence.
    pub fn set_silence(&mut self, s: Silence) {
        self.silences.insert(s.id.clone(), s);
    }

    /// Removes a silence.
    pub fn remove_silence(&mut self, id: &str) {
        self.silences.remove(id);
    }

    /// When [`Dispatcher::due`] has something to look at next.
    pub fn next_due_ms(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_look_ms).min()
    }

    /// Firing alerts held (muted or not).
    pub fn firing(&self) -> usize {
        self.groups.values().map(|g| g.alerts.values().filter(|a| a.state() == AlertState::Firing).count()).sum()
    }

    /// The firing alerts that are not muted now (sent again to Alertmanager,
    /// which forgets alerts not re-sent).
    pub fn unmuted_firing(&self, now_ms: i64) -> Vec<Alert> {
        self.groups
            .values()
            .flat_map(|g| g.alerts.values())
            .filter(|a| a.state() == AlertState::Firing && self.muted_by(&a.fingerprint, &labels(a), now_ms).is_none())
            .cloned()
            .collect()
    }

    /// Looks at the groups that are due and returns the notifications to send.
    pub fn due(&mut self, now_ms: i64) -> Vec<Notification> {
        let due: Vec<String> =
            self.groups.iter().filter(|(_, g)| g.next_look_ms <= now_ms).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::new();
        for key in due {
            let Some(group) = self.groups.get(&key) else { continue };
            let mut firing = BTreeSet::new();
            let mut send = Vec::new();
            for (fp, a) in &group.alerts {
                if a.state() == AlertState::Resolved {
                    send.push(a.clone());
                } else if self.muted_by(fp, &labels(a), now_ms).is_none() {
                    firing.insert(fp.clone());
                    send.push(a.clone());
                }
            }
            let changed =
                !firing.is_subset(&group.notified) || group.alerts.values().any(|a| a.state() == AlertState::Resolved);
            let repeat = !changed
                && !firing.is_empty()
                && group.last_sent_ms.is_some_and(|t| now_ms - t >= self.route.repeat_interval_ms);
            let interval = self.route.group_interval_ms;
            let Some(group) = self.groups.get_mut(&key) else { continue };
            // resolved alerts are sent once; muted ones drop out of "notified"
            // so that they are sent again when they are no longer muted
            group.alerts.retain(|_, a| a.state() == AlertState::Firing);
            group.notified = firing;
            group.next_look_ms = now_ms + interval;
            if changed || repeat {
                group.last_sent_ms = Some(now_ms);
                out.push(Notification {
                    group_key: key.clone(),
                    group_labels: group.labels.clone(),
                    alerts: send,
                    repeat,
                });
            }
            if group.alerts.is_empty() {
                self.groups.remove(&key);
            }
        }
        out
    }
}

fn equal_values(equal: &[String], labels: &BTreeMap<String, String>) -> Vec<String> {
    equal.iter().map(|k| labels.get(k).cloned().unwrap_or_default()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, severity: &str, worker: &str, state: AlertState, at: i64) -> Alert {
        Alert {
            fingerprint: format!("{rule}:{worker}:cpu"),
            rule: rule.into(),
            severity: severity.into(),
            state: state as i32,
            worker_id: worker.into(),
            device: "cpu".into(),
            metric: "cpu.util_pct".into(),
            starts_at_ms: at,
            at_ms: at,
            ..Default::default()
        }
    }

    fn firing(rule: &str, worker: &str, at: i64) -> Alert {
        alert(rule, "warning", worker, AlertState::Firing, at)
    }

    fn resolved(rule: &str, worker: &str, at: i64) -> Alert {
        alert(rule, "warning", worker, AlertState::Resolved, at)
    }

    fn m(label: &str, value: &str) -> Matcher {
        Matcher { label: label.into(), value: value.into() }
    }

    fn route() -> Route {
        Route {
            group_by: vec!["alertname".into()],
            group_wait_ms: 200,
            group_interval_ms: 5_000,
            repeat_interval_ms: 60_000,
        }
    }

    fn fingerprints(n: &Notification) -> Vec<(String, &'static str)> {
        n.alerts
            .iter()
            .map(|a| (a.worker_id.clone(), if a.state() == AlertState::Firing { "firing" } else { "resolved" }))
            .collect()
    }

    #[test]
    fn a_group_waits_for_its_alerts_then_sends_them_together() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.ingest(firing("HighCpu", "a", 0), 0);
        d.ingest(firing("HighCpu", "b", 150), 150);
        d.ingest(firing("HotGpu", "a", 150), 150);
        assert!(d.due(199).is_empty(), "group wait not over");
        assert_eq!(d.next_due_ms(), Some(200));
        let n = d.due(200);
        assert_eq!(n.len(), 1, "HighCpu is due; HotGpu's group started later");
        assert_eq!(n[0].group_key, "{alertname=\"HighCpu\"}");
        assert_eq!(fingerprints(&n[0]), [("a".into(), "firing"), ("b".into(), "firing")]);
        assert_eq!(d.due(350).len(), 1, "HotGpu after its own wait");
        assert!(d.due(5_200).is_empty(), "nothing changed: no repeat before repeat_interval");
    }

    #[test]
    fn changes_go_out_at_the_group_interval_and_resolves_once() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.ingest(firing("HighCpu", "a", 0), 0);
        assert_eq!(d.due(200).len(), 1);
        d.ingest(firing("HighCpu", "b", 1_000), 1_000);
        assert!(d.due(1_000).is_empty(), "an existing group waits for its interval");
        let n = d.due(5_200);
        assert_eq!(fingerprints(&n[0]), [("a".into(), "firing"), ("b".into(), "firing")]);
        d.ingest(resolved("HighCpu", "a", 6_000), 6_000);
        let n = d.due(10_200);
        assert_eq!(n[0].status(), "firing");
        assert_eq!(fingerprints(&n[0]), [("a".into(), "resolved"), ("b".into(), "firing")]);
        d.ingest(resolved("HighCpu", "b", 11_000), 11_000);
        let n = d.due(15_200);
        assert_eq!((n[0].status(), fingerprints(&n[0])), ("resolved", vec![("b".into(), "resolved")]));
        assert_eq!(d.next_due_ms(), None, "an empty group is gone");
        assert_eq!(d.firing(), 0);
    }

    #[test]
    fn news_for_a_quiet_group_goes_out_after_the_group_wait() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.ingest(firing("HighCpu", "a", 0), 0);
        assert_eq!(d.due(200).len(), 1);
        assert!(d.due(5_200).is_empty() && d.due(10_200).is_empty());
        // quiet since 200: a resolve at 12_000 goes out at 12_200, not at 15_200
        d.ingest(resolved("HighCpu", "a", 12_000), 12_000);
        assert_eq!(d.next_due_ms(), Some(12_200));
        assert_eq!(fingerprints(&d.due(12_200)[0]), [("a".into(), "resolved")]);
        // a muted alert is no news
        d.set_silence(Silence {
            id: "s".into(),
            matchers: vec![m("worker_id", "b")],
            starts_at_ms: 0,
            ends_at_ms: 99_999,
            ..Default::default()
        });
        d.ingest(firing("HighCpu", "a", 20_000), 20_000);
        assert_eq!(d.next_due_ms(), Some(20_200));
        assert_eq!(d.due(20_200).len(), 1);
        assert!(d.due(25_200).is_empty() && d.due(30_200).is_empty());
        d.ingest(firing("HighCpu", "b", 31_000), 31_000);
        assert_eq!(d.next_due_ms(), Some(35_200), "the periodic look, not pulled earlier");
    }

    #[test]
    fn an_unchanged_group_repeats_on_its_interval() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.ingest(firing("HighCpu", "a", 0), 0);
        assert!(!d.due(200)[0].repeat);
        let mut at = 200;
        let mut repeats = 0;
        while at < 130_200 {
            at += 5_000;
            for n in d.due(at) {
                assert!(n.repeat);
                repeats += 1;
            }
        }
        assert_eq!(repeats, 2, "every 60 s, looked at every 5 s");
    }

    #[test]
    fn a_critical_alert_inhibits_the_warning_of_the_same_resource() {
        let inhibit = Inhibit {
            source: vec![m("severity", "critical")],
            target: vec![m("severity", "warning")],
            equal: vec!["worker_id".into(), "device".into(), "metric".into()],
        };
        let mut d = Dispatcher::new(Route { group_by: vec![], ..route() }, vec![inhibit]);
        assert_eq!(d.ingest(alert("CriticalCpu", "critical", "a", AlertState::Firing, 0), 0), None);
        assert_eq!(
            d.ingest(firing("HighCpu", "a", 0), 0).as_deref(),
            Some("inhibited:CriticalCpu:a:cpu"),
            "same worker, device and metric"
        );
        assert_eq!(d.ingest(firing("HighCpu", "b", 0), 0), None, "another worker");
        let n = d.due(200);
        let sent: Vec<&str> = n[0].alerts.iter().map(|a| a.fingerprint.as_str()).collect();
        assert_eq!(sent, ["CriticalCpu:a:cpu", "HighCpu:b:cpu"]);
        // the critical one resolves: the warning, still firing, goes out
        d.ingest(alert("CriticalCpu", "critical", "a", AlertState::Resolved, 1_000), 1_000);
        let n = d.due(5_200);
        let sent: Vec<(String, &str)> = fingerprints(&n[0]);
        assert!(sent.contains(&("a".into(), "resolved")) && sent.contains(&("a".into(), "firing")), "{sent:?}");
    }

    #[test]
    fn worker_offline_mutes_that_workers_other_alerts() {
        let inhibit =
            Inhibit { source: vec![m("alertname", "WorkerOffline")], target: vec![], equal: vec!["worker_id".into()] };
        let mut d = Dispatcher::new(route(), vec![inhibit]);
        assert_eq!(d.ingest(firing("WorkerOffline", "a", 0), 0), None, "an alert does not inhibit itself");
        assert!(d.ingest(firing("HighCpu", "a", 0), 0).is_some());
        assert_eq!(d.ingest(firing("HighCpu", "b", 0), 0), None);
    }

    #[test]
    fn a_silence_mutes_until_it_ends_and_a_muted_resolve_is_not_sent() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.set_silence(Silence {
            id: "s1".into(),
            matchers: vec![m("alertname", "HighCpu"), m("worker_id", "gpu-*")],
            starts_at_ms: 0,
            ends_at_ms: 10_000,
            ..Default::default()
        });
        assert_eq!(d.ingest(firing("HighCpu", "gpu-1", 0), 0).as_deref(), Some("silence:s1"));
        assert_eq!(d.ingest(firing("HighCpu", "cpu-1", 0), 0), None, "not matched");
        let n = d.due(200);
        assert_eq!(fingerprints(&n[0]), [("cpu-1".into(), "firing")]);
        // the silence ends while gpu-1 still fires: it goes out
        assert!(d.due(5_200).is_empty());
        let n = d.due(10_200);
        assert_eq!(fingerprints(&n[0]), [("cpu-1".into(), "firing"), ("gpu-1".into(), "firing")]);
        // silenced from firing to resolved: nothing at all
        let mut d = Dispatcher::new(route(), vec![]);
        d.set_silence(Silence {
            id: "s".into(),
            matchers: vec![m("alertname", "HighCpu")],
            starts_at_ms: 0,
            ends_at_ms: 99_999,
            ..Default::default()
        });
        d.ingest(firing("HighCpu", "a", 0), 0);
        assert!(d.due(200).is_empty());
        d.ingest(resolved("HighCpu", "a", 1_000), 1_000);
        assert!(d.due(5_200).is_empty());
        d.remove_silence("s");
        assert_eq!(d.next_due_ms(), None);
    }

    #[test]
    fn a_restored_alert_is_not_sent_again_but_its_resolution_is() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.restore(firing("HighCpu", "a", 0), 100_000);
        assert!(d.due(105_000).is_empty());
        d.ingest(resolved("HighCpu", "a", 106_000), 106_000);
        let n = d.due(110_000);
        assert_eq!(fingerprints(&n[0]), [("a".into(), "resolved")]);
    }

    #[test]
    fn reconfiguring_regroups_without_resending() {
        let mut d = Dispatcher::new(route(), vec![]);
        d.ingest(firing("HighCpu", "a", 0), 0);
        d.ingest(firing("HighCpu", "b", 0), 0);
        assert_eq!(d.due(200).len(), 1);
        d.configure(Route { group_by: vec!["worker_id".into()], ..route() }, vec![], 1_000);
        assert!(d.due(1_200).is_empty() && d.due(6_000).is_empty(), "already notified");
        d.ingest(resolved("HighCpu", "a", 7_000), 7_000);
        let n = d.due(11_000);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].group_key, "{worker_id=\"a\"}");
    }
}
