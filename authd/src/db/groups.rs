//! The `groups` and `group_members` tables: named sets of users that can be
//! the subject of grants (`@name`). Deleting a group deletes its grants;
//! deleting a user drops its memberships (the foreign key cascades).

use serde::Serialize;

use super::{Db, Tx, audit, is_unique_violation};
use crate::error::Error;
use crate::names::GROUP_PREFIX;
use crate::util::{now, rfc3339};

/// A group as listed.
#[derive(Debug, Serialize)]
pub struct GroupView {
    pub name: String,
    pub members: Vec<String>,
    pub created_at: String,
}

async fn group_id(tx: &mut Tx, name: &str) -> Result<i64, Error> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM groups WHERE name = ?")
        .bind(name)
        .fetch_optional(&mut **tx)
        .await?;
    found
        .map(|(id,)| id)
        .ok_or_else(|| Error::not_found(format!("group {name:?} not found")))
}

/// Whether the group exists (grants to a group that does not are refused).
pub(crate) async fn exists_in(tx: &mut Tx, name: &str) -> Result<bool, Error> {
    Ok(group_id(tx, name).await.is_ok())
}

/// Creates a group; a taken name is a 409.
pub async fn create(db: &Db, name: &str, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let inserted = sqlx::query("INSERT INTO groups (name, created_at) VALUES (?, ?)")
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await;
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::conflict(
                "group_exists",
                format!("group {name:?} already exists"),
            ));
        }
        other => {
            other?;
        }
    }
    audit::record(&mut tx, actor, "group.create", name, "").await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a group, its memberships and its grants.
pub async fn delete(db: &Db, name: &str, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let id = group_id(&mut tx, name).await?;
    sqlx::query("DELETE FROM grants WHERE subject = ?")
        .bind(format!("{GROUP_PREFIX}{name}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM groups WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(&mut tx, actor, "group.delete", name, "").await?;
    tx.commit().await?;
    Ok(())
}

/// Every group with its members, by name.
pub async fn list(db: &Db) -> Result<Vec<GroupView>, Error> {
    let groups: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT id, name, created_at FROM groups ORDER BY name")
            .fetch_all(db.reader())
            .await?;
    let members: Vec<(i64, String)> = sqlx::query_as(
        "SELECT m.group_id, u.name FROM group_members m JOIN users u ON u.id = m.user_id \
         ORDER BY u.name",
    )
    .fetch_all(db.reader())
    .await?;
    Ok(groups
        .into_iter()
        .map(|(id, name, created_at)| GroupView {
            name,
            members: members
                .iter()
                .filter(|(g, _)| *g == id)
                .map(|(_, u)| u.clone())
                .collect(),
            created_at: rfc3339(created_at),
        })
        .collect())
}

async fn user_id(tx: &mut Tx, user: &str) -> Result<i64, Error> {
    let found: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE name = ?")
        .bind(user)
        .fetch_optional(&mut **tx)
        .await?;
    found
        .map(|(id,)| id)
        .ok_or_else(|| Error::not_found(format!("user {user:?} not found")))
}

/// Adds `user` to `group`; returns whether it was not a member yet.
pub async fn add_member(db: &Db, group: &str, user: &str, actor: &str) -> Result<bool, Error> {
    let mut tx = db.begin_write().await?;
    let gid = group_id(&mut tx, group).await?;
    let uid = user_id(&mut tx, user).await?;
    let done = sqlx::query("INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?, ?)")
        .bind(gid)
        .bind(uid)
        .execute(&mut *tx)
        .await?;
    let added = done.rows_affected() == 1;
    if added {
        audit::record(&mut tx, actor, "group.member.add", group, user).await?;
    }
    tx.commit().await?;
    Ok(added)
}

/// Removes `user` from `group`; a 404 when it is not a member.
pub async fn remove_member(db: &Db, group: &str, user: &str, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let gid = group_id(&mut tx, group).await?;
    let uid = user_id(&mut tx, user).await?;
    let done = sqlx::query("DELETE FROM group_members WHERE group_id = ? AND user_id = ?")
        .bind(gid)
        .bind(uid)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Err(Error::not_found(format!(
            "user {user:?} is not a member of group {group:?}"
        )));
    }
    audit::record(&mut tx, actor, "group.member.remove", group, user).await?;
    tx.commit().await?;
    Ok(())
}

/// The groups of `user`, as grant subjects (`@name`), by name.
pub async fn subjects_of(db: &Db, user: &str) -> Result<Vec<String>, Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT ? || g.name FROM groups g JOIN group_members m ON m.group_id = g.id \
         JOIN users u ON u.id = m.user_id WHERE u.name = ? ORDER BY g.name",
    )
    .bind(GROUP_PREFIX.to_string())
    .bind(user)
    .fetch_all(db.reader())
    .await?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}
