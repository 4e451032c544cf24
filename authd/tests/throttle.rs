//! Login throttling shared through the database (issue 12): two authd
//! states on one database — two replicas, each with its own throttle,
//! caches and pools — count the same failures. Runs on SQLite (one file)
//! and, with `AUTHD_TEST_DB=postgres`, on one PostgreSQL database.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use authd::AppState;
use authd::db::login_failures;
use support::{Resp, TestApp, basic, send, token_request_from};

const ALICE_PW: &str = "alice-password";
const ATTACKER: [u8; 4] = [10, 0, 0, 66];

/// Replica A (a `TestApp` with alice) and replica B: a second state on the
/// same database and data directory.
async fn replicas(free_failures: u32) -> (TestApp, AppState) {
    let a = TestApp::with(|c| c.throttle.free_failures = free_failures).await;
    a.add_user("alice", ALICE_PW).await;
    let (b, generated) = AppState::init(a.state.config.clone()).await.unwrap();
    assert!(generated.is_none());
    (a, b)
}

async fn on(state: &AppState, ip: [u8; 4], auth: &str) -> Resp {
    send(state, token_request_from(ip, auth)).await
}

async fn row(state: &AppState, account: &str, ip: [u8; 4]) -> Option<i64> {
    login_failures::get(&state.db, account, &IpAddr::from(ip).to_string())
        .await
        .unwrap()
        .map(|f| f.failures)
}

#[tokio::test]
async fn failures_on_two_replicas_add_up_and_block_both() {
    let (a, b) = replicas(3).await;
    let wrong = basic("alice", "guess");
    let right = basic("alice", ALICE_PW);
    on(&a.state, ATTACKER, &wrong).await.expect(401);
    on(&b, ATTACKER, &wrong).await.expect(401);
    on(&a.state, ATTACKER, &wrong).await.expect(401);
    assert_eq!(row(&b, "alice", ATTACKER).await, Some(3));
    // The fourth failure, on B, is past the free three of both together.
    let r = on(&b, ATTACKER, &wrong).await.expect(429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // A refuses the pair before verifying anything, the right password too.
    let hashed = a.state.auth.hash_stats().done();
    on(&a.state, ATTACKER, &right).await.expect(429);
    on(&a.state, ATTACKER, &wrong).await.expect(429);
    assert_eq!(a.state.auth.hash_stats().done(), hashed);
    // Other pairs are not affected, on either replica.
    on(&a.state, [10, 0, 0, 7], &right).await.expect(200);
    on(&b, [10, 0, 0, 7], &right).await.expect(200);
    a.add_user("bob", "bob-password").await;
    on(&b, ATTACKER, &basic("bob", "bob-password"))
        .await
        .expect(200);

    // Once the block is over, the next failure (on A) doubles it for both:
    // refused as well, but with the next block's length.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = on(&a.state, ATTACKER, &wrong).await.expect(429);
        if r.header("retry-after") != Some("1") {
            break r;
        }
        assert!(Instant::now() < deadline, "still blocked after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(row(&a.state, "alice", ATTACKER).await, Some(5));
    let r = on(&b, ATTACKER, &right).await.expect(429);
    assert!(
        matches!(r.header("retry-after"), Some("1" | "2")),
        "{:?}",
        r.header("retry-after")
    );

    // A good login on B after the block clears the pair everywhere.
    let deadline = Instant::now() + Duration::from_secs(10);
    while on(&b, ATTACKER, &right).await.status != 200 {
        assert!(Instant::now() < deadline, "still blocked after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(row(&a.state, "alice", ATTACKER).await, None);
    for _ in 0..3 {
        on(&a.state, ATTACKER, &wrong).await.expect(401);
    }
    on(&b, ATTACKER, &wrong).await.expect(429);
}

#[tokio::test]
async fn good_logins_write_nothing_and_a_success_deletes_the_row() {
    let (a, b) = replicas(3).await;
    let right = basic("alice", ALICE_PW);
    // The first login verifies the password, the next ones hit the cache:
    // none of them leaves a row.
    for _ in 0..5 {
        on(&a.state, ATTACKER, &right).await.expect(200);
        on(&b, ATTACKER, &right).await.expect(200);
    }
    assert_eq!(row(&a.state, "alice", ATTACKER).await, None);
    let recent = login_failures::changed_since(&a.state.db, 0, 100)
        .await
        .unwrap();
    assert!(recent.is_empty(), "{recent:?}");
    // Failures of unknown accounts are counted as well.
    on(&b, ATTACKER, &basic("nobody", "x")).await.expect(401);
    assert_eq!(row(&a.state, "nobody", ATTACKER).await, Some(1));
    // A failure, then a good login (password verified) on the other
    // replica: the row goes.
    on(&a.state, ATTACKER, &basic("alice", "guess"))
        .await
        .expect(401);
    assert_eq!(row(&b, "alice", ATTACKER).await, Some(1));
    // B's cache knows the password: B learns of A's failure from the
    // table's recent rows, and its cache hit then clears the row.
    b.auth.throttle().poll(0).await;
    on(&b, ATTACKER, &right).await.expect(200);
    assert_eq!(row(&a.state, "alice", ATTACKER).await, None);
    // Access tokens count failures in the same table.
    on(&b, ATTACKER, &basic("alice", "rgt_0000_notatoken"))
        .await
        .expect(401);
    assert_eq!(row(&a.state, "alice", ATTACKER).await, Some(1));
}

#[tokio::test]
async fn a_block_reaches_a_replica_that_serves_from_its_password_cache() {
    let (a, b) = replicas(0).await;
    let right = basic("alice", ALICE_PW);
    // B verified alice's password once: it answers from its cache.
    on(&b, ATTACKER, &right).await.expect(200);
    // A blocks the pair.
    on(&a.state, ATTACKER, &basic("alice", "guess"))
        .await
        .expect(429);
    // B reads the recent failures (its background task does this every
    // second) and refuses the pair, cache or not.
    b.auth.throttle().poll(0).await;
    let r = on(&b, ATTACKER, &right).await.expect(429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // The block runs out on both.
    let deadline = Instant::now() + Duration::from_secs(10);
    while on(&b, ATTACKER, &right).await.status != 200 {
        assert!(Instant::now() < deadline, "still blocked after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    on(&a.state, ATTACKER, &right).await.expect(200);
}

#[tokio::test]
async fn idle_rows_expire_and_a_restart_keeps_the_counts() {
    let (a, b) = replicas(1).await;
    let db = &a.state.db;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    login_failures::add(db, "old", "10.1.1.1", now_ms - 31 * 60 * 1000)
        .await
        .unwrap();
    on(&b, ATTACKER, &basic("alice", "guess")).await.expect(401);
    assert_eq!(a.state.auth.throttle().expire().await, 1);
    assert!(
        login_failures::get(db, "old", "10.1.1.1")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(row(&a.state, "alice", ATTACKER).await, Some(1));
    // A process started afresh (nothing in memory) counts on from the
    // table: the next failure is past the free one.
    drop(b);
    let (fresh, _) = AppState::init(a.state.config.clone()).await.unwrap();
    let r = on(&fresh, ATTACKER, &basic("alice", "guess"))
        .await
        .expect(429);
    assert_eq!(r.header("retry-after"), Some("1"));
}

/// What the read before each password check costs: the primary-key lookup
/// of the pair's row, against one verification of a password hashed with
/// authd's default argon2 parameters. The figures are printed (run with
/// `--nocapture`); the lookup must cost under a tenth of the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_before_a_password_check_is_cheap_next_to_the_check() {
    let (a, _b) = replicas(5).await;
    let db = &a.state.db;
    // One row among many, as under attack.
    for i in 0..200u32 {
        login_failures::add(db, &format!("user{i}"), "10.2.0.1", 1)
            .await
            .unwrap();
    }
    const N: u32 = 2000;
    let started = Instant::now();
    for i in 0..N {
        let found = login_failures::get(db, &format!("user{}", i % 400), "10.2.0.1")
            .await
            .unwrap();
        assert_eq!(found.is_some(), i % 400 < 200);
    }
    let lookup = started.elapsed() / N;

    let hasher = authd::password::Hasher::new(authd::config::Argon2Config::default()).unwrap();
    let hash = hasher.hash(b"some password").unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        assert!(!authd::password::verify(b"other password", &hash));
    }
    let verify = started.elapsed() / 5;
    println!(
        "login_failures lookup on {}: {:.1} µs; default argon2 verification: {:.1} ms",
        if db.is_shared() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        lookup.as_secs_f64() * 1e6,
        verify.as_secs_f64() * 1e3
    );
    assert!(
        lookup * 10 < verify,
        "lookup {lookup:?} against verification {verify:?}"
    );
}
