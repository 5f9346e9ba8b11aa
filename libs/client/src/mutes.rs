//! Muted tests (KV `hws_mutes`): add, list, end, and which mute covers a
//! failed task. A muted test still runs and is reported; only its failure
//! stops counting against `hwsched submit --wait`'s exit code.

use futures::StreamExt as _;
use hwsched_proto::{
    v1::{ExecutionResult, Mute},
    Message as _, SCHEMA_VERSION,
};

use crate::{Client, Error, Finished};

/// The longest a mute may last: a muted test must come back to someone's attention.
pub const MAX_MUTE_MS: i64 = 90 * 86_400_000;

/// Whether `text` matches the glob `pattern` (`*`, `?`, `[...]`; whole text, case-sensitive).
fn glob(pattern: &str) -> Option<globset::GlobMatcher> {
    globset::GlobBuilder::new(pattern).literal_separator(false).build().ok().map(|g| g.compile_matcher())
}

/// Why a mute pattern cannot be used.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() || pattern.chars().all(|c| c == '*') {
        return Err("the pattern must name something: a mute of every test hides every failure".into());
    }
    glob(pattern).map(|_| ()).ok_or_else(|| format!("{pattern:?} is not a valid glob"))
}

/// The names a failed task answers to: its name, its id, and (when every
/// failing JUnit case must be covered) those cases.
fn failing_cases(result: Option<&ExecutionResult>) -> Vec<String> {
    let Some(tests) = result.and_then(|r| r.tests.as_ref()) else { return Vec::new() };
    tests
        .failures
        .iter()
        .map(|c| if c.classname.is_empty() { c.name.clone() } else { format!("{}.{}", c.classname, c.name) })
        .collect()
}

/// The mute in force at `now_ms` that covers the failed task `f` named
/// `name`: one matching its name or id, or, when its JUnit report lists
/// failing cases, mutes covering every one of them (the first is returned).
pub fn covering<'a>(mutes: &'a [Mute], f: &Finished, name: &str, now_ms: i64) -> Option<&'a Mute> {
    let live: Vec<(&Mute, globset::GlobMatcher)> = mutes
        .iter()
        .filter(|m| m.created_at_ms <= now_ms && now_ms < m.ends_at_ms)
        .filter_map(|m| glob(&m.pattern).map(|g| (m, g)))
        .collect();
    let by_name = live.iter().find(|(_, g)| (!name.is_empty() && g.is_match(name)) || g.is_match(&f.task_id));
    if let Some((m, _)) = by_name {
        return Some(m);
    }
    let cases = failing_cases(f.result.as_ref());
    if cases.is_empty() {
        return None;
    }
    let cover = |case: &str| {
        let short = case.rsplit('.').next().unwrap_or(case);
        live.iter().find(|(_, g)| g.is_match(case) || g.is_match(short)).map(|(m, _)| *m)
    };
    let covers: Option<Vec<&Mute>> = cases.iter().map(|c| cover(c)).collect();
    covers.and_then(|c| c.into_iter().next())
}

impl Client {
    async fn mutes_kv(&self) -> Result<async_nats::jetstream::kv::Store, Error> {
        hwsched_bus::streams::bucket(&self.bus, &self.bus.subjects().mutes_bucket())
            .await
            .map_err(|e| Error::bus("open the mutes bucket", e))
    }

    /// Every stored mute, ended ones included (an undecodable entry is skipped).
    pub async fn mutes(&self) -> Result<Vec<Mute>, Error> {
        let kv = self.mutes_kv().await?;
        let mut keys = kv.keys().await.map_err(|e| Error::bus("list mutes", e))?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| Error::bus("list mutes", e))?;
            if let Some(bytes) = kv.get(&k).await.map_err(|e| Error::bus("read a mute", e))? {
                match Mute::decode(bytes.as_ref()) {
                    Ok(m) => out.push(m),
                    Err(e) => tracing::warn!(key = %k, error = %e, "undecodable mute skipped"),
                }
            }
        }
        out.sort_by(|a, b| (a.ends_at_ms, &a.id).cmp(&(b.ends_at_ms, &b.id)));
        Ok(out)
    }

    /// Mutes `pattern` for `for_ms` from `now_ms`; returns the stored mute.
    pub async fn mute(&self, pattern: &str, for_ms: i64, reason: &str, by: &str, now_ms: i64) -> Result<Mute, Error> {
        check_pattern(pattern).map_err(Error::Invalid)?;
        if !(1..=MAX_MUTE_MS).contains(&for_ms) {
            return Err(Error::Invalid("a mute lasts between 1 ms and 90 days".into()));
        }
        if reason.trim().is_empty() {
            return Err(Error::Invalid("say why the test is muted (--reason)".into()));
        }
        let m = Mute {
            schema_version: SCHEMA_VERSION,
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            pattern: pattern.into(),
            reason: reason.into(),
            created_by: by.into(),
            created_at_ms: now_ms,
            ends_at_ms: now_ms + for_ms,
        };
        let kv = self.mutes_kv().await?;
        kv.put(&m.id, m.encode_to_vec().into()).await.map_err(|e| Error::bus("store the mute", e))?;
        Ok(m)
    }

    /// Ends the mute `id` now; false when there is none.
    pub async fn unmute(&self, id: &str, now_ms: i64) -> Result<bool, Error> {
        let kv = self.mutes_kv().await?;
        let Some(bytes) = kv.get(id).await.map_err(|e| Error::bus("read the mute", e))? else {
            return Ok(false);
        };
        let mut m = Mute::decode(bytes.as_ref()).map_err(|e| Error::Invalid(format!("undecodable mute {id}: {e}")))?;
        m.ends_at_ms = m.ends_at_ms.min(now_ms);
        kv.put(id, m.encode_to_vec().into()).await.map_err(|e| Error::bus("store the mute", e))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::{TestCase, TestSummary};

    use super::*;

    fn mute(pattern: &str, ends_at_ms: i64) -> Mute {
        Mute { id: pattern.into(), pattern: pattern.into(), ends_at_ms, ..Default::default() }
    }

    fn failed(id: &str, cases: &[(&str, &str)]) -> Finished {
        let failures =
            cases.iter().map(|(c, n)| TestCase { classname: (*c).into(), name: (*n).into(), ..Default::default() });
        Finished {
            task_id: id.into(),
            result: Some(ExecutionResult {
                tests: Some(TestSummary { failures: failures.collect(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_mute_covers_a_task_by_name_or_id_while_it_lasts() {
        let mutes = [mute("gpu-*-flaky", 100)];
        assert!(covering(&mutes, &failed("t1", &[]), "gpu-conv-flaky", 50).is_some());
        assert!(covering(&mutes, &failed("gpu-x-flaky", &[]), "", 50).is_some(), "by id");
        assert!(covering(&mutes, &failed("t1", &[]), "gpu-conv-flaky", 100).is_none(), "ended");
        assert!(covering(&mutes, &failed("t1", &[]), "cpu-conv", 50).is_none());
    }

    #[test]
    fn junit_failures_are_covered_only_when_every_one_is() {
        let mutes = [mute("tests.test_io.test_slow_*", 100), mute("test_timing", 100)];
        let one = failed("t", &[("tests.test_io", "test_slow_disk")]);
        assert_eq!(covering(&mutes, &one, "suite", 1).map(|m| m.id.as_str()), Some("tests.test_io.test_slow_*"));
        let two = failed("t", &[("tests.test_io", "test_slow_disk"), ("tests.test_net", "test_timing")]);
        assert!(covering(&mutes, &two, "suite", 1).is_some(), "the short name matches too");
        let three = failed("t", &[("tests.test_io", "test_slow_disk"), ("tests.test_net", "test_real_bug")]);
        assert!(covering(&mutes, &three, "suite", 1).is_none(), "an unmuted failing case fails the task");
    }

    #[test]
    fn a_pattern_must_name_something() {
        assert!(check_pattern("*").is_err());
        assert!(check_pattern("  ").is_err());
        assert!(check_pattern("a[").is_err());
        assert!(check_pattern("test_*").is_ok());
    }
}
