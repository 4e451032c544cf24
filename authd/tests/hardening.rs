//! Regression tests of the security review of authd (issue 10): hostile
//! hash parameters, throttle races, abandoned logins, htpasswd overwrites,
//! non-JSON admin requests, timing, legacy hashes, `X-Forwarded-For` and
//! user-name case — each failed before its fix — and the audit trail that
//! issue asks for.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use authd::config::Argon2Config;
use authd::db::users;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use serde_json::json;
use support::{ADMIN_PASSWORD, TestApp, basic};

const ALICE_PW: &str = "alice-password";
// Made with Apache's htpasswd: -B (cost 5), -m, -s.
const BCRYPT: &str = "$2y$05$dWA3c6e4nZuRLDxbbtoZteW1rXyGqt.DqMYKeEje.MLT6Tgw8VX0W"; // "correct horse"
const APR1: &str = "$apr1$nVMz3fmk$XKJOzvjBhn1Eui1LnJobG1"; // "pässword"
const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="; // "secret"

/// A GET /token with Basic credentials from `ip`.
fn token_from(ip: [u8; 4], user: &str, password: &str) -> Request<Body> {
    let mut req = Request::get("/token")
        .header(header::AUTHORIZATION, basic(user, password))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 5555))));
    req
}

/// An argon2id hash of "pw" with the given `m=…,t=…,p=…` (a real hash
/// with its parameters replaced: the parameters are checked first).
fn argon2_with(params: &str) -> String {
    let hash = authd::password::Hasher::new(Argon2Config {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    })
    .unwrap()
    .hash(b"pw")
    .unwrap();
    hash.replace("m=64,t=1,p=1", params)
}

/// Imports `text` through the admin API.
async fn import(app: &TestApp, text: &str, overwrite: bool) -> support::Resp {
    app.admin(
        "POST",
        "/api/v1/htpasswd",
        Some(json!({"htpasswd": text, "overwrite": overwrite})),
    )
    .await
}

fn user_names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect()
}

// --- 1: hostile hash parameters ----------------------------------------------

#[tokio::test]
async fn hostile_hash_costs_are_refused_at_import() {
    let app = TestApp::new().await;
    let sum86 = "a".repeat(86);
    for line in [
        format!("boom:{}", argon2_with("m=4294967295,t=1,p=1")),
        format!("slow:{}", argon2_with("m=65536,t=4000,p=1")),
        format!("wide:{}", argon2_with("m=1048576,t=16,p=1")),
        format!("hang:{}", BCRYPT.replacen("$05$", "$31$", 1)),
        format!("sha:$6$rounds=999999999$salt${sum86}"),
    ] {
        let r = import(&app, &line, false).await.expect(400);
        let v = r.json();
        assert_eq!(v["error"], "invalid_htpasswd");
        let message = v["details"]["lines"][0]["message"].as_str().unwrap();
        assert!(message.contains("cost"), "{line}: {message}");
    }
    let users = app.admin("GET", "/api/v1/users", None).await.json();
    assert_eq!(user_names(&users), ["admin"]);
    // Real-world defaults pass: PHP's argon2id, libsodium's SENSITIVE,
    // bcrypt 12, passlib's SHA-512 rounds.
    let ok = format!(
        "php:{}\nsodium:{}\nbcrypt:{}\npasslib:$6$rounds=656000$salt${sum86}\n",
        argon2_with("m=65536,t=4,p=1"),
        argon2_with("m=1048576,t=4,p=1"),
        BCRYPT.replacen("$05$", "$12$", 1),
    );
    let v = import(&app, &ok, false).await.expect(200).json();
    assert_eq!(v["imported"], 4, "{v}");
}

#[tokio::test]
async fn hostile_stored_hashes_fail_closed() {
    let app = TestApp::new().await;
    // As an older authd or a hand-edited database could hold them.
    for (name, hash) in [
        ("boom", argon2_with("m=4294967295,t=1,p=1")),
        ("hang", BCRYPT.replacen("$05$", "$31$", 1)),
    ] {
        users::create(&app.state.db, name, &hash, false, false, "test")
            .await
            .unwrap();
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            app.call(token_from([10, 0, 0, 1], name, "pw")),
        )
        .await
        .expect("login hangs")
        .expect(401);
        assert!(started.elapsed() < Duration::from_secs(2), "{name}");
        assert_eq!(r.json()["error"], "invalid_grant");
    }
}

// --- 2: throttle races -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_guesses_are_reserved_before_verifying() {
    let app = TestApp::with(|c| c.throttle.free_failures = 3).await;
    app.add_user("alice", ALICE_PW).await;
    let stats = || app.state.auth.hash_stats().done();
    let before = stats();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let state = app.state.clone();
        tasks.spawn(async move {
            support::send(&state, token_from([10, 0, 0, 66], "alice", "guess"))
                .await
                .status
                .as_u16()
        });
    }
    let statuses = tasks.join_all().await;
    let verified = stats() - before;
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // free_failures, the one that starts the block, and slack for attempts
    // that reserved before it was recorded.
    assert!(verified <= 3 + 1 + 2, "{verified} wrong guesses verified");
    app.call(token_from([10, 0, 0, 66], "alice", ALICE_PW))
        .await
        .expect(429);
}

// --- 3: abandoned logins -----------------------------------------------------

/// Waits until no hash runs any more.
async fn settle(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.state.auth.hash_stats().running() > 0 {
        assert!(Instant::now() < deadline, "hashes still running");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The bookkeeping after the last hash.
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Argon2 slow enough (tens of ms) that a dropped request is still hashing
/// when the next wave starts.
fn slow_argon2(c: &mut authd::Config) {
    c.password.argon2.memory_kib = 32 * 1024;
    c.password.argon2.iterations = 2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_logins_keep_the_hash_cap() {
    let app = TestApp::with(slow_argon2).await;
    app.add_user("alice", ALICE_PW).await;
    let cap = app.state.auth.max_parallel_hashes();
    for wave in 0..3u8 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..(2 * cap) as u8 {
            let state = app.state.clone();
            // Every request from its own address: no throttling involved.
            let req = token_from([10, wave, i, 1], "alice", "guess");
            tasks.spawn(async move { support::send(&state, req).await });
        }
        // Once the wave has as many hashes started as the cap allows, the
        // clients hang up.
        let stats = app.state.auth.hash_stats();
        let started = || stats.done() + stats.running() as u64;
        let target = started() + cap as u64;
        let deadline = Instant::now() + Duration::from_secs(20);
        while started() < target {
            assert!(Instant::now() < deadline, "hashes did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tasks.abort_all();
    }
    settle(&app).await;
    let peak = app.state.auth.hash_stats().peak();
    assert!(peak <= cap, "{peak} hashes ran at once (cap {cap})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_wrong_guesses_are_counted() {
    let app = TestApp::with(|c| {
        slow_argon2(c);
        c.throttle.free_failures = 0;
    })
    .await;
    app.add_user("alice", ALICE_PW).await;
    let state = app.state.clone();
    let task = tokio::spawn(async move {
        support::send(&state, token_from([10, 0, 0, 9], "alice", "guess")).await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.state.auth.hash_stats().running() == 0 {
        assert!(Instant::now() < deadline, "no hash started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    settle(&app).await;
    // The abandoned failure blocked the pair.
    app.call(token_from([10, 0, 0, 9], "alice", ALICE_PW))
        .await
        .expect(429);
}

// --- 4: htpasswd import never overwrites by default --------------------------

#[tokio::test]
async fn import_skips_existing_users_and_admins() {
    let app = TestApp::new().await;
    let file = format!("admin:{BCRYPT}\nbob:{SHA}\n");
    let v = import(&app, &file, false).await.expect(200).json();
    // The admin keeps its password.
    app.get("/token", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .expect(200);
    app.get("/token", Some(&basic("admin", "correct horse")))
        .await
        .expect(401);
    assert_eq!(v["imported"], 1, "{v}");
    assert_eq!(v["skipped"], json!([{"name": "admin", "reason": "admin"}]));
    // Bob changes his password; re-importing the old file does not revert it.
    app.admin(
        "PATCH",
        "/api/v1/users/bob",
        Some(json!({"password": "bob-new-password"})),
    )
    .await
    .expect(200);
    let v = import(&app, &file, false).await.expect(200).json();
    assert_eq!((&v["imported"], &v["updated"]), (&json!(0), &json!(0)));
    assert_eq!(
        v["skipped"],
        json!([{"name": "admin", "reason": "admin"}, {"name": "bob", "reason": "exists"}])
    );
    app.get("/token", Some(&basic("bob", "bob-new-password")))
        .await
        .expect(200);
    // Only an explicit overwrite replaces it — never an admin's.
    let v = import(&app, &file, true).await.expect(200).json();
    assert_eq!(v["updated"], 1, "{v}");
    assert_eq!(v["skipped"], json!([{"name": "admin", "reason": "admin"}]));
    app.get("/token", Some(&basic("bob", "secret")))
        .await
        .expect(200);
    app.get("/token", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .expect(200);
}

// --- 5: the admin API takes JSON only and never asks browsers for Basic ------

#[tokio::test]
async fn admin_api_refuses_non_json_bodies_and_basic_challenges() {
    let app = TestApp::new().await;
    let send = |method: &str, uri: &str, content_type: Option<&str>, body: String| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD));
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        app.call(b.body(Body::from(body)).unwrap())
    };
    let evil = json!({"name": "evil", "password": "evil-password", "admin": true}).to_string();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonx"),
        None,
    ] {
        let r = send("POST", "/api/v1/users", ct, evil.clone())
            .await
            .expect(415);
        assert_eq!(r.json()["error"], "unsupported_media_type", "{ct:?}");
    }
    send(
        "PATCH",
        "/api/v1/users/admin",
        Some("text/plain"),
        r#"{"password":"taken-over!"}"#.into(),
    )
    .await
    .expect(415);
    send(
        "POST",
        "/api/v1/htpasswd",
        Some("text/plain"),
        format!("evil:{SHA}\n"),
    )
    .await
    .expect(415);
    send(
        "POST",
        "/api/v1/grants",
        Some("text/plain"),
        json!({"subject": "*", "pattern": "*", "actions": ["*"]}).to_string(),
    )
    .await
    .expect(415);
    let users = app.admin("GET", "/api/v1/users", None).await.json();
    assert_eq!(user_names(&users), ["admin"]);
    app.get("/token", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .expect(200);
    send(
        "POST",
        "/api/v1/users",
        Some("application/json; charset=utf-8"),
        json!({"name": "good", "password": "good-password"}).to_string(),
    )
    .await
    .expect(201);

    // 401 from the admin API: JSON, without a Basic challenge.
    for auth in [None, Some(basic("admin", "wrong"))] {
        let r = app.get("/api/v1/users", auth.as_deref()).await.expect(401);
        assert_eq!(r.header("www-authenticate"), None);
        assert_eq!(r.json()["error"], "unauthorized");
    }
    // The token endpoint keeps it: docker needs it.
    let r = app
        .get("/token", Some(&basic("admin", "wrong")))
        .await
        .expect(401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
}

// --- 8: timing ----------------------------------------------------------------

#[tokio::test]
async fn failed_logins_take_as_long_for_every_kind_of_user() {
    let app = TestApp::with(|c| {
        // Realistic cost: the difference to hide is argon2's.
        c.password.argon2.memory_kib = 19456;
        c.password.argon2.iterations = 2;
        c.throttle.free_failures = 1000;
    })
    .await;
    app.add_user("argon", ALICE_PW).await;
    import(
        &app,
        &format!("bcrypt:{BCRYPT}\napr1:{APR1}\nsha:{SHA}\n"),
        false,
    )
    .await
    .expect(200);
    let users = ["argon", "bcrypt", "apr1", "sha", "nobody"];
    let mut times = vec![Vec::new(); users.len()];
    // Round robin, so that load from elsewhere hits every class alike.
    for i in 0..9u8 {
        for (n, user) in users.iter().enumerate() {
            let started = Instant::now();
            app.call(token_from([10, 1, i, 1], user, "wrong-password"))
                .await
                .expect(401);
            times[n].push(started.elapsed());
        }
    }
    let medians: Vec<(&str, Duration)> = users
        .iter()
        .zip(&mut times)
        .map(|(user, t)| {
            t.sort();
            (*user, t[t.len() / 2])
        })
        .collect();
    let fastest = medians.iter().map(|m| m.1).min().unwrap();
    let slowest = medians.iter().map(|m| m.1).max().unwrap();
    // Before the fix the legacy hashes answered 10 to 75 times faster.
    assert!(
        slowest < fastest * 3,
        "medians differ too much: {medians:?}"
    );
}

// --- 9: no legacy hash left after the upgrade ---------------------------------

#[tokio::test]
async fn legacy_hash_is_gone_after_the_upgrade() {
    let app = TestApp::new().await;
    import(&app, &format!("apr1:{APR1}\nsha:{SHA}\n"), false)
        .await
        .expect(200);
    for (user, password, legacy) in [("apr1", "pässword", APR1), ("sha", "secret", SHA)] {
        app.get("/token", Some(&basic(user, password)))
            .await
            .expect(200);
        let row = users::get(&app.state.db, user).await.unwrap().unwrap();
        assert!(row.password_hash.starts_with("$argon2id$"), "{user}");
        assert_eq!(row.imported_hash, None, "{user}: legacy hash kept");
        let audit = app.admin("GET", "/api/v1/audit?limit=1000", None).await;
        assert!(
            !String::from_utf8_lossy(&audit.body).contains(legacy),
            "legacy hash in the audit log"
        );
    }
}

// --- 11: X-Forwarded-For --------------------------------------------------------

#[tokio::test]
async fn forwarded_for_stops_at_entries_it_cannot_parse() {
    let app = TestApp::with(|c| {
        c.throttle.free_failures = 0;
        c.throttle.trusted_proxies = vec!["10.9.9.9".parse().unwrap()];
    })
    .await;
    app.add_user("ci", "ci-password").await;
    let req = |xff: &str, password: &str| {
        let mut r = Request::get("/token")
            .header(header::AUTHORIZATION, basic("ci", password))
            .header("x-forwarded-for", xff)
            .body(Body::empty())
            .unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([10, 9, 9, 9], 1))));
        r
    };
    // A proxy that appends ip:port: that entry is the client, not the
    // address the client wrote before it.
    app.call(req("6.6.6.6, 1.1.1.1:4444", "bad"))
        .await
        .expect(429);
    app.call(req("7.7.7.7, 1.1.1.1:5555", "ci-password"))
        .await
        .expect(429);
    app.call(req("1.1.1.1", "ci-password")).await.expect(429);
    app.call(req("[2001:db8::1]:80", "bad")).await.expect(429);
    app.call(req("2001:db8::1", "ci-password"))
        .await
        .expect(429);
    // Garbage ends the trusted chain: the client cannot choose its key by
    // changing what precedes it.
    app.call(req("8.8.8.8, bogus", "bad")).await.expect(429);
    app.call(req("9.9.9.9, bogus", "ci-password"))
        .await
        .expect(429);
    app.call(req("2.2.2.2", "ci-password")).await.expect(200);
}

// --- 13: user names are lowercase repository path components -------------------

#[tokio::test]
async fn user_names_are_lowercase_path_components() {
    let app = TestApp::new().await;
    for bad in ["ADMIN", "Alice", "first.last@example.com", "a..b", "a-"] {
        let r = app
            .admin(
                "POST",
                "/api/v1/users",
                Some(json!({"name": bad, "password": "some-password"})),
            )
            .await
            .expect(400);
        assert_eq!(r.json()["error"], "invalid_name", "{bad}");
    }
    for good in ["ci-bot", "a__b", "first.last", "x9"] {
        app.add_user(good, "some-password").await;
    }
    let r = import(&app, &format!("Bob:{SHA}\n"), false)
        .await
        .expect(400);
    assert!(
        r.json()["details"]["lines"][0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid user name")
    );
    // A row from before the rule still logs in (and is listed).
    users::create(
        &app.state.db,
        "Carol",
        &authd::password::Hasher::new(app.state.config.password.argon2)
            .unwrap()
            .hash(b"carol-password")
            .unwrap(),
        false,
        false,
        "test",
    )
    .await
    .unwrap();
    app.get("/token", Some(&basic("Carol", "carol-password")))
        .await
        .expect(200);
    app.get("/token", Some(&basic("carol", "carol-password")))
        .await
        .expect(401);
}

// --- operations: the audit trail and its filters --------------------------------

#[tokio::test]
async fn audit_trail_records_logins_tokens_and_changes_with_filters() {
    let app = TestApp::new().await;
    app.add_user("alice", ALICE_PW).await;
    app.add_grant("alice", "alice/*", &["pull"]).await;
    app.get(
        "/token?scope=repository:alice/app:pull&scope=repository:other/x:push",
        Some(&basic("alice", ALICE_PW)),
    )
    .await
    .expect(200);
    app.get("/token?scope=repository:other/x:pull", None)
        .await
        .expect(200);
    for _ in 0..6 {
        app.call(token_from([10, 0, 0, 5], "alice", "wrong")).await;
    }
    let app = &app;
    let query = |q: String| async move {
        app.admin("GET", &format!("/api/v1/audit?{q}"), None)
            .await
            .expect(200)
            .json()
            .as_array()
            .unwrap()
            .clone()
    };
    let actions = |entries: &[serde_json::Value]| -> Vec<String> {
        entries
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    };

    let alice = query("user=alice&limit=1000".into()).await;
    for action in [
        "user.create",
        "login.success",
        "login.failure",
        "login.throttled",
        "token.issue",
    ] {
        assert!(actions(&alice).iter().any(|a| a == action), "{action}");
    }
    let issue = alice.iter().find(|e| e["action"] == "token.issue").unwrap();
    assert_eq!(
        issue["detail"],
        "granted: repository:alice/app:pull; refused: repository:other/x"
    );
    let refused = query("action=token.refuse".into()).await;
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["target"], "anonymous");

    let logins = query("action=login".into()).await;
    assert!(logins.len() >= 8, "{logins:?}");
    assert!(
        actions(&logins).iter().all(|a| a.starts_with("login.")),
        "{logins:?}"
    );
    let failures = query("action=login.failure&user=alice".into()).await;
    assert_eq!(failures.len(), 6);
    assert_eq!(failures[0]["actor"], "client:10.0.0.5");

    // Pages: newest first, the next page before the last id.
    let all = query("limit=1000".into()).await;
    let first = query("limit=3".into()).await;
    let id = |e: &serde_json::Value| e["id"].as_i64().unwrap();
    let next = query(format!("limit=3&before={}", id(&first[2]))).await;
    let ids: Vec<i64> = first.iter().chain(&next).map(id).collect();
    let expected: Vec<i64> = all.iter().take(6).map(id).collect();
    assert_eq!(ids, expected);

    // Time range, inclusive, in RFC 3339.
    let at = all[0]["at"].as_str().unwrap().to_owned();
    assert!(!query(format!("since={at}")).await.is_empty());
    assert!(!query(format!("until={at}")).await.is_empty());
    assert!(query("until=2000-01-01T00:00:00Z".into()).await.is_empty());
    assert!(
        query("since=2999-01-01T00:00:00%2B01:00".into())
            .await
            .is_empty()
    );
    for bad in [
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "limit=0",
        "limit=1001",
        "before=x",
    ] {
        let r = app
            .admin("GET", &format!("/api/v1/audit?{bad}"), None)
            .await
            .expect(400);
        assert_eq!(r.json()["error"], "invalid_request", "{bad}");
    }
}
