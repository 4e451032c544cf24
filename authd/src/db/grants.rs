//! The `grants` table: (subject, target, actions) rows, looked up on every
//! token request by subject. A grant to a group (`@name`) needs the group.

use super::{Db, audit, groups};
use crate::actions::ActionSet;
use crate::error::Error;
use crate::grants::Grant;
use crate::names::{ANONYMOUS, subject_group};
use crate::target::Target;
use crate::util::now;

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    subject: String,
    resource_type: String,
    pattern: String,
    actions: String,
    created_at: i64,
}

impl From<Row> for Grant {
    fn from(r: Row) -> Grant {
        Grant {
            id: r.id,
            target: Target::from_parts(&r.resource_type, &r.pattern),
            // Only valid sets are ever written; an unreadable one grants nothing.
            actions: ActionSet::parse(r.actions.split(',')).unwrap_or(ActionSet::EMPTY),
            subject: r.subject,
            created_at: r.created_at,
        }
    }
}

macro_rules! select_grants {
    ($rest:literal) => {
        concat!(
            "SELECT id, subject, resource_type, pattern, actions, created_at FROM grants ",
            $rest
        )
    };
}

/// The grants that can apply to `user` (its own, its `groups`' — given as
/// subjects, `@name` — `*` and `anonymous`), or to an anonymous request
/// when `user` is `None`.
pub async fn for_principal(
    db: &Db,
    user: Option<&str>,
    groups: &[String],
) -> Result<Vec<Grant>, Error> {
    let rows: Vec<Row> = match user {
        Some(name) => {
            // The groups as a JSON array: one statement whatever their number.
            let groups = serde_json::to_string(groups).map_err(Error::internal)?;
            sqlx::query_as(select_grants!(
                "WHERE subject IN (?, '*', 'anonymous') \
                 OR subject IN (SELECT value FROM json_each(?))"
            ))
            .bind(name)
            .bind(groups)
            .fetch_all(db.reader())
            .await?
        }
        None => {
            sqlx::query_as(select_grants!("WHERE subject = ?"))
                .bind(ANONYMOUS)
                .fetch_all(db.reader())
                .await?
        }
    };
    Ok(rows.into_iter().map(Grant::from).collect())
}

/// Every grant, or those of one subject, in creation order.
pub async fn list(db: &Db, subject: Option<&str>) -> Result<Vec<Grant>, Error> {
    let rows: Vec<Row> = match subject {
        Some(s) => {
            sqlx::query_as(select_grants!("WHERE subject = ? ORDER BY id"))
                .bind(s)
                .fetch_all(db.reader())
                .await?
        }
        None => {
            sqlx::query_as(select_grants!("ORDER BY id"))
                .fetch_all(db.reader())
                .await?
        }
    };
    Ok(rows.into_iter().map(Grant::from).collect())
}

/// Adds a grant, or replaces the actions of the grant that already exists
/// for the same subject and target. Returns the grant and whether it is new.
pub async fn upsert(
    db: &Db,
    subject: &str,
    target: &Target,
    actions: ActionSet,
    actor: &str,
) -> Result<(Grant, bool), Error> {
    let (kind, pattern) = target.parts();
    let actions_text = actions.to_string();
    let mut tx = db.begin_write().await?;
    if let Some(group) = subject_group(subject)
        && !groups::exists_in(&mut tx, group).await?
    {
        return Err(Error::not_found(format!(
            "group {group:?} not found (create it first)"
        )));
    }
    let existing: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM grants WHERE subject = ? AND resource_type = ? AND pattern = ?",
    )
    .bind(subject)
    .bind(kind)
    .bind(pattern)
    .fetch_optional(&mut *tx)
    .await?;
    let (id, created) = if let Some((id,)) = existing {
        sqlx::query("UPDATE grants SET actions = ? WHERE id = ?")
            .bind(&actions_text)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        (id, false)
    } else {
        let done = sqlx::query(
            "INSERT INTO grants (subject, resource_type, pattern, actions, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(subject)
        .bind(kind)
        .bind(pattern)
        .bind(&actions_text)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        (done.last_insert_rowid(), true)
    };
    audit::record(
        &mut tx,
        actor,
        if created {
            "grant.create"
        } else {
            "grant.update"
        },
        subject,
        &format!("#{id} {kind}:{pattern}:{actions_text}"),
    )
    .await?;
    let row: Row = sqlx::query_as(select_grants!("WHERE id = ?"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((row.into(), created))
}

/// Deletes grant `id`; a 404 when there is none.
pub async fn delete(db: &Db, id: i64, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let row: Option<Row> = sqlx::query_as(select_grants!("WHERE id = ?"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("grant {id} not found")));
    };
    sqlx::query("DELETE FROM grants WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        actor,
        "grant.delete",
        &row.subject,
        &format!(
            "#{id} {}:{}:{}",
            row.resource_type, row.pattern, row.actions
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
