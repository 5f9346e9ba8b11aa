//! `hwsched submit`: one task from flags or a suite file (JSON or YAML);
//! `--wait` follows every task to its end, with a progress line for suites
//! (done / failed / running / queued, ETA from the learner's predictions),
//! and exits 1 if any failed that no mute (`hwsched mute`) covers. Ctrl-C offers to cancel what is still open.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;
use hwsched_bus::now_ms;
use hwsched_client::{exit, mutes, suite, Client, Update};
use hwsched_proto::v1::{GpuRequirement, Mute, Placement, Requirements, TaskEventKind, TaskRequest, TaskStatus};

use crate::{
    junit_report::JunitReport,
    output::Format,
    render::{self, Progress},
};

/// `hwsched submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A suite: a JSON or YAML (.yaml/.yml) list of tasks, or {"tasks": [...]}, in the documented JSON form.
    #[arg(long, short = 'f', conflicts_with = "command")]
    file: Option<PathBuf>,
    /// Task id (default: generated).
    #[arg(long)]
    id: Option<String>,
    /// Human-readable name.
    #[arg(long)]
    name: Option<String>,
    /// Priority 1 (highest) .. 5 (lowest).
    #[arg(long, default_value_t = 3)]
    priority: u32,
    /// CPU cores.
    #[arg(long)]
    cpu: Option<f64>,
    /// Memory, e.g. 512M or 8G (plain numbers are MB).
    #[arg(long, value_parser = parse_memory_mb, allow_hyphen_values = true)]
    memory: Option<i64>,
    /// GPUs.
    #[arg(long)]
    gpu: Option<u32>,
    /// Timeout in seconds.
    #[arg(long)]
    timeout: Option<u32>,
    /// Test type (what the learner groups runtimes by), e.g. unit, vision_classification.
    #[arg(long)]
    test_type: Option<String>,
    /// Run N shards side by side, each told HWSCHED_SHARD_INDEX and HWSCHED_SHARD_TOTAL.
    #[arg(long, conflicts_with = "replicate")]
    shards: Option<u32>,
    /// Run one copy on each of these hardware classes (e.g. cpu,gpu:nvidia-h100).
    #[arg(long, value_delimiter = ',')]
    replicate: Vec<String>,
    /// Only on these hardware classes (e.g. gpu:nvidia-a100).
    #[arg(long = "hardware-class", value_delimiter = ',')]
    hardware_class: Vec<String>,
    /// Wait for every task to finish, printing its lifecycle; exit 1 if any failed.
    #[arg(long)]
    wait: bool,
    /// With --wait: on Ctrl-C (or SIGTERM) cancel every unfinished task without asking.
    #[arg(long, requires = "wait")]
    cancel_on_interrupt: bool,
    /// With --wait: print the tasks' output as it is written, each line prefixed by its task id.
    #[arg(long, requires = "wait")]
    logs: bool,
    /// With --wait: no progress line (it is drawn only when stderr is a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Appended to every task id (e.g. to submit the same suite file again as new tasks).
    #[arg(long, allow_hyphen_values = true)]
    id_suffix: Option<String>,
    /// With --wait: write one JUnit XML report of the whole submission to this file (for CI).
    #[arg(long, requires = "wait", value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 3600)]
    wait_timeout_s: u64,
    /// Ship this directory as the tasks' bundle (packed, uploaded once per digest; `.hwschedignore`
    /// leaves files out): set on every task that names none, and the task runs inside it.
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Bring these files back after each attempt (a glob relative to the working directory, e.g.
    /// 'out/**/*.png'; repeatable): set on every task that names none. `hwsched artifacts` lists them.
    #[arg(long = "outputs", value_name = "GLOB")]
    outputs: Vec<String>,
    /// Where the tests write a JUnit XML report (relative path or glob, e.g. report.xml): the
    /// monitor parses it into per-test results. Set on every task that names none.
    #[arg(long = "junit-xml", value_name = "PATH")]
    junit_xml: Option<String>,
    /// The revision of the code under test (a commit hash, a build id), set on every task that
    /// names none: a test that both passed and failed at one revision is flaky (`hwsched model
    /// flaky`). Unset: the first set of $GITHUB_SHA, $CI_COMMIT_SHA, $BUILDKITE_COMMIT, $GIT_COMMIT.
    #[arg(long, env = "HWSCHED_REVISION", value_name = "REV")]
    revision: Option<String>,
    /// Output: table (lines for people) or json (one JSON object per line and update).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: Format,
    /// The command to run, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

fn parse_memory_mb(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'G' | 'g')) => (&s[..i], 1024.0),
        Some((i, 'M' | 'm')) => (&s[..i], 1.0),
        _ => (s, 1.0),
    };
    let v: f64 = num.parse().map_err(|_| format!("{s:?}: expected e.g. 512M or 8G"))?;
    Ok((v * mult) as i64)
}

/// CI variables that name the revision being built, read in this order when
/// neither `--revision` nor `HWSCHED_REVISION` is set.
const CI_REVISION_VARS: [&str; 4] = ["GITHUB_SHA", "CI_COMMIT_SHA", "BUILDKITE_COMMIT", "GIT_COMMIT"];

/// The revision of the code under test: `flag` (`--revision`, else
/// `HWSCHED_REVISION`), else the first CI variable set (`var` reads one); blank is unset.
fn revision_of(flag: Option<&str>, var: impl Fn(&str) -> Option<String>) -> Option<String> {
    flag.map(str::to_string)
        .into_iter()
        .chain(CI_REVISION_VARS.iter().filter_map(|k| var(k)))
        .map(|r| r.trim().to_string())
        .find(|r| !r.is_empty())
}

fn tasks_from(args: &SubmitArgs) -> anyhow::Result<Vec<TaskRequest>> {
    let mut tasks = if let Some(path) = &args.file {
        suite::load(path)?
    } else {
        if args.command.is_empty() {
            anyhow::bail!("nothing to submit: give a command after `--` or a suite with --file");
        }
        let gpus = args.gpu.map(|count| GpuRequirement { count, ..Default::default() });
        let placement = match (args.shards, args.replicate.is_empty()) {
            (Some(shards), _) => Some(Placement { strategy: "sharded".into(), shards, ..Default::default() }),
            (None, false) => Some(Placement {
                strategy: "replicated".into(),
                hardware_classes: args.replicate.clone(),
                ..Default::default()
            }),
            (None, true) => None,
        };
        let mut t = hwsched_client::task(args.command.clone());
        if let Some(id) = &args.id {
            t.task_id = id.clone();
        }
        if let Some(name) = &args.name {
            t.name = name.clone();
        }
        t.priority = args.priority;
        t.timeout_s = args.timeout.unwrap_or(0);
        t.test_type = args.test_type.clone().unwrap_or_default();
        t.requirements = Some(Requirements {
            cpu_cores: args.cpu.unwrap_or(0.0),
            memory_mb: args.memory.unwrap_or(0),
            gpus,
            hardware_classes: args.hardware_class.clone(),
            ..Default::default()
        });
        t.placement = placement;
        t.producer = "hwsched-cli".into();
        vec![t]
    };
    let revision = revision_of(args.revision.as_deref(), |k| std::env::var(k).ok());
    for t in &mut tasks {
        if let Some(suffix) = &args.id_suffix {
            t.task_id.push_str(suffix);
        }
        if t.outputs.is_empty() {
            t.outputs.clone_from(&args.outputs);
        }
        if let (true, Some(path)) = (t.junit.is_empty(), &args.junit_xml) {
            t.junit.clone_from(path);
        }
        if let (true, Some(rev)) = (t.revision.is_empty(), &revision) {
            t.revision.clone_from(rev);
        }
    }
    Ok(tasks)
}

/// What an interrupted wait does.
enum OnInterrupt {
    Cancel,
    Ask,
    Leave,
}

/// Submits, prints each verdict, and with `--wait` follows every task to its end.
pub async fn run(nats: &hwsched_config::NatsConfig, args: SubmitArgs) -> anyhow::Result<u8> {
    // the file first: a bad suite is reported without a connection
    let mut tasks = tasks_from(&args)?;
    let client = &Client::connect(nats).await?;
    crate::bundle::ship(client, args.bundle.as_deref(), &mut tasks).await?;
    let predicted = if args.wait { predictions(client, &tasks).await } else { HashMap::new() };
    let mutes = if args.wait { mutes_in_force(client).await } else { Vec::new() };
    let names: HashMap<String, String> = tasks.iter().map(|t| (t.task_id.clone(), t.name.clone())).collect();
    let total = tasks.len();
    // subscribed before submitting: nothing of their output is missed
    let live = if args.logs {
        Some(crate::logs::LivePrinter::start(client.live_logs().await?, names.keys().cloned()))
    } else {
        None
    };
    let mut run = client.submit(tasks).await?;
    let bar = total > 1 && !args.no_progress && !args.logs && std::io::stderr().is_terminal();
    let mut out = Printer::new(args.output, bar);
    let mut tally = Tally { predicted, ..Default::default() };
    let mut junit = args.junit.clone().map(|path| JunitReport::new(path, names.clone()));
    let on_interrupt = if args.cancel_on_interrupt {
        OnInterrupt::Cancel
    } else if std::io::stdin().is_terminal() {
        OnInterrupt::Ask
    } else {
        OnInterrupt::Leave
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout_s);
    let interrupted = hwsched_shutdown::install_signal_handlers();
    loop {
        let next = tokio::select! {
            n = run.next() => n?,
            _ = interrupted.cancelled(), if args.wait => {
                out.clear();
                report_unfinished(client, junit, &run, "the wait was interrupted").await?;
                return interrupt(client, &run, on_interrupt, &mut out).await;
            }
            _ = tokio::time::sleep_until(deadline), if args.wait => {
                out.clear();
                let why = format!("gave up waiting after {}s", args.wait_timeout_s);
                report_unfinished(client, junit, &run, &why).await?;
                anyhow::bail!("{why}: {} task(s) unfinished", run.open().len());
            }
        };
        let Some(u) = next else { break };
        if !args.wait && matches!(u, Update::Event(_)) {
            continue;
        }
        let name = names.get(update_id(&u)).map_or("", String::as_str);
        tally.count(&u);
        junit.iter_mut().for_each(|j| j.observe(&u));
        out.update(&u, name, || tally.progress());
        if let Update::Finished(f) = &u {
            if let Some(m) = (!f.succeeded()).then(|| mutes::covering(&mutes, f, name, now_ms())).flatten() {
                tally.failed -= 1;
                tally.muted += 1;
                out.muted(&f.task_id, m);
            }
        }
        if !args.wait && run.verdicts_pending() == 0 {
            break;
        }
    }
    out.clear();
    if let Some(live) = live {
        live.finish().await;
    }
    if let Some(junit) = junit {
        junit.write(client).await?;
    }
    if args.wait && args.output == Format::Table {
        let muted = if tally.muted > 0 { format!(", {} failed but muted", tally.muted) } else { String::new() };
        let total = tally.done + tally.failed + tally.muted;
        println!("{total} task(s): {} succeeded, {} failed{muted}", tally.done, tally.failed);
    }
    Ok(if tally.failed > 0 { exit::FAILURE } else { exit::OK })
}

/// The mutes in force now; none (with a warning) when they cannot be read, so
/// that every failure then counts.
async fn mutes_in_force(client: &Client) -> Vec<Mute> {
    match client.mutes().await {
        Ok(all) => all.into_iter().filter(|m| m.ends_at_ms > now_ms()).collect(),
        Err(e) => {
            eprintln!("warning: muted tests not read ({e}): every failure counts");
            Vec::new()
        }
    }
}

/// Writes the `--junit` report of a wait that ended early: what finished, and
/// an error case for each task still open.
async fn report_unfinished(
    client: &Client,
    junit: Option<JunitReport>,
    run: &hwsched_client::Submission,
    why: &str,
) -> anyhow::Result<()> {
    if let Some(mut junit) = junit {
        junit.unfinished(run.open(), why);
        junit.write(client).await?;
    }
    Ok(())
}

fn update_id(u: &Update) -> &str {
    match u {
        Update::Accepted { task_id } | Update::Duplicate { task_id } | Update::Rejected { task_id, .. } => task_id,
        Update::Event(ev) => &ev.task_id,
        Update::Finished(f) => &f.task_id,
    }
}

/// Ctrl-C during `--wait`: cancel the open tasks, or leave them running.
async fn interrupt(
    client: &Client,
    run: &hwsched_client::Submission,
    how: OnInterrupt,
    out: &mut Printer,
) -> anyhow::Result<u8> {
    let open: Vec<String> = run.open().iter().cloned().collect();
    let cancel = match how {
        OnInterrupt::Cancel => true,
        OnInterrupt::Leave => false,
        OnInterrupt::Ask => {
            eprint!("\ninterrupted: cancel the {} unfinished task(s)? [y/N] ", open.len());
            let _ = std::io::stderr().flush();
            let answer = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            });
            // a second Ctrl-C while asking exits at once (130), leaving them running
            matches!(answer.await, Ok(Ok(l)) if l.trim().eq_ignore_ascii_case("y") || l.trim().eq_ignore_ascii_case("yes"))
        }
    };
    if cancel {
        for id in &open {
            match client.cancel(id, "submitter interrupted").await {
                Ok(r) => out.line(&format!("{id:<16} cancel: {}", r.detail)),
                Err(e) => out.line(&format!("{id:<16} cancel failed: {e}")),
            }
        }
    } else if !open.is_empty() {
        eprintln!(
            "interrupted: {} task(s) still queued or running (`hwsched tasks` lists them, `hwsched cancel ID` stops one)",
            open.len()
        );
    }
    Ok(exit::INTERRUPTED)
}

/// The learner's runtime prediction per task id (best hardware it ran on),
/// else the producer's `expected_duration_s`.
async fn predictions(client: &Client, tasks: &[TaskRequest]) -> HashMap<String, f64> {
    let model = crate::model::load_from(client.bus()).await.ok();
    tasks
        .iter()
        .filter_map(|t| {
            let learned = model.as_ref().and_then(|m| m.best_observed_s(&hwsched_model::task_workload_key(t)));
            let declared = (t.expected_duration_s > 0.0).then_some(t.expected_duration_s);
            learned.or(declared).map(|s| (t.task_id.clone(), s))
        })
        .collect()
}

/// Counts of a suite's tasks, and what is needed for its ETA.
#[derive(Default)]
struct Tally {
    done: usize,
    failed: usize,
    /// Failed, but covered by a mute: not counted in `failed`.
    muted: usize,
    accepted: std::collections::BTreeSet<String>,
    ended: std::collections::HashSet<String>,
    /// Task id -> when it (or its first part) started.
    running: HashMap<String, Instant>,
    predicted: HashMap<String, f64>,
    /// Runtimes of the tasks ended so far, standing in for missing predictions.
    ran: Vec<f64>,
}

impl Tally {
    fn count(&mut self, u: &Update) {
        // a shard or replica counts as its task running
        let own = |id: &str| hwsched_placement::group::parent_of(id).unwrap_or(id).to_string();
        match u {
            Update::Accepted { task_id } => {
                self.accepted.insert(task_id.clone());
            }
            Update::Rejected { task_id, .. } => {
                self.failed += 1;
                self.ended.insert(task_id.clone());
            }
            Update::Event(ev) if ev.kind() == TaskEventKind::Started => {
                self.running.entry(own(&ev.task_id)).or_insert_with(Instant::now);
            }
            Update::Event(ev) if ev.kind() == TaskEventKind::Retried && ev.task_id == own(&ev.task_id) => {
                self.running.remove(&ev.task_id);
            }
            Update::Finished(f) => {
                self.running.remove(&f.task_id);
                self.ended.insert(f.task_id.clone());
                if f.duration_s > 0.0 {
                    self.ran.push(f.duration_s);
                }
                if f.status == TaskStatus::Succeeded {
                    self.done += 1;
                } else {
                    self.failed += 1;
                }
            }
            _ => {}
        }
    }

    fn waiting(&self) -> impl Iterator<Item = &String> {
        self.accepted.iter().filter(|id| !self.ended.contains(*id) && !self.running.contains_key(*id))
    }

    fn progress(&self) -> Progress {
        Progress {
            done: self.done,
            failed: self.failed,
            running: self.running.len(),
            queued: self.waiting().count(),
            eta_s: self.eta(),
        }
    }

    /// Remaining predicted work spread over the tasks running now (one lane
    /// when none runs yet); `None` when nothing was predicted or has ended.
    fn eta(&self) -> Option<f64> {
        let known: Vec<f64> = self.predicted.values().chain(&self.ran).copied().collect();
        if known.is_empty() {
            return None;
        }
        let typical = known.iter().sum::<f64>() / known.len() as f64;
        let predict = |id: &str| self.predicted.get(id).copied().unwrap_or(typical);
        let running: f64 =
            self.running.iter().map(|(id, since)| (predict(id) - since.elapsed().as_secs_f64()).max(0.0)).sum();
        let waiting: f64 = self.waiting().map(|id| predict(id)).sum();
        Some((running + waiting) / self.running.len().max(1) as f64)
    }
}

/// How often the progress line is redrawn at most (it is worked out from the
/// whole submission, so not once per update of a large burst).
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Prints updates as lines (with a progress line redrawn on stderr) or JSON.
struct Printer {
    format: Format,
    bar: bool,
    drawn: bool,
    /// When the progress line was last drawn.
    redrawn: Option<Instant>,
}

impl Printer {
    fn new(format: Format, bar: bool) -> Self {
        Self { format, bar: bar && format == Format::Table, drawn: false, redrawn: None }
    }

    fn clear(&mut self) {
        if self.drawn {
            eprint!("\r\x1b[2K");
            self.drawn = false;
        }
    }

    fn line(&mut self, text: &str) {
        self.clear();
        println!("{text}");
    }

    /// Says that the failure of `task_id` is covered by mute `m`.
    fn muted(&mut self, task_id: &str, m: &Mute) {
        let until = hwsched_alerting::notify::rfc3339(m.ends_at_ms);
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::json!({"update": "muted", "taskId": task_id, "muteId": m.id, "pattern": m.pattern,
                    "reason": m.reason, "until": until})
            ),
            Format::Table => self.line(&format!(
                "{task_id:<16} failure muted by {:?} ({}, until {until}): {}",
                m.pattern, m.id, m.reason
            )),
        }
    }

    /// Prints `u`; `progress` is worked out only when the progress line is redrawn.
    fn update(&mut self, u: &Update, name: &str, progress: impl FnOnce() -> Progress) {
        match self.format {
            Format::Json => println!("{}", crate::output::update_json(u)),
            Format::Table => {
                if let Some(line) = render::update(u, name) {
                    self.line(&line);
                }
                // (a line printed between redraws hides the progress line until the next one)
                if self.bar && self.redrawn.is_none_or(|t| t.elapsed() >= REDRAW_EVERY) {
                    self.redrawn = Some(Instant::now());
                    eprint!("\r\x1b[2K{}", render::progress(&progress(), 30));
                    let _ = std::io::stderr().flush();
                    self.drawn = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory_mb("512"), Ok(512));
        assert_eq!(parse_memory_mb("8G"), Ok(8192));
        assert_eq!(parse_memory_mb("256M"), Ok(256));
        assert!(parse_memory_mb("lots").is_err());
    }

    #[test]
    fn eta_spreads_the_predicted_work_over_the_running_tasks() {
        let mut t = Tally {
            predicted: [("a".into(), 10.0), ("b".into(), 10.0), ("c".into(), 30.0)].into(),
            ..Default::default()
        };
        for id in ["a", "b", "c"] {
            t.count(&Update::Accepted { task_id: id.into() });
        }
        // nothing runs yet: all 50 s of work in one lane
        let p = t.progress();
        assert_eq!((p.queued, p.running), (3, 0));
        assert!((p.eta_s.expect("eta") - 50.0).abs() < 0.5, "{p:?}");
        t.running.insert("a".into(), Instant::now());
        t.running.insert("b".into(), Instant::now());
        let p = t.progress();
        assert_eq!((p.queued, p.running), (1, 2));
        // (10 + 10 running + 30 waiting) / 2 lanes
        assert!((p.eta_s.expect("eta") - 25.0).abs() < 0.5, "{p:?}");
        // no prediction at all: no ETA
        let t = Tally::default();
        assert_eq!(t.progress().eta_s, None);
    }

    #[test]
    fn the_revision_is_the_flag_else_the_first_ci_variable_set() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let ci = env(&[("CI_COMMIT_SHA", "gitlab"), ("GIT_COMMIT", "jenkins"), ("GITHUB_SHA", " ")]);
        assert_eq!(revision_of(Some("abc123"), ci).as_deref(), Some("abc123"));
        // GITHUB_SHA blank: the next one set
        assert_eq!(revision_of(None, ci).as_deref(), Some("gitlab"));
        assert_eq!(revision_of(Some(""), env(&[("BUILDKITE_COMMIT", "bk")])).as_deref(), Some("bk"));
        assert_eq!(revision_of(None, env(&[])), None);
    }
}
