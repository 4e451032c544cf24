//! The `grants` table: (subject, target, actions) rows, looked up on every
//! token request by subject. A grant to a group (`@name`) needs the group.

use super::{Db, Pool, audit, groups, on_pool, on_tx};
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
            let sql = match db.reader() {
                Pool::Sqlite(_) => select_grants!(
                    "WHERE subject IN ($1, '*', 'anonymous') \
                     OR subject IN (SELECT value FROM json_each($2))"
                ),
                Pool::Postgres(_) => select_grants!(
                    "WHERE subject IN ($1, '*', 'anonymous') \
                     OR subject IN (SELECT json_array_elements_text($2::json))"
                ),
            };
            on_pool!(db.reader(), |c| sqlx::query_as(sql)
                .bind(name)
                .bind(groups)
                .fetch_all(c)
                .await)?
        }
        None => on_pool!(db.reader(), |c| sqlx::query_as(select_grants!(
            "WHERE subject = $1"
        ))
        .bind(ANONYMOUS)
        .fetch_all(c)
        .await)?,
    };
    Ok(rows.into_iter().map(Grant::from).collect())
}

/// Every grant, or those of one subject, in creation order.
pub async fn list(db: &Db, subject: Option<&str>) -> Result<Vec<Grant>, Error> {
    let rows: Vec<Row> = match subject {
        Some(s) => on_pool!(db.reader(), |c| sqlx::query_as(select_grants!(
            "WHERE subject = $1 ORDER BY id"
        ))
        .bind(s)
        .fetch_all(c)
        .await)?,
        None => on_pool!(db.reader(), |c| sqlx::query_as(select_grants!(
            "ORDER BY id"
        ))
        .fetch_all(c)
        .await)?,
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
    let existing: Option<(i64,)> = on_tx!(&mut tx, |c| sqlx::query_as(
        "SELECT id FROM grants WHERE subject = $1 AND resource_type = $2 AND pattern = $3",
    )
    .bind(subject)
    .bind(kind)
    .bind(pattern)
    .fetch_optional(c)
    .await)?;
    let (id, created) = if let Some((id,)) = existing {
        on_tx!(&mut tx, |c| sqlx::query(
            "UPDATE grants SET actions = $1 WHERE id = $2"
        )
        .bind(&actions_text)
        .bind(id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
        (id, false)
    } else {
        let (id,): (i64,) = on_tx!(&mut tx, |c| sqlx::query_as(
            "INSERT INTO grants (subject, resource_type, pattern, actions, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(subject)
        .bind(kind)
        .bind(pattern)
        .bind(&actions_text)
        .bind(now())
        .fetch_one(c)
        .await)?;
        (id, true)
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
    let row: Row = on_tx!(&mut tx, |c| sqlx::query_as(select_grants!("WHERE id = $1"))
        .bind(id)
        .fetch_one(c)
        .await)?;
    tx.commit().await?;
    Ok((row.into(), created))
}

/// Deletes grant `id`; a 404 when there is none.
pub async fn delete(db: &Db, id: i64, actor: &str) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    let row: Option<Row> = on_tx!(&mut tx, |c| sqlx::query_as(select_grants!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(c)
        .await)?;
    let Some(row) = row else {
        return Err(Error::not_found(format!("grant {id} not found")));
    };
    on_tx!(&mut tx, |c| sqlx::query("DELETE FROM grants WHERE id = $1")
        .bind(id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
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
