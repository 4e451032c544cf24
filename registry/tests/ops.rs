//! Operations: the listener's connection cap under a file-descriptor limit,
//! JSON access logs with request ids, Prometheus metrics (on the main
//! listener and on `http.debug.addr`), and SIGTERM during an upload.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::Daemon;
use registry::oci::Digest;
use support::TestApp;
use support::process::{Client, Server};

fn url_addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// `GET /v2/` on a fresh connection; the status line, or why not.
fn get_base(addr: &str, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[test]
fn slow_sockets_do_not_starve_clients_under_a_file_limit() {
    // The registry may open 64 files; 150 sockets trickling headers would
    // take every descriptor if nothing capped them (its default cap is
    // half the limit), and then real clients would wait in the backlog.
    let prlimit = e2e::bins::require_tool("prlimit", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut cmd = Command::new(prlimit);
    cmd.args(["--nofile=64:64", "--"])
        .arg(env!("CARGO_BIN_EXE_registry"))
        .arg("serve")
        .env("REGISTRY_HTTP_ADDR", "127.0.0.1:0")
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &root)
        .env("REGISTRY_LOG_LEVEL", "warn");
    let mut daemon = Daemon::spawn("registry", &cmd, &dir.path().join("registry.log"));
    let url = daemon.wait_listening(Duration::from_secs(30));
    let server = Server { daemon, url };
    let addr = url_addr(&server.url);
    let mut slow = Vec::new();
    for _ in 0..150 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /v2/ HTTP/1.1\r\nX-Slow: a").unwrap();
        slow.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let started = Instant::now();
        let status = get_base(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {round}: no answer with 150 slow sockets open: {e}"));
        assert_eq!(status, "HTTP/1.1 200 OK", "round {round}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn json_access_log_carries_request_id_subject_and_no_query() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let password = "pw-never-logged-5150";
    std::fs::write(
        &htpasswd,
        format!("alice:{}\n", bcrypt::hash(password, 4).unwrap()),
    )
    .unwrap();
    let server = Server::start(
        &root,
        &[
            ("REGISTRY_LOG_LEVEL", "info"),
            ("REGISTRY_LOG_FORMATTER", "json"),
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", htpasswd.to_str().unwrap()),
        ],
    );
    let http = e2e::api::http_client();
    let resp = http
        .get(format!(
            "{}/v2/team/app/manifests/latest?secret=query-never-logged",
            server.url
        ))
        .basic_auth("alice", Some(password))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 404);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let other = http
        .get(format!("{}/v2/", server.url))
        .send()
        .unwrap()
        .headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, other, "request ids are unique");

    let line = e2e::process::wait_access_line(|| server.daemon.log(), &id);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v2/team/app/manifests/latest");
    assert_eq!(line["route"], "manifest");
    assert_eq!(line["status"], 404);
    assert_eq!(line["subject"], "alice");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    assert!(line["bytes_out"].as_u64().unwrap() > 0, "{line}");
    let log = server.daemon.log();
    assert!(!log.contains("query-never-logged"), "query logged:\n{log}");
    assert!(!log.contains(password), "password logged:\n{log}");
    for l in log.lines().filter(|l| !l.starts_with("listening on ")) {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not a JSON line: {l}"
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_by_endpoint_without_repository_names() {
    let app = TestApp::new().await;
    let (digest, _) = app.push_image("secret-team/hidden-repo", "v1", "m").await;
    for _ in 0..3 {
        let r = app
            .get(&format!("/v2/secret-team/hidden-repo/manifests/{digest}"))
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        app.get("/v2/secret-team/hidden-repo/manifests/nope")
            .await
            .status,
        404
    );
    let r = app.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("x-request-id").is_some());
    let text = String::from_utf8(r.body).unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert!(value(r#"http_requests_total{route="manifest",method="GET",status="200"}"#) >= 3.0);
    assert!(value(r#"http_requests_total{route="manifest",method="GET",status="404"}"#) >= 1.0);
    assert!(value(r#"http_request_duration_seconds_count{route="manifest",method="GET"}"#) >= 4.0);
    assert!(value(r#"http_request_bytes_total{route="upload_start"}"#) > 0.0);
    assert!(value(r#"http_response_bytes_total{route="manifest"}"#) > 0.0);
    assert!(text.contains("registry_uploads_in_progress"), "{text}");
    assert!(!text.contains("hidden-repo") && !text.contains("secret-team"));
}

/// Regression: the notification workers registered their series on the
/// no-op recorder when they ran before the router was built, and
/// `registry_notifications_pending` was missing from a restarted registry.
#[tokio::test]
async fn series_of_workers_started_with_the_state_are_exported() {
    // A closed port: the endpoint is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/events", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let config = registry::config::Config::from_yaml(
        &format!("notifications:\n  endpoints:\n    - name: down\n      url: {url}\n"),
        [(
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY".to_owned(),
            dir.path().join("root").display().to_string(),
        )],
    )
    .unwrap();
    let state = registry::build_state(config).await.unwrap();
    // The workers run before the router exists.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = registry::app(state);
    let response = tower::ServiceExt::oneshot(
        app,
        axum::http::Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.lines()
            .any(|l| l == r#"registry_notifications_pending{endpoint="down"} 0"#),
        "{text}"
    );
}

#[test]
fn metrics_on_the_debug_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = Server::start(
        &root,
        &[
            ("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:0"),
            ("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/prom"),
        ],
    );
    // Printed right after `listening on`.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics_url = loop {
        let log = server.daemon.log();
        if let Some(url) = log.lines().find_map(|l| l.strip_prefix("metrics on ")) {
            break url.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "no `metrics on` line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(metrics_url.ends_with("/prom"), "{metrics_url}");
    let http = e2e::api::http_client();
    assert_eq!(
        http.get(format!("{}/v2/", server.url))
            .send()
            .unwrap()
            .status(),
        200
    );
    let r = http.get(&metrics_url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().contains("http_requests_total"));
    for path in ["/metrics", "/prom"] {
        let r = http.get(format!("{}{path}", server.url)).send().unwrap();
        assert_eq!(r.status(), 404, "{path} on the main listener");
    }
}

#[test]
fn scheduled_gc_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let server = Server::start(
        &root,
        &[
            ("REGISTRY_STORAGE_MAINTENANCE_GC_ENABLED", "true"),
            ("REGISTRY_STORAGE_MAINTENANCE_GC_INTERVAL", "300ms"),
        ],
    );
    let http = e2e::api::http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = http
            .get(format!("{}/metrics", server.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let runs = text.lines().find_map(|l| {
            l.strip_prefix(r#"registry_gc_runs_total{job="gc",result="ok"} "#)
                .map(|v| v.parse::<f64>().unwrap())
        });
        if runs.is_some_and(|n| n >= 2.0) {
            assert!(
                text.contains(r#"registry_gc_bytes_freed_total{job="gc"}"#),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled GC counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn sigterm_during_a_patch_leaves_a_resumable_upload() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let env = [("REGISTRY_HTTP_DRAINTIMEOUT", "1s")];
    let data: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let digest = Digest::sha256_of(&data);

    let mut server = Server::start(&root, &env);
    let client = Client::new(&server.url);
    let r = client
        .http
        .post(format!("{}/v2/resume/blobs/uploads/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let path = location
        .strip_prefix(&server.url)
        .unwrap_or(&location)
        .to_owned();

    // A PATCH announcing everything, of which 3 MiB arrive before SIGTERM
    // and a trickle after, until the drain timeout cuts it.
    let addr = url_addr(&server.url);
    let sent = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(
                format!(
                    "PATCH {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                    data.len()
                )
                .as_bytes(),
            )
            .unwrap();
            let mut sent = 0;
            for chunk in data.chunks(64 * 1024) {
                let pause = if sent < 3 * 1024 * 1024 { 0 } else { 200 };
                std::thread::sleep(Duration::from_millis(pause));
                if s.write_all(chunk).is_err() {
                    break;
                }
                sent += chunk.len();
                if sent >= 4 * 1024 * 1024 {
                    break;
                }
            }
            // Hold the connection until the server drops it.
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            sent
        });
        std::thread::sleep(Duration::from_millis(700));
        server.daemon.signal(nix::sys::signal::Signal::SIGTERM);
        writer.join().unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.daemon.is_running() {
        assert!(
            Instant::now() < deadline,
            "registry did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(server);

    let server = Server::start(&root, &env);
    let client = Client::new(&server.url);
    let upload = format!("{}{path}", server.url);
    let r = client.http.get(&upload).send().await.unwrap();
    assert_eq!(r.status(), 204, "upload status after restart");
    let range = r.headers()["range"].to_str().unwrap().to_owned();
    let offset: usize = range
        .strip_prefix("0-")
        .map_or(0, |end| end.parse::<usize>().unwrap() + 1);
    assert!(
        offset > 0 && offset <= sent,
        "offset {offset} after {sent} bytes sent (Range {range})"
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", server.url)
    };
    let r = client
        .http
        .patch(&location)
        .header("content-range", format!("{offset}-{}", data.len() - 1))
        .body(data[offset..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let location = if location.starts_with("http") {
        location
    } else {
        format!("{}{location}", server.url)
    };
    let r = client
        .http
        .put(e2e::api::with_digest(&location, &digest.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let blob = client
        .http
        .get(format!("{}/v2/resume/blobs/{digest}", server.url))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(Digest::sha256_of(&blob), digest);
}
