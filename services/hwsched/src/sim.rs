//! `hwsched sim`: the policy simulator on the command line.

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hwsched_placement::{Policy, Weights};
use hwsched_sim::{generate, report, Config, Trace};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Replay this trace (JSON lines, see docs/SIMULATOR.md) instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Write the built-in trace for --seed to stdout and exit.
    #[arg(long, conflicts_with = "trace")]
    generate: bool,
    /// Seed of the built-in trace and of the failure draws: same seed, same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Policies to compare, comma-separated (hwsched last is the comparison base).
    #[arg(long, value_delimiter = ',', default_value = "random,round-robin,least-loaded,seed,hwsched")]
    policy: Vec<Policy>,
    /// hwsched's score weights.
    #[arg(long, default_value_t = Weights::default())]
    weights: Weights,
    /// Interleave producers within a priority.
    #[arg(long)]
    fair_share: bool,
    /// hwsched's exploration share (as the scheduler's --explore-share).
    #[arg(long, default_value_t = hwsched_placement::DEFAULT_EXPLORE_SHARE)]
    explore_share: f64,
    /// hwsched's batch heuristic for many waiting tasks (off: queue order).
    #[arg(long, default_value = "min-min", value_parser = parse_batch)]
    batch: Batch,
    /// Also run hwsched without the learner's model (every estimate the declared
    /// duration), listed before hwsched so the comparison shows what the model adds.
    #[arg(long)]
    ablation: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

/// A batch heuristic, or none ("off").
#[derive(Debug, Clone, Copy)]
pub struct Batch(pub Option<hwsched_placement::Heuristic>);

/// "off" or a batch heuristic's name.
fn parse_batch(s: &str) -> Result<Batch, String> {
    if s == "off" {
        Ok(Batch(None))
    } else {
        s.parse().map(|h| Batch(Some(h)))
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.generate {
        let mut out = std::io::stdout().lock();
        out.write_all(generate::builtin(args.seed).to_jsonl().as_bytes())?;
        return Ok(());
    }
    let trace = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Trace::parse(&text).with_context(|| format!("trace {}", path.display()))?
        }
        None => generate::builtin(args.seed),
    };
    let mut runs: Vec<(Policy, bool)> = args.policy.iter().map(|p| (*p, true)).collect();
    if args.ablation {
        let at = runs.iter().rposition(|(p, _)| *p == Policy::Hwsched).unwrap_or(runs.len());
        runs.insert(at, (Policy::Hwsched, false));
    }
    let reports: Vec<hwsched_sim::Report> = runs
        .iter()
        .map(|&(policy, learn)| {
            let cfg = Config {
                policy,
                seed: args.seed,
                weights: args.weights,
                fair_share: args.fair_share,
                explore_share: args.explore_share,
                learn,
                batch: args.batch.0,
                ..Config::default()
            };
            hwsched_sim::run(&trace, &cfg)
        })
        .collect();
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Table => {
            println!("{} workers, {} tasks, seed {}\n", trace.workers.len(), trace.tasks.len(), args.seed);
            print!("{}", report::table(&reports));
        }
    }
    Ok(())
}
