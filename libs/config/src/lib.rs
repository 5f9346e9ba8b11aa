//! Shared configuration of hwsched services: flags with `HWSCHED_*` environment
//! fallbacks, defaults that work on a laptop, validated before anything connects.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Args, Command, FromArgMatches};

/// Default NATS URL (a local server).
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default first token of subject, stream and bucket names.
pub const DEFAULT_SUBJECT_PREFIX: &str = "hws";
/// Default time bundles, stored logs and artifacts are kept: 7 days, in seconds.
pub const DEFAULT_FILES_MAX_AGE_S: u64 = 7 * 24 * 3600;

/// What a flag struct holds when no flag is given, with its `HWSCHED_*`
/// environment fallbacks ignored: its clap defaults. Each config's tests
/// compare its `Default` (or test constructor) with this, so the defaults
/// written in `#[arg]` and in code cannot drift apart.
pub fn clap_defaults<T: Args + FromArgMatches>() -> Result<T, clap::Error> {
    let cmd = T::augment_args(Command::new("defaults")).mut_args(|a| a.env(Option::<&'static str>::None));
    T::from_arg_matches(&cmd.try_get_matches_from(["defaults"])?)
}

/// Checks that `value` (a config's `Default` or test constructor) holds the
/// [`clap_defaults`]; the error shows both when they differ.
pub fn check_flag_defaults<T: Args + FromArgMatches + std::fmt::Debug>(value: &T) -> Result<(), String> {
    let parsed = clap_defaults::<T>().map_err(|e| e.to_string())?;
    let (parsed, value) = (format!("{parsed:?}"), format!("{value:?}"));
    if parsed == value {
        Ok(())
    } else {
        Err(format!("flag defaults {parsed} differ from {value}"))
    }
}

/// A configuration problem, naming the field (flag and environment variable).
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// Flag / environment variable at fault.
    pub field: &'static str,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

fn bad(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { field, reason: reason.into() }
}

/// `url` (comma-separated URLs too) with any credentials in it (`user:password@`,
/// `token@`) replaced by `***`: what logs and error messages show.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|part| match part.rfind('@') {
            Some(at) => {
                let start = authority_start(part).filter(|&i| i <= at).unwrap_or(0);
                format!("{}***{}", &part[..start], &part[at..])
            }
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Where the authority (`user:password@host`) of `url` begins: after
/// `scheme:` and the slashes that follow it. URL parsers take one slash or a
/// backslash too (`ws:/u:p@h`), so "://" is not looked for. `None` without a
/// scheme followed by a slash: then everything before the `@` is hidden.
fn authority_start(url: &str) -> Option<usize> {
    let colon = url.find(':')?;
    let scheme = &url[..colon];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let rest = &url[colon + 1..];
    let after = rest.trim_start_matches(['/', '\\']);
    (valid && after.len() < rest.len()).then(|| url.len() - after.len())
}

/// `Some("***")` for a set secret.
fn hidden(secret: &Option<impl Sized>) -> Option<&'static str> {
    secret.as_ref().map(|_| "***")
}

/// How to reach NATS.
#[derive(Clone, Args)]
pub struct NatsConfig {
    /// NATS server URL(s), comma separated.
    #[arg(
        id = "nats_url",
        global = true,
        long = "nats-url",
        env = "HWSCHED_NATS_URL",
        default_value = DEFAULT_NATS_URL
    )]
    pub url: String,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(id = "nats_creds", global = true, long = "nats-creds", env = "HWSCHED_NATS_CREDS")]
    pub creds_file: Option<PathBuf>,
    /// NATS user name (with --nats-password).
    #[arg(id = "nats_user", global = true, long = "nats-user", env = "HWSCHED_NATS_USER")]
    pub user: Option<String>,
    /// NATS password.
    #[arg(
        id = "nats_password",
        global = true,
        long = "nats-password",
        env = "HWSCHED_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the NATS server; enables TLS.
    #[arg(id = "nats_tls_ca", global = true, long = "nats-tls-ca", env = "HWSCHED_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(id = "nats_tls_cert", global = true, long = "nats-tls-cert", env = "HWSCHED_NATS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(id = "nats_tls_key", global = true, long = "nats-tls-key", env = "HWSCHED_NATS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// First token of every hwsched subject, stream and bucket name.
    #[arg(
        id = "subject_prefix",
        global = true,
        long = "subject-prefix",
        env = "HWSCHED_SUBJECT_PREFIX",
        default_value = DEFAULT_SUBJECT_PREFIX
    )]
    pub subject_prefix: String,
    /// Seconds a bundle is kept in the `hws_bundles` Object Store (applied at provisioning).
    #[arg(
        id = "bundle_max_age_s",
        global = true,
        long = "bundle-max-age-s",
        env = "HWSCHED_BUNDLE_MAX_AGE_S",
        default_value_t = DEFAULT_FILES_MAX_AGE_S
    )]
    pub bundle_max_age_s: u64,
    /// Seconds stored logs and artifacts are kept (`hws_logs`, `hws_artifacts`; applied at provisioning).
    #[arg(
        id = "output_max_age_s",
        global = true,
        long = "output-max-age-s",
        env = "HWSCHED_OUTPUT_MAX_AGE_S",
        default_value_t = DEFAULT_FILES_MAX_AGE_S
    )]
    pub output_max_age_s: u64,
    /// Copies of every JetStream stream, KV bucket and Object Store hwsched
    /// creates (1..=5; 3 on a three-node NATS cluster). Applied at
    /// provisioning, also to existing ones; every service must get the same.
    #[arg(id = "js_replicas", global = true, long = "js-replicas", env = "HWSCHED_JS_REPLICAS", default_value_t = 1)]
    pub js_replicas: usize,
    /// The JetStream domain of the hub, for a service at a site whose NATS
    /// server is a leaf node of it (its requests go to `$JS.<domain>.API`).
    /// Unset: the JetStream of the server it connects to.
    #[arg(id = "js_domain", global = true, long = "js-domain", env = "HWSCHED_JS_DOMAIN")]
    pub js_domain: Option<String>,
}

impl NatsConfig {
    /// A config for `url` with every other field at its default (tests, tools).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            creds_file: None,
            user: None,
            password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            subject_prefix: DEFAULT_SUBJECT_PREFIX.into(),
            bundle_max_age_s: DEFAULT_FILES_MAX_AGE_S,
            output_max_age_s: DEFAULT_FILES_MAX_AGE_S,
            js_replicas: 1,
            js_domain: None,
        }
    }

    /// Prefix of this connection's reply inboxes: `_INBOX_<user>` with a user
    /// name (so NATS permissions can give each user its own inboxes and no one
    /// else's), else `_INBOX`.
    pub fn inbox_prefix(&self) -> String {
        match &self.user {
            Some(u) => format!(
                "_INBOX_{}",
                u.chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' })
                    .collect::<String>()
            ),
            None => "_INBOX".to_string(),
        }
    }

    /// Checks every field without connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const F: &str = "--nats-url / HWSCHED_NATS_URL";
        if self.url.trim().is_empty() {
            return Err(bad(F, "is empty"));
        }
        for part in self.url.split(',') {
            let shown = redact_url(part.trim());
            let u = url::Url::parse(part.trim())
                .map_err(|e| bad(F, format!("{shown:?} is not a URL ({e}); expected e.g. nats://127.0.0.1:4222")))?;
            if !matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") {
                return Err(bad(F, format!("{shown:?}: scheme must be nats, tls, ws or wss")));
            }
            if u.host_str().is_none_or(str::is_empty) {
                return Err(bad(F, format!("{shown:?} has no host")));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(bad("--nats-user / --nats-password", "give both or neither"));
        }
        if self.creds_file.is_some() && self.user.is_some() {
            return Err(bad("--nats-creds", "use either a credentials file or user/password, not both"));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(bad("--nats-tls-cert / --nats-tls-key", "give both or neither"));
        }
        for (field, path) in [
            ("--nats-creds / HWSCHED_NATS_CREDS", &self.creds_file),
            ("--nats-tls-ca / HWSCHED_NATS_TLS_CA", &self.tls_ca),
            ("--nats-tls-cert / HWSCHED_NATS_TLS_CERT", &self.tls_cert),
            ("--nats-tls-key / HWSCHED_NATS_TLS_KEY", &self.tls_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return Err(bad(field, format!("{} is not a readable file", p.display())));
                }
            }
        }
        for (field, v) in [
            ("--bundle-max-age-s / HWSCHED_BUNDLE_MAX_AGE_S", self.bundle_max_age_s),
            ("--output-max-age-s / HWSCHED_OUTPUT_MAX_AGE_S", self.output_max_age_s),
        ] {
            if !(60..=10 * 365 * 24 * 3600).contains(&v) {
                return Err(bad(field, format!("{v} must be between 60 s and 10 years (in seconds)")));
            }
        }
        if !(1..=MAX_JS_REPLICAS).contains(&self.js_replicas) {
            return Err(bad(
                "--js-replicas / HWSCHED_JS_REPLICAS",
                format!("{} must be between 1 and {MAX_JS_REPLICAS} (JetStream's limit)", self.js_replicas),
            ));
        }
        if let Some(d) = &self.js_domain {
            if !is_token(d) {
                return Err(bad(
                    "--js-domain / HWSCHED_JS_DOMAIN",
                    format!("{d:?} must be letters, digits, '_' or '-'"),
                ));
            }
        }
        validate_subject_prefix(&self.subject_prefix)
    }
}

/// The most copies JetStream keeps of a stream.
pub const MAX_JS_REPLICAS: usize = 5;

/// A prefix is one or more dot-separated tokens of `[A-Za-z0-9_-]`.
pub fn validate_subject_prefix(prefix: &str) -> Result<(), ConfigError> {
    const F: &str = "--subject-prefix / HWSCHED_SUBJECT_PREFIX";
    if prefix.is_empty() || prefix.split('.').any(|t| !is_token(t)) {
        return Err(bad(F, format!("{prefix:?} must be dot-separated tokens of letters, digits, '_' or '-'")));
    }
    Ok(())
}

/// True for a non-empty NATS subject token made of `[A-Za-z0-9_-]` (no wildcards, dots or spaces).
pub fn is_token(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// How to reach ClickHouse; unset URL turns ClickHouse features off.
#[derive(Clone, Args)]
pub struct ClickHouseConfig {
    /// ClickHouse HTTP URL, e.g. http://127.0.0.1:8123. Unset: ClickHouse features are off.
    #[arg(id = "clickhouse_url", global = true, long = "clickhouse-url", env = "HWSCHED_CLICKHOUSE_URL")]
    pub url: Option<String>,
    /// Database holding the hwsched tables.
    #[arg(
        id = "clickhouse_database",
        global = true,
        long = "clickhouse-database",
        env = "HWSCHED_CLICKHOUSE_DATABASE",
        default_value = "hwsched"
    )]
    pub database: String,
    /// ClickHouse user.
    #[arg(id = "clickhouse_user", global = true, long = "clickhouse-user", env = "HWSCHED_CLICKHOUSE_USER")]
    pub user: Option<String>,
    /// ClickHouse password.
    #[arg(
        id = "clickhouse_password",
        global = true,
        long = "clickhouse-password",
        env = "HWSCHED_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
}

// Debug never shows a secret: configurations end up in logs and panics.
impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("creds_file", &self.creds_file)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("subject_prefix", &self.subject_prefix)
            .field("bundle_max_age_s", &self.bundle_max_age_s)
            .field("output_max_age_s", &self.output_max_age_s)
            .field("js_replicas", &self.js_replicas)
            .field("js_domain", &self.js_domain)
            .finish()
    }
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .finish()
    }
}

impl ClickHouseConfig {
    /// Checks every field without connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.url {
            let parsed = url::Url::parse(u).map_err(|e| {
                bad(
                    "--clickhouse-url / HWSCHED_CLICKHOUSE_URL",
                    format!("{:?} is not a URL ({e}); expected e.g. http://127.0.0.1:8123", redact_url(u)),
                )
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("--clickhouse-url / HWSCHED_CLICKHOUSE_URL", "scheme must be http or https"));
            }
        }
        let db_ok = !self.database.is_empty()
            && self.database.len() <= 64
            && self.database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !self.database.as_bytes()[0].is_ascii_digit();
        if !db_ok {
            return Err(bad(
                "--clickhouse-database / HWSCHED_CLICKHOUSE_DATABASE",
                format!("{:?} must be an identifier ([A-Za-z_][A-Za-z0-9_]*)", self.database),
            ));
        }
        Ok(())
    }

    /// True when a URL is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }
}

/// Logging and the `/metrics` endpoint.
#[derive(Debug, Clone, Args)]
pub struct TelemetryConfig {
    /// Address for `/metrics`, `/healthz` and `/readyz`, e.g. 127.0.0.1:9464. Unset: no endpoint.
    #[arg(id = "metrics_listen", global = true, long = "metrics-listen", env = "HWSCHED_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Log format: "text" or "json".
    #[arg(id = "log_format", global = true, long = "log-format", env = "HWSCHED_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter (tracing EnvFilter syntax). Default: "info" for services, "warn" for client commands.
    #[arg(id = "log", global = true, long = "log", env = "HWSCHED_LOG")]
    pub log_filter: Option<String>,
    /// OTLP/HTTP collector base URL (e.g. http://otel-collector:4318); spans are exported when set.
    #[arg(id = "otlp_endpoint", global = true, long = "otlp-endpoint", env = "HWSCHED_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_urls_debug_or_errors() {
        assert_eq!(redact_url("nats://hw:s3cr3t@10.0.0.1:4222"), "nats://***@10.0.0.1:4222");
        assert_eq!(redact_url("nats://tok3n@a:1, nats://b:2"), "nats://***@a:1, nats://b:2");
        assert_eq!(redact_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
        assert_eq!(redact_url("hw:s3cr3t@host"), "***@host");
        // found by fuzzing: a parser takes "ws:/" as "ws://", and "://" may come only after the "@"
        assert_eq!(redact_url("ws:/hw:s3cr3t@127.0.0.1:/?x=s://y"), "ws:/***@127.0.0.1:/?x=s://y");
        assert_eq!(redact_url("nats:\\\\hw:s3cr3t@h"), "nats:\\\\***@h");
        assert_eq!(redact_url("ws:hw:s3cr3t@h"), "***@h");
        let mut n = NatsConfig::new("nats://hw:s3cr3t@127.0.0.1:4222");
        n.user = Some("hw".into());
        n.password = Some("pa55word".into());
        let shown = format!("{n:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("pa55word") && shown.contains("***"), "{shown}");
        let err = NatsConfig::new("nats://hw:s3cr3t@").validate().expect_err("no host").to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        let c = ClickHouseConfig {
            url: Some("ftp://u:chs3cr3t@h".into()),
            database: "hwsched".into(),
            user: None,
            password: Some("chpa55".into()),
        };
        let shown = format!("{c:?} {}", c.validate().expect_err("scheme"));
        assert!(!shown.contains("chs3cr3t") && !shown.contains("chpa55"), "{shown}");
    }

    #[test]
    fn default_nats_config_is_valid() {
        NatsConfig::new("nats://127.0.0.1:4222").validate().expect("valid");
    }

    #[test]
    fn new_holds_the_clap_defaults() {
        check_flag_defaults(&NatsConfig::new(DEFAULT_NATS_URL)).expect("one set of defaults");
        assert!(check_flag_defaults(&NatsConfig::new("nats://elsewhere:4222")).is_err());
    }

    #[test]
    fn clap_defaults_ignore_the_environment() {
        // Arg::env(None) drops the fallback, so this holds whatever HWSCHED_* is set.
        let cmd = NatsConfig::augment_args(Command::new("t")).mut_args(|a| a.env(Option::<&'static str>::None));
        assert!(cmd.get_arguments().all(|a| a.get_env().is_none()));
    }

    #[test]
    fn bad_nats_url_names_the_field() {
        let err = NatsConfig::new("127.0.0.1:4222").validate().expect_err("no scheme");
        assert!(err.to_string().contains("HWSCHED_NATS_URL"), "{err}");
        let err = NatsConfig::new("http://x:1").validate().expect_err("wrong scheme");
        assert!(err.to_string().contains("scheme"), "{err}");
    }

    #[test]
    fn subject_prefix_rejects_wildcards_and_empty_tokens() {
        for p in ["", "a.*", "a..b", "a b", ">"] {
            assert!(validate_subject_prefix(p).is_err(), "{p:?}");
        }
        for p in ["hws", "ci.hws", "team-a_1"] {
            assert!(validate_subject_prefix(p).is_ok(), "{p:?}");
        }
    }

    #[test]
    fn js_replicas_are_one_to_five() {
        let mut c = NatsConfig::new("nats://h:4222");
        for ok in [1, 3, 5] {
            c.js_replicas = ok;
            c.validate().expect("valid replica count");
        }
        for bad in [0, 6] {
            c.js_replicas = bad;
            let err = c.validate().expect_err("out of range").to_string();
            assert!(err.contains("HWSCHED_JS_REPLICAS"), "{err}");
        }
    }

    #[test]
    fn js_domain_is_one_token() {
        let mut c = NatsConfig::new("nats://h:4222");
        c.js_domain = Some("hub-1".into());
        c.validate().expect("valid domain");
        for bad in ["", "a.b", "a b", "*"] {
            c.js_domain = Some(bad.into());
            let err = c.validate().expect_err("bad domain").to_string();
            assert!(err.contains("HWSCHED_JS_DOMAIN"), "{err}");
        }
    }

    #[test]
    fn user_without_password_is_rejected() {
        let mut c = NatsConfig::new("nats://h:4222");
        c.user = Some("u".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn clickhouse_database_must_be_identifier() {
        let mut c = ClickHouseConfig { url: None, database: "hw-sched".into(), user: None, password: None };
        assert!(c.validate().is_err());
        c.database = "hwsched".into();
        c.url = Some("http://127.0.0.1:8123".into());
        c.validate().expect("valid");
        c.url = Some("tcp://x".into());
        assert!(c.validate().is_err());
    }
}
