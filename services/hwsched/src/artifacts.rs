//! `hwsched artifacts TASK [--attempt N] [--get DIR]`: the files an attempt
//! brought back, as its result lists them; `--get` downloads them into DIR,
//! each checked against its digest and written only inside DIR.

use std::path::PathBuf;

use clap::Args;
use hwsched_client::{exit, Client};

use crate::output::Format;

/// `hwsched artifacts`.
#[derive(Debug, Args)]
pub struct ArtifactsArgs {
    /// Task id.
    task_id: String,
    /// Attempt (default: the latest that has a result).
    #[arg(long)]
    attempt: Option<u32>,
    /// Download them into this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    get: Option<PathBuf>,
    /// Output format of the list.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

/// Lists, and with `--get` downloads; exit 1 when a download failed.
pub async fn run(client: &Client, args: ArtifactsArgs) -> anyhow::Result<u8> {
    let r = client.attempt_result(&args.task_id, args.attempt).await?;
    match args.output {
        Format::Json => {
            for a in &r.artifacts {
                println!("{}", serde_json::to_string(a)?);
            }
        }
        Format::Table => {
            if r.artifacts.is_empty() {
                println!("attempt {} of {} stored no artifacts", r.attempt, r.task_id);
            }
            for a in &r.artifacts {
                let junit = if a.junit { "  junit" } else { "" };
                println!("{:<48} {:>12}  {}{junit}", a.path, a.size, a.digest);
            }
        }
    }
    if r.error.contains("outputs:") {
        eprintln!("note: {}", r.error);
    }
    let Some(dir) = args.get else { return Ok(exit::OK) };
    let mut failed = 0;
    for a in &r.artifacts {
        match client.download_artifact(&r, a, &dir).await {
            Ok(p) => eprintln!("wrote {}", p.display()),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    Ok(if failed > 0 { exit::FAILURE } else { exit::OK })
}
