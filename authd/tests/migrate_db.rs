//! `authd migrate-db`: a SQLite installation copied into a fresh
//! PostgreSQL keeps its users (and their passwords), grants and refresh
//! tokens; a second copy into the same database is refused.
#![allow(clippy::unwrap_used)]

mod support;

use authd::config::DatabaseConfig;
use authd::db::{Db, Location, copy};
use support::{TestApp, access};

const FORM: &str = "grant_type=password&username=alice&password=alice-password-1\
                    &client_id=t&access_type=offline&service=registry";

#[tokio::test]
async fn sqlite_install_moves_to_postgres() {
    let sqlite = TestApp::with(|c| {
        c.database = Some(DatabaseConfig::Path(c.data_dir.join("authd.db")));
    })
    .await;
    sqlite.add_user("alice", "alice-password-1").await;
    sqlite
        .add_grant("alice", "alice/*", &["pull", "push"])
        .await;
    let login = sqlite.post_form("/token", FORM).await.expect(200).json();
    let refresh = login["refresh_token"].as_str().unwrap().to_owned();

    let url = e2e::postgres::database();
    let from = Db::open(&Location::Sqlite(sqlite.dir.path().join("authd.db")))
        .await
        .unwrap();
    let to = Db::open(&Location::Postgres(url.clone())).await.unwrap();
    let copied = copy::copy_all(&from, &to).await.unwrap();
    assert_eq!(copied.users, 2, "{copied:?}");
    assert_eq!(copied.grants, 1, "{copied:?}");
    assert_eq!(copied.refresh_tokens, 1, "{copied:?}");
    assert!(copied.audit_log >= 2, "{copied:?}");
    let again = copy::copy_all(&from, &to).await.unwrap_err();
    assert!(again.to_string().contains("already has"), "{again}");

    let pg = TestApp::with(|c| c.database = Some(DatabaseConfig::Url { url })).await;
    let claims = pg
        .token_claims(
            "service=registry&scope=repository:alice/x:pull,push",
            Some(&support::basic("alice", "alice-password-1")),
        )
        .await;
    assert_eq!(access(&claims), ["repository:alice/x:pull,push"]);
    let form = format!(
        "grant_type=refresh_token&refresh_token={refresh}&client_id=t&service=registry\
         &scope=repository:alice/x:pull"
    );
    let r = pg.post_form("/token", &form).await.expect(200).json();
    let claims = pg.verify(r["access_token"].as_str().unwrap()).await;
    assert_eq!(claims.sub, "alice");
    // New rows get new ids after the copied ones.
    let id = pg.add_grant("alice", "shared/*", &["pull"]).await;
    assert!(id > 1, "{id}");
}

/// The audit log goes over in multi-row INSERTs: every row arrives intact,
/// across read pages (5,000) and write batches (1,000), ids and all.
#[tokio::test]
async fn every_audit_row_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authd.db");
    let from = Db::open(&Location::Sqlite(path.clone())).await.unwrap();
    let sqlite = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    // Ids with gaps (deleted entries), texts with quotes, commas, NUL-free
    // Unicode and empty strings.
    let mut tx = sqlite.begin().await.unwrap();
    for i in 0..12_345_i64 {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(i * 3 + 1)
        .bind(1_700_000_000 + i)
        .bind(format!("api:user{}", i % 7))
        .bind(if i % 2 == 0 {
            "login.failure"
        } else {
            "grant.add"
        })
        .bind(format!("o'brien, \"{i}\" é✓"))
        .bind(if i % 5 == 0 {
            String::new()
        } else {
            format!("detail {i}; ($1)")
        })
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    type Row = (i64, i64, String, String, String, String);
    let select = "SELECT id, at, actor, action, target, detail FROM audit_log ORDER BY id";
    let before: Vec<Row> = sqlx::query_as(select).fetch_all(&sqlite).await.unwrap();

    let url = e2e::postgres::database();
    let to = Db::open(&Location::Postgres(url.clone())).await.unwrap();
    let copied = copy::copy_all(&from, &to).await.unwrap();
    assert_eq!(copied.audit_log, before.len() as u64, "{copied:?}");
    let pg = sqlx::PgPool::connect(&url).await.unwrap();
    let after: Vec<Row> = sqlx::query_as(select).fetch_all(&pg).await.unwrap();
    // The copy adds its own entry at the end.
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after[before.len()].3, "db.migrate");
    assert!(after[before.len()].0 > before.last().unwrap().0);
}
