//! The logical layer (`Storage`) on every backend: what must hold whether
//! the bytes live in files or in an object store. Two `Storage` values over
//! one backend stand for two replicas (or a restart): nothing but the
//! backend is shared between them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;

use super::backend::Backend;
use super::backend::fs::FsBackend;
use super::backend::memory::MemoryBackend;
use super::gc::GcOptions;
use super::upload_limits::UploadOwner;
use super::{Error, Storage, TAGS_CACHE_TTL};
use crate::config::UploadLimits;
use crate::oci::{Digest, Manifest, RepoName, Tag};

/// Runs each test on the filesystem, in-memory and S3 (Garage) backends.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod filesystem {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(Arc::new(super::FsBackend::new(dir.path()))).await;
                }
            )*
            use std::sync::Arc;
        }
        mod inmemory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Arc::new(super::MemoryBackend::new())).await;
                }
            )*
            use std::sync::Arc;
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (_garage, backend) = tokio::task::block_in_place(super::garage_backend);
                    super::$name(Arc::new(backend)).await;
                }
            )*
            use std::sync::Arc;
        }
    };
}

/// A Garage of the test's own (kept alive by the first value) and an S3
/// backend on its bucket.
fn garage_backend() -> (e2e::garage::Garage, super::backend::s3::S3Backend) {
    let g = e2e::garage::Garage::start("storage");
    let config = super::backend::s3::tests::config(&g, "/registry");
    let backend = super::backend::s3::S3Backend::open(&config).expect("open the bucket");
    (g, backend)
}

on_every_backend!(
    an_upload_resumed_by_another_replica_is_verified,
    push_list_and_delete,
    gc_collects_only_the_unreferenced_and_takes_the_lease,
    another_replicas_tags_show_within_the_ttl,
);

fn replica(backend: &Arc<dyn Backend>) -> Arc<Storage> {
    Arc::new(Storage::new(backend.clone()))
}

fn repo(s: &str) -> RepoName {
    RepoName::parse(s).unwrap()
}

/// Uploads `data` as a blob of `name` in one chunk.
async fn push_blob(s: &Arc<Storage>, name: &RepoName, data: &'static [u8]) -> Digest {
    let id = s
        .create_upload(name, &UploadOwner::user("t"), &UploadLimits::default())
        .unwrap();
    let mut state = s.lock_upload(name, id).await.unwrap();
    let body = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(data))]);
    s.append_upload(name, id, &mut state, body, None)
        .await
        .unwrap();
    let d = Digest::sha256_of(data);
    s.commit_upload(name, id, &mut state, &d).unwrap();
    d
}

/// An image manifest over a config and a layer.
fn image(config: &Digest, config_len: usize, layer: &Digest, layer_len: usize) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_len}],
    }))
    .unwrap()
}

async fn push_image(s: &Arc<Storage>, name: &RepoName, tag: &str, layer: &'static [u8]) -> Digest {
    let config = push_blob(s, name, b"{}").await;
    let layer_digest = push_blob(s, name, layer).await;
    let bytes = image(&config, 2, &layer_digest, layer.len());
    let manifest =
        Manifest::parse(Some("application/vnd.oci.image.manifest.v1+json"), &bytes).unwrap();
    let digest = Digest::sha256_of(&bytes);
    let tag = Tag::parse(tag).unwrap();
    s.put_manifest(name, Some(&tag), &digest, &bytes, &manifest)
        .unwrap();
    digest
}

async fn an_upload_resumed_by_another_replica_is_verified(backend: Arc<dyn Backend>) {
    let (a, b) = (replica(&backend), replica(&backend));
    let name = repo("r/up");
    let owner = UploadOwner::user("t");
    for (second, wrong) in [(&b"world"[..], false), (&b"wrong"[..], true)] {
        let id = a
            .create_upload(&name, &owner, &UploadLimits::default())
            .unwrap();
        {
            let mut state = a.lock_upload(&name, id).await.unwrap();
            let body = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(
                b"hello ",
            ))]);
            a.append_upload(&name, id, &mut state, body, Some(6))
                .await
                .unwrap();
        }
        // Replica b knows nothing of the running hash.
        let mut state = b.lock_upload(&name, id).await.unwrap();
        assert_eq!(state.offset, 6);
        let body = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::copy_from_slice(
            second,
        ))]);
        b.append_upload(&name, id, &mut state, body, None)
            .await
            .unwrap();
        let d = Digest::sha256_of(b"hello world");
        let result = b.commit_upload(&name, id, &mut state, &d);
        drop(state);
        if wrong {
            assert!(
                matches!(result, Err(Error::DigestMismatch { .. })),
                "{result:?}"
            );
            assert!(matches!(
                a.lock_upload(&name, id).await.map(drop),
                Err(Error::UploadUnknown)
            ));
        } else {
            result.unwrap();
            assert_eq!(a.stat_blob(&name, &d).unwrap(), Some(11));
        }
    }
    // A failed body leaves the upload as it was.
    let id = a
        .create_upload(&name, &owner, &UploadLimits::default())
        .unwrap();
    let mut state = a.lock_upload(&name, id).await.unwrap();
    let body = stream::iter([Ok(Bytes::from_static(b"partial")), Err("client went away")]);
    assert!(
        a.append_upload(&name, id, &mut state, body, None)
            .await
            .is_err()
    );
    drop(state);
    assert_eq!(b.lock_upload(&name, id).await.unwrap().offset, 0);
}

async fn push_list_and_delete(backend: Arc<dyn Backend>) {
    let s = replica(&backend);
    let name = repo("team/app");
    let d = push_image(&s, &name, "v1", b"layer one").await;
    let d2 = push_image(&s, &name, "v2", b"layer two").await;
    assert_eq!(*s.list_tags(&name).unwrap().unwrap(), ["v1", "v2"]);
    let (page, more) = s.catalog_page(None, None, &|_| true).unwrap();
    assert_eq!((page, more), (vec!["team/app".to_owned()], false));
    assert!(s.delete_tag(&name, &Tag::parse("v2").unwrap()).unwrap());
    // This process's own change shows at once, on every backend.
    assert_eq!(*s.list_tags(&name).unwrap().unwrap(), ["v1"]);
    assert!(s.delete_manifest(&name, &d).unwrap());
    assert!(s.list_tags(&name).unwrap().unwrap().is_empty());
    let (page, _) = s.catalog_page(None, None, &|_| true).unwrap();
    assert_eq!(page, ["team/app"], "an untagged manifest is left");
    assert!(s.delete_manifest(&name, &d2).unwrap());
    let (page, _) = s.catalog_page(None, None, &|_| true).unwrap();
    assert!(
        page.is_empty(),
        "a repository without manifests leaves the catalog"
    );
    assert!(s.delete_repository(&name).unwrap());
    assert_eq!(s.list_tags(&name).unwrap(), None);
}

async fn gc_collects_only_the_unreferenced_and_takes_the_lease(backend: Arc<dyn Backend>) {
    let s = replica(&backend);
    let name = repo("g");
    push_image(&s, &name, "kept", b"kept layer").await;
    let stray = push_blob(&s, &name, b"never referenced").await;
    let now = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    let report = s.run(move |s| s.gc(&now)).await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report}");
    assert!(!s.blob_data_exists(&stray).unwrap());
    assert!(s.fsck(false).unwrap().is_clean());
    // A collection running on another replica holds the lease.
    assert!(
        backend
            .put_new(&super::paths::gc_lease(), b"elsewhere")
            .unwrap()
    );
    let refused = replica(&backend).gc(&GcOptions::default());
    assert!(matches!(refused, Err(Error::GcRunning)), "{refused:?}");
}

async fn another_replicas_tags_show_within_the_ttl(backend: Arc<dyn Backend>) {
    let (a, b) = (replica(&backend), replica(&backend));
    let name = repo("shared");
    push_image(&a, &name, "one", b"1").await;
    assert_eq!(*a.list_tags(&name).unwrap().unwrap(), ["one"]);
    push_image(&b, &name, "two", b"2").await;
    tokio::time::sleep(TAGS_CACHE_TTL + Duration::from_millis(100)).await;
    assert_eq!(*a.list_tags(&name).unwrap().unwrap(), ["one", "two"]);
}
