//! The distribution API over a real socket against our binary: chunked
//! uploads (416, status, cancel, resume after a restart), pagination with
//! `Link`, deletes, `Range`, HEAD, and error codes for bad input. These pin
//! down behaviour the clients above rely on without exercising directly.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;

use e2e::api::{Api, error_codes, with_digest};
use e2e::digest::sha256;
use e2e::fixtures::random_bytes;
use e2e::{Impl, Registry};
use reqwest::Method;
use reqwest::blocking::Response;
use serde_json::{Value, json};

/// The path and query of a `Location` header (absolute or relative), so that
/// it can be replayed against a restarted server on another port.
fn location_path(resp: &Response) -> String {
    let loc = resp
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("ASCII Location");
    match loc.split_once("://") {
        Some((_, rest)) => rest[rest.find('/').expect("path in Location")..].to_owned(),
        None => loc.to_owned(),
    }
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII header")
        .to_owned()
}

/// Asserts the status and that the JSON body carries `code`.
fn assert_error(resp: Response, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status().as_u16(), status, "{what}: status");
    let body: Value = resp
        .json()
        .unwrap_or_else(|e| panic!("{what}: error body is not JSON: {e}"));
    assert!(
        error_codes(&body).iter().any(|c| c == code),
        "{what}: want {code} in {body}"
    );
}

fn start_upload(api: &Api, repo: &str) -> String {
    let resp = api
        .request(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("POST upload");
    assert_eq!(resp.status(), 202, "POST upload");
    location_path(&resp)
}

fn patch(api: &Api, location: &str, start: usize, data: &[u8]) -> Response {
    api.request(Method::PATCH, location)
        .header("Content-Type", "application/octet-stream")
        .header(
            "Content-Range",
            format!("{start}-{}", start + data.len() - 1),
        )
        .body(data.to_vec())
        .send()
        .expect("PATCH")
}

/// Pushes `data` as a blob of `repo`; returns its digest.
fn push_blob(api: &Api, repo: &str, data: &[u8]) -> String {
    api.push_blob(repo, data)
}

/// Pushes a one-layer OCI image tagged `tag`; returns the manifest digest.
fn push_image(api: &Api, repo: &str, tag: &str) -> String {
    let layer = random_bytes(1000);
    let layer_digest = push_blob(api, repo, &layer);
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}))
    .expect("config JSON");
    let config_digest = push_blob(api, repo, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .expect("manifest JSON");
    put_manifest(api, repo, tag, &manifest)
}

fn put_manifest(api: &Api, repo: &str, reference: &str, manifest: &[u8]) -> String {
    api.put_manifest(
        repo,
        reference,
        "application/vnd.oci.image.manifest.v1+json",
        manifest,
    )
}

#[test]
fn chunked_upload_rejects_gaps_reports_status_and_resumes_after_restart() {
    let data_dir = e2e::temp_dir("protocol");
    let root = data_dir.path().join("registry");
    let mut reg = Registry::builder().root(&root).start();
    let api = reg.api();
    let blob = random_bytes(3 * 100_000 + 123);
    let (one, rest) = blob.split_at(100_000);
    let (two, three) = rest.split_at(100_000);

    let location = start_upload(&api, "e2e/chunked");
    let resp = patch(&api, &location, 0, one);
    assert_eq!(resp.status(), 202, "first chunk");
    assert_eq!(header(&resp, "range"), "0-99999");
    let location = location_path(&resp);

    // A chunk that does not start at the current offset.
    let resp = patch(&api, &location, 150_000, two);
    assert_eq!(resp.status(), 416, "out-of-order chunk");
    if reg.kind() == Impl::Ours {
        assert_eq!(header(&resp, "range"), "0-99999", "416 carries the Range");
    }

    // Upload status.
    let resp = api.get(&location);
    assert_eq!(resp.status(), 204, "upload status");
    assert_eq!(header(&resp, "range"), "0-99999");
    assert!(resp.headers().contains_key("location"));

    // Upload state lives on disk: it survives a restart.
    let builder = reg.builder_again();
    reg.stop();
    let reg = builder.start();
    let api = reg.api();
    let resp = patch(&api, &location, 100_000, two);
    assert_eq!(resp.status(), 202, "chunk after restart");
    let location = location_path(&resp);
    let resp = patch(&api, &location, 200_000, three);
    assert_eq!(resp.status(), 202, "last chunk");
    let location = location_path(&resp);
    let digest = sha256(&blob);
    let resp = api
        .request(Method::PUT, &with_digest(&location, &digest))
        .send()
        .expect("PUT completion");
    assert_eq!(resp.status(), 201, "completion");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    let got = api
        .get(&format!("/v2/e2e/chunked/blobs/{digest}"))
        .bytes()
        .expect("blob body");
    assert_eq!(sha256(&got), digest);
}

#[test]
fn cancelled_upload_is_gone_and_wrong_digest_leaves_no_blob() {
    let reg = Registry::start();
    let api = reg.api();
    let location = start_upload(&api, "e2e/cancel");
    let resp = api
        .request(Method::DELETE, &location)
        .send()
        .expect("DELETE upload");
    assert_eq!(resp.status(), 204, "cancel upload");
    assert_error(
        api.get(&location),
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "status of a cancelled upload",
    );

    let data = random_bytes(5000);
    let wrong = sha256(b"something else");
    let location = start_upload(&api, "e2e/cancel");
    let resp = api
        .request(Method::PUT, &with_digest(&location, &wrong))
        .body(data.clone())
        .send()
        .expect("PUT");
    assert_error(resp, 400, "DIGEST_INVALID", "PUT with a wrong digest");
    for digest in [wrong, sha256(&data)] {
        let resp = api
            .request(Method::HEAD, &format!("/v2/e2e/cancel/blobs/{digest}"))
            .send()
            .expect("HEAD");
        assert_eq!(resp.status(), 404, "no blob {digest} after a failed upload");
    }
}

#[test]
fn manifest_with_unknown_blob_is_refused() {
    let reg = Registry::start();
    let api = reg.api();
    let missing = sha256(b"never uploaded");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": missing, "size": 14},
        "layers": [],
    }))
    .expect("manifest JSON");
    let resp = api
        .request(Method::PUT, "/v2/e2e/unknown/manifests/v1")
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest)
        .send()
        .expect("PUT manifest");
    assert_error(
        resp,
        400,
        "MANIFEST_BLOB_UNKNOWN",
        "manifest with unknown blob",
    );
}

#[test]
fn tags_and_catalog_paginate_with_link_in_lexical_order() {
    let reg = Registry::start();
    let api = reg.api();
    let digest = push_image(&api, "e2e/pages", "b");
    let (manifest, _) = api.manifest("e2e/pages", &digest);
    for tag in ["a", "c", "B", "d1", "d0"] {
        put_manifest(&api, "e2e/pages", tag, &manifest);
    }
    push_image(&api, "e2e/other", "x");
    push_image(&api, "a-first/repo", "x");

    let resp = api.get("/v2/e2e/pages/tags/list?n=2");
    assert_eq!(resp.status(), 200);
    let link = resp
        .headers()
        .get("link")
        .expect("Link header on a partial page")
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(link.contains("rel=\"next\""), "{link}");
    let body: Value = resp.json().expect("JSON");
    assert_eq!(body["name"], "e2e/pages");
    assert_eq!(body["tags"], json!(["B", "a"]));
    assert_eq!(
        api.tags("e2e/pages", 2),
        ["B", "a", "b", "c", "d0", "d1"].map(str::to_owned).to_vec()
    );
    let resp = api.get("/v2/e2e/pages/tags/list?n=0");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().expect("JSON");
    assert!(
        body["tags"].as_array().is_none_or(Vec::is_empty),
        "n=0 gives an empty list: {body}"
    );
    let resp = api.get("/v2/e2e/pages/tags/list?n=10&last=b");
    let body: Value = resp.json().expect("JSON");
    assert_eq!(body["tags"], json!(["c", "d0", "d1"]));

    assert_eq!(
        api.catalog(1),
        ["a-first/repo", "e2e/other", "e2e/pages"]
            .map(str::to_owned)
            .to_vec()
    );
    assert_error(
        api.get("/v2/e2e/nothing-here/tags/list"),
        404,
        "NAME_UNKNOWN",
        "tags of an unknown repository",
    );
}

#[test]
fn deletes_are_unsupported_when_disabled_and_work_when_enabled() {
    let reg = Registry::start();
    let api = reg.api();
    let digest = push_image(&api, "e2e/nodelete", "v1");
    let resp = api
        .request(
            Method::DELETE,
            &format!("/v2/e2e/nodelete/manifests/{digest}"),
        )
        .send()
        .expect("DELETE");
    assert_error(resp, 405, "UNSUPPORTED", "delete while disabled");
    assert_eq!(api.manifest_digest("e2e/nodelete", "v1"), Some(digest));
    drop(reg);

    let reg = Registry::builder().delete_enabled(true).start();
    let api = reg.api();
    let digest = push_image(&api, "e2e/delete", "v1");
    let (manifest, _) = api.manifest("e2e/delete", &digest);
    put_manifest(&api, "e2e/delete", "v2", &manifest);
    // Deleting a tag leaves the manifest and the other tag.
    if reg.kind() == Impl::Ours {
        let resp = api
            .request(Method::DELETE, "/v2/e2e/delete/manifests/v1")
            .send()
            .expect("DELETE tag");
        assert_eq!(resp.status(), 202, "delete tag");
        assert_eq!(api.manifest_digest("e2e/delete", "v1"), None);
        assert_eq!(
            api.manifest_digest("e2e/delete", "v2"),
            Some(digest.clone())
        );
    }
    // Deleting by digest removes the manifest and every tag on it.
    let resp = api
        .request(
            Method::DELETE,
            &format!("/v2/e2e/delete/manifests/{digest}"),
        )
        .send()
        .expect("DELETE manifest");
    assert_eq!(resp.status(), 202, "delete manifest");
    assert_eq!(api.manifest_digest("e2e/delete", &digest), None);
    assert_eq!(api.manifest_digest("e2e/delete", "v2"), None);
}

#[test]
fn blob_head_and_range_get() {
    let reg = Registry::start();
    let api = reg.api();
    let data = random_bytes(10_000);
    let digest = push_blob(&api, "e2e/range", &data);
    let path = format!("/v2/e2e/range/blobs/{digest}");

    let resp = api.request(Method::HEAD, &path).send().expect("HEAD");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "content-length"), "10000");
    assert_eq!(header(&resp, "docker-content-digest"), digest);
    assert!(resp.bytes().expect("HEAD body").is_empty());

    let resp = api
        .request(Method::GET, &path)
        .header("Range", "bytes=100-199")
        .send()
        .expect("GET range");
    assert_eq!(resp.status(), 206);
    assert_eq!(header(&resp, "content-range"), "bytes 100-199/10000");
    assert_eq!(resp.bytes().expect("body").as_ref(), &data[100..200]);

    assert_error(
        api.get(&format!("/v2/e2e/range/blobs/{}", sha256(b"absent"))),
        404,
        "BLOB_UNKNOWN",
        "unknown blob",
    );
}

/// Sends a raw request line (no client-side path normalisation); returns the
/// status code and the body.
fn raw_get(host: &str, target: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(host).expect("connect");
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn bad_names_digests_and_path_tricks_get_json_errors() {
    let reg = Registry::start();
    let api = reg.api();
    assert_error(
        api.get("/v2/UPPER/case/tags/list"),
        400,
        "NAME_INVALID",
        "upper-case repository name",
    );
    // An invalid tag: which code is debatable (distribution answers 404
    // from its router); it must be a 4xx with a JSON error.
    let resp = api.get("/v2/e2e/x/manifests/bad:tag!");
    assert!(
        resp.status().is_client_error(),
        "invalid tag: {}",
        resp.status()
    );
    let body: Value = resp.json().expect("invalid tag: JSON error body");
    assert!(!error_codes(&body).is_empty(), "invalid tag: {body}");
    assert_error(
        api.get("/v2/e2e/x/blobs/sha256:1234"),
        400,
        "DIGEST_INVALID",
        "short digest",
    );
    // Path tricks: never 2xx, always a JSON error, nothing outside the root.
    for target in [
        "/v2/../../etc/passwd/tags/list",
        "/v2/e2e/%2e%2e/%2e%2e/tags/list",
        "/v2/e2e/x%00y/tags/list",
        "/v2//etc/tags/list",
        "/v2/e2e/x/blobs/sha256:..%2f..%2f..%2fetc%2fpasswd",
    ] {
        let (status, body) = raw_get(reg.host(), target);
        assert!((400..500).contains(&status), "{target}: status {status}");
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{target}: body is not JSON ({e}): {body:?}"));
        assert!(!error_codes(&json).is_empty(), "{target}: {json}");
    }
}
