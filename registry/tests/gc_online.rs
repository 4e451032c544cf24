//! Online garbage collection: pushes, pulls and deletes run while `registry
//! gc` runs again and again in another process, on the filesystem and on S3
//! (a real Garage). Afterwards every tagged image pulls with correct
//! digests, blobs of deleted images are gone, and fsck finds nothing wrong.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use e2e::fixtures::random_bytes;
use registry::oci::Digest;
use support::blob_data_path;
use support::process::{Client, Image, Store, run_registry};

/// Content younger than this is kept by the collections that run during
/// the pushes (a push's blobs wait at most this long for its manifest).
const GRACE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_runs_while_pushes_pulls_and_deletes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    gc_while_serving(Store::Dir(root), dir.path(), Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_runs_while_pushes_pulls_and_deletes_go_on_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let garage = tokio::task::block_in_place(|| e2e::garage::Garage::start("collected"));
    gc_while_serving(
        Store::S3(Box::new(garage)),
        dir.path(),
        Duration::from_secs(8),
    )
    .await;
}

/// Collectable content, concurrent pushes (some referencing it), pulls and
/// collections every `GRACE`, for `duration`.
async fn gc_while_serving(store: Store, logs: &std::path::Path, duration: Duration) {
    let server = store.serve(
        &logs.join("serve.log"),
        &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")],
    );
    let client = Client::new(&server.url);
    let base = random_bytes(100_000);

    // Images to keep, and images to delete whose own layers must go.
    let mut kept = Vec::new();
    for i in 0..10u64 {
        let img = Image::new(i, &[base.clone(), random_bytes(20_000)]);
        assert_eq!(
            client
                .push_image(&format!("keep/r{i}"), "v1", &img, i % 2 == 0)
                .await
                .unwrap(),
            201
        );
        kept.push((format!("keep/r{i}"), "v1".to_owned(), img));
    }
    let mut doomed_blobs = Vec::new();
    for i in 0..10u64 {
        let img = Image::new(100 + i, &[base.clone(), random_bytes(30_000)]);
        let repo = format!("drop/r{i}");
        assert_eq!(
            client.push_image(&repo, "v1", &img, false).await.unwrap(),
            201
        );
        let r = client
            .http
            .delete(format!("{}/v2/{repo}/manifests/{}", client.url, img.digest))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        doomed_blobs.push(Digest::sha256_of(&img.layers[1]));
        doomed_blobs.push(Digest::sha256_of(&img.config));
        doomed_blobs.push(img.digest.clone());
    }
    // Old blobs no manifest references yet, already in the pushers'
    // repositories: collectable, while new pushes start referencing them
    // (the client sees they exist and skips the upload) — the race the
    // collector and the manifest push must settle between them.
    let mut olds = Vec::new();
    for p in 0..4u64 {
        let mut list = Vec::new();
        for _ in 0..30 {
            let blob = random_bytes(5_000);
            client
                .push_blob(&format!("live/p{p}"), &blob, false)
                .await
                .unwrap();
            if let Store::Dir(root) = &store {
                std::fs::File::options()
                    .write(true)
                    .open(blob_data_path(root, &Digest::sha256_of(&blob)))
                    .unwrap()
                    .set_modified(SystemTime::now() - Duration::from_secs(7200))
                    .unwrap();
            }
            list.push(blob);
        }
        olds.push(list);
    }
    if let Store::S3(_) = &store {
        // S3 keeps its own LastModified: let the olds age past the grace.
        tokio::time::sleep(GRACE + Duration::from_millis(500)).await;
    }
    let acknowledged = Arc::new(Mutex::new(kept.clone()));
    let retried = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Instant::now() + duration;
    let mut tasks = Vec::new();
    for p in 0..4u64 {
        let (client, acknowledged, errors, base, olds, retried) = (
            client.clone(),
            acknowledged.clone(),
            errors.clone(),
            base.clone(),
            olds[p as usize].clone(),
            retried.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                let seed = 1000 * (p + 1) + n;
                let mut layers = vec![base.clone(), random_bytes(10_000)];
                if let Some(old) = olds.get(n as usize / 2).filter(|_| n.is_multiple_of(2)) {
                    layers.push(old.clone());
                }
                let img = Image::new(seed, &layers);
                let repo = format!("live/p{p}");
                let tag = format!("t{n}");
                // A push refused because content was collected meanwhile is
                // retried, as a user would; it re-uploads what is missing.
                let mut pushed = false;
                for _ in 0..5 {
                    match client
                        .push_image(&repo, &tag, &img, n.is_multiple_of(3))
                        .await
                    {
                        Ok(s) if s == 201 => {
                            pushed = true;
                            break;
                        }
                        Ok(s) if s == 400 => {
                            retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(s) => errors
                            .lock()
                            .unwrap()
                            .push(format!("push {repo}:{tag}: {s}")),
                        Err(e) => errors
                            .lock()
                            .unwrap()
                            .push(format!("push {repo}:{tag}: {e:?}")),
                    }
                }
                if pushed {
                    acknowledged.lock().unwrap().push((repo, tag, img));
                }
            }
        }));
    }
    for _ in 0..2 {
        let (client, acknowledged, errors) = (client.clone(), acknowledged.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < stop {
                let pick = {
                    let list = acknowledged.lock().unwrap();
                    i = (i + 7) % list.len();
                    list[i].clone()
                };
                match client.pull_verified(&pick.0, &pick.1).await {
                    Ok(d) if d == pick.2.digest => {}
                    other => errors
                        .lock()
                        .unwrap()
                        .push(format!("pull {}:{}: {other:?}", pick.0, pick.1)),
                }
            }
        }));
    }
    let envs = store.envs();
    let gc = tokio::task::spawn_blocking(move || {
        let mut runs = 0;
        let grace = format!("{}s", GRACE.as_secs());
        while Instant::now() < stop {
            let out = run_registry(&envs, &["gc", "--grace", &grace]);
            assert!(
                out.status.success(),
                "gc: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            runs += 1;
        }
        runs
    });
    for t in tasks {
        t.await.unwrap();
    }
    let runs = gc.await.unwrap();
    assert!(runs >= 3, "only {runs} collections ran");
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} failures during the run, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    // A last collection with everything quiet.
    let out = store.cmd(&["gc", "--grace", "0s"]);
    assert!(out.status.success());
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "{} pushes made it",
        acknowledged.len()
    );
    for (repo, tag, img) in &acknowledged {
        let d = client
            .pull_verified(repo, tag)
            .await
            .unwrap_or_else(|e| panic!("{repo}:{tag}: {e:?}"));
        assert_eq!(&d, &img.digest);
    }
    for d in &doomed_blobs {
        assert!(
            !tokio::task::block_in_place(|| store.blob_exists(d)),
            "blob {d} of a deleted image was not collected"
        );
    }
    let out = store.cmd(&["fsck"]);
    assert!(
        out.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "{runs} collections during {} acknowledged pushes; {} pushes refused and retried",
        acknowledged.len() - kept.len(),
        retried.load(std::sync::atomic::Ordering::Relaxed)
    );
}
