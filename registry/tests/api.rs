//! The registry API through `app()`, in-process: every endpoint's normal
//! flow and the bad input each must refuse with the right OCI error.
#![allow(clippy::many_single_char_names)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use e2e::fixtures::random_bytes;
use http::{Method, StatusCode};
use registry::oci::{Digest, DigestAlgorithm};
use support::*;

#[tokio::test]
async fn base_endpoint_and_version_header() {
    let app = TestApp::new().await;
    let r = app.get("/v2/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), serde_json::json!({}));
    assert_eq!(app.get("/v2").await.status, StatusCode::OK);
    assert_eq!(app.head("/v2/").await.status, StatusCode::OK);
    // Unknown routes still answer JSON errors.
    app.get("/nope").await.assert_error(404, "UNSUPPORTED");
    app.get("/v2/a/frobnicate")
        .await
        .assert_error(404, "UNSUPPORTED");
    app.request(Method::POST, "/v2/", &[], Body::empty())
        .await
        .assert_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn monolithic_upload_then_get_head_and_range() {
    let app = TestApp::new().await;
    let data = b"hello blob world".to_vec();
    let digest = app.push_blob("lib/a", &data).await;
    let r = app.get(&format!("/v2/lib/a/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, data);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(r.header("content-length"), Some("16"));
    let r = app.head(&format!("/v2/lib/a/blobs/{digest}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("16"));
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    let r = app
        .request(
            Method::GET,
            &format!("/v2/lib/a/blobs/{digest}"),
            &[("range", "bytes=6-9")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, b"blob");
    assert_eq!(r.header("content-range"), Some("bytes 6-9/16"));
    let r = app
        .request(
            Method::GET,
            &format!("/v2/lib/a/blobs/{digest}"),
            &[("range", "bytes=99-")],
            Body::empty(),
        )
        .await;
    r.assert_error(416, "RANGE_INVALID");
    assert_eq!(r.header("content-range"), Some("bytes */16"));
    // The blob is linked only into the repository it was pushed to.
    app.get(&format!("/v2/lib/b/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    app.head(&format!("/v2/lib/a/blobs/{}", Digest::sha256_of(b"other")))
        .await;
}

#[tokio::test]
async fn chunked_upload_with_status_and_out_of_order_chunk() {
    let app = TestApp::new().await;
    let loc = app.start_upload("chunky").await;
    assert!(loc.starts_with("/v2/chunky/blobs/uploads/"));
    let r = app.get(&loc).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), Some("0-0"));
    let r = app
        .request(
            Method::PATCH,
            &loc,
            &[("content-range", "0-4"), ("content-length", "5")],
            "hello",
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    assert_eq!(r.header("range"), Some("0-4"));
    assert_eq!(r.header("location"), Some(loc.as_str()));
    // A chunk that does not start at the end: 416 with the current range.
    let r = app
        .request(
            Method::PATCH,
            &loc,
            &[("content-range", "10-14"), ("content-length", "5")],
            "world",
        )
        .await;
    r.assert_error(416, "RANGE_INVALID");
    assert_eq!(r.header("range"), Some("0-4"));
    // Length disagreeing with the range is refused and nothing is kept.
    let r = app
        .request(Method::PATCH, &loc, &[("content-range", "5-9")], "toolong!")
        .await;
    r.assert_error(400, "SIZE_INVALID");
    assert_eq!(app.get(&loc).await.header("range"), Some("0-4"));
    // Chunk without Content-Range (docker's streaming PATCH) appends.
    let r = app.request(Method::PATCH, &loc, &[], " world").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), Some("0-10"));
    let digest = Digest::sha256_of(b"hello world!");
    let r = app
        .request(Method::PUT, &format!("{loc}?digest={digest}"), &[], "!")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/chunky/blobs/{digest}").as_str())
    );
    assert_eq!(
        app.get(&format!("/v2/chunky/blobs/{digest}")).await.body,
        b"hello world!"
    );
    // The upload is gone once completed.
    app.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    assert!(
        !app.files().iter().any(|f| f.contains("_uploads")),
        "{:?}",
        app.files()
    );
}

#[tokio::test]
async fn upload_completion_with_wrong_digest_leaves_nothing() {
    let app = TestApp::new().await;
    let loc = app.start_upload("r").await;
    app.request(Method::PATCH, &loc, &[], "some data").await;
    let wrong = Digest::sha256_of(b"other data");
    let r = app
        .request(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[],
            Body::empty(),
        )
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    app.get(&format!("/v2/r/blobs/{wrong}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    let right = Digest::sha256_of(b"some data");
    app.get(&format!("/v2/r/blobs/{right}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    assert!(
        !app.files()
            .iter()
            .any(|f| f.contains("blobs/sha256") || f.contains("_uploads/")),
        "{:?}",
        app.files()
    );
    // Monolithic POST with a wrong digest: same.
    let r = app
        .request(
            Method::POST,
            &format!("/v2/r/blobs/uploads/?digest={wrong}"),
            &[],
            "data",
        )
        .await;
    r.assert_error(400, "DIGEST_INVALID");
    assert!(
        !app.files()
            .iter()
            .any(|f| f.contains("blobs/sha256") || f.contains("_uploads/")),
        "{:?}",
        app.files()
    );
}

/// A completion retried after its answer was lost (a proxy retrying the
/// PUT on another replica after the first died answering) finds the upload
/// gone: it is answered `201` when the repository holds the blob, and
/// `BLOB_UPLOAD_UNKNOWN` when it does not, even if another repository does.
#[tokio::test]
async fn a_retried_completion_of_a_completed_upload_is_created() {
    let app = TestApp::new().await;
    let loc = app.start_upload("r").await;
    let digest = Digest::sha256_of(b"layer");
    let put = format!("{loc}?digest={digest}");
    let first = app.request(Method::PUT, &put, &[], "layer").await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let again = app.request(Method::PUT, &put, &[], "layer").await;
    assert_eq!(again.status, StatusCode::CREATED, "{again:?}");
    for h in ["location", "docker-content-digest"] {
        assert_eq!(again.header(h), first.header(h), "{h}");
    }
    assert_eq!(
        app.get(&format!("/v2/r/blobs/{digest}")).await.body,
        b"layer"
    );
    // Another repository's upload id with the same digest: not its blob.
    let other = loc.replacen("/v2/r/", "/v2/s/", 1);
    app.request(
        Method::PUT,
        &format!("{other}?digest={digest}"),
        &[],
        "layer",
    )
    .await
    .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get(&format!("/v2/s/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    // An unknown upload and a digest the repository lacks: unknown.
    let missing = Digest::sha256_of(b"never pushed");
    app.request(Method::PUT, &format!("{loc}?digest={missing}"), &[], "x")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// A completion retried after its first try died midway, as a replica
/// killed under a proxy that retries the PUT on another leaves it: the
/// body that try appended is not appended twice, and the blob that try
/// committed but did not link is linked. What the dead replica did is
/// done here through a second storage over the same root.
#[tokio::test]
async fn a_completion_retried_after_its_first_try_died_is_created() {
    use registry::oci::RepoName;
    let app = TestApp::new().await;
    let dead = Arc::new(app.offline_storage());
    let name = RepoName::parse("r").unwrap();
    let id_of = |loc: &str| uuid::Uuid::parse_str(loc.rsplit('/').next().unwrap()).unwrap();
    // Steps of a completion with a body, as the dead replica took them.
    let begin_and_append = |id, body: &'static [u8]| {
        let (dead, name) = (dead.clone(), name.clone());
        async move {
            let digest = Digest::sha256_of(body);
            let len = Some(body.len() as u64);
            let mut state = dead.lock_upload(&name, id).await.unwrap();
            let known = state.known_digest();
            let replay = dead
                .begin_completion(&name, id, state.offset, known.as_ref(), &digest, len)
                .unwrap();
            assert!(!replay, "a first try is no replay");
            let chunk = bytes::Bytes::from_static(body);
            let chunks = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(chunk)]);
            dead.append_upload(&name, id, &mut state, chunks, len)
                .await
                .unwrap();
            (digest, state)
        }
    };

    // Died after appending its body, before committing.
    let loc = app.start_upload("r").await;
    let (digest, _) = begin_and_append(id_of(&loc), b"appended once").await;
    // A proxy resends the request as it came, Content-Length included.
    let retry_is_created = |loc: String, digest: Digest, body: &'static str| {
        let app = &app;
        async move {
            let put = format!("{loc}?digest={digest}");
            let length = body.len().to_string();
            let headers = [("content-length", length.as_str())];
            let retried = app.request(Method::PUT, &put, &headers, body).await;
            assert_eq!(retried.status, StatusCode::CREATED, "{retried:?}");
            let got = app.get(&format!("/v2/r/blobs/{digest}")).await;
            assert_eq!(got.body, body.as_bytes());
        }
    };
    retry_is_created(loc, digest, "appended once").await;

    // Died after committing, before linking: its record, no data, the
    // blob stored, no link.
    let loc = app.start_upload("r").await;
    let id = id_of(&loc);
    let (digest, mut state) = begin_and_append(id, b"committed, not linked").await;
    dead.commit_upload(&name, id, &mut state, &digest).unwrap();
    assert!(dead.unlink_blob(&name, &digest).unwrap());
    let len = Some(b"committed, not linked".len() as u64);
    dead.begin_completion(&name, id, 0, None, &digest, len)
        .unwrap();
    app.get(&format!("/v2/r/blobs/{digest}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    retry_is_created(loc, digest, "committed, not linked").await;

    // A record whose upload was cancelled proves nothing: the blob, in
    // another repository, is not linked here.
    let loc = app.start_upload("r").await;
    let id = id_of(&loc);
    let theirs = app.push_blob("s", b"another repository's").await;
    dead.begin_completion(&name, id, 0, None, &theirs, Some(1))
        .unwrap();
    assert_eq!(app.delete(&loc).await.status, StatusCode::NO_CONTENT);
    app.request(Method::PUT, &format!("{loc}?digest={theirs}"), &[], "x")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get(&format!("/v2/r/blobs/{theirs}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn upload_completion_needs_a_valid_digest() {
    let app = TestApp::new().await;
    let loc = app.start_upload("r").await;
    app.request(Method::PUT, &loc, &[], "x")
        .await
        .assert_error(400, "DIGEST_INVALID");
    for bad in ["md5:abc", "sha256:xyz", "sha256:../../etc", "sha256:ABCDEF"] {
        app.request(
            Method::PUT,
            &format!("{loc}?digest={bad}"),
            &[],
            Body::empty(),
        )
        .await
        .assert_error(400, "DIGEST_INVALID");
    }
    // The upload survived the refusals.
    assert_eq!(app.get(&loc).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn sha512_blobs() {
    let app = TestApp::new().await;
    let data = b"sha512 content";
    let digest = Digest::of(DigestAlgorithm::Sha512, data);
    let r = app
        .request(
            Method::POST,
            &format!("/v2/r/blobs/uploads/?digest={digest}"),
            &[],
            data.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = app.get(&format!("/v2/r/blobs/{digest}")).await;
    assert_eq!(r.body, data);
    assert!(
        app.files()
            .iter()
            .any(|f| f.starts_with("docker/registry/v2/blobs/sha512/"))
    );
}

#[tokio::test]
async fn cancel_upload() {
    let app = TestApp::new().await;
    let loc = app.start_upload("r").await;
    assert_eq!(app.delete(&loc).await.status, StatusCode::NO_CONTENT);
    app.delete(&loc)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.request(Method::PATCH, &loc, &[], "x")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    // Upload IDs are scoped to their repository.
    let loc = app.start_upload("r").await;
    let other = loc.replace("/v2/r/", "/v2/s/");
    app.get(&other)
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
    app.get("/v2/r/blobs/uploads/not-a-uuid")
        .await
        .assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn cross_repository_mount() {
    let app = TestApp::new().await;
    let digest = app.push_blob("src/repo", b"shared layer").await;
    let r = app
        .request(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={digest}&from=src/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/dst/blobs/{digest}").as_str())
    );
    assert_eq!(
        app.get(&format!("/v2/dst/blobs/{digest}")).await.body,
        b"shared layer"
    );
    // Not in the source repository: a normal upload starts instead.
    let missing = Digest::sha256_of(b"nope");
    let r = app
        .request(
            Method::POST,
            &format!("/v2/dst2/blobs/uploads/?mount={missing}&from=src/repo"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .request(
            Method::POST,
            &format!("/v2/dst3/blobs/uploads/?mount={digest}&from=Bad..Name"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    app.request(
        Method::POST,
        "/v2/dst/blobs/uploads/?mount=sha256:bad&from=src/repo",
        &[],
        Body::empty(),
    )
    .await
    .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn manifest_push_pull_by_tag_and_digest() {
    let app = TestApp::new().await;
    let (digest, body) = app.push_image("team/app", "v1", "a").await;
    for reference in ["v1".to_owned(), digest.to_string()] {
        let r = app
            .get(&format!("/v2/team/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, body.as_bytes());
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(
            r.header("docker-content-digest"),
            Some(digest.to_string().as_str())
        );
        let r = app
            .head(&format!("/v2/team/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body.is_empty());
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
    }
    app.get("/v2/team/app/manifests/v2")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/team/other/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    app.get(&format!("/v2/team/other/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // PUT by digest returns the same digest; a wrong one is refused.
    let r = app
        .put_manifest("team/app", &digest.to_string(), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest.to_string().as_str())
    );
    assert_eq!(
        r.header("location"),
        Some(format!("/v2/team/app/manifests/{digest}").as_str())
    );
    let wrong = Digest::sha256_of(b"x");
    app.put_manifest("team/app", &wrong.to_string(), OCI_MANIFEST, &body)
        .await
        .assert_error(400, "DIGEST_INVALID");
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let app = TestApp::new().await;
    let config = br#"{"architecture":"arm64","os":"linux"}"#;
    let c = app.push_blob("multi", config).await;
    let l = app.push_blob("multi", b"layer").await;
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{c}","size":{}}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{l}","size":5}}]}}"#,
        config.len()
    );
    let r = app.put_manifest("multi", "arm", DOCKER_MANIFEST, &m).await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let md = Digest::sha256_of(m.as_bytes());
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{md}","size":{},"platform":{{"architecture":"arm64","os":"linux"}}}}]}}"#,
        m.len()
    );
    let r = app
        .put_manifest(
            "multi",
            "latest",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            &list,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    let r = app.get("/v2/multi/manifests/latest").await;
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.docker.distribution.manifest.list.v2+json")
    );
    assert_eq!(r.body, list.as_bytes());
    // An index whose children are not in the repository is refused.
    let dangling = list.replace(&md.to_string(), &Digest::sha256_of(b"absent").to_string());
    app.put_manifest(
        "multi",
        "bad",
        OCI_INDEX,
        &dangling.replace(
            "application/vnd.docker.distribution.manifest.list.v2+json",
            OCI_INDEX,
        ),
    )
    .await
    .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test]
async fn manifest_refusals() {
    let app = TestApp::new().await;
    let c = app.push_blob("r", b"{}").await;
    let missing = Digest::sha256_of(b"missing layer");
    // Referencing a blob the repository doesn't hold.
    let m = image_manifest(&c, 2, &[(&missing, 13)]);
    let r = app.put_manifest("r", "t", OCI_MANIFEST, &m).await;
    r.assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        r.json()["errors"][0]["detail"]["digest"],
        missing.to_string()
    );
    // A blob of another repository does not count.
    let other = app.push_blob("elsewhere", b"missing layer").await;
    app.put_manifest(
        "r",
        "t",
        OCI_MANIFEST,
        &image_manifest(&c, 2, &[(&other, 13)]),
    )
    .await
    .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    // Wrong size for a present blob.
    app.put_manifest("r", "t", OCI_MANIFEST, &image_manifest(&c, 3, &[]))
        .await
        .assert_error(400, "MANIFEST_INVALID");
    // Not JSON, wrong shape, unknown media type, header/body disagreement.
    app.put_manifest("r", "t", OCI_MANIFEST, "not json")
        .await
        .assert_error(400, "MANIFEST_INVALID");
    app.put_manifest("r", "t", OCI_MANIFEST, "{}")
        .await
        .assert_error(400, "MANIFEST_INVALID");
    let good = image_manifest(&c, 2, &[]);
    app.put_manifest("r", "t", "application/vnd.unknown+json", &good)
        .await
        .assert_error(400, "MANIFEST_INVALID");
    app.put_manifest("r", "t", DOCKER_MANIFEST, &good)
        .await
        .assert_error(400, "MANIFEST_INVALID");
    // Oversized: refused up front (Content-Length) and while reading.
    let huge = format!(
        r#"{{"schemaVersion":2,"pad":"{}"}}"#,
        "x".repeat(4 * 1024 * 1024 + 1)
    );
    app.put_manifest("r", "t", OCI_MANIFEST, &huge)
        .await
        .assert_error(413, "MANIFEST_INVALID");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(huge.clone().into_bytes())];
    let r = app
        .request(
            Method::PUT,
            "/v2/r/manifests/t",
            &[("content-type", OCI_MANIFEST)],
            Body::from_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    r.assert_error(413, "MANIFEST_INVALID");
    // Nothing was tagged by any of these.
    app.get("/v2/r/manifests/t")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert!(
        app.put_manifest("r", "t", OCI_MANIFEST, &good)
            .await
            .status
            .is_success()
    );
}

#[tokio::test]
async fn invalid_names_tags_and_digests() {
    let app = TestApp::new().await;
    let d = Digest::sha256_of(b"");
    for (path, code) in [
        ("/v2/UPPER/manifests/latest", "NAME_INVALID"),
        ("/v2/a..b/manifests/latest", "NAME_INVALID"),
        ("/v2/../etc/manifests/latest", "NAME_INVALID"),
        ("/v2/a/%2e%2e/manifests/latest", "NAME_INVALID"),
        ("/v2/a%2Fb/manifests/latest", "NAME_INVALID"),
        ("/v2/a%00b/manifests/latest", "NAME_INVALID"),
        ("/v2//etc/passwd/manifests/latest", "NAME_INVALID"),
        ("/v2/a/manifests/sha256:1234", "DIGEST_INVALID"),
        (
            "/v2/a/manifests/md5:d41d8cd98f00b204e9800998ecf8427e",
            "DIGEST_INVALID",
        ),
        ("/v2/a/blobs/sha256:zz", "DIGEST_INVALID"),
        ("/v2/a/blobs/latest", "DIGEST_INVALID"),
        ("/v2/a/referrers/latest", "DIGEST_INVALID"),
    ] {
        let r = app.get(path).await;
        assert_eq!(
            (path, r.status.as_u16(), r.error_code()),
            (path, 400, code.to_owned())
        );
    }
    let long = "a".repeat(256);
    app.get(&format!("/v2/{long}/tags/list"))
        .await
        .assert_error(400, "NAME_INVALID");
    // No manifest can have a reference that is no valid tag: reads say so
    // (404, as distribution and the OCI conformance suite); a PUT is told
    // the tag is invalid.
    let long_tag = "t".repeat(129);
    for bad in ["-bad", long_tag.as_str()] {
        app.get(&format!("/v2/a/manifests/{bad}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
        app.put_manifest("a", bad, OCI_MANIFEST, "{}")
            .await
            .assert_error(400, "TAG_INVALID");
    }
    app.request(Method::POST, "/v2/Bad/blobs/uploads/", &[], Body::empty())
        .await
        .assert_error(400, "NAME_INVALID");
    app.put_manifest("a", "..", OCI_MANIFEST, "{}")
        .await
        .assert_error(400, "TAG_INVALID");
    app.get(&format!("/v2/a/blobs/{d}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    // None of this touched the storage root.
    assert!(app.files().is_empty(), "{:?}", app.files());
    assert_eq!(
        std::fs::read_dir(app.dir.path()).unwrap().count(),
        1,
        "only the root in the temp dir"
    );
}

#[tokio::test]
async fn tags_list_and_pagination() {
    let app = TestApp::new().await;
    let (_, m) = app.push_image("t", "b", "x").await;
    for tag in ["a", "c", "d", "e"] {
        assert!(
            app.put_manifest("t", tag, OCI_MANIFEST, &m)
                .await
                .status
                .is_success()
        );
    }
    let r = app.get("/v2/t/tags/list").await;
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "t", "tags": ["a", "b", "c", "d", "e"]})
    );
    assert_eq!(r.header("link"), None);
    let r = app.get("/v2/t/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        Some("</v2/t/tags/list?n=2&last=b>; rel=\"next\"")
    );
    let r = app.get("/v2/t/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    let r = app.get("/v2/t/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["e"]));
    assert_eq!(r.header("link"), None);
    let r = app.get("/v2/t/tags/list?n=0").await;
    assert_eq!(r.json()["tags"], serde_json::json!([]));
    let r = app.get("/v2/t/tags/list?last=zzz").await;
    assert_eq!(r.json()["tags"], serde_json::json!([]));
    app.get("/v2/t/tags/list?n=-1")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");
    app.get("/v2/t/tags/list?n=abc")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");
    app.get("/v2/nobody/tags/list")
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_and_pagination() {
    let app = TestApp::new().await;
    // Names whose lexical order differs from a plain directory walk:
    // "a-b" and "a.b" sort before "a/x", "a0" after it.
    for repo in ["b", "a/x", "a", "c/d/e", "a-b", "a.b", "a0", "a/x/y"] {
        app.push_image(repo, "v", repo).await;
    }
    // A repository with only an upload in progress is not listed.
    app.start_upload("z").await;
    let all = ["a", "a-b", "a.b", "a/x", "a/x/y", "a0", "b", "c/d/e"];
    let r = app.get("/v2/_catalog").await;
    assert_eq!(r.json(), serde_json::json!({ "repositories": all }));
    assert_eq!(r.header("link"), None);
    // Every page size walks the same order, with Link to the next page.
    for n in 1..=all.len() + 1 {
        let mut seen = Vec::new();
        let mut uri = format!("/v2/_catalog?n={n}");
        loop {
            let r = app.get(&uri).await;
            let page: Vec<String> =
                serde_json::from_value(r.json()["repositories"].clone()).unwrap();
            assert!(page.len() <= n);
            seen.extend(page.clone());
            match r.header("link") {
                Some(link) => {
                    let last = page.last().unwrap().replace('/', "%2F");
                    assert_eq!(
                        link,
                        format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\"")
                    );
                    uri = link[1..link.find('>').unwrap()].to_owned();
                }
                None => break,
            }
        }
        assert_eq!(seen, all, "n={n}");
    }
    let r = app.get("/v2/_catalog?n=2&last=a%2Fx").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["a/x/y", "a0"]));
    let r = app.get("/v2/_catalog?last=a.b").await;
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["a/x", "a/x/y", "a0", "b", "c/d/e"])
    );
    let r = app.get("/v2/_catalog?n=0").await;
    assert_eq!(r.json()["repositories"], serde_json::json!([]));
    app.get("/v2/_catalog?n=x")
        .await
        .assert_error(400, "PAGINATION_NUMBER_INVALID");
}

#[tokio::test]
async fn tag_listing_sees_changes_at_once() {
    let app = TestApp::new().await;
    let (_, m) = app.push_image("cache", "t0", "x").await;
    for i in 1..40 {
        assert_eq!(
            app.get("/v2/cache/tags/list").await.json()["tags"]
                .as_array()
                .unwrap()
                .len(),
            i
        );
        assert!(
            app.put_manifest("cache", &format!("t{i}"), OCI_MANIFEST, &m)
                .await
                .status
                .is_success()
        );
    }
    assert_eq!(
        app.delete("/v2/cache/manifests/t5").await.status,
        StatusCode::ACCEPTED
    );
    let tags = app.get("/v2/cache/tags/list").await.json()["tags"].clone();
    assert_eq!(tags.as_array().unwrap().len(), 39);
    assert!(!tags.as_array().unwrap().contains(&serde_json::json!("t5")));
}

#[tokio::test]
async fn deletes() {
    let app = TestApp::new().await;
    let (digest, _) = app.push_image("d", "one", "1").await;
    let (_, m) = app.push_image("d", "keep", "2").await;
    assert!(
        app.put_manifest(
            "d",
            "two",
            OCI_MANIFEST,
            &app.get("/v2/d/manifests/one")
                .await
                .body
                .iter()
                .map(|&b| b as char)
                .collect::<String>()
        )
        .await
        .status
        .is_success()
    );
    // Tag delete removes the tag only.
    assert_eq!(
        app.delete("/v2/d/manifests/one").await.status,
        StatusCode::ACCEPTED
    );
    app.get("/v2/d/manifests/one")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        app.get(&format!("/v2/d/manifests/{digest}")).await.status,
        StatusCode::OK
    );
    app.delete("/v2/d/manifests/one")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    // Digest delete removes the manifest and every tag pointing at it.
    assert_eq!(
        app.delete(&format!("/v2/d/manifests/{digest}"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    app.get(&format!("/v2/d/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    app.get("/v2/d/manifests/two")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(
        app.get("/v2/d/tags/list").await.json()["tags"],
        serde_json::json!(["keep"])
    );
    app.delete(&format!("/v2/d/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert!(app.get("/v2/d/manifests/keep").await.body == m.as_bytes());
    // Blob delete unlinks from the repository.
    let b = app.push_blob("d", b"blob to delete").await;
    assert_eq!(
        app.delete(&format!("/v2/d/blobs/{b}")).await.status,
        StatusCode::ACCEPTED
    );
    app.get(&format!("/v2/d/blobs/{b}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    app.delete(&format!("/v2/d/blobs/{b}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn deletes_disabled_by_default() {
    let app = TestApp::with_config("").await;
    let (digest, _) = app.push_image("d", "one", "1").await;
    app.delete("/v2/d/manifests/one")
        .await
        .assert_error(405, "UNSUPPORTED");
    app.delete(&format!("/v2/d/manifests/{digest}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    let b = app.push_blob("d", b"x").await;
    app.delete(&format!("/v2/d/blobs/{b}"))
        .await
        .assert_error(405, "UNSUPPORTED");
    assert_eq!(app.get("/v2/d/manifests/one").await.status, StatusCode::OK);
}

#[tokio::test]
async fn read_only_mode() {
    let app =
        TestApp::with_config("storage:\n  maintenance:\n    readonly:\n      enabled: true\n")
            .await;
    app.request(Method::POST, "/v2/r/blobs/uploads/", &[], Body::empty())
        .await
        .assert_error(403, "DENIED");
    app.put_manifest("r", "t", OCI_MANIFEST, "{}")
        .await
        .assert_error(403, "DENIED");
    assert_eq!(app.get("/v2/_catalog").await.status, StatusCode::OK);
}

#[tokio::test]
async fn referrers() {
    let app = TestApp::new().await;
    let (subject, m) = app.push_image("art", "v1", "subject").await;
    let r = app.get(&format!("/v2/art/referrers/{subject}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    let empty = app.push_blob("art", b"{}").await;
    let sig = |artifact: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{artifact}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"k":"v"}}}}"#,
            m.len()
        )
    };
    let (a, b) = (sig("application/x-signature"), sig("application/x-sbom"));
    for body in [&a, &b] {
        let d = Digest::sha256_of(body.as_bytes());
        let r = app
            .put_manifest("art", &d.to_string(), OCI_MANIFEST, body)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.header("oci-subject"), Some(subject.to_string().as_str()));
    }
    let r = app.get(&format!("/v2/art/referrers/{subject}")).await;
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 2);
    let first = &list["manifests"][0];
    assert_eq!(first["mediaType"], OCI_MANIFEST);
    assert!(first["artifactType"].is_string());
    assert_eq!(first["annotations"]["k"], "v");
    let r = app
        .get(&format!(
            "/v2/art/referrers/{subject}?artifactType=application/x-sbom"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let list = r.json();
    assert_eq!(list["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["manifests"][0]["digest"],
        Digest::sha256_of(b.as_bytes()).to_string()
    );
    assert_eq!(list["manifests"][0]["size"], b.len());
    // Deleting a referrer removes it from the list.
    let bd = Digest::sha256_of(b.as_bytes());
    assert_eq!(
        app.delete(&format!("/v2/art/manifests/{bd}")).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.get(&format!("/v2/art/referrers/{subject}"))
            .await
            .json()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.get(&format!("/v2/none/referrers/{subject}"))
        .await
        .assert_error(404, "NAME_UNKNOWN");
}

#[tokio::test]
async fn options_preflight_and_configured_headers() {
    let app = TestApp::with_config(
        "http:\n  headers:\n    Access-Control-Allow-Origin: ['https://ui.example']\n    X-Content-Type-Options: [nosniff]\n",
    )
    .await;
    let r = app
        .request(Method::OPTIONS, "/v2/_catalog", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://ui.example")
    );
    let r = app.get("/v2/nope/tags/list").await;
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn htpasswd_auth() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    std::fs::write(&path, format!("alice:{hash}\nbob:{{SHA}}ignored=\n")).unwrap();
    let app = TestApp::with_config(&format!(
        "auth:\n  htpasswd:\n    realm: Test Realm\n    path: {}\n",
        path.display()
    ))
    .await;
    let r = app.get("/v2/").await;
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Test Realm\"")
    );
    use base64::Engine;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    for _ in 0..2 {
        let r = app
            .request(
                Method::GET,
                "/v2/",
                &[("authorization", &basic("alice", "s3cret"))],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    for (u, p) in [("alice", "wrong"), ("mallory", "s3cret"), ("bob", "x")] {
        let r = app
            .request(
                Method::GET,
                "/v2/_catalog",
                &[("authorization", &basic(u, p))],
                Body::empty(),
            )
            .await;
        r.assert_error(401, "UNAUTHORIZED");
    }
    let r = app
        .request(
            Method::GET,
            "/v2/",
            &[("authorization", "Basic !!!notbase64")],
            Body::empty(),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    // A changed file is picked up (after the reload interval).
    let hash = bcrypt::hash("n3w", 4).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
    let r = app
        .request(
            Method::GET,
            "/v2/",
            &[("authorization", &basic("alice", "s3cret"))],
            Body::empty(),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED");
    let r = app
        .request(
            Method::GET,
            "/v2/",
            &[("authorization", &basic("alice", "n3w"))],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

/// An upstream registry on 127.0.0.1 that answers every blob GET with
/// `content` (whatever digest is asked for) and counts those GETs.
async fn blob_upstream(content: Vec<u8>) -> (String, Arc<AtomicUsize>) {
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = gets.clone();
    let content = bytes::Bytes::from(content);
    let router = axum::Router::new()
        .route("/v2/", axum::routing::get(|| async { "{}" }))
        .route(
            "/v2/{*rest}",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let content = content.clone();
                async move { content }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, gets)
}

async fn mirror_of(url: &str) -> TestApp {
    TestApp::with_config(&format!(
        "proxy:\n  upstreams:\n    - prefix: up\n      remoteurl: {url}\n"
    ))
    .await
}

/// Waits (at most 10 s) until no upload is left under the root: the fetch
/// that wrote one has committed or discarded it.
async fn uploads_settled(app: &TestApp) {
    for _ in 0..200 {
        if !app.files().iter().any(|f| f.contains("/_uploads/")) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("an upload is still there: {:?}", app.files());
}

/// Small blobs are hashed on their way to the first client, larger ones
/// (past `INLINE_HASH_MAX`) once written: both end up stored once, from
/// one upstream fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_blob_is_stored_once_whether_hashed_on_the_way_or_at_the_commit() {
    for len in [1024, registry::proxy::INLINE_HASH_MAX as usize + (1 << 20)] {
        let content = random_bytes(len);
        let digest = Digest::sha256_of(&content);
        let (url, gets) = blob_upstream(content.clone()).await;
        let app = mirror_of(&url).await;
        let path = format!("/v2/up/app/blobs/{digest}");
        let first = app.get(&path).await;
        assert_eq!(first.status, 200, "{len}");
        assert!(first.body == content, "{len}: the body is the blob");
        assert_eq!(
            first.header("docker-content-digest"),
            Some(digest.to_string().as_str())
        );
        let second = app.get(&path).await;
        assert_eq!(second.status, 200);
        assert!(second.body == content);
        assert_eq!(gets.load(Ordering::SeqCst), 1, "{len}: one upstream GET");
        uploads_settled(&app).await;
        let stored = std::fs::read(blob_data_path(&app.root(), &digest)).unwrap();
        assert!(stored == content, "{len}: stored as sent");
    }
}

/// Content that does not match its digest is never stored; a small blob's
/// first client gets a failed body, a large one's the bytes the upstream
/// sent (clients check layer digests themselves).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_blob_of_wrong_content_is_never_stored() {
    for len in [1024, registry::proxy::INLINE_HASH_MAX as usize + (1 << 20)] {
        let wanted = Digest::sha256_of(&random_bytes(len));
        let sent = random_bytes(len);
        let (url, gets) = blob_upstream(sent.clone()).await;
        let app = mirror_of(&url).await;
        let path = format!("/v2/up/app/blobs/{wanted}");
        for attempt in 1..=2 {
            let resp = tower::ServiceExt::oneshot(
                app.app.clone(),
                http::Request::get(path.as_str())
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
            assert_eq!(resp.status(), 200, "{len}");
            let body = http_body_util::BodyExt::collect(resp.into_body()).await;
            if len as u64 <= registry::proxy::INLINE_HASH_MAX {
                assert!(body.is_err(), "{len}: the body fails");
            } else {
                assert!(body.unwrap().to_bytes() == sent, "{len}: as sent");
            }
            uploads_settled(&app).await;
            assert!(
                !blob_data_path(&app.root(), &wanted).exists(),
                "{len}: nothing stored"
            );
            assert_eq!(gets.load(Ordering::SeqCst), attempt, "{len}: fetched again");
        }
        assert!(
            !app.files().iter().any(|f| f.contains("/_layers/")),
            "{len}: nothing linked: {:?}",
            app.files()
        );
    }
}
