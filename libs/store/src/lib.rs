//! ClickHouse storage of hwsched: connection, server-version detection, the
//! version-aware schema and its migration (`schema.rs`), the row types written
//! by the recorder (`rows.rs`) and their inserts (`insert.rs`), and the typed
//! reads: the learner's history (`read.rs`) and `hwsched report`'s queries
//! (`report/`).
#![forbid(unsafe_code)]

mod insert;
mod read;
pub mod report;
mod rows;
pub mod schema;

use clickhouse::Client;
use hwsched_config::ClickHouseConfig;
pub use rows::{
    alert_state_name, category_of, status_name, status_of, AlertRow, AttemptCases, DecisionRow, MetricRow, RunRow,
    TestCaseRow, TimeColumn, WorkerRow,
};
pub use schema::ServerVersion;
use serde::Serialize;

use crate::rows::secs;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// ClickHouse is not configured.
    #[error("ClickHouse is not configured (set HWSCHED_CLICKHOUSE_URL)")]
    NotConfigured,
    /// The server answered with an error or could not be reached.
    #[error("ClickHouse {what}: {source}{}", tls_hint(source))]
    Server {
        /// What was being done.
        what: &'static str,
        /// Client error.
        source: clickhouse::error::Error,
    },
    /// `version()` returned something unparseable.
    #[error("unrecognised ClickHouse version {0:?}")]
    Version(String),
    /// A read failed; `what` says what was read (and, where it helps, why it may have failed).
    #[error("{what}")]
    Read {
        /// What was being read.
        what: String,
        /// Client error.
        source: clickhouse::error::Error,
    },
    /// A table the read needs does not exist.
    #[error("no table {database}.{table}: has `hwsched schema migrate` (or the recorder) created the tables?")]
    MissingTable {
        /// Database.
        database: String,
        /// Table.
        table: &'static str,
    },
}

/// What to do about a server certificate from an unknown CA.
fn tls_hint(e: &clickhouse::error::Error) -> &'static str {
    let mut cause: Option<&dyn std::error::Error> = Some(e);
    let mut unknown_issuer = false;
    while let Some(c) = cause {
        unknown_issuer |= c.to_string().contains("UnknownIssuer");
        cause = c.source();
    }
    if unknown_issuer {
        " (a private CA? point SSL_CERT_FILE at its PEM certificate)"
    } else {
        ""
    }
}

/// A connected store: the client (bound to the database) and the server version.
#[derive(Clone)]
pub struct Store {
    client: Client,
    version: ServerVersion,
    database: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("version", &self.version).field("database", &self.database).finish()
    }
}

/// A client for `cfg` without a database (validation off: old servers lack
/// the metadata queries it needs).
fn base_client(cfg: &ClickHouseConfig) -> Result<Client, StoreError> {
    let url = cfg.url.as_ref().ok_or(StoreError::NotConfigured)?;
    let mut c = Client::default().with_url(url).with_validation(false);
    if let Some(u) = &cfg.user {
        c = c.with_user(u);
    }
    if let Some(p) = &cfg.password {
        c = c.with_password(p);
    }
    Ok(c)
}

impl Store {
    /// Connects and detects the server version; changes nothing on the server
    /// (readers such as the learner need no DDL rights).
    pub async fn connect(cfg: &ClickHouseConfig) -> Result<Self, StoreError> {
        let base = base_client(cfg)?;
        let raw: String = base
            .query("SELECT version()")
            .fetch_one()
            .await
            .map_err(|source| StoreError::Server { what: "version()", source })?;
        let version = ServerVersion::parse(&raw).ok_or(StoreError::Version(raw))?;
        Ok(Self { client: base.with_database(&cfg.database), version, database: cfg.database.clone() })
    }

    /// Connects, detects the server version and applies the migrations not
    /// yet recorded in `schema_migrations`, in order.
    pub async fn connect_and_migrate(cfg: &ClickHouseConfig) -> Result<Self, StoreError> {
        let store = Self::connect(cfg).await?;
        let applied = store.migrate(cfg).await?;
        tracing::info!(
            version = %store.version,
            database = %cfg.database,
            modern = store.version.is_modern(),
            applied = ?applied,
            "ClickHouse schema ready"
        );
        Ok(store)
    }

    /// Applies the migrations not yet applied; returns their versions.
    pub async fn migrate(&self, cfg: &ClickHouseConfig) -> Result<Vec<u32>, StoreError> {
        let base = base_client(cfg)?;
        let err = |source| StoreError::Server { what: "migration", source };
        for ddl in schema::migrations_table(&cfg.database) {
            base.query(&ddl).execute().await.map_err(err)?;
        }
        let done: Vec<u32> =
            self.client.query("SELECT DISTINCT version FROM schema_migrations").fetch_all().await.map_err(err)?;
        let mut applied = Vec::new();
        for m in schema::migrations(self.version, &cfg.database) {
            if done.contains(&m.version) {
                continue;
            }
            for ddl in &m.statements {
                match base.query(ddl).execute().await {
                    Err(e) if schema::already_done(ddl, &e.to_string()) => {
                        tracing::info!(version = m.version, error = %e, "ClickHouse migration step already done");
                    }
                    r => r.map_err(err)?,
                }
            }
            let row = MigrationRow {
                version: m.version,
                description: m.description.to_string(),
                applied_at: secs(now_ms()),
                server_version: self.version.to_string(),
            };
            let mut insert = self.client.insert::<MigrationRow>("schema_migrations").await.map_err(err)?;
            insert.write(&row).await.map_err(err)?;
            insert.end().await.map_err(err)?;
            tracing::info!(version = m.version, description = m.description, "ClickHouse migration applied");
            applied.push(m.version);
        }
        Ok(applied)
    }

    /// On servers without TTL, drops the partitions of [`schema::RETENTION`]'s
    /// tables that hold only expired rows; returns the (table, partition)
    /// dropped. Modern servers expire rows themselves (TTL): nothing to do.
    pub async fn drop_expired_partitions(&self, today_days: i64) -> Result<Vec<(String, String)>, StoreError> {
        if self.version.is_modern() {
            return Ok(Vec::new());
        }
        let err = |source| StoreError::Server { what: "retention", source };
        let parts: Vec<(String, String)> = self
            .client
            .query("SELECT DISTINCT table, partition FROM system.parts WHERE database = ? AND active")
            .bind(&self.database)
            .fetch_all()
            .await
            .map_err(err)?;
        let mut dropped = Vec::new();
        for (table, partition) in parts {
            let Some((_, days)) = schema::RETENTION.iter().find(|(t, _)| *t == table) else { continue };
            if !schema::partition_expired(&partition, *days, today_days) {
                continue;
            }
            let literal = if partition.starts_with('\'') || partition.chars().all(|c| c.is_ascii_digit()) {
                partition.clone()
            } else {
                format!("'{partition}'")
            };
            self.client
                .query(&format!("ALTER TABLE {}.{table} DROP PARTITION {literal}", self.database))
                .execute()
                .await
                .map_err(err)?;
            dropped.push((table, partition));
        }
        Ok(dropped)
    }

    /// The migrations recorded as applied: (version, description).
    pub async fn applied_migrations(&self) -> Result<Vec<(u32, String)>, StoreError> {
        self.client
            .query("SELECT version, any(description) FROM schema_migrations GROUP BY version ORDER BY version")
            .fetch_all()
            .await
            .map_err(|source| StoreError::Server { what: "schema_migrations", source })
    }

    /// Server version.
    pub fn version(&self) -> ServerVersion {
        self.version
    }

    /// The client, bound to the hwsched database.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One `schema_migrations` row.
#[derive(Debug, Clone, clickhouse::Row, Serialize)]
struct MigrationRow {
    version: u32,
    description: String,
    applied_at: u32,
    server_version: String,
}
