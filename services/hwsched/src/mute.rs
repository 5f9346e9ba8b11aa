//! `hwsched mute`: add, list and end mutes of tests (KV `hws_mutes`). A muted
//! test still runs and is reported; `hwsched submit --wait` does not count
//! its failure against the exit code and says which mute covered it.

use clap::{Args, Subcommand};
use hwsched_alerting::notify::rfc3339;
use hwsched_bus::now_ms;
use hwsched_client::{exit, mutes::MAX_MUTE_MS, Client};
use hwsched_proto::v1::Mute;

use crate::output::Format;

/// `hwsched mute`.
#[derive(Debug, Args)]
pub struct MuteArgs {
    #[command(subcommand)]
    command: MuteCommand,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table", global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum MuteCommand {
    /// Mute the tests matching a pattern for a while.
    Add {
        /// A glob matched against task names and ids, and the failing JUnit cases
        /// (`classname.name` or `name`) of a task's report.
        #[arg(long = "test", value_name = "PATTERN")]
        pattern: String,
        /// How long, e.g. 12h, 7d (at most 90d).
        #[arg(long = "for", value_name = "DURATION", default_value = "7d", value_parser = parse_days)]
        duration_ms: i64,
        /// Why (required; shown by `list` and by `submit --wait`).
        #[arg(long)]
        reason: String,
        /// Who (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// The mutes in force (with --all, also the ended ones).
    List {
        #[arg(long)]
        all: bool,
    },
    /// End a mute now.
    End {
        /// Mute id (from `add` or `list`).
        id: String,
    },
}

/// Parses `30m`, `12h`, `7d` (the units of `report --since`) into ms, at most 90 days.
fn parse_days(s: &str) -> Result<i64, String> {
    let secs = crate::report::parse_since(s)?;
    i64::try_from(secs * 1000)
        .ok()
        .filter(|ms| *ms <= MAX_MUTE_MS)
        .ok_or_else(|| format!("{s:?}: a mute lasts at most 90 days"))
}

/// Runs `hwsched mute ...`; exit 1 when `end` names no mute.
pub async fn run(client: &Client, args: MuteArgs) -> anyhow::Result<u8> {
    let now = now_ms();
    match args.command {
        MuteCommand::Add { pattern, duration_ms, reason, by } => {
            let by = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "hwsched".into());
            let m = client.mute(&pattern, duration_ms, &reason, &by, now).await?;
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&view(&m, now))?),
                Format::Table => println!("{}", m.id),
            }
        }
        MuteCommand::List { all } => {
            let mut mutes = client.mutes().await?;
            mutes.retain(|m| all || m.ends_at_ms > now);
            match args.output {
                Format::Json => {
                    let views: Vec<serde_json::Value> = mutes.iter().map(|m| view(m, now)).collect();
                    println!("{}", serde_json::to_string_pretty(&views)?);
                }
                Format::Table => print!("{}", table(&mutes, now)),
            }
        }
        MuteCommand::End { id } => {
            if !client.unmute(&id, now).await? {
                eprintln!("no mute {id}");
                return Ok(exit::FAILURE);
            }
            println!("mute {id} ended");
        }
    }
    Ok(exit::OK)
}

fn view(m: &Mute, now: i64) -> serde_json::Value {
    serde_json::json!({
        "id": m.id, "pattern": m.pattern, "reason": m.reason, "createdBy": m.created_by,
        "since": rfc3339(m.created_at_ms), "until": rfc3339(m.ends_at_ms), "active": m.ends_at_ms > now,
    })
}

fn table(mutes: &[Mute], now: i64) -> String {
    let mut out = format!("{:<12}  {:<6}  {:<24}  {:<12}  {:<32}  REASON\n", "ID", "STATE", "UNTIL", "BY", "PATTERN");
    for m in mutes {
        let state = if m.ends_at_ms > now { "active" } else { "ended" };
        out.push_str(&format!(
            "{:<12}  {:<6}  {:<24}  {:<12}  {:<32}  {}\n",
            m.id,
            state,
            rfc3339(m.ends_at_ms),
            m.created_by,
            m.pattern,
            m.reason
        ));
    }
    if mutes.is_empty() {
        out.push_str("(no mute in force)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_minutes_hours_or_days_up_to_ninety_days() {
        assert_eq!(parse_days("7d"), Ok(7 * 86_400_000));
        assert_eq!(parse_days("12h"), Ok(12 * 3_600_000));
        assert!(parse_days("91d").is_err());
        assert!(parse_days("0d").is_err());
        assert!(parse_days("7").is_err());
        assert!(parse_days("7y").is_err());
        assert_eq!(parse_days("2w"), Ok(14 * 86_400_000));
    }
}
