//! `hwsched report`: a fleet report over a time window, read from ClickHouse
//! (`hw_metrics`, `task_runs`, `alerts`) and written as a self-contained HTML
//! page (inline SVG charts, no script, nothing fetched) and/or as JSON.
//!
//! The store runs the queries ([`Store::report`], `libs/store/src/report/`);
//! [`render_html`] (`html.rs`, with the charts of `svg.rs`) is a pure function
//! from the read [`Report`] to the page.

mod dates;
mod html;
mod svg;
#[cfg(test)]
mod tests;
mod text;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use hwsched_config::ClickHouseConfig;
use hwsched_store::{report::Report, Store};

pub use self::html::render_html;
use self::{dates::fmt_window, text::fmt_secs};

/// `hwsched report` arguments.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// How far back to look: a number and a unit, s, m, h, d or w (30m, 24h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_since)]
    since: u64,
    /// Write the report as a self-contained HTML page (inline SVG charts) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Most rows per list (task runs, failures, slowest tests, alerts).
    #[arg(long, default_value_t = 500)]
    limit: u64,
}

/// `--since`: "90s", "30m", "24h", "7d", "2w" to seconds.
pub fn parse_since(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 30m, 24h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w (e.g. 30m, 24h, 7d)")),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(format!("{s:?}: must be more than zero and at most a few years")),
        Some(secs) if secs > 20 * 365 * 86_400 => Err(format!("{s:?}: at most 20 years")),
        Some(secs) => Ok(secs),
    }
}

/// `hwsched report`.
pub async fn run(clickhouse: &ClickHouseConfig, args: ReportArgs) -> anyhow::Result<()> {
    let store = Store::connect(clickhouse).await?;
    let report: Report = store.report(args.since, args.limit).await?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, render_html(&report)).with_context(|| format!("write {}", path.display()))?;
    }
    let s = &report.summary;
    println!(
        "last {}: {} workers, {} task runs ({} succeeded, {} failed, {} cancelled, {} hedged copies stopped), success rate {}, task time {}, {} alerts fired",
        fmt_window(report.window_s),
        s.workers_seen,
        s.tasks_run,
        s.succeeded,
        s.failed,
        s.cancelled,
        s.superseded,
        s.success_rate.map_or("-".to_string(), |r| format!("{:.1}%", 100.0 * r)),
        fmt_secs(s.total_task_time_s),
        s.alerts_fired
    );
    for path in [&args.json, &args.html].into_iter().flatten() {
        println!("wrote {}", path.display());
    }
    if args.json.is_none() && args.html.is_none() {
        println!("(give --html FILE and/or --json FILE for the full report)");
    }
    Ok(())
}
