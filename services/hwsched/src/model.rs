//! `hwsched model`: what the learner has learned, read from its snapshot in
//! the `hws_model` bucket: the workload x hardware matrix, each worker's
//! health and the prediction error; `predict` answers for one task.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hwsched_bus::Bus;
use hwsched_config::NatsConfig;
use hwsched_model::{recent_quantile, Model, Source, SNAPSHOT_KEY};
use hwsched_proto::{
    v1::{ModelSnapshot, TaskRequest},
    Message as _,
};
use serde::Serialize;

pub use crate::output::Format;

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: Option<ModelCommand>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table", global = true)]
    output: Format,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Predict one task's runtime on each hardware class the model knows.
    Predict {
        /// The task, as JSON (the form `hwsched submit --file` takes, one task).
        #[arg(long, value_name = "FILE")]
        task: std::path::PathBuf,
    },
}

/// One cell of the matrix, or one answer of `predict`.
#[derive(Debug, Serialize)]
struct Cell {
    workload: String,
    hardware: String,
    /// Predicted runtime, s.
    runtime_s: f64,
    /// ±, as a share of the runtime (one standard deviation of ln runtime).
    uncertainty: f64,
    /// "observed" or "factor" (never observed: the factor model's estimate).
    source: &'static str,
    /// Successful runs of the pair.
    runs: u64,
    success_rate: Option<f64>,
    flakiness: Option<f64>,
    p90_s: Option<f64>,
}

fn cell(m: &Model, workload: &str, hardware: &str) -> Option<Cell> {
    let p = m.predict(workload, hardware)?;
    let e = m.entry(workload, hardware);
    Some(Cell {
        workload: workload.into(),
        hardware: hardware.into(),
        runtime_s: p.runtime_s,
        uncertainty: p.log_sd.exp() - 1.0,
        source: match p.source {
            Source::Observed => "observed",
            Source::Factor => "factor",
        },
        runs: p.runs,
        success_rate: e.map(|e| e.success_rate),
        flakiness: e.map(|e| e.flakiness),
        p90_s: e.and_then(|e| recent_quantile(e, 0.9)),
    })
}

async fn load(nats: &NatsConfig) -> anyhow::Result<Model> {
    let bus = Bus::connect(nats, "hwsched-cli", std::time::Duration::from_secs(5)).await?;
    load_from(&bus).await
}

/// The learner's latest model, read from its bucket.
pub async fn load_from(bus: &Bus) -> anyhow::Result<Model> {
    let name = bus.subjects().model_bucket();
    let bucket = hwsched_bus::streams::bucket(bus, &name).await.with_context(|| {
        format!("no model bucket {name}: has the learner (`hwsched learner` or `hwsched all`) run?")
    })?;
    let bytes = bucket.get(SNAPSHOT_KEY).await.context("read the model snapshot")?;
    let Some(bytes) = bytes else { anyhow::bail!("the learner has published no model yet (no result learned)") };
    Ok(Model::from_snapshot(ModelSnapshot::decode(bytes.as_ref()).context("undecodable model snapshot")?))
}

/// A duration for people: "4.2s", "12.5m", "3.1h".
pub fn secs(s: f64) -> String {
    if s < 100.0 {
        format!("{s:.1}s")
    } else if s < 6000.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// The distinct values of one key of the learned pairs, sorted.
fn distinct(model: &Model, key: impl Fn(&hwsched_proto::v1::ModelEntry) -> &String) -> Vec<String> {
    model.entries().map(key).collect::<std::collections::BTreeSet<_>>().into_iter().cloned().collect()
}

/// `hwsched model`.
pub async fn run(nats: &NatsConfig, args: ModelArgs) -> anyhow::Result<()> {
    let model = load(nats).await?;
    // every class and workload seen, also those with failures only (no runtime learned)
    let hardware = distinct(&model, |e| &e.hardware_key);
    match args.command {
        Some(ModelCommand::Predict { task }) => {
            let text = std::fs::read_to_string(&task).with_context(|| format!("read {}", task.display()))?;
            let t: TaskRequest =
                serde_json::from_str(&text).with_context(|| format!("{}: not a task (JSON)", task.display()))?;
            let workload = hwsched_model::task_workload_key(&t);
            let cells: Vec<Cell> = hardware.iter().filter_map(|h| cell(&model, &workload, h)).collect();
            match args.output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&cells)?),
                Format::Table => {
                    println!("workload {workload}");
                    if cells.is_empty() {
                        println!("(never seen: the scheduler uses its expected_duration_s)");
                    }
                    println!("{:<32} {:>9} {:>7} {:>9} {:>5}", "HARDWARE", "RUNTIME", "±", "SOURCE", "RUNS");
                    for c in &cells {
                        println!(
                            "{:<32} {:>9} {:>6.0}% {:>9} {:>5}",
                            c.hardware,
                            secs(c.runtime_s),
                            100.0 * c.uncertainty,
                            c.source,
                            c.runs
                        );
                    }
                }
            }
        }
        None => {
            let workloads = distinct(&model, |e| &e.workload_key);
            let cells: Vec<Cell> =
                workloads.iter().flat_map(|w| hardware.iter().filter_map(|h| cell(&model, w, h))).collect();
            match args.output {
                Format::Json => {
                    #[derive(Serialize)]
                    struct Out<'a> {
                        version: u64,
                        cells: &'a [Cell],
                        workers: Vec<&'a hwsched_proto::v1::WorkerHealth>,
                        errors: Vec<&'a hwsched_proto::v1::PredictionError>,
                    }
                    let out = Out {
                        version: model.version(),
                        cells: &cells,
                        workers: model.workers().collect(),
                        errors: model.errors().collect(),
                    };
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
                Format::Table => print_matrix(&model, &workloads, &hardware, &cells),
            }
        }
    }
    Ok(())
}

fn print_matrix(model: &Model, workloads: &[String], hardware: &[String], cells: &[Cell]) {
    println!(
        "model version {}: {} pairs learned, {} workloads x {} hardware classes",
        model.version(),
        model.len(),
        workloads.len(),
        hardware.len()
    );
    println!("each cell: runtime ±uncertainty (runs); ~ marks the factor model's estimate for a pair never run\n");
    print!("{:<40}", "WORKLOAD");
    for h in hardware {
        print!(" {:>22}", truncate(h, 22));
    }
    println!();
    let by_pair: std::collections::HashMap<(&str, &str), &Cell> =
        cells.iter().map(|c| ((c.workload.as_str(), c.hardware.as_str()), c)).collect();
    for w in workloads {
        print!("{:<40}", truncate(w, 40));
        for h in hardware {
            let text = match by_pair.get(&(w.as_str(), h.as_str())) {
                Some(c) if c.source == "factor" => {
                    format!("~{} ±{:.0}%", secs(c.runtime_s), 100.0 * c.uncertainty)
                }
                Some(c) => format!("{} ±{:.0}% ({})", secs(c.runtime_s), 100.0 * c.uncertainty, c.runs),
                None => match model.entry(w, h) {
                    // ran there, never successfully
                    Some(e) => format!("failed ({})", e.observations),
                    None => "-".into(),
                },
            };
            print!(" {text:>22}");
        }
        println!();
    }
    let workers: Vec<_> = model.workers().collect();
    if !workers.is_empty() {
        println!("\n{:<24} {:<28} {:>8} {:>9} {:>5}  STATE", "WORKER", "HARDWARE", "SLOWDOWN", "FAIL+", "OBS");
        for h in workers {
            println!(
                "{:<24} {:<28} {:>7.2}x {:>+8.0}% {:>5}  {}",
                truncate(&h.worker_id, 24),
                truncate(&h.hardware_key, 28),
                h.log_slowdown.exp(),
                100.0 * h.failure_excess,
                h.observations,
                if h.degraded { "DEGRADED" } else { "ok" }
            );
        }
    }
    let errors: Vec<String> =
        model.errors().map(|e| format!("{} {:.0}% ({})", e.age, 100.0 * e.mape, e.count)).collect();
    if !errors.is_empty() {
        println!("\nprediction error (MAPE) by the pair's runs: {}", errors.join(", "));
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}
