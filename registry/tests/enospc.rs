//! A full disk: on a small tmpfs, uploads and manifest pushes that run out
//! of space answer a clear JSON error (507), leave nothing partial behind,
//! and the registry works again once space is freed. Needs root (mount).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Command;

use http::{Method, StatusCode};
use registry::oci::Digest;
use support::*;

fn usage(p: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn full_disk_answers_507_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let fs = e2e::mount::Tmpfs::mount(3 << 20);
    let mnt = fs.path();
    let root = mnt.join("root");
    let app = TestApp::with_root(
        dir,
        root.clone(),
        "storage:\n  delete:\n    enabled: true\n",
    )
    .await;

    // Fill the disk with 1 MiB blobs until a push is refused.
    let mut stored = Vec::new();
    let refused = loop {
        let data: Vec<u8> = (0..1024 * 1024).map(|_| rand::random::<u8>()).collect();
        let d = Digest::sha256_of(&data);
        let r = app
            .request(
                Method::POST,
                &format!("/v2/full/blobs/uploads/?digest={d}"),
                &[],
                data.clone(),
            )
            .await;
        if r.status == StatusCode::CREATED {
            stored.push(d);
            assert!(stored.len() < 10, "the 3 MiB disk never filled up");
            continue;
        }
        break r;
    };
    refused.assert_error(507, "UNKNOWN");
    assert!(
        refused.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no space left")
    );
    assert!(!stored.is_empty());

    // Nothing partial: no upload data left, no temporary file, every blob
    // in the store whole.
    assert!(
        !app.files()
            .iter()
            .any(|f| f.contains("_uploads/") || f.contains(".tmp-")),
        "{:?}",
        app.files()
    );
    let report = offline_storage(&root).fsck(false).unwrap();
    assert!(report.is_clean() && report.problems.is_empty(), "{report}");
    assert_eq!(report.blobs, stored.len());

    // A chunked upload hitting the limit keeps what it had.
    let loc = app.start_upload("full").await;
    let r = app.request(Method::PATCH, &loc, &[], vec![1u8; 100]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .request(Method::PATCH, &loc, &[], vec![2u8; 2 * 1024 * 1024])
        .await;
    r.assert_error(507, "UNKNOWN");
    assert_eq!(app.get(&loc).await.header("range"), Some("0-99"));
    // A manifest push on a full disk: refused, nothing tagged.
    let config = app.push_blob("full", b"{}").await;
    let filler = mnt.join("filler");
    let free = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "dd if=/dev/zero of={} bs=4k 2>/dev/null; true",
            filler.display()
        ))
        .status();
    assert!(free.unwrap().success());
    let r = app
        .put_manifest("full", "v1", OCI_MANIFEST, &image_manifest(&config, 2, &[]))
        .await;
    assert_eq!(r.status.as_u16(), 507, "{r:?}");
    app.get("/v2/full/manifests/v1")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // Free space: everything works again.
    std::fs::remove_file(&filler).unwrap();
    app.delete(&loc).await;
    for d in stored.drain(..) {
        std::fs::remove_file(blob_data_path(&root, &d)).unwrap();
    }
    assert!(usage(mnt) < 1024 * 1024);
    let d = app.push_blob("full", &vec![3u8; 1024 * 1024]).await;
    assert_eq!(
        app.get(&format!("/v2/full/blobs/{d}")).await.body.len(),
        1024 * 1024
    );
    let r = app
        .put_manifest("full", "v1", OCI_MANIFEST, &image_manifest(&config, 2, &[]))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}
