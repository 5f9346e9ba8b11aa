//! `hwsched sim`: the policy simulator on the command line: one trace (the
//! built-in one, a file, or a scenario family's for a seed) or the
//! distribution over many seeds of a scenario.

use std::io::Write as _;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use hwsched_placement::{BatchSetting, Policy, Weights};
use hwsched_sim::{distribution, generate, report, runner, scenarios, Config, Trace};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Replay this trace (JSON lines, see docs/SIMULATOR.md) instead of the built-in one.
    #[arg(long, value_name = "FILE", conflicts_with = "scenario")]
    trace: Option<std::path::PathBuf>,
    /// Generate the trace of this scenario family for the seed(s) instead of
    /// the built-in one (`list`: the families).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Print the scenario families with a line each and exit.
    #[arg(long)]
    list_scenarios: bool,
    /// Write the trace (built-in or --scenario) for --seed to stdout and exit.
    #[arg(long, conflicts_with_all = ["trace", "seeds"])]
    generate: bool,
    /// Seed of the generated trace and of the failure draws: same seed, same output.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run every seed of this list (1..20, 1-20, 3,5,8) and print the
    /// distribution over the seeds.
    #[arg(long, value_name = "LIST", conflicts_with = "trace")]
    seeds: Option<String>,
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
    #[arg(long, default_value_t = BatchSetting::default())]
    batch: BatchSetting,
    /// Also run hwsched's ablations (without the learner's model: every
    /// estimate the declared duration; without the batch pass: queue order;
    /// without trust in declarations; failure-blind: no quarantine, out-of-memory
    /// retries with the same memory, as the baselines), listed before hwsched so
    /// the comparison shows what each part adds.
    #[arg(long)]
    ablation: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
}

/// The trace generator the arguments select: a scenario family's or the built-in one.
/// A trace generator by seed, with the name of what it generates.
type Generator = (&'static str, fn(u64) -> Trace);

fn generator(args: &SimArgs) -> anyhow::Result<Generator> {
    match args.scenario.as_deref() {
        None => Ok(("builtin", generate::builtin)),
        Some(name) => {
            let f = scenarios::by_name(name).with_context(|| {
                let names: Vec<&str> = scenarios::FAMILIES.iter().map(|f| f.name).collect();
                format!("unknown scenario {name:?}: one of {} (or list)", names.join(", "))
            })?;
            Ok((f.name, f.generate))
        }
    }
}

fn list() {
    for f in scenarios::FAMILIES {
        println!("{:<14} {}", f.name, f.about);
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    if args.list_scenarios || args.scenario.as_deref() == Some("list") {
        list();
        return Ok(());
    }
    let (name, make) = generator(&args)?;
    if args.generate {
        let mut out = std::io::stdout().lock();
        out.write_all(make(args.seed).to_jsonl().as_bytes())?;
        return Ok(());
    }
    let base = Config {
        weights: args.weights,
        fair_share: args.fair_share,
        explore_share: args.explore_share,
        batch: args.batch.0,
        ..Config::default()
    };
    let variants = runner::variants(&args.policy, &base, args.ablation);
    if let Some(spec) = &args.seeds {
        let seeds = runner::parse_seeds(spec)?;
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let runs = runner::run_seeds(make, &seeds, &variants, threads);
        let d = distribution::summarize(name, &runs);
        match args.output {
            Format::Json => println!("{}", serde_json::to_string_pretty(&d)?),
            Format::Table => print!("{}", distribution::table(&d)),
        }
        return Ok(());
    }
    let trace = match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Trace::parse(&text).with_context(|| format!("trace {}", path.display()))?
        }
        None => make(args.seed),
    };
    let reports = runner::run_variants(&trace, &variants, args.seed);
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Table => {
            println!("{} workers, {} tasks, seed {}\n", trace.workers.len(), trace.tasks.len(), args.seed);
            print!("{}", report::table(&reports));
        }
    }
    Ok(())
}
