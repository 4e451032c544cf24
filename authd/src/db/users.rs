//! The `users` table: accounts, their password hashes, admin and disabled
//! flags, and the rules that keep it consistent — names are unique, the last
//! enabled admin cannot be removed, and a password change or a disable ends
//! every refresh token of the user in the same transaction.

use serde::Serialize;

use super::{Db, Tx, audit, is_unique_violation, on_pool, on_tx};
use crate::error::Error;
use crate::password::HashFormat;
use crate::util::{now, rfc3339};

/// One row of `users`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub password_hash: String,
    pub imported_hash: Option<String>,
    pub is_admin: bool,
    /// Robots log in with their access tokens only.
    pub is_robot: bool,
    pub disabled: bool,
    pub password_changed_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The API form of a user: never the hash, only its format.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub name: String,
    pub admin: bool,
    pub robot: bool,
    pub disabled: bool,
    pub password_format: &'static str,
    pub created_at: String,
    pub updated_at: String,
    pub password_changed_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView {
            name: u.name.clone(),
            admin: u.is_admin,
            robot: u.is_robot,
            disabled: u.disabled,
            password_format: if u.is_robot {
                "none"
            } else {
                HashFormat::detect(&u.password_hash).map_or("unknown", |f| f.name())
            },
            created_at: rfc3339(u.created_at),
            updated_at: rfc3339(u.updated_at),
            password_changed_at: rfc3339(u.password_changed_at),
        }
    }
}

/// Changes to a user; `None` leaves a field as it is. `password_hash` is
/// the new hash, already made.
#[derive(Debug, Default, Clone)]
pub struct Changes {
    pub password_hash: Option<String>,
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
}

/// Counts of an htpasswd import, and the users it left alone.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ImportCounts {
    pub imported: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: Vec<Skipped>,
}

/// An existing user an import did not change although its line differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub name: String,
    /// `exists` (no overwrite asked for) or `admin` (never overwritten).
    pub reason: &'static str,
}

macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, password_hash, imported_hash, is_admin, is_robot, disabled, \
             password_changed_at, created_at, updated_at FROM users ",
            $rest
        )
    };
}

pub async fn get(db: &Db, name: &str) -> Result<Option<User>, Error> {
    Ok(on_pool!(db.reader(), |c| sqlx::query_as(select_users!(
        "WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(c)
    .await)?)
}

/// The user, or a 404 naming it.
pub async fn get_existing(db: &Db, name: &str) -> Result<User, Error> {
    get(db, name)
        .await?
        .ok_or_else(|| Error::not_found(format!("user {name:?} not found")))
}

pub async fn list(db: &Db) -> Result<Vec<User>, Error> {
    Ok(on_pool!(db.reader(), |c| sqlx::query_as(select_users!(
        "ORDER BY name"
    ))
    .fetch_all(c)
    .await)?)
}

async fn get_in(tx: &mut Tx, name: &str) -> Result<User, Error> {
    on_tx!(tx, |c| sqlx::query_as(select_users!("WHERE name = $1"))
        .bind(name)
        .fetch_optional(c)
        .await)?
    .ok_or_else(|| Error::not_found(format!("user {name:?} not found")))
}

/// Creates a user; a taken name is a 409.
pub async fn create(
    db: &Db,
    name: &str,
    password_hash: &str,
    admin: bool,
    disabled: bool,
    actor: &str,
) -> Result<User, Error> {
    let detail = match (admin, disabled) {
        (true, true) => "admin disabled",
        (true, false) => "admin",
        (false, true) => "disabled",
        (false, false) => "",
    };
    let row = NewUser {
        name,
        password_hash,
        admin,
        robot: false,
        disabled,
    };
    insert(db, &row, actor, detail).await
}

/// A user row to insert, human or robot.
struct NewUser<'a> {
    name: &'a str,
    password_hash: &'a str,
    admin: bool,
    robot: bool,
    disabled: bool,
}

/// The one insert path of [`create`] and [`create_robot`]: the row, its
/// `user.create` audit record with `detail`, in one transaction. A taken
/// name is a 409.
async fn insert(db: &Db, row: &NewUser<'_>, actor: &str, detail: &str) -> Result<User, Error> {
    let name = row.name;
    let mut tx = db.begin_write().await?;
    let t = now();
    let inserted = on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO users (name, password_hash, is_admin, is_robot, disabled, \
         password_changed_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(name)
    .bind(row.password_hash)
    .bind(row.admin)
    .bind(row.robot)
    .bind(row.disabled)
    .bind(t)
    .bind(t)
    .bind(t)
    .execute(c)
    .await
    .map(|r| r.rows_affected()));
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::conflict(
                "user_exists",
                format!("user {name:?} already exists"),
            ));
        }
        other => {
            other?;
        }
    }
    audit::record(&mut tx, actor, "user.create", name, detail).await?;
    let user = get_in(&mut tx, name).await?;
    tx.commit().await?;
    Ok(user)
}

/// Creates `name` as an admin if, and only if, there are no users at all.
/// `hash` is called only then. Returns whether the user was created.
pub async fn create_first_admin(
    db: &Db,
    name: &str,
    hash: impl FnOnce() -> Result<String, Error>,
) -> Result<bool, Error> {
    if count(db).await? > 0 {
        return Ok(false);
    }
    let password_hash = hash()?;
    let mut tx = db.begin_write().await?;
    let (n,): (i64,) = on_tx!(&mut tx, |c| sqlx::query_as("SELECT COUNT(*) FROM users")
        .fetch_one(c)
        .await)?;
    if n > 0 {
        return Ok(false);
    }
    let t = now();
    on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO users (name, password_hash, is_admin, disabled, password_changed_at, \
         created_at, updated_at) VALUES ($1, $2, TRUE, FALSE, $3, $4, $5)",
    )
    .bind(name)
    .bind(&password_hash)
    .bind(t)
    .bind(t)
    .bind(t)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    audit::record(&mut tx, "system", "user.create", name, "first admin").await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn count(db: &Db) -> Result<i64, Error> {
    let (n,): (i64,) = on_pool!(db.reader(), |c| sqlx::query_as(
        "SELECT COUNT(*) FROM users"
    )
    .fetch_one(c)
    .await)?;
    Ok(n)
}

/// Refuses a change that would leave no enabled admin.
async fn keep_an_admin(tx: &mut Tx, user: &User, action: &str) -> Result<(), Error> {
    if !user.is_admin || user.disabled {
        return Ok(());
    }
    let (others,): (i64,) = on_tx!(tx, |c| sqlx::query_as(
        "SELECT COUNT(*) FROM users WHERE is_admin AND NOT disabled AND id != $1",
    )
    .bind(user.id)
    .fetch_one(c)
    .await)?;
    if others == 0 {
        return Err(Error::conflict(
            "last_admin",
            format!(
                "cannot {action} {:?}: it is the last enabled admin",
                user.name
            ),
        ));
    }
    Ok(())
}

/// Applies `changes` to the user `name` and returns it as it now is.
pub async fn update(db: &Db, name: &str, changes: &Changes, actor: &str) -> Result<User, Error> {
    let mut tx = db.begin_write().await?;
    let user = get_in(&mut tx, name).await?;
    if changes.admin == Some(false) && user.is_admin {
        keep_an_admin(&mut tx, &user, "remove admin rights from").await?;
    }
    let newly_disabled = changes.disabled == Some(true) && !user.disabled;
    if newly_disabled {
        keep_an_admin(&mut tx, &user, "disable").await?;
    }
    let t = now();
    let password_changed = changes.password_hash.is_some();
    on_tx!(&mut tx, |c| sqlx::query(
        "UPDATE users SET password_hash = $1, imported_hash = $2, is_admin = $3, disabled = $4, \
         password_changed_at = $5, updated_at = $6 WHERE id = $7",
    )
    .bind(
        changes
            .password_hash
            .as_deref()
            .unwrap_or(&user.password_hash),
    )
    .bind(if password_changed {
        None
    } else {
        user.imported_hash.as_deref()
    })
    .bind(changes.admin.unwrap_or(user.is_admin))
    .bind(changes.disabled.unwrap_or(user.disabled))
    .bind(if password_changed {
        t
    } else {
        user.password_changed_at
    })
    .bind(t)
    .bind(user.id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if password_changed || newly_disabled {
        // Refresh tokens must not outlive the credentials they stand for.
        on_tx!(&mut tx, |c| sqlx::query(
            "DELETE FROM refresh_tokens WHERE user_id = $1"
        )
        .bind(user.id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    let mut what = Vec::new();
    if password_changed {
        what.push("password".to_owned());
    }
    if let Some(a) = changes.admin {
        what.push(format!("admin={a}"));
    }
    if let Some(d) = changes.disabled {
        what.push(format!("disabled={d}"));
    }
    audit::record(&mut tx, actor, "user.update", name, &what.join(" ")).await?;
    let user = get_in(&mut tx, name).await?;
    tx.commit().await?;
    Ok(user)
}

/// Replaces a legacy hash after a good login, and drops every copy of it
/// (`imported_hash`). Compare-and-set: if the hash changed meanwhile (a
/// password change), nothing happens. Not a password change: refresh tokens
/// stay valid.
pub async fn upgrade_hash(db: &Db, id: i64, old: &str, new: &str) -> Result<bool, Error> {
    let done = on_pool!(db.writer(), |c| sqlx::query(
        "UPDATE users SET password_hash = $1, imported_hash = NULL \
         WHERE id = $2 AND password_hash = $3",
    )
    .bind(new)
    .bind(id)
    .bind(old)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Deletes a user with its grants and refresh tokens.
pub async fn delete(db: &Db, name: &str, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let user = get_in(&mut tx, name).await?;
    keep_an_admin(&mut tx, &user, "delete").await?;
    on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM grants WHERE subject = $1"
    )
    .bind(name)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM refresh_tokens WHERE user_id = $1"
    )
    .bind(user.id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    on_tx!(&mut tx, |c| sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user.id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    audit::record(&mut tx, actor, "user.delete", name, "").await?;
    tx.commit().await?;
    Ok(())
}

/// Imports (name, hash) pairs in one transaction. New names are created.
/// An existing user whose current hash is the line's is unchanged; any
/// other existing user is skipped and reported, unless `overwrite` is set,
/// which replaces the password — of non-admins only: an admin is never
/// changed by an import.
pub async fn import(
    db: &Db,
    entries: &[(String, String)],
    overwrite: bool,
    actor: &str,
) -> Result<ImportCounts, Error> {
    let mut counts = ImportCounts::default();
    let mut tx = db.begin_write().await?;
    let t = now();
    for (name, hash) in entries {
        let existing: Option<(i64, String, Option<String>, bool)> =
            on_tx!(&mut tx, |c| sqlx::query_as(
                "SELECT id, password_hash, imported_hash, is_admin FROM users WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(c)
            .await)?;
        let skip = |reason| Skipped {
            name: name.clone(),
            reason,
        };
        match existing {
            Some((.., true)) => counts.skipped.push(skip("admin")),
            Some((_, current, imported, false))
                if imported.as_deref() == Some(hash.as_str()) || current == *hash =>
            {
                counts.unchanged += 1;
            }
            Some(_) if !overwrite => counts.skipped.push(skip("exists")),
            None => {
                on_tx!(&mut tx, |c| {
                    sqlx::query(
                    "INSERT INTO users (name, password_hash, imported_hash, is_admin, disabled, \
                     password_changed_at, created_at, updated_at) VALUES ($1, $2, $3, FALSE, FALSE, $4, $5, $6)",
                )
                .bind(name)
                .bind(hash)
                .bind(hash)
                .bind(t)
                .bind(t)
                .bind(t)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
                })?;
                counts.imported += 1;
            }
            Some((id, ..)) => {
                on_tx!(&mut tx, |c| sqlx::query(
                    "UPDATE users SET password_hash = $1, imported_hash = $2, \
                     password_changed_at = $3, updated_at = $4 WHERE id = $5",
                )
                .bind(hash)
                .bind(hash)
                .bind(t)
                .bind(t)
                .bind(id)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                on_tx!(&mut tx, |c| sqlx::query(
                    "DELETE FROM refresh_tokens WHERE user_id = $1"
                )
                .bind(id)
                .execute(c)
                .await
                .map(|r| r.rows_affected()))?;
                counts.updated += 1;
            }
        }
    }
    audit::record(
        &mut tx,
        actor,
        "htpasswd.import",
        "",
        &format!(
            "imported={} updated={} unchanged={} skipped={}{}",
            counts.imported,
            counts.updated,
            counts.unchanged,
            counts.skipped.len(),
            if overwrite { " overwrite" } else { "" }
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(counts)
}

/// What robots have instead of a password hash: no password matches it.
pub const NO_PASSWORD: &str = "!";

/// Creates a robot: a user without a password, which logs in with its
/// access tokens only. A taken name is a 409.
pub async fn create_robot(db: &Db, name: &str, admin: bool, actor: &str) -> Result<User, Error> {
    let row = NewUser {
        name,
        password_hash: NO_PASSWORD,
        admin,
        robot: true,
        disabled: false,
    };
    insert(db, &row, actor, if admin { "robot admin" } else { "robot" }).await
}
