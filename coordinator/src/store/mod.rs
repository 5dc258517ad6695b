//! The SQL store. PostgreSQL for fleets, SQLite for the embedded default, through
//! sqlx's `Any` driver so that both run the same queries; the few places where the
//! dialects differ (row locking) branch on [`Dialect`].
//!
//! Every state transition is one transaction. Times are milliseconds since the epoch.

mod artifacts;
mod cached;
mod experiments;
mod jobs;
mod leases;
mod logs;
mod owners;
mod rows;
mod stats;
mod tokens;
mod trainsets;
pub mod workers;

pub use artifacts::{JobInputs, NeededJob};
pub use jobs::{StateChange, Target, TERMINAL};
pub use leases::{Capacity, LeaseGrant};
pub use rows::{
    ArtifactRow, AttemptRow, ExperimentRow, GpuInfo, JobRow, LogRow, TrainsetRow, WorkerRow,
};
pub use tokens::{TokenRef, TokenRow};

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl Store {
    /// Connects and runs the migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            return Err(crate::Error::Invalid(format!(
                "database_url `{url}`: expected postgres://… or sqlite://…"
            )));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool = match dialect {
            Dialect::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    // A dead connection fails its query and is replaced; a ping
                    // before every use would double the round trips.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await?
            }
            // One connection: SQLite has one writer anyway, and a single connection
            // makes every transaction serial, the SQLite equivalent of row locks.
            Dialect::Sqlite => {
                AnyPoolOptions::new()
                    .max_connections(1)
                    .test_before_acquire(false)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
        };
        match dialect {
            Dialect::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
            Dialect::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, dialect })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `FOR UPDATE SKIP LOCKED` where the database has row locks.
    fn skip_locked(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }

    /// `FOR UPDATE` where the database has row locks.
    fn for_update(&self) -> &'static str {
        match self.dialect {
            Dialect::Postgres => "FOR UPDATE",
            Dialect::Sqlite => "",
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
