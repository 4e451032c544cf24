//! The database: all of authd's SQL lives under this module, always with
//! bound parameters. SQLite in WAL mode, with a pool of readers and a
//! single writer connection, so writes queue in-process instead of failing
//! with `SQLITE_BUSY`; write transactions take the lock up front
//! (`BEGIN IMMEDIATE`) so that another process (the CLI) cannot deadlock
//! them.

pub mod access_tokens;
pub mod audit;
pub mod grants;
pub mod groups;
pub mod refresh_tokens;
pub mod users;

use std::path::Path;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::Error;

/// Connections to one authd database.
#[derive(Debug, Clone)]
pub struct Db {
    read: sqlx::SqlitePool,
    write: sqlx::SqlitePool,
}

pub type Tx = sqlx::Transaction<'static, Sqlite>;

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 4;

impl Db {
    /// Opens (creating if needed, mode 0600) and migrates the database.
    pub async fn open(path: &Path) -> Result<Db, anyhow::Error> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::util::create_private_dir(parent)?;
        }
        crate::util::create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("opening database {}: {e}", path.display()))?;
        sqlx::migrate!("../migrations")
            .run(&write)
            .await
            .map_err(|e| anyhow::anyhow!("migrating database {}: {e}", path.display()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("opening database {}: {e}", path.display()))?;
        Ok(Db { read, write })
    }

    pub(crate) fn reader(&self) -> &sqlx::SqlitePool {
        &self.read
    }

    /// Starts a write transaction holding the write lock.
    pub(crate) async fn begin_write(&self) -> Result<Tx, Error> {
        Ok(self.write.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Whether an error is a UNIQUE constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}
