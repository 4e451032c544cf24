//! Crash safety: 100 concurrent pushes of small distinct images, `kill -9`
//! of the registry midway, restart on the same storage. Every push that got
//! a 201 for its manifest must pull with correct digests, no half-written
//! blob may be visible, fsck must find nothing wrong, and a chunked upload
//! interrupted by the crash must be resumable.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use e2e::fixtures::random_bytes;
use registry::oci::Digest;
use support::process::{Client, Image, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_midway_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    kill_9_midway(&Store::Dir(root), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_midway_loses_nothing_acknowledged_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let garage = tokio::task::block_in_place(|| e2e::garage::Garage::start("crash"));
    kill_9_midway(&Store::S3(Box::new(garage)), dir.path()).await;
}

async fn kill_9_midway(store: &Store, logs: &std::path::Path) {
    let mut server = store.serve(&logs.join("first.log"), &[]);
    let client = Client::new(&server.url);

    // A chunked upload in progress when the crash comes.
    let big = random_bytes(3 * 1024 * 1024 + 17);
    let r = client
        .http
        .post(format!("{}/v2/crash/resume/blobs/uploads/", client.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let first = 1024 * 1024;
    let r = client
        .http
        .patch(format!("{}{location}", client.url))
        .header("content-range", format!("0-{}", first - 1))
        .body(big[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..100u64 {
        let client = client.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let layers = vec![
                random_bytes(64 * 1024 + (i as usize) * 4096),
                random_bytes(1000),
            ];
            let image = Image::new(i, &layers);
            let repo = format!("crash/r{}", i % 10);
            let status = client
                .push_image(&repo, &format!("t{i}"), &image, i % 2 == 0)
                .await;
            let ok = matches!(status, Ok(s) if s == 201);
            if ok {
                done.fetch_add(1, Ordering::SeqCst);
            }
            (repo, format!("t{i}"), image, ok)
        }));
    }
    // Midway: once some pushes are acknowledged, and many are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 30 {
        assert!(
            std::time::Instant::now() < deadline,
            "pushes made no progress"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill_hard();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let acknowledged: Vec<_> = results.iter().filter(|r| r.3).collect();
    eprintln!(
        "{} of 100 pushes acknowledged before the kill",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= 30 && acknowledged.len() < 100,
        "{} acknowledged: the kill came midway",
        acknowledged.len()
    );

    // Restart on the same storage.
    let server = store.serve(&logs.join("second.log"), &[]);
    let client = Client::new(&server.url);
    for (repo, tag, image, _) in &acknowledged {
        let digest = client
            .pull_verified(repo, tag)
            .await
            .unwrap_or_else(|e| panic!("{repo}:{tag}: {e:?}"));
        assert_eq!(digest, image.digest);
    }
    // Every blob visible in the store is whole: fsck hashes each one.
    let out = tokio::task::block_in_place(|| store.cmd(&["fsck"]));
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The interrupted upload resumes where it stood.
    let url = format!("{}{location}", client.url);
    let r = client.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["range"].to_str().unwrap(),
        format!("0-{}", first - 1)
    );
    let r = client
        .http
        .patch(&url)
        .header("content-range", format!("{first}-{}", big.len() - 1))
        .body(big[first..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d = Digest::sha256_of(&big);
    let r = client
        .http
        .put(format!("{url}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = client
        .http
        .get(format!("{}/v2/crash/resume/blobs/{d}", client.url))
        .send()
        .await
        .unwrap();
    assert_eq!(Digest::sha256_of(&r.bytes().await.unwrap()), d);
}
