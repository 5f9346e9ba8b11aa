//! The `hwsched` binary: every service as a subcommand (`monitor`, `scheduler`,
//! `learner`, `alerting`, `recorder`, or `all` in one process) and the client
//! commands (`submit`, `events`, `workers`, `schema`, `report`). Thin: it parses
//! configuration and calls each crate's `run`.
#![forbid(unsafe_code)]

mod alerts;
mod bench;
mod bench_alerts;
mod bench_ingest;
mod client;
mod model;
mod report;
mod service;
mod sim;

use clap::{Parser, Subcommand};
use hwsched_config::{ClickHouseConfig, NatsConfig, TelemetryConfig};

#[derive(Debug, Parser)]
#[command(name = "hwsched", version, about = "Schedules test jobs onto the hardware that runs them best.")]
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
    /// Submit one task (flags) or a suite (file) and optionally wait for the results.
    Submit(client::SubmitArgs),
    /// Follow task lifecycle events and results as they happen.
    Events,
    /// Cancel a task: removed from the queue, or its running attempt stopped.
    Cancel {
        /// Task id.
        task_id: String,
        /// Why (recorded with the task).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// List the workers that are sending heartbeats.
    Workers,
    /// The waiting tasks, in placement order, with the reason each waits.
    Queue,
    /// What the scheduler knows of a task and why it is where it is.
    Explain {
        /// Task id.
        task_id: String,
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
        output: model::Format,
    },
    /// Silence alerts: add, list, expire (shared by every alerting replica).
    Silence(alerts::SilenceArgs),
    /// Simulate placement policies on a trace (built-in or --trace FILE) in simulated time.
    Sim(sim::SimArgs),
    /// ClickHouse schema: print the DDL for a server version, or apply it.
    Schema {
        #[command(subcommand)]
        command: client::SchemaCommand,
    },
    /// Fleet report from ClickHouse over a window: utilization, task resources, slowest tests, failures, alerts (HTML and/or JSON).
    Report(report::ReportArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let is_service = matches!(
        cli.command,
        Command::Monitor(_)
            | Command::Scheduler(_)
            | Command::Learner(_)
            | Command::Alerting(_)
            | Command::Recorder(_)
            | Command::All(_)
    );
    let default_filter = if is_service { "info,async_nats=warn" } else { "warn" };
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
            return std::process::ExitCode::FAILURE;
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
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
        | Command::Events
        | Command::Cancel { .. }
        | Command::Workers
        | Command::Queue
        | Command::Explain { .. }
        | Command::Model(_)
        | Command::Alerts { .. }
        | Command::Silence(_)
        | Command::Schema { .. }
        | Command::Report(_) => "cli",
        Command::Sim(_) => "sim",
        Command::Bench { .. } => "bench",
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let ok = std::process::ExitCode::SUCCESS;
    let Cli { nats, clickhouse, telemetry, command } = cli;
    cli_validate(&nats, &clickhouse)?;
    match command {
        Command::Monitor(cfg) => {
            cfg.validate().map_err(anyhow::Error::msg)?;
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
            service::serve(&nats, &telemetry, "alerting", |bus, t, s| hwsched_alerting::run(cfg, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::Recorder(cfg) => {
            service::serve(&nats, &telemetry, "recorder", |bus, t, s| hwsched_recorder::run(cfg, clickhouse, bus, t, s))
                .await
                .map(|_| ok)
        }
        Command::All(cfg) => service::all(cfg, &nats, clickhouse, &telemetry).await.map(|_| ok),
        Command::Submit(args) => client::submit(&nats, args).await,
        Command::Events => client::events(&nats).await.map(|_| ok),
        Command::Cancel { task_id, reason } => client::cancel(&nats, task_id, reason).await,
        Command::Workers => client::workers(&nats).await.map(|_| ok),
        Command::Queue => client::queue(&nats).await.map(|_| ok),
        Command::Explain { task_id } => client::explain(&nats, task_id).await,
        Command::Model(args) => model::run(&nats, args).await.map(|_| ok),
        Command::Alerts { output } => alerts::firing(&nats, output).await.map(|_| ok),
        Command::Silence(args) => alerts::silence(&nats, args).await.map(|_| ok),
        Command::Schema { command } => client::schema(command, &clickhouse).await.map(|_| ok),
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
