//! `hwsched quarantine`: the workers the scheduler took out of service for
//! failing more than their tests predict (probes only until they pass), the
//! breaker that stops quarantines when too many fail at once, and `release`.

use clap::{Args, Subcommand};
use hwsched_client::{exit, Client};
use hwsched_proto::v1::QuarantineReply;

use crate::{
    output::{proto, Format},
    render::age,
};

/// `hwsched quarantine`.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    command: QuarantineCommand,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table", global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// The quarantined workers (why, since when, probes passed) and the breaker.
    List,
    /// Put a quarantined worker back in service now.
    Release {
        /// Worker id.
        worker_id: String,
    },
}

/// Runs `hwsched quarantine ...`; exit 1 when `release` names no quarantined worker.
pub async fn run(client: &Client, args: QuarantineArgs) -> anyhow::Result<u8> {
    let release = match &args.command {
        QuarantineCommand::List => None,
        QuarantineCommand::Release { worker_id } => Some(worker_id.as_str()),
    };
    let reply = client.quarantine(release).await?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&proto(&reply))?),
        Format::Table => print!("{}", table(&reply, hwsched_bus::now_ms())),
    }
    match release {
        Some(w) if !reply.released => {
            eprintln!("{w} is not quarantined");
            Ok(exit::FAILURE)
        }
        Some(w) => {
            eprintln!("{w} released: it takes tasks again");
            Ok(exit::OK)
        }
        None => Ok(exit::OK),
    }
}

fn table(r: &QuarantineReply, now_ms: i64) -> String {
    let mut out = String::new();
    if r.breaker_open {
        out.push_str(&format!(
            "BREAKER OPEN for {}: {}\n  kept in service although suspect: {}\n",
            age(now_ms, r.breaker_since_ms),
            r.breaker_reason,
            r.suspects.join(", ")
        ));
    }
    out.push_str(&format!("{:<20} {:<28} {:>8} {:>7}  REASON\n", "WORKER", "HARDWARE", "FOR", "PROBES"));
    for w in &r.workers {
        let probes = format!("{}/{}{}", w.probes_passed, w.probes_needed, if w.probing { "+" } else { "" });
        out.push_str(&format!(
            "{:<20} {:<28} {:>8} {:>7}  {}\n",
            w.worker_id,
            w.hardware_class,
            age(now_ms, w.since_ms),
            probes,
            w.reason
        ));
    }
    if r.workers.is_empty() {
        out.push_str("(no worker is quarantined)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use hwsched_proto::v1::QuarantinedWorker;

    use super::*;

    #[test]
    fn the_table_shows_the_breaker_and_each_worker() {
        let r = QuarantineReply {
            workers: vec![QuarantinedWorker {
                worker_id: "gpu-3".into(),
                hardware_class: "gpu:nvidia-h100".into(),
                since_ms: 1_000,
                reason: "5 of its last 9 attempts failed".into(),
                probes_passed: 1,
                probes_needed: 3,
                probing: true,
                ..Default::default()
            }],
            breaker_open: true,
            breaker_reason: "3 of 5 workers would be quarantined".into(),
            breaker_since_ms: 31_000,
            suspects: vec!["gpu-4".into()],
            released: false,
        };
        let t = table(&r, 61_000);
        assert!(t.starts_with("BREAKER OPEN for 30.0s: 3 of 5 workers"), "{t}");
        assert!(t.contains("gpu-4") && t.contains("1/3+") && t.contains("60.0s"), "{t}");
        assert!(table(&QuarantineReply::default(), 0).contains("(no worker is quarantined)"));
    }
}
