//! `hwsched alerts` (the alerts firing now) and `hwsched silence`
//! (add, list, expire). Silences live in the `hws_silences` KV bucket, which
//! every alerting replica watches: a silence added here mutes notifications at
//! once and survives restarts.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use futures::StreamExt as _;
use hwsched_alerting::{notify::rfc3339, rules::parse_duration_ms};
use hwsched_bus::{now_ms, streams, Bus};
use hwsched_config::NatsConfig;
use hwsched_proto::{
    v1::{Alert, Matcher, Silence},
    Message as _, SCHEMA_VERSION,
};
use serde::Serialize;

use crate::model::Format;

#[derive(Debug, Args)]
pub struct SilenceArgs {
    #[command(subcommand)]
    command: SilenceCommand,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table", global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum SilenceCommand {
    /// Mute the alerts matching every `--match` for a while.
    Add {
        /// `label=value` (a value ending in `*` is a prefix). Labels: alertname,
        /// severity, worker_id, device, metric and the rules' own labels.
        #[arg(long = "match", value_name = "LABEL=VALUE", required = true, value_parser = parse_matcher)]
        matchers: Vec<Matcher>,
        /// How long, e.g. 30m, 2h (at most 7 days).
        #[arg(long = "for", value_name = "DURATION", default_value = "1h")]
        duration: String,
        /// Why (shown by `list`).
        #[arg(long, default_value = "")]
        comment: String,
        /// Who (default: $USER).
        #[arg(long)]
        author: Option<String>,
    },
    /// The silences in force (with --all, also the ended ones of the last day).
    List {
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Expire {
        /// Silence id (from `add` or `list`).
        id: String,
    },
}

fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let (label, value) = s.split_once('=').ok_or_else(|| format!("{s:?} is not LABEL=VALUE"))?;
    let label = label.trim();
    let valid = label.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{label:?} is not a label name"));
    }
    Ok(Matcher { label: label.into(), value: value.trim().into() })
}

/// A silence must select something: at least one matcher that is not empty or `*`.
fn check_matchers(matchers: &[Matcher]) -> anyhow::Result<()> {
    if matchers.iter().all(|m| m.value.is_empty() || m.value == "*") {
        anyhow::bail!("every matcher matches everything: name at least one label value to silence");
    }
    Ok(())
}

async fn bucket(nats: &NatsConfig, name: impl Fn(&Bus) -> String) -> anyhow::Result<async_nats::jetstream::kv::Store> {
    let bus = Bus::connect(nats, "hwsched-cli", std::time::Duration::from_secs(5)).await?;
    streams::provision(&bus).await?;
    let name = name(&bus);
    streams::bucket(&bus, &name).await.with_context(|| format!("open bucket {name}"))
}

async fn all<M: prost::Message + Default>(kv: &async_nats::jetstream::kv::Store) -> anyhow::Result<Vec<M>> {
    let mut keys = kv.keys().await.context("list keys")?;
    let mut out = Vec::new();
    while let Some(k) = keys.next().await {
        let k = k.context("list keys")?;
        if let Some(bytes) = kv.get(&k).await.context("read")? {
            match M::decode(bytes.as_ref()) {
                Ok(m) => out.push(m),
                Err(e) => eprintln!("warning: key {k} is undecodable ({e}), skipped"),
            }
        }
    }
    Ok(out)
}

pub async fn silence(nats: &NatsConfig, args: SilenceArgs) -> anyhow::Result<()> {
    let kv = bucket(nats, |b| b.subjects().silences_bucket()).await?;
    let now = now_ms();
    match args.command {
        SilenceCommand::Add { matchers, duration, comment, author } => {
            check_matchers(&matchers)?;
            let ms = parse_duration_ms(&duration)
                .filter(|ms| *ms > 0)
                .with_context(|| format!("--for {duration:?} is not a duration like 30m or 2h (at most 7 days)"))?;
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
            let s = Silence {
                schema_version: SCHEMA_VERSION,
                id: id.clone(),
                matchers,
                starts_at_ms: now,
                ends_at_ms: now + ms,
                created_by: author.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "hwsched".into()),
                comment,
                created_at_ms: now,
            };
            kv.put(&id, s.encode_to_vec().into()).await.context("store the silence")?;
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&SilenceView::from(&s))?),
                Format::Table => println!("{id}"),
            }
        }
        SilenceCommand::List { all: with_ended } => {
            let mut silences: Vec<Silence> = all(&kv).await?;
            silences.retain(|s| with_ended || s.ends_at_ms > now);
            silences.sort_by_key(|s| s.ends_at_ms);
            let views: Vec<SilenceView> = silences.iter().map(SilenceView::from).collect();
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&views)?),
                Format::Table => {
                    println!("{:<12}  {:<8}  {:<24}  {:<12}  {:<40}  COMMENT", "ID", "STATE", "ENDS", "BY", "MATCHERS");
                    for v in &views {
                        println!(
                            "{:<12}  {:<8}  {:<24}  {:<12}  {:<40}  {}",
                            v.id,
                            if v.active { "active" } else { "ended" },
                            v.ends_at,
                            v.created_by,
                            v.matchers.join(","),
                            v.comment
                        );
                    }
                }
            }
        }
        SilenceCommand::Expire { id } => {
            let bytes = kv.get(&id).await.context("read the silence")?.with_context(|| format!("no silence {id}"))?;
            let mut s = Silence::decode(bytes.as_ref()).context("undecodable silence")?;
            s.ends_at_ms = s.ends_at_ms.min(now);
            kv.put(&id, s.encode_to_vec().into()).await.context("store the silence")?;
            println!("silence {id} ended");
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct SilenceView {
    id: String,
    matchers: Vec<String>,
    starts_at: String,
    ends_at: String,
    active: bool,
    created_by: String,
    comment: String,
}

impl From<&Silence> for SilenceView {
    fn from(s: &Silence) -> Self {
        let now = now_ms();
        Self {
            id: s.id.clone(),
            matchers: s.matchers.iter().map(|m| format!("{}={}", m.label, m.value)).collect(),
            starts_at: rfc3339(s.starts_at_ms),
            ends_at: rfc3339(s.ends_at_ms),
            active: s.starts_at_ms <= now && now < s.ends_at_ms,
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
struct AlertView {
    rule: String,
    severity: String,
    worker_id: String,
    device: String,
    value: f64,
    since: String,
    muted_by: String,
    summary: String,
}

/// `hwsched alerts`: the alerts firing now, as the alerting service stored them.
pub async fn firing(nats: &NatsConfig, output: Format) -> anyhow::Result<()> {
    let kv = bucket(nats, |b| b.subjects().alerts_bucket()).await?;
    let mut alerts: Vec<Alert> = all(&kv).await?;
    alerts.sort_by(|a, b| (&a.severity, &a.rule, &a.worker_id).cmp(&(&b.severity, &b.rule, &b.worker_id)));
    let views: Vec<AlertView> = alerts
        .iter()
        .map(|a| AlertView {
            rule: a.rule.clone(),
            severity: a.severity.clone(),
            worker_id: a.worker_id.clone(),
            device: a.device.clone(),
            value: a.value,
            since: rfc3339(a.starts_at_ms),
            muted_by: a.muted_by.clone(),
            summary: a.summary.clone(),
        })
        .collect();
    match output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&views)?),
        Format::Table => {
            println!(
                "{:<9}  {:<24}  {:<16}  {:<8}  {:<24}  {:<18}  SUMMARY",
                "SEVERITY", "RULE", "WORKER", "DEVICE", "SINCE", "MUTED BY"
            );
            for v in &views {
                println!(
                    "{:<9}  {:<24}  {:<16}  {:<8}  {:<24}  {:<18}  {}",
                    v.severity, v.rule, v.worker_id, v.device, v.since, v.muted_by, v.summary
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_parse_and_a_silence_must_select_something() {
        let m = parse_matcher("worker_id=gpu-*").expect("valid");
        assert_eq!((m.label.as_str(), m.value.as_str()), ("worker_id", "gpu-*"));
        assert!(parse_matcher("no-equals").is_err());
        assert!(parse_matcher("bad-label=x").is_err());
        assert!(parse_matcher("=x").is_err());
        assert!(check_matchers(&[parse_matcher("alertname=*").expect("m")]).is_err());
        assert!(check_matchers(&[parse_matcher("alertname=HotGpu").expect("m")]).is_ok());
    }
}
