//! The database: all of authd's SQL lives under this module, always with
//! bound parameters (numbered, `$1`, which both engines read). Two engines:
//!
//! - SQLite (the default) in WAL mode, with a pool of readers and a single
//!   writer connection, so writes queue in-process instead of failing with
//!   `SQLITE_BUSY`; write transactions take the lock up front
//!   (`BEGIN IMMEDIATE`) so that another process (the CLI) cannot deadlock
//!   them.
//! - PostgreSQL, shared by several authd replicas: one pool; write
//!   transactions take one transaction-scoped advisory lock first, so that
//!   they are serialised across replicas exactly as SQLite serialises them
//!   (the check-then-write rules, such as "keep an enabled admin", rely on
//!   it).
//!
//! Queries are written once and run on either engine through [`on_pool!`]
//! and [`on_tx!`]; the few statements whose SQL differs say so where they
//! are.

pub mod access_tokens;
pub mod audit;
pub mod coalesce;
pub mod copy;
pub mod grants;
pub mod groups;
pub mod login_failures;
pub mod refresh_tokens;
pub mod users;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Postgres, Sqlite};

use crate::error::Error;

/// Where the database is: a SQLite file, or a PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// `postgres://…` or `postgresql://…` is PostgreSQL; anything else is
    /// a SQLite path (with or without a `sqlite://` prefix).
    pub fn parse(s: &str) -> Location {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Location::Postgres(s.to_owned())
        } else {
            Location::Sqlite(PathBuf::from(s.strip_prefix("sqlite://").unwrap_or(s)))
        }
    }
}

/// Never shows a password of the URL.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `scheme://user:secret@host…` → `scheme://user:***@host…`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = rest[..at].split_once(':').map_or(&rest[..at], |(u, _)| u);
    format!("{scheme}://{user}:***{}", &rest[at..])
}

/// A pool of one engine.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// A write transaction of one engine (see [`Db::begin_write`]).
#[derive(Debug)]
pub enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Sqlite(t) => t.commit().await,
            Tx::Postgres(t) => t.commit().await,
        }
    }
}

/// `on_pool!(pool, |c| body)`: `body` once per engine, with `c` the
/// engine's pool (an executor); both arms must have the same type.
macro_rules! on_pool {
    ($pool:expr, |$c:ident| $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($c) => $body,
            $crate::db::Pool::Postgres($c) => $body,
        }
    };
}

/// `on_tx!(tx, |c| body)`: like [`on_pool!`], with `c` the transaction's
/// connection; `tx` is a `&mut Tx`.
macro_rules! on_tx {
    ($tx:expr, |$c:ident| $body:expr) => {
        match &mut *$tx {
            $crate::db::Tx::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::Tx::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}

pub(crate) use {on_pool, on_tx};

/// Connections to one authd database.
#[derive(Debug, Clone)]
pub struct Db {
    read: Pool,
    write: Pool,
    /// PostgreSQL: refresh-token and access-token lookups, batched; each
    /// started on first use (on the runtime that uses it).
    refresh_lookups: Arc<OnceLock<RefreshLookups>>,
    access_lookups: Arc<OnceLock<AccessLookups>>,
}

/// Refresh-token lookups by hash (see [`coalesce`]).
type RefreshLookups = coalesce::Coalescer<Vec<u8>, refresh_tokens::Found>;
/// Access-token lookups by id (see [`coalesce`]).
type AccessLookups = coalesce::Coalescer<String, access_tokens::Found>;

/// How long a connection waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
const READERS: u32 = 4;
/// Connections of one replica to PostgreSQL.
const PG_CONNECTIONS: u32 = 16;
/// The advisory lock every PostgreSQL write transaction holds: authd's
/// writes are serialised as on SQLite.
const PG_WRITE_LOCK: i64 = 0x61_7574_6864; // "authd"

impl Db {
    /// Opens (creating a SQLite file if needed, mode 0600) and migrates the
    /// database.
    pub async fn open(location: &Location) -> Result<Db, anyhow::Error> {
        match location {
            Location::Sqlite(path) => Db::open_sqlite(path).await,
            Location::Postgres(url) => Db::open_postgres(url).await,
        }
        .map_err(|e| anyhow::anyhow!("database {location}: {e}"))
    }

    async fn open_sqlite(path: &Path) -> Result<Db, anyhow::Error> {
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
            .map_err(|e| anyhow::anyhow!("opening: {e}"))?;
        sqlx::migrate!("../migrations")
            .run(&write)
            .await
            .map_err(|e| anyhow::anyhow!("migrating: {e}"))?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("opening: {e}"))?;
        Ok(Db {
            read: Pool::Sqlite(read),
            write: Pool::Sqlite(write),
            refresh_lookups: Arc::default(),
            access_lookups: Arc::default(),
        })
    }

    async fn open_postgres(url: &str) -> Result<Db, anyhow::Error> {
        let options = PgConnectOptions::from_str(url).map_err(|e| anyhow::anyhow!("{e}"))?;
        let pool = PgPoolOptions::new()
            .max_connections(PG_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("connecting: {e}"))?;
        // sqlx's migrator takes its own advisory lock: replicas starting
        // together migrate once.
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("migrating: {e}"))?;
        Ok(Db {
            read: Pool::Postgres(pool.clone()),
            write: Pool::Postgres(pool),
            refresh_lookups: Arc::default(),
            access_lookups: Arc::default(),
        })
    }

    /// Whether this is a PostgreSQL database (shared by replicas).
    pub fn is_shared(&self) -> bool {
        matches!(self.write, Pool::Postgres(_))
    }

    /// PostgreSQL's batched refresh-token lookups; `None` on SQLite, whose
    /// queries are no round trip.
    fn refresh_lookups(&self) -> Option<&RefreshLookups> {
        self.batched(&self.refresh_lookups, |pool, hashes| {
            Box::pin(async move { refresh_tokens::find_many(&pool, hashes).await })
        })
    }

    /// PostgreSQL's batched access-token lookups; `None` on SQLite.
    fn access_lookups(&self) -> Option<&AccessLookups> {
        self.batched(&self.access_lookups, |pool, ids| {
            Box::pin(async move { access_tokens::find_many(&pool, ids).await })
        })
    }

    /// The coalescer in `cell`, started with `query` over the PostgreSQL
    /// pool on first use; `None` on SQLite.
    fn batched<'a, K, V>(
        &self,
        cell: &'a OnceLock<coalesce::Coalescer<K, V>>,
        query: fn(sqlx::PgPool, Vec<K>) -> coalesce::Answer<K, V>,
    ) -> Option<&'a coalesce::Coalescer<K, V>>
    where
        K: Clone + Eq + std::hash::Hash + Send + 'static,
        V: Clone + Send + 'static,
    {
        let Pool::Postgres(pool) = &self.read else {
            return None;
        };
        Some(cell.get_or_init(|| {
            let pool = pool.clone();
            coalesce::Coalescer::start(Arc::new(move |keys| query(pool.clone(), keys)))
        }))
    }

    pub(crate) fn reader(&self) -> &Pool {
        &self.read
    }

    pub(crate) fn writer(&self) -> &Pool {
        &self.write
    }

    /// Starts a write transaction holding the write lock.
    pub(crate) async fn begin_write(&self) -> Result<Tx, Error> {
        Ok(match &self.write {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => {
                let mut t = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *t)
                    .await?;
                Tx::Postgres(t)
            }
        })
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), Error> {
        on_pool!(&self.read, |c| sqlx::query("SELECT 1")
            .execute(c)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn close(&self) {
        on_pool!(&self.read, |c| c.close().await);
        on_pool!(&self.write, |c| c.close().await);
    }
}

/// Whether an error is a UNIQUE constraint violation.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(
            Location::parse("data/authd.db"),
            Location::Sqlite("data/authd.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:///var/authd.db"),
            Location::Sqlite("/var/authd.db".into())
        );
        assert!(matches!(
            Location::parse("postgresql://u@h/db"),
            Location::Postgres(_)
        ));
    }

    #[test]
    fn urls_shown_without_password() {
        let l = Location::parse("postgres://authd:s3cret@db:5432/authd?sslmode=disable");
        assert_eq!(
            l.to_string(),
            "postgres://authd:***@db:5432/authd?sslmode=disable"
        );
        assert!(!format!("{l:?}").contains("s3cret"));
        let l = Location::parse("postgres://db/authd");
        assert_eq!(l.to_string(), "postgres://db/authd");
    }
}
