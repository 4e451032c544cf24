//! `authd migrate-db`: copies every table of one database into another,
//! empty one (SQLite to PostgreSQL, or back), ids and all, in one write
//! transaction of the target — users, groups and their members, grants,
//! access tokens, refresh tokens (in their order of issue, which decides
//! which go first when a user has too many), and the audit log.

use serde::Serialize;

use super::{Db, Pool, Tx, on_pool, on_tx};
use crate::error::Error;

/// Audit entries read per statement.
const AUDIT_PAGE: i64 = 5000;
/// Audit entries written per statement (one multi-row INSERT): 6 bound
/// values each, well under SQLite's 32,766 and PostgreSQL's 65,535.
const AUDIT_BATCH: usize = 1000;

/// Rows copied, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Copied {
    pub users: u64,
    pub groups: u64,
    pub group_members: u64,
    pub grants: u64,
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub audit_log: u64,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: i64,
    name: String,
    password_hash: String,
    imported_hash: Option<String>,
    is_admin: bool,
    is_robot: bool,
    disabled: bool,
    password_changed_at: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
struct GrantRow {
    id: i64,
    subject: String,
    resource_type: String,
    pattern: String,
    actions: String,
    created_at: i64,
}

#[derive(sqlx::FromRow)]
struct AccessTokenRow {
    id: String,
    user_id: i64,
    name: String,
    secret_hash: Vec<u8>,
    scopes: String,
    admin: bool,
    created_by: String,
    created_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    last_used_from: Option<String>,
}

#[derive(sqlx::FromRow)]
struct RefreshRow {
    id: String,
    user_id: i64,
    token_hash: Vec<u8>,
    client_id: String,
    created_at: i64,
    last_used_at: i64,
    access_token_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

/// Copies everything of `from` into `to`, which must hold no users yet
/// (a fresh database: the copy keeps ids).
pub async fn copy_all(from: &Db, to: &Db) -> Result<Copied, Error> {
    let src = from.reader();
    let (existing,): (i64,) = on_pool!(to.reader(), |c| sqlx::query_as(
        "SELECT COUNT(*) FROM users"
    )
    .fetch_one(c)
    .await)?;
    if existing > 0 {
        return Err(Error::conflict(
            "not_empty",
            format!("the target database already has {existing} users: copy into an empty one"),
        ));
    }
    let mut n = Copied::default();
    let mut tx = to.begin_write().await?;

    let users: Vec<UserRow> = on_pool!(src, |c| sqlx::query_as(
        "SELECT id, name, password_hash, imported_hash, is_admin, is_robot, disabled, \
         password_changed_at, created_at, updated_at FROM users ORDER BY id"
    )
    .fetch_all(c)
    .await)?;
    for u in &users {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO users (id, name, password_hash, imported_hash, is_admin, is_robot, \
             disabled, password_changed_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        .bind(u.id)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(&u.imported_hash)
        .bind(u.is_admin)
        .bind(u.is_robot)
        .bind(u.disabled)
        .bind(u.password_changed_at)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    n.users = users.len() as u64;

    let groups: Vec<(i64, String, i64)> = on_pool!(src, |c| sqlx::query_as(
        "SELECT id, name, created_at FROM groups ORDER BY id"
    )
    .fetch_all(c)
    .await)?;
    for (id, name, created_at) in &groups {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO groups (id, name, created_at) VALUES ($1, $2, $3)"
        )
        .bind(id)
        .bind(name)
        .bind(created_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    n.groups = groups.len() as u64;

    let members: Vec<(i64, i64)> = on_pool!(src, |c| sqlx::query_as(
        "SELECT group_id, user_id FROM group_members ORDER BY group_id, user_id"
    )
    .fetch_all(c)
    .await)?;
    for (g, u) in &members {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO group_members (group_id, user_id) VALUES ($1, $2)"
        )
        .bind(g)
        .bind(u)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    n.group_members = members.len() as u64;

    let grants: Vec<GrantRow> = on_pool!(src, |c| {
        sqlx::query_as(
        "SELECT id, subject, resource_type, pattern, actions, created_at FROM grants ORDER BY id"
    )
    .fetch_all(c)
    .await
    })?;
    for g in &grants {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO grants (id, subject, resource_type, pattern, actions, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)"
        )
        .bind(g.id)
        .bind(&g.subject)
        .bind(&g.resource_type)
        .bind(&g.pattern)
        .bind(&g.actions)
        .bind(g.created_at)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    n.grants = grants.len() as u64;

    let tokens: Vec<AccessTokenRow> = on_pool!(src, |c| sqlx::query_as(
        "SELECT id, user_id, name, secret_hash, scopes, admin, created_by, created_at, \
         expires_at, last_used_at, last_used_from FROM access_tokens ORDER BY created_at, id"
    )
    .fetch_all(c)
    .await)?;
    for t in &tokens {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO access_tokens (id, user_id, name, secret_hash, scopes, admin, \
             created_by, created_at, expires_at, last_used_at, last_used_from) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )
        .bind(&t.id)
        .bind(t.user_id)
        .bind(&t.name)
        .bind(&t.secret_hash)
        .bind(&t.scopes)
        .bind(t.admin)
        .bind(&t.created_by)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.last_used_at)
        .bind(&t.last_used_from)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    n.access_tokens = tokens.len() as u64;

    // In their order of issue: SQLite's rowid, PostgreSQL's seq.
    macro_rules! select_refresh {
        ($order:literal) => {
            concat!(
                "SELECT id, user_id, token_hash, client_id, created_at, last_used_at, ",
                "access_token_id FROM refresh_tokens ORDER BY ",
                $order
            )
        };
    }
    let sql = match src {
        Pool::Sqlite(_) => select_refresh!("rowid"),
        Pool::Postgres(_) => select_refresh!("seq"),
    };
    let refresh: Vec<RefreshRow> = on_pool!(src, |c| sqlx::query_as(sql).fetch_all(c).await)?;
    for r in &refresh {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, client_id, created_at, \
             last_used_at, access_token_id) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        .bind(&r.id)
        .bind(r.user_id)
        .bind(&r.token_hash)
        .bind(&r.client_id)
        .bind(r.created_at)
        .bind(r.last_used_at)
        .bind(&r.access_token_id)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    n.refresh_tokens = refresh.len() as u64;

    let mut after = 0_i64;
    loop {
        let page: Vec<AuditRow> = on_pool!(src, |c| sqlx::query_as(
            "SELECT id, at, actor, action, target, detail FROM audit_log \
             WHERE id > $1 ORDER BY id LIMIT $2"
        )
        .bind(after)
        .bind(AUDIT_PAGE)
        .fetch_all(c)
        .await)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for batch in page.chunks(AUDIT_BATCH) {
            let inserted = on_tx!(&mut tx, |c| {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_log (id, at, actor, action, target, detail) ",
                );
                q.push_values(batch, |mut row, e| {
                    row.push_bind(e.id)
                        .push_bind(e.at)
                        .push_bind(e.actor.clone())
                        .push_bind(e.action.clone())
                        .push_bind(e.target.clone())
                        .push_bind(e.detail.clone());
                });
                q.build().execute(c).await.map(|r| r.rows_affected())
            })?;
            if inserted != batch.len() as u64 {
                return Err(Error::internal(format!(
                    "copying the audit log: {inserted} of {} rows inserted",
                    batch.len()
                )));
            }
        }
        n.audit_log += page.len() as u64;
    }

    if let Tx::Postgres(t) = &mut tx {
        // Ids were given: the identity columns continue after them.
        macro_rules! continue_ids {
            ($table:literal) => {
                concat!(
                    "SELECT setval(pg_get_serial_sequence('",
                    $table,
                    "', 'id'), COALESCE((SELECT MAX(id) FROM ",
                    $table,
                    "), 0) + 1, false)"
                )
            };
        }
        for sql in [
            continue_ids!("users"),
            continue_ids!("groups"),
            continue_ids!("grants"),
            continue_ids!("audit_log"),
        ] {
            sqlx::query(sql).execute(&mut **t).await?;
        }
    }
    super::audit::record(
        &mut tx,
        "cli",
        "db.migrate",
        "",
        &format!(
            "users={} groups={} grants={} access_tokens={} refresh_tokens={} audit={}",
            n.users, n.groups, n.grants, n.access_tokens, n.refresh_tokens, n.audit_log
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}
