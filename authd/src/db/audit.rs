//! The `audit_log` table: who changed users, grants, tokens and keys, and
//! when. Written in the same transaction as the change it records.

use serde::Serialize;

use super::{Db, Tx};
use crate::error::Error;
use crate::util::{now, rfc3339};

/// Records one change.
pub async fn record(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), Error> {
    sqlx::query("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)")
        .bind(now())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    #[serde(serialize_with = "as_rfc3339")]
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn as_rfc3339<S: serde::Serializer>(t: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

/// The newest `limit` entries, newest first.
pub async fn list(db: &Db, limit: i64) -> Result<Vec<Entry>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, at, actor, action, target, detail FROM audit_log ORDER BY id DESC LIMIT ?",
    )
    .bind(limit)
    .fetch_all(db.reader())
    .await?)
}
