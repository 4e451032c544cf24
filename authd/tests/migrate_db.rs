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
