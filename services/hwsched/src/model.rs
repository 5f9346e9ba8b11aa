//! `hwsched model`: what the learner has learned, read from its snapshot in
//! the `hws_model` bucket: the workload x hardware matrix, each worker's
//! health and the prediction error; `predict` answers for one task; `flaky`
//! lists the flaky tests with a suggested mute for each (it mutes nothing).

use anyhow::Context as _;
use clap::{Args, Subcommand};
use hwsched_bus::Bus;
use hwsched_config::NatsConfig;
use hwsched_model::{recent_quantile, Model, Source, SNAPSHOT_KEY};
use hwsched_proto::{
    v1::{FlakyTest, ModelSnapshot, TaskRequest},
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
    /// The flaky tests: those that both passed and failed at one revision of the code under
    /// test (of their last 20), with their estimated flake rate and a suggested
    /// `hwsched mute add` line for each (nothing is muted). Tests are told apart by revision
    /// only when submitted with one (`hwsched submit --revision`).
    Flaky,
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

/// The learner's latest model, read from its bucket.
pub async fn load_from(bus: &Bus) -> anyhow::Result<Model> {
    Ok(Model::from_snapshot(load_snapshot(bus).await?))
}

/// The learner's latest snapshot, as published.
async fn load_snapshot(bus: &Bus) -> anyhow::Result<ModelSnapshot> {
    let name = bus.subjects().model_bucket();
    let bucket = hwsched_bus::streams::bucket(bus, &name).await.with_context(|| {
        format!("no model bucket {name}: has the learner (`hwsched learner` or `hwsched all`) run?")
    })?;
    let bytes = bucket.get(SNAPSHOT_KEY).await.context("read the model snapshot")?;
    let Some(bytes) = bytes else { anyhow::bail!("the learner has published no model yet (no result learned)") };
    ModelSnapshot::decode(bytes.as_ref()).context("undecodable model snapshot")
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
    let bus = Bus::connect(nats, "hwsched-cli", std::time::Duration::from_secs(5)).await?;
    let snap = load_snapshot(&bus).await?;
    match args.command {
        Some(ModelCommand::Flaky) => print_flaky(snap, args.output),
        Some(ModelCommand::Predict { task }) => predict(&Model::from_snapshot(snap), &task, args.output),
        None => matrix(&Model::from_snapshot(snap), args.output),
    }
}

/// `hwsched model predict`: one task on each hardware class the model knows.
fn predict(model: &Model, task: &std::path::Path, output: Format) -> anyhow::Result<()> {
    // every class seen, also those with failures only (no runtime learned)
    let hardware = distinct(model, |e| &e.hardware_key);
    let text = std::fs::read_to_string(task).with_context(|| format!("read {}", task.display()))?;
    let t: TaskRequest =
        serde_json::from_str(&text).with_context(|| format!("{}: not a task (JSON)", task.display()))?;
    let workload = hwsched_model::task_workload_key(&t);
    let cells: Vec<Cell> = hardware.iter().filter_map(|h| cell(model, &workload, h)).collect();
    match output {
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
    Ok(())
}

/// `hwsched model`: the workload x hardware matrix, workers and errors.
fn matrix(model: &Model, output: Format) -> anyhow::Result<()> {
    // every class and workload seen, also those with failures only (no runtime learned)
    let hardware = distinct(model, |e| &e.hardware_key);
    let workloads = distinct(model, |e| &e.workload_key);
    let cells: Vec<Cell> = workloads.iter().flat_map(|w| hardware.iter().filter_map(|h| cell(model, w, h))).collect();
    match output {
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
        Format::Table => print_matrix(model, &workloads, &hardware, &cells),
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

/// `hwsched model flaky`: the published flaky tests, the likeliest first.
fn print_flaky(snap: ModelSnapshot, output: Format) -> anyhow::Result<()> {
    let mut tests = snap.flaky_tests;
    tests.sort_by(|a, b| b.flake_rate.total_cmp(&a.flake_rate).then_with(|| a.workload_key.cmp(&b.workload_key)));
    match output {
        Format::Json => {
            #[derive(Serialize)]
            struct Flaky<'a> {
                #[serde(flatten)]
                test: &'a FlakyTest,
                #[serde(rename = "suggestedMute")]
                suggested_mute: String,
            }
            #[derive(Serialize)]
            struct Out<'a> {
                version: u64,
                flaky_tests: Vec<Flaky<'a>>,
            }
            let flaky_tests = tests.iter().map(|t| Flaky { test: t, suggested_mute: suggested_mute(t) }).collect();
            println!("{}", serde_json::to_string_pretty(&Out { version: snap.version, flaky_tests })?);
        }
        Format::Table => print!("{}", flaky_table(&tests)),
    }
    Ok(())
}

/// The flaky tests as lines for people: the estimate, each class's when it
/// ran on more than one, and the suggested mute.
fn flaky_table(tests: &[FlakyTest]) -> String {
    if tests.is_empty() {
        return "no flaky test: none both passed and failed at one revision\n".into();
    }
    let mut out = format!(
        "{} flaky test(s): passed and failed at one revision (of the last {} of each)\n\
         FLAKE: estimated chance an attempt fails when the code is fine; FAILED: at the mixed revisions; \
         MIXED: mixed revisions / revisions\n\n{:<40} {:>6} {:>8} {:>7}  LAST MIXED REVISION\n",
        tests.len(),
        hwsched_model::REVISION_WINDOW,
        "WORKLOAD",
        "FLAKE",
        "FAILED",
        "MIXED"
    );
    for t in tests {
        out.push_str(&format!(
            "{:<40} {:>5.0}% {:>8} {:>7}  {}\n",
            truncate(&t.workload_key, 40),
            100.0 * t.flake_rate,
            format!("{}/{}", t.failures, t.attempts),
            format!("{}/{}", t.mixed_revisions, t.revisions),
            t.last_revision
        ));
        if t.by_hardware.len() > 1 {
            for h in &t.by_hardware {
                out.push_str(&format!(
                    "  on {:<35} {:>5.0}% {:>8} {:>7}\n",
                    truncate(&h.hardware_key, 35),
                    100.0 * h.flake_rate,
                    format!("{}/{}", h.failures, h.attempts),
                    h.mixed_revisions
                ));
            }
        }
        out.push_str(&format!("  suggested: {}\n", suggested_mute(t)));
    }
    out
}

/// The `hwsched mute add` line that would mute `t` for a week, for someone
/// to run (or not): its name as a glob matching only itself, shell-quoted.
fn suggested_mute(t: &FlakyTest) -> String {
    let rev: String = t.last_revision.chars().take(12).collect();
    let at = if t.mixed_revisions > 1 {
        format!("at {} revisions, last {rev}", t.mixed_revisions)
    } else {
        format!("at rev {rev}")
    };
    let reason =
        format!("flaky: failed {} of {} {at} (est. {:.0}% per attempt)", t.failures, t.attempts, 100.0 * t.flake_rate);
    format!(
        "hwsched mute add --test {} --for 7d --reason {}",
        shell_quote(&glob_literal(&t.name)),
        shell_quote(&reason)
    )
}

/// `name` as a glob that matches it alone: each special character in a class of its own.
fn glob_literal(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '*' | '?' | '[' | ']' | '{' | '}' | '\\' | ',' => format!("[{c}]"),
            c => c.to_string(),
        })
        .collect()
}

/// `s` single-quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use hwsched_client::{mutes::covering, Finished};
    use hwsched_proto::v1::{FlakyOnHardware, FlakyTest, Mute};

    use crate::model::{flaky_table, suggested_mute};

    fn flaky(name: &str, classes: &[&str]) -> FlakyTest {
        FlakyTest {
            workload_key: format!("unit/-/{name}"),
            name: name.into(),
            mixed_revisions: 1,
            revisions: 3,
            attempts: 2,
            failures: 1,
            clean_passes: 2,
            flake_rate: 2.0 / 6.0,
            by_hardware: classes
                .iter()
                .map(|c| FlakyOnHardware {
                    hardware_key: c.to_string(),
                    mixed_revisions: 1,
                    attempts: 1,
                    failures: 1,
                    clean_passes: 1,
                    flake_rate: 2.0 / 4.0,
                })
                .collect(),
            last_revision: "0123456789abcdef0123".into(),
            last_seen_ms: 1,
        }
    }

    /// The words a POSIX shell makes of `line`.
    fn shell_words(line: &str) -> Vec<String> {
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("for w in {line}; do printf '%s\\n' \"$w\"; done")])
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
    }

    #[test]
    fn the_suggested_mute_is_one_shell_line_whose_pattern_matches_only_that_test() {
        let name = r"it's [gpu] *slow*, {a,b} ?\x";
        let line = suggested_mute(&flaky(name, &["cpu"]));
        let words = shell_words(&line);
        assert_eq!(words[..4], ["hwsched", "mute", "add", "--test"], "{line}");
        assert_eq!(words[5..8], ["--for", "7d", "--reason"], "{line}");
        assert_eq!(words[8], "flaky: failed 1 of 2 at rev 0123456789ab (est. 33% per attempt)");
        let pattern = &words[4];
        hwsched_client::mutes::check_pattern(pattern).expect("a valid glob");
        let mute = Mute { pattern: pattern.clone(), ends_at_ms: i64::MAX, ..Default::default() };
        let failed = Finished { task_id: "id-1".into(), ..Default::default() };
        let covers = |n: &str| covering(std::slice::from_ref(&mute), &failed, n, 1).is_some();
        assert!(covers(name), "{pattern} does not match {name}");
        assert!(!covers("it's g -slow-, a Z\\x"), "{pattern} matches more than the test");
        assert!(!covers("other"));
    }

    #[test]
    fn the_table_lists_each_flaky_test_with_its_classes_and_a_suggestion() {
        let table = flaky_table(&[flaky("net-retry", &["cpu:x86_64", "gpu:h100"]), flaky("solo", &["cpu"])]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("2 flaky test(s)"), "{table}");
        let row = lines.iter().position(|l| l.starts_with("unit/-/net-retry")).expect(&table);
        assert!(lines[row].contains("33%") && lines[row].contains("1/2") && lines[row].contains("1/3"), "{table}");
        assert!(lines[row + 1].trim_start().starts_with("on cpu:x86_64") && lines[row + 1].contains("50%"), "{table}");
        assert!(lines[row + 2].trim_start().starts_with("on gpu:h100"), "{table}");
        assert!(lines[row + 3].contains("suggested: hwsched mute add --test 'net-retry' --for 7d"), "{table}");
        // one class: no per-class lines
        let solo = lines.iter().position(|l| l.starts_with("unit/-/solo")).expect(&table);
        assert!(lines[solo + 1].contains("suggested: hwsched mute add --test 'solo'"), "{table}");
        assert_eq!(flaky_table(&[]), "no flaky test: none both passed and failed at one revision\n");
    }
}
