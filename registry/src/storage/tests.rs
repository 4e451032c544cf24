//! The logical layer (`Storage`) on every backend: what must hold whether
//! the bytes live in files or in an object store. Two `Storage` values over
//! one backend stand for two replicas (or a restart): nothing but the
//! backend is shared between them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;

use super::backend::fs::FsBackend;
use super::backend::memory::MemoryBackend;
use super::backend::{Backend, Durability, Entry, Meta, PrefixMeta, WriteMode, Writer};
use super::gc::GcOptions;
use super::upload_limits::UploadOwner;
use super::{Error, Storage, TAGS_CACHE_TTL};
use crate::config::UploadLimits;
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};

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
    a_manifest_by_digest_is_served_from_memory_on_remote_storage,
    catalog_pages_are_in_order_and_read_only_what_they_list,
    a_blob_set_aside_under_a_push_made_meanwhile_still_pulls,
    a_revision_set_aside_under_a_tag_made_meanwhile_still_pulls,
    a_completed_upload_stays_complete_when_its_leftovers_cannot_be_removed,
    a_retried_completion_finds_its_body_or_its_commit,
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

/// Called before (`false`) and after (`true`) each `rename`, with its
/// destination.
type RenameHook = Box<dyn Fn(&Path, bool) + Send + Sync>;

/// A backend that counts the calls made to it, and says it is remote so
/// that `Storage` caches as it does over S3; that can run a hook around
/// renames, to act in the middle of a collection; and that can refuse
/// deletes, renames, or writes into repositories' `_layers`, as an
/// overloaded server does.
struct Counted {
    inner: Arc<dyn Backend>,
    calls: AtomicUsize,
    on_rename: Option<RenameHook>,
    refuse_deletes: AtomicBool,
    refuse_links: AtomicBool,
    refuse_renames: AtomicBool,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("inner", &self.inner)
            .field("calls", &self.calls)
            .field("on_rename", &self.on_rename.is_some())
            .field("refuse_deletes", &self.refuse_deletes)
            .field("refuse_links", &self.refuse_links)
            .field("refuse_renames", &self.refuse_renames)
            .finish()
    }
}

impl Counted {
    fn new(inner: &Arc<dyn Backend>) -> Arc<Counted> {
        Arc::new(Counted {
            inner: inner.clone(),
            calls: AtomicUsize::new(0),
            on_rename: None,
            refuse_deletes: AtomicBool::new(false),
            refuse_links: AtomicBool::new(false),
            refuse_renames: AtomicBool::new(false),
        })
    }

    fn with_rename_hook(inner: &Arc<dyn Backend>, hook: RenameHook) -> Arc<Counted> {
        Arc::new(Counted {
            inner: inner.clone(),
            calls: AtomicUsize::new(0),
            on_rename: Some(hook),
            refuse_deletes: AtomicBool::new(false),
            refuse_links: AtomicBool::new(false),
            refuse_renames: AtomicBool::new(false),
        })
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    fn deletes_allowed(&self) -> super::Result<()> {
        if self.refuse_deletes.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("deletes refused by the test".into()));
        }
        Ok(())
    }

    fn write_allowed(&self, path: &Path) -> super::Result<()> {
        let link = path.components().any(|c| c.as_os_str() == "_layers");
        if link && self.refuse_links.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("links refused by the test".into()));
        }
        Ok(())
    }
}

impl Backend for Counted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn is_remote(&self) -> bool {
        true
    }
    fn get(&self, path: &Path) -> super::Result<Option<Bytes>> {
        self.count();
        self.inner.get(path)
    }
    fn read_from(
        &self,
        path: &Path,
        offset: u64,
    ) -> super::Result<Option<(Box<dyn Read + Send>, u64)>> {
        self.count();
        self.inner.read_from(path, offset)
    }
    fn stat(&self, path: &Path) -> super::Result<Option<Meta>> {
        self.count();
        self.inner.stat(path)
    }
    fn stat_prefix(&self, prefix: &Path) -> super::Result<Option<PrefixMeta>> {
        self.count();
        self.inner.stat_prefix(prefix)
    }
    fn list(&self, prefix: &Path) -> super::Result<Vec<Entry>> {
        self.count();
        self.inner.list(prefix)
    }
    fn list_prefixes_page(
        &self,
        prefix: &Path,
        start_after: Option<&str>,
        max: usize,
    ) -> super::Result<(Vec<String>, Option<String>)> {
        self.count();
        self.inner.list_prefixes_page(prefix, start_after, max)
    }
    fn walk(
        &self,
        prefix: &Path,
        f: &mut dyn FnMut(&Path, Meta) -> super::Result<()>,
    ) -> super::Result<()> {
        self.count();
        self.inner.walk(prefix, f)
    }
    fn put(&self, path: &Path, data: &[u8], durability: Durability) -> super::Result<()> {
        self.count();
        self.write_allowed(path)?;
        self.inner.put(path, data, durability)
    }
    fn put_new(&self, path: &Path, data: &[u8]) -> super::Result<bool> {
        self.count();
        self.write_allowed(path)?;
        self.inner.put_new(path, data)
    }
    fn writer(&self, path: &Path, mode: WriteMode) -> super::Result<Box<dyn Writer>> {
        self.count();
        self.inner.writer(path, mode)
    }
    fn delete(&self, path: &Path, stop: &Path) -> super::Result<bool> {
        self.count();
        self.deletes_allowed()?;
        self.inner.delete(path, stop)
    }
    fn delete_prefix(&self, prefix: &Path, stop: &Path) -> super::Result<bool> {
        self.count();
        self.deletes_allowed()?;
        self.inner.delete_prefix(prefix, stop)
    }
    fn rename(
        &self,
        from: &Path,
        to: &Path,
        stop: &Path,
        durability: Durability,
    ) -> super::Result<()> {
        self.count();
        if self.refuse_renames.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("renames refused by the test".into()));
        }
        if let Some(hook) = &self.on_rename {
            hook(to, false);
        }
        let result = self.inner.rename(from, to, stop, durability);
        if let Some(hook) = &self.on_rename {
            hook(to, true);
        }
        result
    }
}

async fn a_manifest_by_digest_is_served_from_memory_on_remote_storage(backend: Arc<dyn Backend>) {
    let counted = Counted::new(&backend);
    let a = Arc::new(Storage::new(counted.clone()));
    let b = replica(&backend);
    let name = repo("cached/app");
    let by_digest = |d: &Digest| Reference::Digest(d.clone());
    let d = push_image(&b, &name, "v1", b"one").await;
    assert!(a.get_manifest(&name, &by_digest(&d)).unwrap().is_some());
    let before = counted.calls.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert!(a.get_manifest(&name, &by_digest(&d)).unwrap().is_some());
    }
    assert_eq!(
        counted.calls.load(Ordering::SeqCst),
        before,
        "a manifest GET by digest after the first touches storage"
    );
    // Absence is never cached: another replica's push shows at once.
    let d2 = Digest::sha256_of(&image(
        &Digest::sha256_of(b"{}"),
        2,
        &Digest::sha256_of(b"two"),
        3,
    ));
    assert!(a.get_manifest(&name, &by_digest(&d2)).unwrap().is_none());
    assert_eq!(push_image(&b, &name, "v2", b"two").await, d2);
    assert!(a.get_manifest(&name, &by_digest(&d2)).unwrap().is_some());
    // This replica's own deletes show at once.
    assert!(a.delete_manifest(&name, &d2).unwrap());
    assert!(a.get_manifest(&name, &by_digest(&d2)).unwrap().is_none());
    assert!(a.delete_tag(&name, &Tag::parse("v1").unwrap()).unwrap());
    let untagged = super::gc::GcOptions {
        grace: Duration::ZERO,
        delete_untagged: true,
        ..super::gc::GcOptions::default()
    };
    let report = a.run(move |s| s.gc(&untagged)).await.unwrap();
    assert_eq!(report.manifests_deleted, 1, "{report}");
    assert!(a.get_manifest(&name, &by_digest(&d)).unwrap().is_none());
}

/// Catalog pages over a remote backend (paged listings) agree with one
/// sorted list of every name, whatever the page size and `last`, also where
/// listing order and name order differ (`p-01/` lists before `p/`, `p`
/// sorts before `p-01`); and a page in the middle of a large directory
/// makes a few requests, not one per 1,000 names before it.
async fn catalog_pages_are_in_order_and_read_only_what_they_list(backend: Arc<dyn Backend>) {
    let mut names: Vec<String> = (1..=30).map(|i| format!("p-{i:02}")).collect();
    names.extend(["p", "p/q", "p/q-r", "p/q/s", "p.z", "q", "q.1/x", "r-1"].map(str::to_owned));
    names.extend((0..150).map(|i| format!("many/r{i:04}")));
    // Repositories are directories holding `_manifests`; one object each
    // is enough for the catalog. `q.1` holds only a nested repository.
    let backend_ref = &backend;
    std::thread::scope(|scope| {
        for chunk in names.chunks(16) {
            scope.spawn(move || {
                for n in chunk {
                    let path = super::paths::manifests_dir(&repo(n)).join("marker");
                    backend_ref.put(&path, b"x", Durability::Durable).unwrap();
                }
            });
        }
    });
    let mut expected = names.clone();
    expected.sort();
    let counted = Counted::new(&backend);
    let s = Arc::new(Storage::new(counted.clone()));
    let all = |_: &str| true;
    assert_eq!(
        s.catalog_page(None, None, &all).unwrap(),
        (expected.clone(), false)
    );
    for n in [1, 3, 7, 40] {
        let mut walked = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let (page, more) = s.catalog_page(last.as_deref(), Some(n), &all).unwrap();
            assert!(page.len() <= n);
            walked.extend(page.iter().cloned());
            if !more {
                break;
            }
            last = page.last().cloned();
        }
        assert_eq!(walked, expected, "pages of {n}");
    }
    // `last` need not be a repository.
    let (page, _) = s.catalog_page(Some("p-1"), Some(3), &all).unwrap();
    assert_eq!(page, ["p-10", "p-11", "p-12"]);
    let (page, _) = s.catalog_page(Some("p/q-"), Some(2), &all).unwrap();
    assert_eq!(page, ["p/q-r", "p/q/s"]);
    // `keep` filters without shortening the page.
    let (page, more) = s
        .catalog_page(Some("many/r0100"), Some(5), &|n| !n.ends_with('1'))
        .unwrap();
    assert_eq!(
        (page, more),
        (
            [
                "many/r0102",
                "many/r0103",
                "many/r0104",
                "many/r0105",
                "many/r0106"
            ]
            .map(str::to_owned)
            .to_vec(),
            true
        )
    );
    // A page deep in `many/` reads a page of its listing, and the ten
    // directories it returns, not the 100 names before it.
    let before = counted.calls.load(Ordering::SeqCst);
    let (page, _) = s.catalog_page(Some("many/r0100"), Some(10), &all).unwrap();
    assert_eq!(page.len(), 10);
    let calls = counted.calls.load(Ordering::SeqCst) - before;
    assert!(
        calls <= 2 + 2 + 15,
        "{calls} storage calls for a page of 10"
    );
}

/// Whether `to` is where a collection sets aside what `trash` names (for
/// the run `to` belongs to).
fn set_aside_as(to: &Path, trash: impl Fn(&str) -> PathBuf) -> bool {
    to.strip_prefix(super::paths::gc_root())
        .ok()
        .and_then(|rest| rest.iter().next())
        .and_then(|run| run.to_str())
        .is_some_and(|run| to == trash(run))
}

/// Reads the whole blob `d` of `name`, or says why not.
fn pull_blob(s: &Storage, name: &RepoName, d: &Digest) -> Result<Vec<u8>, String> {
    match s.read_blob(name, d, 0) {
        Ok(Some((mut r, _))) => {
            let mut got = Vec::new();
            r.read_to_end(&mut got).map_err(|e| e.to_string())?;
            Ok(got)
        }
        Ok(None) => Err(format!("{d}: not found")),
        Err(e) => Err(format!("{d}: {e:?}")),
    }
}

/// A collection sets aside a blob no manifest referenced when it marked;
/// a push referencing it completes just before the move (its check found
/// the blob there). Until the collection's second look puts it back, the
/// acknowledged image must still pull: the pull takes the blob back itself.
async fn a_blob_set_aside_under_a_push_made_meanwhile_still_pulls(backend: Arc<dyn Backend>) {
    let pusher = replica(&backend);
    let name = repo("race/blob");
    // The config is shared with a kept image: the layer is the one blob
    // the collection sets aside.
    push_image(&pusher, &name, "kept", b"kept layer").await;
    let config = Digest::sha256_of(b"{}");
    let layer = push_blob(&pusher, &name, b"an old layer").await;
    let bytes = image(&config, 2, &layer, 12);
    let manifest =
        Manifest::parse(Some("application/vnd.oci.image.manifest.v1+json"), &bytes).unwrap();
    let digest = Digest::sha256_of(&bytes);
    let tag = Tag::parse("new").unwrap();
    let push = {
        let (pusher, name, tag) = (pusher.clone(), name.clone(), tag.clone());
        move || {
            pusher
                .put_manifest(&name, Some(&tag), &digest, &bytes, &manifest)
                .map_err(|e| format!("push: {e:?}"))
        }
    };
    let pull = {
        let (pusher, name, layer) = (pusher.clone(), name.clone(), layer.clone());
        move || match pusher.get_manifest(&name, &Reference::Tag(tag.clone())) {
            Ok(Some(_)) => pull_blob(&pusher, &name, &layer).and_then(|got| {
                (got == b"an old layer")
                    .then_some(())
                    .ok_or_else(|| "the layer's bytes differ".to_owned())
            }),
            other => Err(format!("manifest: {other:?}")),
        }
    };
    let now = GcOptions {
        grace: Duration::ZERO,
        ..GcOptions::default()
    };
    let trash = {
        let layer = layer.clone();
        move |run: &str| super::paths::gc_trash_blob(run, &layer)
    };
    let report = collect_around_a_move(&backend, now, trash, push, pull).await;
    assert_eq!(report.blobs_deleted, 0, "{report}");
    assert_eq!(pull_blob(&pusher, &name, &layer).unwrap(), b"an old layer");
    assert!(pusher.fsck(false).unwrap().is_clean());
}

/// The same for a revision: with `delete_untagged`, a collection sets an
/// untagged manifest aside just after a push tagged it. A pull by the tag
/// meanwhile takes the revision back.
async fn a_revision_set_aside_under_a_tag_made_meanwhile_still_pulls(backend: Arc<dyn Backend>) {
    let pusher = replica(&backend);
    let name = repo("race/revision");
    let untagged = push_image(&pusher, &name, "old", b"untagged layer").await;
    assert!(
        pusher
            .delete_tag(&name, &Tag::parse("old").unwrap())
            .unwrap()
    );
    let stored = pusher
        .get_manifest(&name, &Reference::Digest(untagged.clone()))
        .unwrap()
        .unwrap();
    let bytes = stored.bytes.clone();
    let manifest =
        Manifest::parse(Some("application/vnd.oci.image.manifest.v1+json"), &bytes).unwrap();
    let tag = Tag::parse("again").unwrap();
    let push = {
        let (pusher, name, tag, untagged) =
            (pusher.clone(), name.clone(), tag.clone(), untagged.clone());
        move || {
            pusher
                .put_manifest(&name, Some(&tag), &untagged, &bytes, &manifest)
                .map_err(|e| format!("push: {e:?}"))
        }
    };
    let pull = {
        let (pusher, name, untagged) = (pusher.clone(), name.clone(), untagged.clone());
        move || match pusher.get_manifest(&name, &Reference::Tag(tag.clone())) {
            Ok(Some(m)) if m.digest == untagged => Ok(()),
            other => Err(format!("pull by tag: {other:?}")),
        }
    };
    let now = GcOptions {
        grace: Duration::ZERO,
        delete_untagged: true,
        ..GcOptions::default()
    };
    let trash = {
        let (name, untagged) = (name.clone(), untagged.clone());
        move |run: &str| super::paths::gc_trash_revision(run, &name, &untagged)
    };
    let report = collect_around_a_move(&backend, now, trash, push, pull).await;
    assert_eq!(
        (report.manifests_deleted, report.blobs_deleted),
        (0, 0),
        "{report}"
    );
    let by_tag = Reference::Tag(Tag::parse("again").unwrap());
    assert!(pusher.get_manifest(&name, &by_tag).unwrap().is_some());
    assert_eq!(
        pull_blob(&pusher, &name, &Digest::sha256_of(b"untagged layer")).unwrap(),
        b"untagged layer"
    );
    assert!(pusher.fsck(false).unwrap().is_clean());
}

/// Runs a collection (`opts`) whose move of what `trash` names into its
/// run's directory is bracketed by `before` (a push, just before the move)
/// and `after` (a pull, just after it); both must succeed, and the move
/// must have happened once.
async fn collect_around_a_move(
    backend: &Arc<dyn Backend>,
    opts: GcOptions,
    trash: impl Fn(&str) -> PathBuf + Send + Sync + 'static,
    before: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    after: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> super::gc::GcReport {
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let moves = Arc::new(AtomicUsize::new(0));
    let hook: RenameHook = {
        let (failures, moves) = (failures.clone(), moves.clone());
        Box::new(move |to, done| {
            if !set_aside_as(to, &trash) {
                return;
            }
            let outcome = if done {
                moves.fetch_add(1, Ordering::SeqCst);
                after()
            } else {
                before()
            };
            if let Err(e) = outcome {
                failures.lock().unwrap().push(e);
            }
        })
    };
    let collector = Arc::new(Storage::new(Counted::with_rename_hook(backend, hook)));
    let report = collector.run(move |s| s.gc(&opts)).await.unwrap();
    assert_eq!(*failures.lock().unwrap(), Vec::<String>::new());
    assert_eq!(moves.load(Ordering::SeqCst), 1, "set aside once: {report}");
    report
}

/// Once a blob is in and linked, an upload is complete: a storage that
/// cannot delete the upload's leftovers (an overloaded S3 refusing a
/// DeleteObjects key) does not turn the completion into an error, which
/// the client would retry against an upload half gone; the session is
/// freed all the same.
async fn a_completed_upload_stays_complete_when_its_leftovers_cannot_be_removed(
    backend: Arc<dyn Backend>,
) {
    let counted = Counted::new(&backend);
    let s = Arc::new(Storage::new(counted.clone()));
    let name = repo("r/leftovers");
    let one_session = UploadLimits {
        per_repository: 1,
        ..UploadLimits::default()
    };
    let id = s
        .create_upload(&name, &UploadOwner::user("t"), &one_session)
        .unwrap();
    let mut state = s.lock_upload(&name, id).await.unwrap();
    let data = b"kept whatever happens to the upload";
    let body = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(data))]);
    s.append_upload(&name, id, &mut state, body, None)
        .await
        .unwrap();
    let d = Digest::sha256_of(data);
    counted.refuse_deletes.store(true, Ordering::SeqCst);
    s.commit_upload(&name, id, &mut state, &d).unwrap();
    drop(state);
    assert_eq!(s.stat_blob(&name, &d).unwrap(), Some(data.len() as u64));
    assert_eq!(pull_blob(&s, &name, &d).unwrap(), data);
    // The session is freed: a cap of one admits the next.
    let next = s.create_upload(&name, &UploadOwner::user("t"), &one_session);
    assert!(next.is_ok(), "{next:?}");
}

/// A completion's first steps as a replica takes them: records that it
/// begins (which must not pass for a retry) and appends its body. Returns
/// the upload's state, held.
async fn begin_and_append(
    s: &Arc<Storage>,
    name: &RepoName,
    id: uuid::Uuid,
    data: &'static [u8],
) -> tokio::sync::OwnedMutexGuard<super::UploadState> {
    let (d, len) = (Digest::sha256_of(data), Some(data.len() as u64));
    let mut state = s.lock_upload(name, id).await.unwrap();
    let known = state.known_digest();
    let replay = s.begin_completion(name, id, state.offset, known.as_ref(), &d, len);
    assert!(!replay.unwrap(), "a first try is no replay");
    let body = stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(data))]);
    s.append_upload(name, id, &mut state, body, len)
        .await
        .unwrap();
    state
}

/// A completion tried again after its first try failed midway (here: its
/// replica died after appending the body; then one failed to link the
/// blob it had committed) finishes from where that try stopped, on any
/// replica: the body is not appended twice, the committed blob is linked.
async fn a_retried_completion_finds_its_body_or_its_commit(backend: Arc<dyn Backend>) {
    let counted = Counted::new(&backend);
    let a = Arc::new(Storage::new(counted.clone()));
    let name = repo("r/retried");
    let limits = UploadLimits::default();
    let owner = UploadOwner::user("t");

    // Replica b appended the body and died; a gets the retry.
    let data: &'static [u8] = b"appended by a replica that died";
    let (d, len) = (Digest::sha256_of(data), Some(data.len() as u64));
    let b = replica(&backend);
    let id = b.create_upload(&name, &owner, &limits).unwrap();
    drop(begin_and_append(&b, &name, id, data).await);
    drop(b);
    let mut state = a.lock_upload(&name, id).await.unwrap();
    assert_eq!(state.offset, data.len() as u64);
    // Another digest, or another length, is another completion.
    let other = Digest::sha256_of(b"other");
    assert!(
        !a.begin_completion(&name, id, state.offset, None, &other, len)
            .unwrap()
    );
    assert!(
        !a.begin_completion(&name, id, state.offset, None, &d, Some(1))
            .unwrap()
    );
    // Those two replaced the record: the retry proper, once more.
    let b = replica(&backend);
    assert!(!b.begin_completion(&name, id, 0, None, &d, len).unwrap());
    assert!(
        a.begin_completion(&name, id, state.offset, None, &d, len)
            .unwrap()
    );
    a.commit_upload(&name, id, &mut state, &d).unwrap();
    drop(state);
    assert_eq!(pull_blob(&a, &name, &d).unwrap(), data);

    // The first try committed and failed to link; the retry links.
    let data: &'static [u8] = b"committed, then the link failed";
    let d = Digest::sha256_of(data);
    let id = a.create_upload(&name, &owner, &limits).unwrap();
    let mut state = begin_and_append(&a, &name, id, data).await;
    counted.refuse_links.store(true, Ordering::SeqCst);
    assert!(a.commit_upload(&name, id, &mut state, &d).is_err());
    counted.refuse_links.store(false, Ordering::SeqCst);
    drop(state);
    assert_eq!(a.stat_blob(&name, &d).unwrap(), None);
    assert!(matches!(
        a.lock_upload(&name, id).await,
        Err(Error::UploadUnknown)
    ));
    // Another digest, or another repository's upload, proves nothing.
    assert_eq!(a.finish_completed(&name, id, &other).unwrap(), None);
    assert_eq!(a.finish_completed(&repo("r/other"), id, &d).unwrap(), None);
    assert_eq!(
        a.finish_completed(&name, id, &d).unwrap(),
        Some(data.len() as u64)
    );
    assert_eq!(pull_blob(&a, &name, &d).unwrap(), data);
    let dir = super::paths::upload_dir(&name, id);
    assert!(backend.stat_prefix(&dir).unwrap().is_none(), "upload left");

    // The first try, on a replica that did not know the hash, set the
    // data aside to check it and failed to move it in: the retry checks
    // and moves it, and links.
    let data: &'static [u8] = b"set aside, then the move failed";
    let d = Digest::sha256_of(data);
    let id = a.create_upload(&name, &owner, &limits).unwrap();
    let c = Arc::new(Storage::new(counted.clone()));
    let mut state = begin_and_append(&c, &name, id, data).await;
    assert_eq!(state.known_digest(), None);
    counted.refuse_renames.store(true, Ordering::SeqCst);
    assert!(c.commit_upload(&name, id, &mut state, &d).is_err());
    counted.refuse_renames.store(false, Ordering::SeqCst);
    drop(state);
    assert!(matches!(
        a.lock_upload(&name, id).await,
        Err(Error::UploadUnknown)
    ));
    assert_eq!(
        a.finish_completed(&name, id, &d).unwrap(),
        Some(data.len() as u64)
    );
    assert_eq!(pull_blob(&a, &name, &d).unwrap(), data);

    // A cancelled upload's record is gone with it.
    let id = a.create_upload(&name, &owner, &limits).unwrap();
    assert!(!a.begin_completion(&name, id, 0, None, &d, Some(0)).unwrap());
    assert!(a.cancel_upload(&name, id).unwrap());
    assert_eq!(a.finish_completed(&name, id, &d).unwrap(), None);
}
