//! `hwsched bench ...`: load generators against running services, one file
//! per command (`assign.rs` with its simulated fleet in `fleet.rs`,
//! `alerts.rs`, `ingest.rs`, `e2e.rs`, `logs.rs`, `bundle.rs`) and what they share in `shared.rs`.

mod alerts;
mod assign;
mod bundle;
mod e2e;
mod fleet;
mod ingest;
mod logs;
mod shared;

use std::time::Duration;

use clap::Subcommand;
use hwsched_bus::Bus;
use hwsched_config::{ClickHouseConfig, NatsConfig};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Submit → assignment throughput and latency against a running scheduler.
    Assign(assign::AssignArgs),
    /// Sample → alert notification latency against a running alerting service.
    Alerts(alerts::AlertsArgs),
    /// Metric rows per second through a running recorder into ClickHouse.
    Ingest(ingest::IngestArgs),
    /// Producer → result through the running system with real monitors: a
    /// throughput run, or a soak at a fixed rate sampling each service's memory.
    E2e(e2e::E2eArgs),
    /// Live log latency (line written -> seen by a follower) and the monitor's memory while a task prints a lot.
    Logs(logs::LogsArgs),
    /// Bundle pack, upload and download next to a raw Object Store put/get, and a cached start.
    Bundle(bundle::BundleArgs),
}

pub async fn run(nats: &NatsConfig, clickhouse: &ClickHouseConfig, cmd: BenchCommand) -> anyhow::Result<()> {
    let bus = Bus::connect(nats, "hwsched-bench", Duration::from_secs(5)).await?;
    match cmd {
        BenchCommand::Assign(args) => assign::run(&bus, args).await,
        BenchCommand::Alerts(args) => alerts::run(&bus, args).await,
        BenchCommand::Ingest(args) => ingest::run(&bus, clickhouse, args).await,
        BenchCommand::E2e(args) => e2e::run(&bus, args).await,
        BenchCommand::Logs(args) => logs::run(&bus, args).await,
        BenchCommand::Bundle(args) => bundle::run(&bus, args).await,
    }
}
