//! Operations: request ids, Prometheus metrics (tokens issued and
//! refused), and JSON logs that never carry a password or a token.
#![allow(clippy::unwrap_used)]

mod support;

use support::{ADMIN_PASSWORD, TestApp, basic};

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_tokens_issued_and_refused() {
    let app = TestApp::new().await;
    let before =
        String::from_utf8(app.get("/metrics", None).await.expect(200).body.to_vec()).unwrap();
    let r = app
        .get(
            "/token?service=registry&scope=repository:a/b:pull",
            Some(&basic("admin", ADMIN_PASSWORD)),
        )
        .await
        .expect(200);
    let id = r.header("x-request-id").expect("a request id").to_owned();
    assert!(!id.is_empty() && id.len() <= 64, "{id}");
    app.get(
        "/token?service=registry",
        Some(&basic("admin", "wrong-password")),
    )
    .await
    .expect(401);
    let after = app.get("/metrics", None).await.expect(200);
    assert_ne!(after.header("x-request-id"), Some(id.as_str()));
    let after = String::from_utf8(after.body.to_vec()).unwrap();
    for (series, at_least) in [
        ("authd_tokens_issued_total", 1.0),
        (
            r#"authd_token_requests_refused_total{reason="login_failed"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="token",method="GET",status="200"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="token",method="GET",status="401"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_count{route="token",method="GET"}"#,
            2.0,
        ),
    ] {
        let grew = metric(&after, series) - metric(&before, series);
        assert!(grew >= at_least, "{series} grew by {grew}:\n{after}");
    }
    assert!(
        !after.contains("admin\""),
        "a user name as a label:\n{after}"
    );
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[test]
fn json_logs_carry_request_ids_and_never_secrets() {
    let authd = e2e::authd::Authd::builder()
        .fast_password_hashing()
        .env("AUTHD_LOG_FORMATTER", "json")
        .env("AUTHD_LOG_LEVEL", "debug")
        .start();
    let password = "alice-password-never-logged";
    authd.add_user("alice", password);
    let http = e2e::api::http_client();
    let r = http
        .get(format!(
            "{}/token?service=registry&offline_token=true&client_id=ops&scope=repository:alice/x:pull",
            authd.url()
        ))
        .basic_auth("alice", Some(password))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{}/token", authd.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("service", "registry"),
            ("client_id", "ops"),
            ("refresh_token", refresh.as_str()),
        ]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let token2: serde_json::Value = r.json().unwrap();
    let r = http
        .post(format!("{}/token", authd.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("service", "registry"),
            ("client_id", "ops"),
            ("username", "alice"),
            ("password", password),
        ]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let access = e2e::process::wait_access_line(|| authd.log(), &id);
    assert_eq!(access["path"], "/token", "no query string: {access}");
    assert_eq!(access["route"], "token");
    assert_eq!(access["status"], 200);
    let log = authd.log();
    for secret in [
        password,
        token.as_str(),
        refresh.as_str(),
        token2["token"].as_str().unwrap(),
        e2e::authd::ADMIN_PASSWORD,
    ] {
        assert!(!log.contains(secret), "a secret is in the log:\n{log}");
    }
    for l in log
        .lines()
        .filter(|l| !l.starts_with("listening on ") && !l.starts_with("created admin user"))
    {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not a JSON line: {l}"
        );
    }
}

/// The separate metrics listener (`debug.addr`) serves the configured path
/// in plain HTTP; its address is printed after `listening on`.
#[test]
fn metrics_on_the_debug_listener() {
    let authd = e2e::authd::Authd::builder()
        .env("AUTHD_DEBUG_ADDR", "127.0.0.1:0")
        .env("AUTHD_DEBUG_PROMETHEUS_ENABLED", "true")
        .env("AUTHD_DEBUG_PROMETHEUS_PATH", "/prom")
        .start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let metrics_url = loop {
        let log = authd.log();
        if let Some(url) = log.lines().find_map(|l| l.strip_prefix("metrics on ")) {
            break url.trim().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `metrics on` line:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(metrics_url.ends_with("/prom"), "{metrics_url}");
    let http = e2e::api::http_client();
    let r = http
        .get(format!("{}/token?service=registry", authd.url()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(&metrics_url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("http_requests_total"));
}
