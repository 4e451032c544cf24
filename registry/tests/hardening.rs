//! Defects found by the security review (issue 10), driven in-process:
//! overflowing `Content-Range` values, and manifest references that are
//! not valid tags.

mod support;

use axum::body::Body;
use http::Method;
use support::TestApp;

#[tokio::test]
async fn content_range_that_overflows_is_refused_with_416_and_nothing_written() {
    let app = TestApp::new().await;
    let location = app.start_upload("a/b").await;
    for range in [
        "0-18446744073709551615",
        "bytes 0-18446744073709551615/*",
        "18446744073709551615-18446744073709551615",
    ] {
        let r = app
            .request(
                Method::PATCH,
                &location,
                &[("content-range", range)],
                b"abc".to_vec(),
            )
            .await;
        r.assert_error(416, "RANGE_INVALID");
        assert_eq!(r.header("range"), Some("0-0"), "{range}: {r:?}");
    }
    // A range that ends before it starts cannot be satisfied either.
    let r = app
        .request(
            Method::PATCH,
            &location,
            &[("content-range", "5-2")],
            b"abc".to_vec(),
        )
        .await;
    r.assert_error(416, "RANGE_INVALID");
    // Syntax errors stay 400.
    let r = app
        .request(
            Method::PATCH,
            &location,
            &[("content-range", "x-y")],
            b"abc".to_vec(),
        )
        .await;
    r.assert_error(400, "BLOB_UPLOAD_INVALID");
    // Nothing was appended: the upload is still empty and usable.
    let r = app.get(&location).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("range"), Some("0-0"));
    let r = app
        .request(
            Method::PATCH,
            &location,
            &[("content-range", "0-2")],
            b"abc".to_vec(),
        )
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.header("range"), Some("0-2"));
}

#[tokio::test]
async fn invalid_tag_reads_as_unknown_manifest_but_put_says_tag_invalid() {
    let app = TestApp::new().await;
    app.push_image("a/b", "v1", "seed").await;
    for method in [Method::GET, Method::HEAD, Method::DELETE] {
        let r = app
            .request(
                method.clone(),
                "/v2/a/b/manifests/.INVALID_MANIFEST_NAME",
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, 404, "{method}: {r:?}");
        if method != Method::HEAD {
            assert_eq!(r.error_code(), "MANIFEST_UNKNOWN", "{method}");
        }
    }
    let r = app
        .put_manifest("a/b", ".INVALID_MANIFEST_NAME", support::OCI_MANIFEST, "{}")
        .await;
    r.assert_error(400, "TAG_INVALID");
}

// ----- caps on open upload sessions -----

fn limits(per_repo: usize, per_client: usize, empty_age: &str) -> String {
    format!(
        "storage:\n  delete:\n    enabled: true\n  maintenance:\n    uploadlimits:\n      \
         perrepository: {per_repo}\n      perclient: {per_client}\n      emptyage: {empty_age}\n"
    )
}

/// `POST /v2/<repo>/blobs/uploads/` from `peer`, if given.
async fn post_upload(app: &TestApp, repo: &str, peer: Option<&str>) -> support::TestResponse {
    let mut req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("/v2/{repo}/blobs/uploads/"))
        .body(Body::empty())
        .expect("request");
    if let Some(p) = peer {
        let addr: std::net::SocketAddr = p.parse().expect("socket address");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(addr));
    }
    app.send(req).await
}

#[track_caller]
fn assert_too_many(r: &support::TestResponse) {
    r.assert_error(429, "TOOMANYREQUESTS");
    assert_eq!(r.header("retry-after"), Some("60"), "{r:?}");
}

#[tokio::test]
async fn sessions_per_repository_are_capped_and_freed_by_completion_and_cancel() {
    let app = TestApp::with_config(&limits(3, 0, "1h")).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(app.start_upload("a/b").await);
    }
    assert_too_many(&post_upload(&app, "a/b", None).await);
    // Another repository has its own count.
    assert_eq!(post_upload(&app, "a/c", None).await.status, 202);

    // Cancelling frees a slot.
    assert_eq!(app.delete(&open[0]).await.status, 204);
    app.start_upload("a/b").await;
    assert_too_many(&post_upload(&app, "a/b", None).await);

    // So does completing an upload.
    let data = b"some blob".to_vec();
    let digest = registry::oci::Digest::sha256_of(&data);
    let r = app
        .request(
            Method::PUT,
            &format!("{}?digest={digest}", open[1]),
            &[],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    // A monolithic upload that fails leaves nothing counted, one that
    // succeeds neither.
    let wrong = registry::oci::Digest::sha256_of(b"other");
    let r = app
        .request(
            Method::POST,
            &format!("/v2/a/b/blobs/uploads/?digest={wrong}"),
            &[],
            data.clone(),
        )
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    let r = app
        .request(
            Method::POST,
            &format!("/v2/a/b/blobs/uploads/?digest={digest}"),
            &[],
            data,
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(post_upload(&app, "a/b", None).await.status, 202);
    assert_too_many(&post_upload(&app, "a/b", None).await);
}

#[tokio::test]
async fn sessions_per_client_are_capped_by_address_across_repositories() {
    let app = TestApp::with_config(&limits(0, 2, "1h")).await;
    let one = Some("192.0.2.1:40000");
    assert_eq!(post_upload(&app, "x/one", one).await.status, 202);
    assert_eq!(
        post_upload(&app, "x/two", Some("192.0.2.1:40001"))
            .await
            .status,
        202
    );
    assert_too_many(&post_upload(&app, "x/three", one).await);
    // Another client is not held up.
    assert_eq!(
        post_upload(&app, "x/three", Some("192.0.2.2:40000"))
            .await
            .status,
        202
    );
    // IPv6 clients count by /64.
    assert_eq!(
        post_upload(&app, "y", Some("[2001:db8::1]:1")).await.status,
        202
    );
    assert_eq!(
        post_upload(&app, "y", Some("[2001:db8::2]:1")).await.status,
        202
    );
    assert_too_many(&post_upload(&app, "y", Some("[2001:db8::3]:1")).await);
    assert_eq!(
        post_upload(&app, "y", Some("[2001:db8:0:1::3]:1"))
            .await
            .status,
        202
    );
}

#[tokio::test]
async fn session_counts_survive_a_restart() {
    let config = limits(2, 0, "1h");
    let app = TestApp::with_config(&config).await;
    app.start_upload("r").await;
    app.start_upload("r").await;
    assert_too_many(&post_upload(&app, "r", None).await);
    let TestApp { dir, .. } = app;
    let root = dir.path().join("root");
    let restarted = TestApp::with_root(dir, root, &config).await;
    assert_too_many(&post_upload(&restarted, "r", None).await);
}

#[tokio::test]
async fn empty_sessions_are_purged_once_stale_when_the_cap_is_reached() {
    let app = TestApp::with_config(&limits(2, 0, "1s")).await;
    let empty = app.start_upload("e").await;
    let with_data = app.start_upload("e").await;
    let r = app
        .request(Method::PATCH, &with_data, &[], b"data".to_vec())
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    assert_too_many(&post_upload(&app, "e", None).await);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // The empty one went stale: purged to make room; the other is kept.
    assert_eq!(post_upload(&app, "e", None).await.status, 202);
    app.get(&empty)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(app.get(&with_data).await.status, 204);
}

#[tokio::test]
async fn the_purging_job_removes_stale_empty_sessions_sooner() {
    use registry::storage::gc::GcOptions;
    let app = TestApp::new().await;
    let empty = app.start_upload("p").await;
    let with_data = app.start_upload("p").await;
    app.request(Method::PATCH, &with_data, &[], b"data".to_vec())
        .await;
    let storage = app.offline_storage();
    let purge = |empty_age: u64| GcOptions {
        uploads_only: true,
        empty_upload_max_age: Some(std::time::Duration::from_secs(empty_age)),
        ..GcOptions::default()
    };
    let report = storage.gc(&purge(3600)).expect("purge");
    assert_eq!(report.uploads_deleted, 0, "{report}");
    let report = storage.gc(&purge(0)).expect("purge");
    assert_eq!(report.uploads_deleted, 1, "{report}");
    app.get(&empty)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(app.get(&with_data).await.status, 204);
}

/// The real server tells clients apart by their address: one that reached
/// its cap is refused while another, from 127.0.0.2, is not.
#[test]
fn the_server_caps_sessions_by_peer_address() {
    let reg = e2e::Registry::builder()
        .yaml(
            "storage.maintenance.uploadlimits.perclient",
            serde_json::json!(3),
        )
        .start();
    e2e::init_crypto();
    let from = |ip: [u8; 4]| {
        reqwest::blocking::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .expect("client")
    };
    let post = |client: &reqwest::blocking::Client, repo: &str| {
        client
            .post(format!("{}/v2/{repo}/blobs/uploads/", reg.url()))
            .send()
            .expect("POST")
    };
    let (first, second) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    for repo in ["p/a", "p/b", "p/c"] {
        assert_eq!(post(&first, repo).status(), 202);
    }
    let refused = post(&first, "p/d");
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "60");
    assert_eq!(post(&second, "p/d").status(), 202);
}
