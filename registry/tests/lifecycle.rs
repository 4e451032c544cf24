//! Storage lifecycle through `app()` and the storage API: deletes that
//! empty a repository, repository deletion, garbage collection (grace,
//! dry run, untagged manifests, uploads, interrupted runs, the lock), fsck
//! and its repairs, and identical concurrent uploads.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use http::{Method, StatusCode};
use registry::oci::Digest;
use registry::storage::Storage;
use registry::storage::fsck::Problem;
use registry::storage::gc::GcOptions;
use support::*;

fn storage(app: &TestApp) -> Storage {
    app.offline_storage()
}

fn gc_now() -> GcOptions {
    GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    }
}

fn blob_path(app: &TestApp, d: &Digest) -> std::path::PathBuf {
    blob_data_path(&app.root(), d)
}

#[tokio::test]
async fn deleting_the_last_tag_removes_the_repository_from_the_catalog() {
    let app = TestApp::new().await;
    app.push_image("gone/soon", "a", "1").await;
    let (_, m) = app.push_image("stays", "v", "2").await;
    assert!(
        app.put_manifest("gone/soon", "b", OCI_MANIFEST, &m)
            .await
            .status
            .is_client_error()
    );
    let (d2, _) = app.push_image("gone/soon", "b", "3").await;
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["gone/soon", "stays"])
    );
    assert_eq!(
        app.delete("/v2/gone/soon/manifests/a").await.status,
        StatusCode::ACCEPTED
    );
    // Tag b remains: still listed.
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["gone/soon", "stays"])
    );
    // Tag a's manifest is untagged but still there: still listed.
    assert_eq!(
        app.delete(&format!("/v2/gone/soon/manifests/{d2}"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["gone/soon", "stays"])
    );
    let (d1, _) = app.push_image("gone/soon", "a", "1").await;
    assert_eq!(
        app.delete(&format!("/v2/gone/soon/manifests/{d1}"))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["stays"])
    );
    // Its blobs are still there: it lists no tags (as distribution does)
    // until they go too.
    let r = app.get("/v2/gone/soon/tags/list").await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.json()["tags"], serde_json::json!([]));
    // Pushing again brings it back.
    app.push_image("gone/soon", "again", "4").await;
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["gone/soon", "stays"])
    );
}

#[tokio::test]
async fn deleting_a_repository() {
    let app = TestApp::new().await;
    app.push_image("team", "v", "1").await;
    app.push_image("team/app", "v", "2").await;
    app.start_upload("team").await;
    assert_eq!(app.delete("/v2/team/").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!(["team/app"])
    );
    assert_eq!(
        app.get("/v2/team/app/manifests/v").await.status,
        StatusCode::OK,
        "nested repository untouched"
    );
    app.delete("/v2/team/")
        .await
        .assert_error(404, "NAME_UNKNOWN");
    assert!(
        !app.files()
            .iter()
            .any(|f| f.contains("repositories/team/_")),
        "{:?}",
        app.files()
    );
    let off = TestApp::with_config("").await;
    off.push_image("x", "v", "1").await;
    off.delete("/v2/x/").await.assert_error(405, "UNSUPPORTED");
}

#[tokio::test]
async fn gc_collects_deleted_images_and_keeps_the_rest() {
    let app = TestApp::new().await;
    let shared = app.push_blob("a", b"shared base layer").await;
    app.push_blob("b", b"shared base layer").await;
    let ca = app.push_blob("a", br#"{"a":1}"#).await;
    let cb = app.push_blob("b", br#"{"b":1}"#).await;
    let only_b = app.push_blob("b", b"only in b").await;
    let ma = image_manifest(&ca, 7, &[(&shared, 17)]);
    let mb = image_manifest(&cb, 7, &[(&shared, 17), (&only_b, 9)]);
    assert_eq!(
        app.put_manifest("a", "v", OCI_MANIFEST, &ma).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.put_manifest("b", "v", OCI_MANIFEST, &mb).await.status,
        StatusCode::CREATED
    );
    let mbd = Digest::sha256_of(mb.as_bytes());
    assert_eq!(
        app.delete(&format!("/v2/b/manifests/{mbd}")).await.status,
        StatusCode::ACCEPTED
    );

    // Within the grace period nothing goes.
    let report = storage(&app).gc(&GcOptions::default()).unwrap();
    assert_eq!(report.blobs_deleted, 0, "{report}");
    // A dry run reports without deleting.
    let report = storage(&app)
        .gc(&GcOptions {
            dry_run: true,
            ..gc_now()
        })
        .unwrap();
    assert_eq!(report.blobs_deleted, 3, "{report}");
    assert!(blob_path(&app, &only_b).exists());

    let report = storage(&app).gc(&gc_now()).unwrap();
    assert_eq!(
        report.blobs_deleted, 3,
        "b's config, b's own layer, b's manifest: {report}"
    );
    assert_eq!(report.bytes_freed, 7 + 9 + mb.len() as u64);
    for gone in [&cb, &only_b, &mbd] {
        assert!(!blob_path(&app, gone).exists(), "{gone} collected");
    }
    for kept in [&ca, &shared, &Digest::sha256_of(ma.as_bytes())] {
        assert!(blob_path(&app, kept).exists(), "{kept} kept");
    }
    let r = app.get("/v2/a/manifests/v").await;
    assert_eq!(r.body, ma.as_bytes());
    assert_eq!(
        app.get(&format!("/v2/a/blobs/{shared}")).await.body,
        b"shared base layer"
    );
    // b's links to collected blobs are gone; its link to the shared one stays.
    app.get(&format!("/v2/b/blobs/{only_b}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
    assert_eq!(
        app.get(&format!("/v2/b/blobs/{shared}")).await.status,
        StatusCode::OK
    );
    // Nothing left set aside.
    assert!(
        !app.files().iter().any(|f| f.contains("/_gc/")),
        "{:?}",
        app.files()
    );
    // A second run finds nothing more.
    assert_eq!(storage(&app).gc(&gc_now()).unwrap().blobs_deleted, 0);
}

#[tokio::test]
async fn gc_grace_protects_blobs_of_a_push_in_progress() {
    let app = TestApp::new().await;
    let d = app
        .push_blob("p", b"uploaded, manifest not yet pushed")
        .await;
    let report = storage(&app).gc(&GcOptions::default()).unwrap();
    assert_eq!(report.blobs_deleted, 0);
    assert_eq!(
        app.get(&format!("/v2/p/blobs/{d}")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gc_untagged_manifests() {
    let app = TestApp::new().await;
    let (tagged, tagged_body) = app.push_image("u", "v1", "tagged").await;
    // An untagged manifest pushed by digest.
    let c = app.push_blob("u", br#"{"untagged":1}"#).await;
    let l = app.push_blob("u", b"untagged layer").await;
    let untagged = image_manifest(&c, 14, &[(&l, 14)]);
    let ud = Digest::sha256_of(untagged.as_bytes());
    assert_eq!(
        app.put_manifest("u", &ud.to_string(), OCI_MANIFEST, &untagged)
            .await
            .status,
        StatusCode::CREATED
    );
    // A tagged index and its (untagged) child.
    let cc = app.push_blob("u", br#"{"child":1}"#).await;
    let child = image_manifest(&cc, 11, &[]);
    let child_d = Digest::sha256_of(child.as_bytes());
    app.put_manifest("u", &child_d.to_string(), OCI_MANIFEST, &child)
        .await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child_d}","size":{}}}]}}"#,
        child.len()
    );
    assert_eq!(
        app.put_manifest("u", "multi", OCI_INDEX, &index)
            .await
            .status,
        StatusCode::CREATED
    );
    // A referrer of the tagged image (untagged itself).
    let empty = app.push_blob("u", b"{}").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/x-sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{tagged}","size":{}}}}}"#,
        tagged_body.len()
    );
    let sig_d = Digest::sha256_of(sig.as_bytes());
    assert_eq!(
        app.put_manifest("u", &sig_d.to_string(), OCI_MANIFEST, &sig)
            .await
            .status,
        StatusCode::CREATED
    );

    // Without delete_untagged, everything stays.
    let report = storage(&app).gc(&gc_now()).unwrap();
    assert_eq!(
        (report.manifests_deleted, report.blobs_deleted),
        (0, 0),
        "{report}"
    );
    let report = storage(&app)
        .gc(&GcOptions {
            delete_untagged: true,
            ..gc_now()
        })
        .unwrap();
    assert_eq!(report.manifests_deleted, 1, "{report}");
    assert_eq!(
        report.blobs_deleted, 3,
        "the untagged manifest, its config and layer: {report}"
    );
    app.get(&format!("/v2/u/manifests/{ud}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    for kept in [&tagged, &child_d, &sig_d] {
        assert_eq!(
            app.get(&format!("/v2/u/manifests/{kept}")).await.status,
            StatusCode::OK,
            "{kept}"
        );
    }
    assert_eq!(
        app.get("/v2/u/manifests/multi").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn gc_purges_old_uploads() {
    let app = TestApp::new().await;
    let loc = app.start_upload("up").await;
    app.request(Method::PATCH, &loc, &[], "partial").await;
    let report = storage(&app)
        .gc(&GcOptions {
            upload_max_age: Some(Duration::from_secs(3600)),
            ..gc_now()
        })
        .unwrap();
    assert_eq!(report.uploads_deleted, 0);
    assert_eq!(app.get(&loc).await.status, StatusCode::NO_CONTENT);
    let report = storage(&app)
        .gc(&GcOptions {
            upload_max_age: Some(Duration::ZERO),
            ..gc_now()
        })
        .unwrap();
    assert_eq!((report.uploads_deleted, report.upload_bytes_freed), (1, 7));
    app.get(&loc).await.assert_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn gc_puts_back_what_an_interrupted_run_set_aside_and_takes_a_lease() {
    let app = TestApp::new().await;
    let (_, m) = app.push_image("r", "v", "1").await;
    let layer = Digest::sha256_of("layer of 1".repeat(10).as_bytes());
    // Simulate a collection killed after setting the layer aside.
    let trash = app.root().join(format!(
        "docker/registry/v2/_gc/deadbeef/blobs/sha256/{}",
        layer.hex()
    ));
    std::fs::create_dir_all(trash.parent().unwrap()).unwrap();
    std::fs::rename(blob_path(&app, &layer), &trash).unwrap();
    let s = storage(&app);
    // A collection running elsewhere holds a fresh lease: refused.
    let lease = app.root().join("docker/registry/v2/_gc.lease");
    std::fs::write(&lease, "another run").unwrap();
    let err = s.gc(&gc_now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("another garbage collection is running"),
        "{err}"
    );
    // The killed collection's lease, no longer renewed, goes stale.
    let stale = std::time::SystemTime::now() - registry::storage::gc::LEASE_TTL * 2;
    std::fs::File::options()
        .write(true)
        .open(&lease)
        .unwrap()
        .set_modified(stale)
        .unwrap();
    let report = s.gc(&gc_now()).unwrap();
    assert_eq!(report.recovered_from_crash, 1, "{report}");
    assert_eq!(report.blobs_deleted, 0, "{report}");
    assert_eq!(
        app.get(&format!("/v2/r/blobs/{layer}")).await.status,
        StatusCode::OK
    );
    assert!(app.get("/v2/r/manifests/v").await.body == m.as_bytes());

    // Set aside by a collection still running (its lease held): a pull
    // does not wait for that collection to put the layer back.
    std::fs::create_dir_all(trash.parent().unwrap()).unwrap();
    std::fs::rename(blob_path(&app, &layer), &trash).unwrap();
    std::fs::write(&lease, "a running collection").unwrap();
    let r = app.get(&format!("/v2/r/blobs/{layer}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, "layer of 1".repeat(10).as_bytes());
    assert!(blob_path(&app, &layer).exists());
    assert!(!trash.exists());
}

#[tokio::test]
async fn manifest_push_refused_when_a_blob_was_collected_meanwhile() {
    let app = TestApp::new().await;
    let c = app.push_blob("r", b"{}").await;
    // Collected (set aside) between the client's HEAD and its manifest PUT.
    std::fs::remove_file(blob_path(&app, &c)).unwrap();
    app.put_manifest("r", "v", OCI_MANIFEST, &image_manifest(&c, 2, &[]))
        .await
        .assert_error(400, "MANIFEST_BLOB_UNKNOWN");
    app.get("/v2/r/manifests/v")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn fsck_finds_and_repairs() {
    let app = TestApp::new().await;
    let (_, _) = app.push_image("f", "v", "1").await;
    let s = storage(&app);
    let report = s.fsck(false).unwrap();
    assert!(report.is_clean() && report.problems.is_empty(), "{report}");
    assert_eq!(report.blobs, 3);
    // Corrupt the layer; drop the config's data; leave a stale temp file.
    let layer = Digest::sha256_of("layer of 1".repeat(10).as_bytes());
    std::fs::write(blob_path(&app, &layer), b"bit rot").unwrap();
    let orphan = app.push_blob("f", b"orphan").await;
    std::fs::remove_file(blob_path(&app, &orphan)).unwrap();
    let temp = app
        .root()
        .join("docker/registry/v2/repositories/f/_manifests/.link.tmp-0123");
    std::fs::write(&temp, b"x").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&temp)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let report = s.fsck(false).unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .problems
            .contains(&Problem::CorruptBlob(layer.clone())),
        "{report}"
    );
    assert!(
        report
            .problems
            .contains(&Problem::DanglingLayer("f".into(), orphan.clone())),
        "{report}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::LeftoverTemp(_))),
        "{report}"
    );
    let report = s.fsck(true).unwrap();
    // All repaired but the manifest that references the corrupt layer:
    // reported, not silently dropped.
    assert_eq!(report.problems.len() - report.repaired, 1, "{report}");
    assert!(
        app.root()
            .join(format!(
                "docker/registry/v2/_corrupt/sha256/{}",
                layer.hex()
            ))
            .exists()
    );
    assert!(!temp.exists());
    let report = s.fsck(false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .all(|p| matches!(p, Problem::MissingReference { missing, .. } if *missing == layer)),
        "{report}"
    );
    app.get(&format!("/v2/f/blobs/{layer}"))
        .await
        .assert_error(404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_concurrent_uploads_all_succeed() {
    let app = Arc::new(TestApp::new().await);
    let data = vec![7u8; 3 * 1024 * 1024];
    let digest = Digest::sha256_of(&data);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (app, data, digest) = (app.clone(), data.clone(), digest.clone());
        tasks.push(tokio::spawn(async move {
            let repo = format!("same/r{}", i % 4);
            if i % 2 == 0 {
                app.request(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                    &[],
                    data,
                )
                .await
                .status
            } else {
                let loc = app.start_upload(&repo).await;
                let half = data.len() / 2;
                app.request(Method::PATCH, &loc, &[], data[..half].to_vec())
                    .await;
                app.request(
                    Method::PUT,
                    &format!("{loc}?digest={digest}"),
                    &[],
                    Body::from(data[half..].to_vec()),
                )
                .await
                .status
            }
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    for i in 0..4 {
        let r = app.get(&format!("/v2/same/r{i}/blobs/{digest}")).await;
        assert_eq!(Digest::sha256_of(&r.body), digest);
    }
    assert!(storage(&app).fsck(false).unwrap().is_clean());
}

/// The manifest cache is bounded by the bytes of the bodies it holds; a
/// body that is a view into a larger buffer (hyper's read buffer, about
/// 8 KiB per request) would keep that whole buffer alive and make the
/// bound a lie: 8,000 small pushes grew the registry by ~56 MiB.
#[tokio::test]
async fn cached_manifest_bodies_do_not_pin_the_request_buffer() {
    use bytes::Bytes;
    use registry::oci::manifest::Manifest;
    use registry::oci::{RepoName, Tag};

    let app = TestApp::new().await;
    let storage = storage(&app);
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    // The body as a slice of a larger buffer, as a request body arrives.
    let mut buffer = vec![0u8; 64 << 10];
    buffer[..body.len()].copy_from_slice(body);
    let buffer = Bytes::from(buffer);
    let sent = buffer.slice(..body.len());
    let manifest = Manifest::parse(Some("application/vnd.oci.image.index.v1+json"), &sent)
        .expect("an empty index");
    let digest = Digest::sha256_of(&sent);
    let name = RepoName::parse("cache/pin").unwrap();
    let tag = Tag::parse("v1").unwrap();
    storage
        .put_manifest(&name, Some(&tag), &digest, &sent, &manifest)
        .unwrap();
    let cached = storage.load_manifest(&digest).unwrap().expect("cached");
    assert_eq!(&cached.bytes[..], &body[..]);
    let range = buffer.as_ptr_range();
    assert!(
        !range.contains(&cached.bytes.as_ptr()),
        "the cached body is a view into the {} byte buffer it arrived in",
        buffer.len()
    );
}
