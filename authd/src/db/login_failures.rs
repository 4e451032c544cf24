//! The `login_failures` table: failed logins per (account, client address),
//! the shared state of [`crate::throttle`]. Every statement is a single
//! statement on its own (no write lock): the counter is incremented by the
//! database, so replicas counting at the same time never lose a failure.

use super::{Db, on_pool};
use crate::error::Error;

/// One pair's failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Failures {
    pub failures: i64,
    /// Unix milliseconds.
    pub last_failure_at: i64,
}

/// A row as [`changed_since`] returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub account: String,
    pub client: String,
    pub failures: i64,
    pub last_failure_at: i64,
}

/// The pair's failures, if any are recorded: one primary-key lookup.
pub async fn get(db: &Db, account: &str, client: &str) -> Result<Option<Failures>, Error> {
    let row = on_pool!(db.reader(), |c| {
        sqlx::query_as::<_, Failures>(
        "SELECT failures, last_failure_at FROM login_failures WHERE account = $1 AND client = $2"
    )
    .bind(account)
    .bind(client)
    .fetch_optional(c)
    .await
    })?;
    Ok(row)
}

/// Counts one failure of the pair at `at_ms`; returns the pair's count
/// after it (all replicas' failures).
pub async fn add(db: &Db, account: &str, client: &str, at_ms: i64) -> Result<i64, Error> {
    let (n,): (i64,) = on_pool!(db.writer(), |c| sqlx::query_as(
        "INSERT INTO login_failures (account, client, failures, last_failure_at) \
         VALUES ($1, $2, 1, $3) \
         ON CONFLICT (account, client) DO UPDATE SET \
         failures = login_failures.failures + 1, \
         last_failure_at = excluded.last_failure_at \
         RETURNING failures"
    )
    .bind(account)
    .bind(client)
    .bind(at_ms)
    .fetch_one(c)
    .await)?;
    Ok(n)
}

/// Forgets the pair's failures (a good login).
pub async fn clear(db: &Db, account: &str, client: &str) -> Result<(), Error> {
    on_pool!(db.writer(), |c| sqlx::query(
        "DELETE FROM login_failures WHERE account = $1 AND client = $2"
    )
    .bind(account)
    .bind(client)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Pairs whose last failure is at or after `since_ms`, newest first, at
/// most `limit`.
pub async fn changed_since(db: &Db, since_ms: i64, limit: i64) -> Result<Vec<Row>, Error> {
    let rows = on_pool!(db.reader(), |c| sqlx::query_as::<_, Row>(
        "SELECT account, client, failures, last_failure_at FROM login_failures \
         WHERE last_failure_at >= $1 ORDER BY last_failure_at DESC LIMIT $2"
    )
    .bind(since_ms)
    .bind(limit)
    .fetch_all(c)
    .await)?;
    Ok(rows)
}

/// Deletes the pairs whose last failure is older than `before_ms`; returns
/// how many.
pub async fn expire(db: &Db, before_ms: i64) -> Result<u64, Error> {
    let n = on_pool!(db.writer(), |c| sqlx::query(
        "DELETE FROM login_failures WHERE last_failure_at < $1"
    )
    .bind(before_ms)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n)
}
