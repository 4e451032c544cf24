//! The `access_tokens` table: each token's owner, name, scopes, expiry, the
//! SHA-256 of its secret, and its last use. Deleting a token (revocation)
//! also deletes the refresh tokens handed out to logins made with it (the
//! foreign key cascades).

use super::users::User;
use super::{Db, audit, is_unique_violation, on_pool, on_tx};
use crate::access_tokens::{AccessToken, scopes_from_json};
use crate::error::Error;

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    owner: String,
    name: String,
    scopes: String,
    admin: bool,
    created_by: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    last_used_from: Option<String>,
}

impl From<Row> for AccessToken {
    fn from(r: Row) -> AccessToken {
        AccessToken {
            scopes: scopes_from_json(&r.scopes),
            id: r.id,
            owner: r.owner,
            name: r.name,
            admin: r.admin,
            created_by: r.created_by,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            last_used_from: r.last_used_from,
        }
    }
}

macro_rules! select_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT t.id, u.name AS owner, t.name, t.scopes, t.admin, t.created_by, ",
            "t.created_at, t.expires_at, t.last_used_at, t.last_used_from ",
            "FROM access_tokens t JOIN users u ON u.id = t.user_id ",
            $rest
        )
    };
}

/// What a new token is made of.
#[derive(Debug)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub secret_hash: &'a [u8],
    pub name: &'a str,
    pub scopes_json: &'a str,
    pub admin: bool,
    pub expires_at: Option<i64>,
}

/// Stores a token of `owner`; a name the owner already uses is a 409.
pub async fn insert(
    db: &Db,
    owner: &User,
    new: &NewToken<'_>,
    actor: &str,
) -> Result<AccessToken, Error> {
    let t = crate::util::now();
    let mut tx = db.begin_write().await?;
    let inserted = on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO access_tokens (id, user_id, name, secret_hash, scopes, admin, created_by, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new.id)
    .bind(owner.id)
    .bind(new.name)
    .bind(new.secret_hash)
    .bind(new.scopes_json)
    .bind(new.admin)
    .bind(actor)
    .bind(t)
    .bind(new.expires_at)
    .execute(c)
    .await
    .map(|r| r.rows_affected()));
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::conflict(
                "token_exists",
                format!(
                    "user {:?} already has a token named {:?}",
                    owner.name, new.name
                ),
            ));
        }
        other => {
            other?;
        }
    }
    audit::record(
        &mut tx,
        actor,
        "access_token.create",
        &owner.name,
        &format!(
            "{} {:?} {}{}",
            new.id,
            new.name,
            new.scopes_json,
            if new.admin { " admin" } else { "" }
        ),
    )
    .await?;
    let row: Row = on_tx!(&mut tx, |c| sqlx::query_as(select_tokens!(
        "WHERE t.id = $1"
    ))
    .bind(new.id)
    .fetch_one(c)
    .await)?;
    tx.commit().await?;
    Ok(row.into())
}

/// An access token found by id for a login: the token, its secret's hash
/// and its owner, read afresh (a disable or delete applies at once).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Found {
    token_id: String,
    token_name: String,
    scopes: String,
    admin: bool,
    created_by: String,
    token_created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    last_used_from: Option<String>,
    secret_hash: Vec<u8>,
    #[sqlx(flatten)]
    user: User,
}

/// The columns of [`Found`] from `access_tokens t JOIN users u`, then the
/// condition (a macro, for `concat!`).
macro_rules! select_found {
    ($rest:literal) => {
        concat!(
            "SELECT t.id AS token_id, t.name AS token_name, t.scopes, t.admin, t.created_by, ",
            "t.created_at AS token_created_at, t.expires_at, t.last_used_at, t.last_used_from, ",
            "t.secret_hash, u.id, u.name, u.password_hash, u.imported_hash, u.is_admin, ",
            "u.is_robot, u.disabled, u.password_changed_at, u.created_at, u.updated_at ",
            "FROM access_tokens t JOIN users u ON u.id = t.user_id ",
            $rest
        )
    };
}

/// The token with this id, its owner and its secret's hash, in one query
/// (on PostgreSQL shared with the lookups made at the same time:
/// [`super::coalesce`]).
pub async fn find(db: &Db, id: &str) -> Result<Option<(User, AccessToken, Vec<u8>)>, Error> {
    let found: Option<Found> = match db.access_lookups() {
        Some(lookups) => lookups.get(id.to_owned()).await?,
        None => on_pool!(db.reader(), |c| sqlx::query_as(select_found!(
            "WHERE t.id = $1"
        ))
        .bind(id)
        .fetch_optional(c)
        .await)?,
    };
    Ok(found.map(|f| {
        let token = Row {
            id: f.token_id,
            owner: f.user.name.clone(),
            name: f.token_name,
            scopes: f.scopes,
            admin: f.admin,
            created_by: f.created_by,
            created_at: f.token_created_at,
            expires_at: f.expires_at,
            last_used_at: f.last_used_at,
            last_used_from: f.last_used_from,
        };
        (f.user, token.into(), f.secret_hash)
    }))
}

/// The tokens among these ids, in one PostgreSQL query.
pub(super) async fn find_many(
    pool: &sqlx::PgPool,
    ids: Vec<String>,
) -> Result<Vec<(String, Found)>, Error> {
    let rows: Vec<Found> = sqlx::query_as(select_found!("WHERE t.id = ANY($1)"))
        .bind(ids)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|f| (f.token_id.clone(), f)).collect())
}

/// The token with this id, without its secret.
pub async fn get(db: &Db, id: &str) -> Result<Option<AccessToken>, Error> {
    let row: Option<Row> = on_pool!(db.reader(), |c| sqlx::query_as(select_tokens!(
        "WHERE t.id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(AccessToken::from))
}

/// Records a use.
pub async fn touch(db: &Db, id: &str, at: i64, from: &str) -> Result<(), Error> {
    on_pool!(db.writer(), |c| sqlx::query(
        "UPDATE access_tokens SET last_used_at = $1, last_used_from = $2 WHERE id = $3"
    )
    .bind(at)
    .bind(from)
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The tokens of one owner, or of everyone, by owner and creation.
pub async fn list(db: &Db, owner: Option<&str>) -> Result<Vec<AccessToken>, Error> {
    let rows: Vec<Row> = match owner {
        Some(name) => on_pool!(db.reader(), |c| sqlx::query_as(select_tokens!(
            "WHERE u.name = $1 ORDER BY t.created_at, t.id"
        ))
        .bind(name)
        .fetch_all(c)
        .await)?,
        None => on_pool!(db.reader(), |c| sqlx::query_as(select_tokens!(
            "ORDER BY u.name, t.created_at, t.id"
        ))
        .fetch_all(c)
        .await)?,
    };
    Ok(rows.into_iter().map(AccessToken::from).collect())
}

/// Revokes token `id` (of `owner` when given); a 404 when there is none.
pub async fn delete(db: &Db, id: &str, owner: Option<&str>, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let row: Option<Row> = on_tx!(&mut tx, |c| sqlx::query_as(select_tokens!(
        "WHERE t.id = $1"
    ))
    .bind(id)
    .fetch_optional(c)
    .await)?;
    let Some(row) = row.filter(|r| owner.is_none_or(|o| o == r.owner)) else {
        return Err(Error::not_found(match owner {
            Some(o) => format!("user {o:?} has no access token {id:?}"),
            None => format!("access token {id:?} not found"),
        }));
    };
    on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM access_tokens WHERE id = $1"
    )
    .bind(id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    audit::record(
        &mut tx,
        actor,
        "access_token.revoke",
        &row.owner,
        &format!("{id} {:?}", row.name),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
