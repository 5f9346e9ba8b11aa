//! `hwsched schema`: print the ClickHouse DDL for a server version, or apply
//! the migrations to the configured server.

use anyhow::Context;
use clap::Subcommand;
use hwsched_config::ClickHouseConfig;

/// `hwsched schema`.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Print the DDL for a server version (e.g. 18.16 or 24.8).
    Print {
        /// ClickHouse server version to render for.
        #[arg(long)]
        server_version: String,
    },
    /// Detect the configured server's version and apply the migrations not yet applied.
    Migrate,
}

/// Runs a schema command.
pub async fn schema(cmd: SchemaCommand, clickhouse: &ClickHouseConfig) -> anyhow::Result<()> {
    match cmd {
        SchemaCommand::Print { server_version } => {
            let v = hwsched_store::ServerVersion::parse(&server_version)
                .with_context(|| format!("--server-version {server_version:?}: expected e.g. 18.16 or 24.8"))?;
            for ddl in hwsched_store::schema::render(v, &clickhouse.database) {
                println!("{ddl};\n");
            }
        }
        SchemaCommand::Migrate => {
            let store = hwsched_store::Store::connect(clickhouse).await?;
            let applied = store.migrate(clickhouse).await?;
            println!("server {}, database {}", store.version(), clickhouse.database);
            if applied.is_empty() {
                println!("nothing to apply");
            }
            for (version, description) in store.applied_migrations().await? {
                let now = if applied.contains(&version) { "applied now" } else { "already applied" };
                println!("  {version:>3}  {description} ({now})");
            }
        }
    }
    Ok(())
}
