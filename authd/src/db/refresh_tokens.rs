//! The `refresh_tokens` table: the SHA-256 of each refresh token, its owner,
//! the access token of the login that got it (if any) and when it was last
//! used. The token itself is never stored.

use serde::Serialize;

use super::users::User;
use super::{Db, Tx, audit, on_pool, on_tx};
use crate::error::Error;
use crate::util::{now, rfc3339};

/// `last_used_at` is written at most this often per token, so that using a
/// refresh token is a read, not a write.
pub const TOUCH_INTERVAL_SECS: i64 = 3600;

/// A refresh token as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefreshToken {
    pub id: String,
    pub client_id: String,
    pub created_at: i64,
    pub last_used_at: i64,
}

#[derive(Debug, Serialize)]
pub struct RefreshTokenView {
    pub id: String,
    pub client_id: String,
    pub created_at: String,
    pub last_used_at: String,
}

impl From<&RefreshToken> for RefreshTokenView {
    fn from(t: &RefreshToken) -> RefreshTokenView {
        RefreshTokenView {
            id: t.id.clone(),
            client_id: t.client_id.clone(),
            created_at: rfc3339(t.created_at),
            last_used_at: rfc3339(t.last_used_at),
        }
    }
}

/// A token found by its hash, with its owner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Found {
    pub token_id: String,
    pub token_last_used_at: i64,
    /// The access token the login was made with: it bounds this token.
    pub access_token_id: Option<String>,
    #[sqlx(flatten)]
    pub user: User,
}

/// Refresh tokens kept per user: the oldest go when a new one would exceed
/// this, so a client that logs in in a loop cannot fill the table.
pub const MAX_PER_USER: i64 = 100;

/// Stores a new token's hash; returns its public id. `access_token_id`:
/// the access token the login was made with, whose revocation ends this.
pub async fn insert(
    db: &Db,
    user_id: i64,
    token_hash: &[u8],
    client_id: &str,
    access_token_id: Option<&str>,
) -> Result<String, Error> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let t = now();
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO refresh_tokens (id, user_id, token_hash, client_id, created_at, \
         last_used_at, access_token_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(user_id)
    .bind(token_hash)
    .bind(client_id)
    .bind(t)
    .bind(t)
    .bind(access_token_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    // Insertion order: SQLite's rowid, PostgreSQL's `seq` column.
    let trim = match tx {
        Tx::Sqlite(_) => {
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND rowid NOT IN \
             (SELECT rowid FROM refresh_tokens WHERE user_id = $2 ORDER BY rowid DESC LIMIT $3)"
        }
        Tx::Postgres(_) => {
            "DELETE FROM refresh_tokens WHERE user_id = $1 AND seq NOT IN \
             (SELECT seq FROM refresh_tokens WHERE user_id = $2 ORDER BY seq DESC LIMIT $3)"
        }
    };
    on_tx!(&mut tx, |c| sqlx::query(trim)
        .bind(user_id)
        .bind(user_id)
        .bind(MAX_PER_USER)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(id)
}

/// The columns of [`Found`], from `refresh_tokens t JOIN users u` (a
/// macro, for `concat!`).
macro_rules! found_columns {
    () => {
        "t.id AS token_id, t.last_used_at AS token_last_used_at, t.access_token_id, \
         u.id, u.name, u.password_hash, u.imported_hash, u.is_admin, u.is_robot, u.disabled, \
         u.password_changed_at, u.created_at, u.updated_at"
    };
}

/// The token with this hash and its user, if any (validity is the caller's
/// business). On PostgreSQL, lookups made together share one query
/// ([`super::coalesce`]).
pub async fn find(db: &Db, token_hash: &[u8]) -> Result<Option<Found>, Error> {
    if let Some(lookups) = db.refresh_lookups() {
        return lookups.get(token_hash.to_vec()).await;
    }
    Ok(on_pool!(db.reader(), |c| sqlx::query_as(concat!(
        "SELECT ",
        found_columns!(),
        " FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1"
    ))
    .bind(token_hash)
    .fetch_optional(c)
    .await)?)
}

/// A [`Found`] with the hash it was found by.
#[derive(sqlx::FromRow)]
struct FoundByHash {
    token_hash: Vec<u8>,
    #[sqlx(flatten)]
    found: Found,
}

/// The tokens among these hashes, with their users, in one PostgreSQL
/// query.
pub(super) async fn find_many(
    pool: &sqlx::PgPool,
    hashes: Vec<Vec<u8>>,
) -> Result<Vec<(Vec<u8>, Found)>, Error> {
    let rows: Vec<FoundByHash> = sqlx::query_as(concat!(
        "SELECT t.token_hash, ",
        found_columns!(),
        " FROM refresh_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ANY($1)"
    ))
    .bind(hashes)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.token_hash, r.found)).collect())
}

/// Records a use, if the last recorded one is older than
/// [`TOUCH_INTERVAL_SECS`].
pub async fn touch(db: &Db, found: &Found) -> Result<(), Error> {
    let t = now();
    if t - found.token_last_used_at < TOUCH_INTERVAL_SECS {
        return Ok(());
    }
    on_pool!(db.writer(), |c| sqlx::query(
        "UPDATE refresh_tokens SET last_used_at = $1 WHERE id = $2"
    )
    .bind(t)
    .bind(&found.token_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn list_for_user(db: &Db, user_id: i64) -> Result<Vec<RefreshToken>, Error> {
    Ok(on_pool!(db.reader(), |c| sqlx::query_as(
        "SELECT id, client_id, created_at, last_used_at FROM refresh_tokens \
         WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user_id)
    .fetch_all(c)
    .await)?)
}

/// Revokes one token of a user; a 404 when the user has no such token.
pub async fn delete(db: &Db, user: &User, id: &str, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let done = on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM refresh_tokens WHERE id = $1 AND user_id = $2"
    )
    .bind(id)
    .bind(user.id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if done == 0 {
        return Err(Error::not_found(format!(
            "user {:?} has no refresh token {id:?}",
            user.name
        )));
    }
    audit::record(&mut tx, actor, "token.revoke", &user.name, id).await?;
    tx.commit().await?;
    Ok(())
}

/// Revokes the token with this hash, whoever holds it (the holder signing
/// out); returns its owner's name, `None` when no such token exists.
pub async fn delete_by_hash(db: &Db, token_hash: &[u8]) -> Result<Option<String>, Error> {
    let mut tx = db.begin_write().await?;
    let found: Option<(String, String)> = on_tx!(&mut tx, |c| sqlx::query_as(
        "SELECT t.id, u.name FROM refresh_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(c)
    .await)?;
    let Some((id, user)) = found else {
        return Ok(None);
    };
    on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM refresh_tokens WHERE id = $1"
    )
    .bind(&id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    audit::record(&mut tx, &format!("api:{user}"), "token.revoke", &user, &id).await?;
    tx.commit().await?;
    Ok(Some(user))
}

/// Deletes tokens unused since `cutoff`; returns how many.
pub async fn delete_unused_since(db: &Db, cutoff: i64) -> Result<u64, Error> {
    let done = on_pool!(db.writer(), |c| sqlx::query(
        "DELETE FROM refresh_tokens WHERE last_used_at < $1"
    )
    .bind(cutoff)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done)
}

/// Moves every use of `user_id`'s tokens `secs` into the past (tests of
/// expiry).
#[cfg(test)]
pub(crate) async fn backdate(db: &Db, user_id: i64, secs: i64) -> Result<(), Error> {
    on_pool!(db.writer(), |c| sqlx::query(
        "UPDATE refresh_tokens SET last_used_at = last_used_at - $1 WHERE user_id = $2"
    )
    .bind(secs)
    .bind(user_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
