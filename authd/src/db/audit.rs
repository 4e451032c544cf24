//! The `audit_log` table: who changed users, grants, tokens and keys, and
//! when — written in the same transaction as the change it records — and
//! the request-rate events (logins, failures, throttles, token grants),
//! written in batches by a [`Sink`] so that a token request costs no
//! transaction of its own. Queried with filters by [`query`].

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::{Db, Tx, on_pool, on_tx};
use crate::error::Error;
use crate::util::{now, rfc3339};

/// Entries queued for the sink before new ones are dropped (and logged).
const SINK_CAPACITY: usize = 50_000;
/// Most entries written in one transaction.
const BATCH: usize = 1024;
/// Most entries one query returns.
pub const MAX_LIMIT: i64 = 1000;

/// Records one change.
pub async fn record(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Result<(), Error> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(now())
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(detail)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
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

/// What [`query`] returns: every given condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Entries about this user (target) or made by them (`api:<user>`).
    pub user: Option<String>,
    /// An action (`user.create`), or a family of them (`login` for
    /// `login.*`).
    pub action: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, inclusive.
    pub until: Option<i64>,
    /// Only entries older than this id: the next page after an entry.
    pub before: Option<i64>,
    /// 1 to [`MAX_LIMIT`].
    pub limit: i64,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            user: None,
            action: None,
            since: None,
            until: None,
            before: None,
            limit: 100,
        }
    }
}

/// The newest entries matching `filter`, newest first.
pub async fn query(db: &Db, filter: &Filter) -> Result<Vec<Entry>, Error> {
    Ok(on_pool!(db.reader(), |c| {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT id, at, actor, action, target, detail FROM audit_log WHERE 1 = 1",
        );
        push_filter(&mut q, filter);
        q.build_query_as().fetch_all(c).await
    })?)
}

/// The conditions and order of [`query`], on either engine.
fn push_filter<DB>(q: &mut sqlx::QueryBuilder<DB>, filter: &Filter)
where
    DB: sqlx::Database,
    String: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: for<'a> sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(user) = &filter.user {
        q.push(" AND (target = ")
            .push_bind(user.clone())
            .push(" OR actor = ")
            .push_bind(format!("api:{user}"))
            .push(")");
    }
    if let Some(action) = &filter.action {
        if action.contains('.') {
            q.push(" AND action = ").push_bind(action.clone());
        } else {
            // `login` → `login` and `login.*`: a range, so the index serves
            // (bytewise: the PostgreSQL column is COLLATE "C").
            q.push(" AND (action = ")
                .push_bind(action.clone())
                .push(" OR (action > ")
                .push_bind(format!("{action}."))
                .push(" AND action < ")
                .push_bind(format!("{action}/"))
                .push("))");
        }
    }
    if let Some(since) = filter.since {
        q.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        q.push(" AND at <= ").push_bind(until);
    }
    if let Some(before) = filter.before {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(filter.limit.clamp(1, MAX_LIMIT));
}

struct NewEntry {
    at: i64,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

enum Message {
    Entry(NewEntry),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// A queue of audit entries that one task writes in batches, one
/// transaction per batch: for events at request rate.
#[derive(Debug, Clone)]
pub struct Sink {
    queue: mpsc::Sender<Message>,
}

impl Sink {
    /// Starts the writer task (on the current tokio runtime).
    pub fn start(db: Db) -> Sink {
        let (queue, mut rx) = mpsc::channel::<Message>(SINK_CAPACITY);
        tokio::spawn(async move {
            let mut messages = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut messages, BATCH).await > 0 {
                let mut flushed = Vec::new();
                let mut entries = Vec::with_capacity(messages.len());
                for m in messages.drain(..) {
                    match m {
                        Message::Entry(e) => entries.push(e),
                        Message::Flush(done) => flushed.push(done),
                    }
                }
                if !entries.is_empty()
                    && let Err(e) = write_batch(&db, &entries).await
                {
                    tracing::error!(error = %e, count = entries.len(), "writing audit entries");
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Sink { queue }
    }

    /// Queues one entry; never waits. When the queue is full the entry is
    /// dropped with an error in the log (the database cannot keep up).
    pub fn record(&self, actor: &str, action: &str, target: &str, detail: &str) {
        let entry = NewEntry {
            at: now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        if self.queue.try_send(Message::Entry(entry)).is_err() {
            tracing::error!(%action, "audit queue full or closed: entry dropped");
        }
    }

    /// Waits until every entry queued so far is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_batch(db: &Db, entries: &[NewEntry]) -> Result<(), Error> {
    let mut tx = db.begin_write().await?;
    for e in entries {
        on_tx!(&mut tx, |c| sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(e.at)
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.detail)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    tx.commit().await?;
    Ok(())
}
