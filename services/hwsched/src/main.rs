//! The `hwsched` binary: every service as a subcommand (`monitor`, `scheduler`,
//! `learner`, `alerting`, `recorder`, or `all` in one process) and the client
//! commands (`submit`, `logs`, `artifacts`, `workers`, `queue`, `tasks`,
//! `watch`, `explain`, `cancel`, `drain`, ...), built on `hwsched-client`. Thin: it parses
//! configuration and calls each crate's `run`.
#![forbid(unsafe_code)]

mod alerts;
mod artifacts;
mod bench;
mod bundle;
mod junit_report;
mod logs;
mod model;
mod mute;
mod nats_auth;
mod ops;
mod output;
mod quarantine;
mod render;
mod report;
mod schema;
mod service;
mod sim;
mod submit;

use clap::{Parser, Subcommand};
use hwsched_client::{exit, Client};
use hwsched_config::{ClickHouseConfig, NatsConfig, TelemetryConfig};
use output::Format;

const EXIT_CODES: &str = "Exit status: 0 done (and every task succeeded), 1 a task failed or was rejected, or what was named does not exist, 2 bad usage or input (flags, configuration, suite file), 3 NATS or a service unreachable, 130 interrupted.";

#[derive(Debug, Parser)]
#[command(
    name = "hwsched",
    version,
    about = "Schedules test jobs onto the hardware that runs them best.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(flatten)]
    nats: NatsConfig,
    #[command(flatten)]
    clickhouse: ClickHouseConfig,
    #[command(flatten)]
    telemetry: TelemetryConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the monitor of this worker node.
    Monitor(hwsched_monitor::MonitorConfig),
    /// Run the scheduler.
    Scheduler(hwsched_scheduler::SchedulerConfig),
    /// Run the learner.
    Learner(hwsched_learner::LearnerConfig),
    /// Run the alerting service.
    Alerting(hwsched_alerting::AlertingConfig),
    /// Run the ClickHouse recorder.
    Recorder(hwsched_recorder::RecorderConfig),
    /// Run scheduler, learner, alerting and recorder in one process.
    All(service::AllConfig),
    /// Submit one task (flags) or a suite (JSON/YAML file) and optionally wait for the results.
    Submit(submit::SubmitArgs),
    /// A task's output: stored after the attempt, or live with -f.
    Logs(logs::LogsArgs),
    /// The files a task's attempt brought back; --get DIR downloads them.
    Artifacts(artifacts::ArtifactsArgs),
    /// Follow task lifecycle events as they happen.
    Events {
        /// Output: table (a line per event) or json (one object per line).
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Cancel a task: removed from the queue, or its running attempt stopped.
    Cancel {
        /// Task id.
        task_id: String,
        /// Why (recorded with the task).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the workers that are sending heartbeats: hardware, slots, CPU/GPU use, temperature, state.
    Workers {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// The waiting tasks, in placement order, with the reason each waits.
    Queue {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// The tasks the scheduler holds now, or one task's history (events and attempts).
    Tasks(ops::TasksArgs),
    /// A live view of workers and tasks, refreshing in place.
    Watch(ops::WatchArgs),
    /// What the scheduler knows of a task and why it is where it is.
    Explain {
        /// Task id.
        task_id: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Drain a worker: it takes no new tasks, the running ones finish (kept across monitor restarts).
    Drain(ops::DrainArgs),
    /// Undrain a worker: it takes tasks again.
    Undrain(ops::DrainArgs),
    /// Print the nats-server `authorization` block: a user per role and per worker, each with only its subjects.
    NatsAuth(nats_auth::NatsAuthArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Load generators against a running scheduler (use a dedicated NATS server).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// What the learner learned: runtime per workload x hardware, worker health, prediction error.
    Model(model::ModelArgs),
    /// The alerts firing now (muted ones say by what).
    Alerts {
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Format,
    },
    /// Silence alerts: add, list, expire (shared by every alerting replica).
    Silence(alerts::SilenceArgs),
    /// Mute tests: their failures stop failing `submit --wait` for a while (add, list, end).
    Mute(mute::MuteArgs),
    /// Workers taken out of service for failing more than their tests predict: list, release.
    Quarantine(quarantine::QuarantineArgs),
    /// Simulate placement policies on a trace (built-in or --trace FILE) in simulated time.
    Sim(sim::SimArgs),
    /// ClickHouse schema: print the DDL for a server version, or apply it.
    Schema {
        #[command(subcommand)]
        command: schema::SchemaCommand,
    },
    /// Fleet report from ClickHouse over a window: utilization, task resources, slowest tests, failures, alerts (HTML and/or JSON).
    Report(report::ReportArgs),
}

fn main() -> std::process::ExitCode {
    quiet_broken_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and exit 0; usage errors exit 2
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let is_service = matches!(
        cli.command,
        Command::Monitor(_)
            | Command::Scheduler(_)
            | Command::Learner(_)
            | Command::Alerting(_)
            | Command::Recorder(_)
            | Command::All(_)
    );
    // a client command's connection retries are not news: its error says what failed
    let default_filter = if is_service { "info,async_nats=warn" } else { "warn,hwsched_bus=error" };
    let service = format!("hwsched-{}", command_name(&cli.command));
    let _guard = match hwsched_telemetry::init(
        &cli.telemetry.log_format,
        cli.telemetry.log_filter.as_deref().unwrap_or(default_filter),
        cli.telemetry.otlp_endpoint.as_deref(),
        &service,
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return std::process::ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(dispatch(cli));
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

/// `hwsched tasks | head`: a closed stdout ends the command quietly with the
/// status of a process killed by SIGPIPE (128 + 13), not with a panic.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// A problem with what the user gave (flags, configuration): exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// The exit status of a failed command: from the client library's error
/// kinds, 2 for configuration and input errors, else 1.
fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<hwsched_client::Error>() {
            return c.exit_code();
        }
        if cause.downcast_ref::<hwsched_client::SuiteError>().is_some() {
            return exit::USAGE;
        }
        if cause.downcast_ref::<hwsched_config::ConfigError>().is_some() || cause.downcast_ref::<Usage>().is_some() {
            return exit::USAGE;
        }
        if let Some(hwsched_bus::BusError::Connect { .. }) = cause.downcast_ref::<hwsched_bus::BusError>() {
            return exit::UNAVAILABLE;
        }
    }
    exit::FAILURE
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Monitor(_) => "monitor",
        Command::Scheduler(_) => "scheduler",
        Command::Learner(_) => "learner",
        Command::Alerting(_) => "alerting",
        Command::Recorder(_) => "recorder",
        Command::All(_) => "all",
        Command::Submit(_)
        | Command::Logs(_)
        | Command::Artifacts(_)
        | Command::Events { .. }
        | Command::Cancel { .. }
        | Command::Workers { .. }
        | Command::Queue { .. }
        | Command::Tasks(_)
        | Command::Watch(_)
        | Command::Drain(_)
        | Command::Undrain(_)
        | Command::Completions { .. }
        | Command::NatsAuth(_)
        | Command::Explain { .. }
        | Command::Model(_)
        | Command::Alerts { .. }
        | Command::Silence(_)
        | Command::Mute(_)
        | Command::Quarantine(_)
        | Command::Schema { .. }
        | Command::Report(_) => "cli",
        Command::Sim(_) => "sim",
        Command::Bench { .. } => "bench",
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let ok = exit::OK;
    let Cli { nats, clickhouse, telemetry, command } = cli;
    cli_validate(&nats, &clickhouse)?;
    match command {
        Command::Monitor(cfg) => {
            cfg.validate().map_err(|e| anyhow::Error::new(Usage(e)))?;
            service::serve(&nats, &telemetry, "monitor", |bus, t, s| hwsched_monitor::run(cfg, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::Scheduler(cfg) => {
            service::serve(&nats, &telemetry, "scheduler", |bus, t, s| hwsched_scheduler::run(cfg, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::Learner(cfg) => {
            service::serve(&nats, &telemetry, "learner", |bus, t, s| hwsched_learner::run(cfg, clickhouse, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::Alerting(cfg) => {
            cfg.validate().map_err(|e| anyhow::Error::new(Usage(e)))?;
            service::serve(&nats, &telemetry, "alerting", |bus, t, s| hwsched_alerting::run(cfg, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::Recorder(cfg) => {
            service::serve(&nats, &telemetry, "recorder", |bus, t, s| hwsched_recorder::run(cfg, clickhouse, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::All(cfg) => {
            cfg.validate().map_err(|e| anyhow::Error::new(Usage(e)))?;
            service::all(cfg, &nats, clickhouse, &telemetry).await.map(|_| ok)
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "hwsched",
                &mut std::io::stdout(),
            );
            Ok(ok)
        }
        Command::NatsAuth(args) => nats_auth::run(&nats.subject_prefix, nats.js_domain.as_deref(), &args).map(|_| ok),
        Command::Submit(args) => submit::run(&nats, args).await,
        Command::Logs(args) => logs::run(&Client::connect(&nats).await?, args).await,
        Command::Artifacts(args) => artifacts::run(&Client::connect(&nats).await?, args).await,
        Command::Events { output } => ops::events(&Client::connect(&nats).await?, output).await,
        Command::Cancel { task_id, reason } => ops::cancel(&Client::connect(&nats).await?, &task_id, &reason).await,
        Command::Workers { output } => ops::workers(&Client::connect(&nats).await?, output).await,
        Command::Queue { output } => ops::queue(&Client::connect(&nats).await?, output).await,
        Command::Tasks(args) => ops::tasks(&Client::connect(&nats).await?, args).await,
        Command::Watch(args) => ops::watch(&Client::connect(&nats).await?, args).await,
        Command::Explain { task_id, output } => ops::explain(&Client::connect(&nats).await?, &task_id, output).await,
        Command::Drain(args) => ops::drain(&Client::connect(&nats).await?, args, true).await,
        Command::Undrain(args) => ops::drain(&Client::connect(&nats).await?, args, false).await,
        Command::Model(args) => model::run(&nats, args).await.map(|_| ok),
        Command::Alerts { output } => alerts::firing(&nats, output).await.map(|_| ok),
        Command::Silence(args) => alerts::silence(&nats, args).await.map(|_| ok),
        Command::Mute(args) => mute::run(&Client::connect(&nats).await?, args).await,
        Command::Quarantine(args) => quarantine::run(&Client::connect(&nats).await?, args).await,
        Command::Schema { command } => schema::schema(command, &clickhouse).await.map(|_| ok),
        Command::Report(args) => report::run(&clickhouse, args).await.map(|_| ok),
        Command::Bench { command } => bench::run(&nats, &clickhouse, command).await.map(|_| ok),
        // CPU-bound and synchronous: off the async workers
        Command::Sim(args) => tokio::task::spawn_blocking(move || sim::run(args)).await?.map(|_| ok),
    }
}

fn cli_validate(nats: &NatsConfig, clickhouse: &ClickHouseConfig) -> anyhow::Result<()> {
    nats.validate()?;
    clickhouse.validate()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
