//! The `groups` and `group_members` tables: named sets of users that can be
//! the subject of grants (`@name`). Deleting a group deletes its grants;
//! deleting a user drops its memberships (the foreign key cascades).

use serde::Serialize;

use super::{Db, Tx, audit, is_unique_violation, on_pool, on_tx};
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
    let found: Option<(i64,)> = on_tx!(tx, |c| sqlx::query_as(
        "SELECT id FROM groups WHERE name = $1"
    )
    .bind(name)
    .fetch_optional(c)
    .await)?;
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
    let inserted = on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO groups (name, created_at) VALUES ($1, $2)"
    )
    .bind(name)
    .bind(now())
    .execute(c)
    .await
    .map(|r| r.rows_affected()));
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
    on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM grants WHERE subject = $1"
    )
    .bind(format!("{GROUP_PREFIX}{name}"))
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    on_tx!(&mut tx, |c| sqlx::query("DELETE FROM groups WHERE id = $1")
        .bind(id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    audit::record(&mut tx, actor, "group.delete", name, "").await?;
    tx.commit().await?;
    Ok(())
}

/// Every group with its members, by name.
pub async fn list(db: &Db) -> Result<Vec<GroupView>, Error> {
    let groups: Vec<(i64, String, i64)> = on_pool!(db.reader(), |c| sqlx::query_as(
        "SELECT id, name, created_at FROM groups ORDER BY name"
    )
    .fetch_all(c)
    .await)?;
    let members: Vec<(i64, String)> = on_pool!(db.reader(), |c| sqlx::query_as(
        "SELECT m.group_id, u.name FROM group_members m JOIN users u ON u.id = m.user_id \
         ORDER BY u.name",
    )
    .fetch_all(c)
    .await)?;
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
    let found: Option<(i64,)> = on_tx!(tx, |c| sqlx::query_as(
        "SELECT id FROM users WHERE name = $1"
    )
    .bind(user)
    .fetch_optional(c)
    .await)?;
    found
        .map(|(id,)| id)
        .ok_or_else(|| Error::not_found(format!("user {user:?} not found")))
}

/// Adds `user` to `group`; returns whether it was not a member yet.
pub async fn add_member(db: &Db, group: &str, user: &str, actor: &str) -> Result<bool, Error> {
    let mut tx = db.begin_write().await?;
    let gid = group_id(&mut tx, group).await?;
    let uid = user_id(&mut tx, user).await?;
    let done = on_tx!(&mut tx, |c| sqlx::query(
        "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    )
    .bind(gid)
    .bind(uid)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    let added = done == 1;
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
    let done = on_tx!(&mut tx, |c| sqlx::query(
        "DELETE FROM group_members WHERE group_id = $1 AND user_id = $2"
    )
    .bind(gid)
    .bind(uid)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    if done == 0 {
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
    let rows: Vec<(String,)> = on_pool!(db.reader(), |c| sqlx::query_as(
        "SELECT $1 || g.name FROM groups g JOIN group_members m ON m.group_id = g.id \
         JOIN users u ON u.id = m.user_id WHERE u.name = $2 ORDER BY g.name",
    )
    .bind(GROUP_PREFIX.to_string())
    .bind(user)
    .fetch_all(c)
    .await)?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}
