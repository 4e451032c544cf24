//! The registry's storage: repositories, blobs, manifests, tags, uploads and
//! referrers, over a [`Backend`]. The HTTP layer calls these methods and
//! never touches files; `paths` is the only module that knows the layout.
//!
//! Methods are blocking (they run on tokio's blocking pool, see
//! [`Storage::run`]), except the streaming upload in `uploads`; the
//! backend trait (`backend`) says why.
//!
//! # Correctness without POSIX
//!
//! Nothing here rests on a rename, a lock or a directory: every argument
//! holds on an object store as on the filesystem.
//! - Links are whole objects replaced atomically ([`Backend::put`]): a
//!   reader sees the old digest or the new one.
//! - A repository, a tag, an upload exists while objects lie under its
//!   prefix; a delete takes emptied prefixes with it (the filesystem
//!   removes the directories), so the catalog and tag lists never show
//!   something empty.
//! - Manifest bodies are cached by digest forever (content-addressed).
//!   Whether a repository holds one is read from storage every time where
//!   storage is local; over the network (S3) a repository's revision links
//!   seen are remembered for [`REVISIONS_CACHE_TTL`], so that a manifest
//!   GET by digest makes no request to the bucket after the first. This
//!   process forgets a link as soon as it deletes it (manifest delete,
//!   repository delete, garbage collection); a delete made through
//!   another replica shows here within the TTL. Absence is never cached:
//!   a push through another replica shows at once.
//! - Tag listings are cached (see [`Storage::list_tags`]): on the
//!   filesystem by the directory's mtime as before; on backends without
//!   prefix times for [`TAGS_CACHE_TTL`], and dropped at once when this
//!   process changes a tag — another replica's change shows within the
//!   TTL.
//! - Garbage collection and fsck: see `gc` and `fsck`.

pub mod backend;
pub mod browse;
mod cache;
mod catalog;
pub mod error;
pub mod fsck;
pub mod gc;
pub mod paths;
#[cfg(test)]
mod tests;
pub mod upload_limits;
pub mod uploads;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use self::backend::Backend;
use self::backend::fs::FsBackend;
use self::backend::memory::MemoryBackend;
use self::backend::{Durability, LOCAL_CHANGES_PARALLELISM};
use self::error::Context;
pub use self::error::{Error, Result};
use crate::config::{Config, StorageDriver};
use crate::oci::manifest::stored_media_type;
use crate::oci::{Digest, Manifest, MediaType, Reference, RepoName, Tag};
pub use uploads::UploadState;

/// A manifest as stored: the client's exact bytes and its media type.
#[derive(Debug)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: MediaType,
    pub bytes: Bytes,
}

/// A tag listing and the state of the tags prefix it was made from.
#[derive(Debug)]
struct CachedTags {
    /// The prefix's time, on backends that keep one.
    modified: Option<SystemTime>,
    listed_at: SystemTime,
    tags: Arc<Vec<String>>,
}

/// How long after the last change of a tags directory its listing must have
/// been made to be reused (coarse or remote filesystem timestamps).
pub const TAGS_CACHE_MARGIN: Duration = Duration::from_secs(2);

/// How long a tag listing is reused on backends without prefix times
/// (object stores): the delay before another replica's tag change shows.
pub const TAGS_CACHE_TTL: Duration = Duration::from_secs(1);

/// How long a blob URL given out by [`Storage::blob_redirect`] stays valid
/// (as distribution's S3 driver): long enough for a slow client to start,
/// short enough not to work as a lasting link.
pub const REDIRECT_EXPIRY: Duration = Duration::from_secs(20 * 60);

/// How long a repository's revision link, once read, is taken as present
/// without asking an object store again (see the module comment).
pub const REVISIONS_CACHE_TTL: Duration = Duration::from_secs(10);

/// How many calls [`Storage::par_map`] keeps in flight on a remote backend:
/// enough to hide round trips, few enough not to flood the server.
const REMOTE_PARALLELISM: usize = 16;

/// Memory given to the cache of manifest bodies, in bytes.
const MANIFEST_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Opens the storage the configuration names (`storage.filesystem`,
/// `storage.s3`, `storage.inmemory`). An S3 bucket is checked here: bad
/// credentials, a missing bucket or an unreachable endpoint fail the start.
pub fn open(config: &Config) -> Result<Storage> {
    let backend: Arc<dyn Backend> = match &config.storage {
        StorageDriver::Filesystem { root } => {
            std::fs::create_dir_all(root)
                .map_err(|e| Error::io(&format!("creating storage root {}", root.display()), &e))?;
            Arc::new(FsBackend::new(root))
        }
        StorageDriver::InMemory => Arc::new(MemoryBackend::new()),
        StorageDriver::S3(s3) => Arc::new(backend::s3::S3Backend::open(s3)?),
    };
    Ok(Storage::new(backend))
}

pub struct Storage {
    backend: Arc<dyn Backend>,
    /// Manifest bodies by digest. Content-addressed, hence never stale:
    /// whether a repository holds the manifest is still checked on disk.
    manifests: moka::sync::Cache<Digest, Arc<StoredManifest>>,
    uploads: uploads::UploadStates,
    /// Tag listings by repository, see [`Storage::list_tags`].
    tags: moka::sync::Cache<RepoName, Arc<CachedTags>>,
    /// Revision links known present, on remote backends only (see the
    /// module comment).
    revisions: Option<moka::sync::Cache<(RepoName, Digest), ()>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Storage {
    pub fn new(backend: Arc<dyn Backend>) -> Storage {
        Storage {
            manifests: moka::sync::Cache::builder()
                .max_capacity(MANIFEST_CACHE_BYTES)
                .weigher(|_, m: &Arc<StoredManifest>| {
                    u32::try_from(m.bytes.len()).unwrap_or(u32::MAX)
                })
                .build(),
            uploads: uploads::UploadStates::new(),
            tags: moka::sync::Cache::builder()
                .max_capacity(1 << 20)
                .weigher(|_, t: &Arc<CachedTags>| {
                    u32::try_from(t.tags.len() + 1).unwrap_or(u32::MAX)
                })
                .build(),
            revisions: backend.is_remote().then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(REVISIONS_CACHE_TTL)
                    .build()
            }),
            backend,
        }
    }

    /// Forgets that the repository holds revision `d` (it was deleted, or
    /// set aside by garbage collection).
    fn forget_revision(&self, name: &RepoName, d: &Digest) {
        if let Some(cache) = &self.revisions {
            cache.invalidate(&(name.clone(), d.clone()));
        }
    }

    /// `f` of every item, in the items' order. On a remote backend up to
    /// [`REMOTE_PARALLELISM`] run at once, on threads of their own (each
    /// waits for a round trip; GC and the catalog make thousands); on a
    /// local one, one after the other on this thread. After an error no
    /// further item is started, and the first error is returned.
    fn par_map<T, R, F>(&self, items: Vec<T>, f: F) -> Result<Vec<R>>
    where
        T: Send,
        R: Send,
        F: Fn(T) -> Result<R> + Sync,
    {
        self.par_map_on(items, 1, f)
    }

    /// [`Storage::par_map`] for calls that move or remove objects: on a
    /// local filesystem too, [`LOCAL_CHANGES_PARALLELISM`] run at once.
    /// Each such call waits for the filesystem's journal rather than for
    /// the CPU, and calls made at once share its commits (measured in the
    /// benchmark's GC: 2,400 blobs set aside and 2,000 links removed took
    /// 0.5 s less this way).
    fn par_map_changes<T, R, F>(&self, items: Vec<T>, f: F) -> Result<Vec<R>>
    where
        T: Send,
        R: Send,
        F: Fn(T) -> Result<R> + Sync,
    {
        self.par_map_on(items, LOCAL_CHANGES_PARALLELISM, f)
    }

    fn par_map_on<T, R, F>(&self, items: Vec<T>, local: usize, f: F) -> Result<Vec<R>>
    where
        T: Send,
        R: Send,
        F: Fn(T) -> Result<R> + Sync,
    {
        let workers = if self.backend.is_remote() {
            REMOTE_PARALLELISM
        } else {
            local
        }
        .min(items.len());
        if workers <= 1 {
            return items.into_iter().map(f).collect();
        }
        let n = items.len();
        let queue = std::sync::Mutex::new(items.into_iter().enumerate());
        let failed = std::sync::atomic::AtomicBool::new(false);
        let worker = || -> Result<Vec<(usize, R)>> {
            let mut done = Vec::new();
            while !failed.load(std::sync::atomic::Ordering::Relaxed) {
                let next = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .next();
                let Some((i, item)) = next else { break };
                match f(item) {
                    Ok(r) => done.push((i, r)),
                    Err(e) => {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return Err(e);
                    }
                }
            }
            Ok(done)
        };
        let results: Vec<Result<Vec<(usize, R)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Io("a storage worker panicked".into())))
                })
                .collect()
        });
        let mut out: Vec<Option<R>> = std::iter::repeat_with(|| None).take(n).collect();
        for r in results {
            for (i, v) in r? {
                out[i] = Some(v);
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| Error::Io("a storage worker lost an item".into())))
            .collect()
    }

    /// Whether the repository holds manifest revision `d`.
    fn has_revision(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let key = (name.clone(), d.clone());
        if let Some(cache) = &self.revisions
            && cache.contains_key(&key)
        {
            return Ok(true);
        }
        let present = self.link_is(&paths::revision_link(name, d), d)?;
        if present && let Some(cache) = &self.revisions {
            cache.insert(key, ());
        }
        Ok(present)
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Runs blocking storage work on tokio's blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(&Storage) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| Error::Io(format!("storage task failed: {e}")))?
    }

    /// Reads a link file: the digest it holds, or `None` when absent. A link
    /// that does not hold a digest is treated as absent (and logged): it can
    /// only come from outside interference.
    fn read_link(&self, path: &Path) -> Result<Option<Digest>> {
        let Some(bytes) = self.backend.get(path).context("reading a link")? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(d) = Digest::parse(text.trim()) {
            Ok(Some(d))
        } else {
            tracing::warn!(path = %path.display(), "ignoring a link file that holds no digest");
            Ok(None)
        }
    }

    fn write_link(&self, path: &Path, d: &Digest) -> Result<()> {
        self.backend
            .put(path, d.to_string().as_bytes(), Durability::Durable)
            .context("writing a link")
    }

    /// Whether `link` exists and names `d`.
    fn link_is(&self, link: &Path, d: &Digest) -> Result<bool> {
        Ok(self.read_link(link)?.as_ref() == Some(d))
    }

    // ----- repositories -----

    /// Whether the repository exists (holds manifests, as distribution sees it).
    pub fn repo_exists(&self, name: &RepoName) -> Result<bool> {
        Ok(self
            .backend
            .stat_prefix(&paths::manifests_dir(name))
            .context("reading a repository")?
            .is_some())
    }

    /// Every repository name, sorted. A repository is a directory holding
    /// `_manifests`, as distribution sees it.
    pub fn list_repositories(&self) -> Result<Vec<RepoName>> {
        let mut out = self.repositories_holding(&paths::repositories_root(), "_manifests")?;
        out.sort_unstable();
        Ok(out)
    }

    /// Names of the repositories under `root` whose directory holds `marker`
    /// (`_manifests`, `_layers`, `_uploads`, …). Directories starting with
    /// `_` are never descended into, nor staged ones (`.name.tmp-…`) not
    /// yet in place; names that are not valid repository names are skipped.
    fn repositories_holding(&self, root: &Path, marker: &str) -> Result<Vec<RepoName>> {
        let mut out = Vec::new();
        // Level by level, so that a remote backend lists a level's
        // directories in parallel.
        let mut level = vec![(root.to_path_buf(), String::new())];
        while !level.is_empty() {
            let listed = self.par_map(level, |(dir, prefix)| {
                let entries = self.backend.list(&dir).context("listing repositories")?;
                Ok((dir, prefix, entries))
            })?;
            let mut next = Vec::new();
            for (dir, prefix, entries) in listed {
                for entry in entries {
                    if !entry.is_prefix || entry.name.starts_with('.') {
                        continue;
                    }
                    if entry.name == marker {
                        if let Ok(name) = RepoName::parse(&prefix) {
                            out.push(name);
                        }
                    } else if !entry.name.starts_with('_') {
                        let name = if prefix.is_empty() {
                            entry.name.clone()
                        } else {
                            format!("{prefix}/{}", entry.name)
                        };
                        if name.len() <= token::name::MAX_REPOSITORY_LEN {
                            next.push((dir.join(&entry.name), name));
                        }
                    }
                }
            }
            level = next;
        }
        Ok(out)
    }

    /// The digests named by the entries `<dir>/<algorithm>/<hex>` (blob
    /// links, revisions, referrers, content set aside); entries that name
    /// no digest are skipped.
    fn digests_in(&self, dir: &Path) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in self.backend.list(dir).context("listing a directory")? {
            if !alg.is_prefix {
                continue;
            }
            for entry in self
                .backend
                .list(&dir.join(&alg.name))
                .context("listing a directory")?
            {
                if let Ok(d) = Digest::parse(&format!("{}:{}", alg.name, entry.name)) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    // ----- blobs -----

    /// Size of blob `d` if the repository holds it (as a layer, or as a
    /// manifest revision) and its data exists.
    pub fn stat_blob(&self, name: &RepoName, d: &Digest) -> Result<Option<u64>> {
        if !self.blob_linked(name, d)? {
            return Ok(None);
        }
        let meta = self.or_taken_back(d, || {
            self.backend
                .stat(&paths::blob_data(d))
                .context("reading a blob")
        })?;
        Ok(meta.map(|m| m.size))
    }

    fn blob_linked(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        Ok(self.link_is(&paths::layer_link(name, d), d)?
            || self.link_is(&paths::revision_link(name, d), d)?)
    }

    /// Reads blob `d` of the repository from `offset`: a reader and the
    /// blob's whole size, or `None` when the repository does not hold it.
    pub fn read_blob(
        &self,
        name: &RepoName,
        d: &Digest,
        offset: u64,
    ) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        if !self.blob_linked(name, d)? {
            return Ok(None);
        }
        self.or_taken_back(d, || {
            self.backend
                .read_from(&paths::blob_data(d), offset)
                .context("opening a blob")
        })
    }

    /// `read` of blob `d`'s data; when it finds nothing, again after taking
    /// the data back from a running collection that set it aside (see
    /// `gc`). Only for blobs the request's repository links.
    fn or_taken_back<T>(
        &self,
        d: &Digest,
        read: impl Fn() -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        match read()? {
            None if self.take_back_blob(d)? => read(),
            found => Ok(found),
        }
    }

    /// Whether blob data for `d` exists in the store, whatever repository
    /// holds it.
    pub fn blob_data_exists(&self, d: &Digest) -> Result<bool> {
        Ok(self
            .backend
            .stat(&paths::blob_data(d))
            .context("reading a blob")?
            .is_some())
    }

    /// Where the client can fetch blob `d` of the repository itself
    /// (`storage.redirect`): a URL valid for [`REDIRECT_EXPIRY`] when the
    /// backend makes them (S3) and the repository holds the blob; `None`
    /// otherwise, and the registry serves the bytes (or the 404).
    pub fn blob_redirect(&self, name: &RepoName, d: &Digest) -> Result<Option<String>> {
        let Some(url) = self
            .backend
            .presigned_get(&paths::blob_data(d), REDIRECT_EXPIRY)
            .context("signing a blob URL")?
        else {
            return Ok(None);
        };
        Ok(self.stat_blob(name, d)?.map(|_| url))
    }

    /// Links an existing blob into a repository (upload completion, mount).
    pub fn link_blob(&self, name: &RepoName, d: &Digest) -> Result<()> {
        let link = paths::layer_link(name, d);
        if self.link_is(&link, d)? {
            return Ok(());
        }
        self.write_link(&link, d)
    }

    /// Removes blob `d` from a repository; its data stays for the garbage
    /// collector, since other repositories may hold it.
    pub fn unlink_blob(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        self.backend
            .delete(&paths::layer_link(name, d), &paths::layers_dir(name))
            .context("deleting a blob link")
    }

    // ----- manifests -----

    /// Stores a validated manifest under its digest, links it into the
    /// repository (and its subject's referrers), and points `tag` at it.
    ///
    /// Everything the manifest references must be in the repository first
    /// (MANIFEST_BLOB_UNKNOWN otherwise). Because the garbage collector runs
    /// while we serve, the references are checked again once the links are
    /// written: the collector moves unreferenced content aside and then
    /// looks for links written meanwhile, while we write links and then look
    /// for the content, so one of the two always sees the other (see `gc`).
    /// If content vanished in between, the push is undone and refused.
    pub fn put_manifest(
        &self,
        name: &RepoName,
        tag: Option<&Tag>,
        digest: &Digest,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<()> {
        self.verify_references(name, manifest)?;
        let revision = paths::revision_link(name, digest);
        let had_revision = self.link_is(&revision, digest)?;
        let previous_tag = match tag {
            Some(t) => self.read_link(&paths::tag_current_link(name, t))?,
            None => None,
        };
        self.ensure_manifest_linked(name, digest, bytes)?;
        if let Some(subject) = &manifest.subject {
            self.write_link(&paths::referrer_link(name, &subject.digest, digest), digest)?;
        }
        if let Some(tag) = tag {
            // `current` first: a new tag's directory appears with it.
            if previous_tag.as_ref() != Some(digest) {
                self.write_link(&paths::tag_current_link(name, tag), digest)?;
            }
            self.write_link(&paths::tag_index_link(name, tag, digest), digest)?;
            self.tags.invalidate(name);
        }
        // The second look, after the links are visible.
        self.ensure_manifest_linked(name, digest, bytes)?;
        if let Err(e) = self.verify_references(name, manifest) {
            tracing::warn!(repository = %name, %digest, "content vanished during the push (garbage collection); undoing it");
            if let Some(tag) = tag {
                match &previous_tag {
                    Some(prev) => self.write_link(&paths::tag_current_link(name, tag), prev)?,
                    None => {
                        self.delete_tag(name, tag)?;
                    }
                }
            }
            if !had_revision {
                self.remove_link(&revision, &paths::revisions_dir(name))?;
                self.forget_revision(name, digest);
            }
            return Err(e);
        }
        self.cache_manifest(digest, manifest.media_type, bytes);
        Ok(())
    }

    /// Keeps a manifest's body in the cache by digest. A request body is
    /// often a view into a larger read buffer: an exact copy is cached, so
    /// that the cache's byte bound is what it holds.
    pub(crate) fn cache_manifest(&self, digest: &Digest, media_type: MediaType, bytes: &[u8]) {
        self.manifests.insert(
            digest.clone(),
            Arc::new(StoredManifest {
                digest: digest.clone(),
                media_type,
                bytes: Bytes::copy_from_slice(bytes),
            }),
        );
    }

    /// Makes sure the manifest's own bytes are in the blob store and its
    /// revision link is in the repository.
    fn ensure_manifest_linked(&self, name: &RepoName, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let data = paths::blob_data(digest);
        if self
            .backend
            .stat(&data)
            .context("reading a manifest")?
            .is_none()
        {
            self.backend
                .put(&data, bytes, Durability::Durable)
                .context("writing a manifest")?;
        }
        let revision = paths::revision_link(name, digest);
        if !self.link_is(&revision, digest)? {
            self.write_link(&revision, digest)?;
        }
        Ok(())
    }

    /// Everything a manifest references must be in the repository: blobs
    /// (config and layers, with the size the manifest says) for an image,
    /// manifests for an index.
    pub fn verify_references(&self, name: &RepoName, m: &Manifest) -> Result<()> {
        let blob_unknown = |d: &Digest| Error::ManifestBlobUnknown {
            repository: name.clone(),
            digest: d.clone(),
        };
        for desc in m.required_blobs() {
            match self.stat_blob(name, &desc.digest)? {
                None => return Err(blob_unknown(&desc.digest)),
                Some(size) if size != desc.size => {
                    return Err(Error::BlobSizeMismatch {
                        digest: desc.digest.clone(),
                        actual: size,
                        declared: desc.size,
                    });
                }
                Some(_) => {}
            }
        }
        for desc in &m.manifests {
            let present = self
                .resolve(name, &Reference::Digest(desc.digest.clone()))?
                .is_some()
                && self.blob_data_exists(&desc.digest)?;
            if !present {
                return Err(blob_unknown(&desc.digest));
            }
        }
        Ok(())
    }

    /// The digest a reference resolves to in the repository, if any.
    pub fn resolve(&self, name: &RepoName, reference: &Reference) -> Result<Option<Digest>> {
        let (digest, tagged) = match reference {
            Reference::Tag(tag) => match self.read_link(&paths::tag_current_link(name, tag))? {
                Some(d) => (d, true),
                None => return Ok(None),
            },
            Reference::Digest(d) => (d.clone(), false),
        };
        if self.has_revision(name, &digest)? {
            return Ok(Some(digest));
        }
        // A tagged revision missing: a running collection set it aside
        // before the tag was written, and puts it back after its second
        // look; the request does not wait for that.
        let taken_back = tagged
            && self.take_back_revision(name, &digest)?
            && self.has_revision(name, &digest)?;
        Ok(taken_back.then_some(digest))
    }

    /// The manifest a reference names in the repository.
    pub fn get_manifest(
        &self,
        name: &RepoName,
        reference: &Reference,
    ) -> Result<Option<Arc<StoredManifest>>> {
        match self.resolve(name, reference)? {
            Some(d) => self.load_manifest(&d),
            None => Ok(None),
        }
    }

    /// A manifest body by digest, from the cache or the blob store.
    pub fn load_manifest(&self, d: &Digest) -> Result<Option<Arc<StoredManifest>>> {
        if let Some(m) = self.manifests.get(d) {
            return Ok(Some(m));
        }
        let Some(bytes) = self.or_taken_back(d, || {
            self.backend
                .get(&paths::blob_data(d))
                .context("reading a manifest")
        })?
        else {
            return Ok(None);
        };
        let m = Arc::new(StoredManifest {
            digest: d.clone(),
            media_type: stored_media_type(&bytes),
            bytes,
        });
        self.manifests.insert(d.clone(), m.clone());
        Ok(Some(m))
    }

    /// Deletes a manifest from a repository with every tag pointing at it
    /// and its referrers entry. Returns whether the repository held it. A
    /// repository left without manifests disappears from the catalog.
    pub fn delete_manifest(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let link = paths::revision_link(name, d);
        if !self.link_is(&link, d)? {
            return Ok(false);
        }
        for tag in self.list_tags(name)?.unwrap_or_default().iter() {
            let Ok(tag) = Tag::parse(tag) else { continue };
            if self
                .read_link(&paths::tag_current_link(name, &tag))?
                .as_ref()
                == Some(d)
            {
                self.delete_tag(name, &tag)?;
            }
        }
        if let Some(m) = self.load_manifest(d)?
            && let Ok(parsed) = Manifest::parse(Some(m.media_type.as_str()), &m.bytes)
            && let Some(subject) = parsed.subject
        {
            let referrer = paths::referrer_link(name, &subject.digest, d);
            self.remove_link(&referrer, &paths::repositories_root())?;
        }
        self.remove_link(&link, &paths::repositories_root())?;
        self.forget_revision(name, d);
        Ok(true)
    }

    /// Removes a link file and then every directory above it left empty, up
    /// to `stop`: the last tag or manifest of a repository takes
    /// `_manifests` with it, which takes the repository out of the catalog.
    fn remove_link(&self, link: &Path, stop: &Path) -> Result<()> {
        self.backend.delete(link, stop).context("deleting a link")?;
        Ok(())
    }

    /// Deletes a whole repository: its manifests, tags, blob links and
    /// uploads. Repositories nested under its name are left alone; blob data
    /// stays for the garbage collector. Returns whether it existed.
    pub fn delete_repository(&self, name: &RepoName) -> Result<bool> {
        let dirs = [
            paths::manifests_dir(name),
            paths::layers_dir(name),
            paths::uploads_dir(name),
        ];
        for id in self.upload_ids(name)? {
            self.delete_completion_record(name, id)?;
        }
        let mut existed = false;
        for dir in &dirs {
            existed |= self
                .backend
                .delete_prefix(dir, &paths::repositories_root())
                .context("deleting a repository")?;
        }
        self.tags.invalidate(name);
        if let Some(cache) = &self.revisions {
            cache.invalidate_all();
        }
        Ok(existed)
    }

    // ----- tags -----

    /// The repository's tags, sorted; `None` when the repository does not
    /// exist.
    ///
    /// Listings are cached. Where the backend keeps a time on the tags
    /// prefix (the filesystem: the directory's mtime, which changes
    /// whenever a tag appears or goes), a cached listing is reused while
    /// that time is unchanged, and only when it was made
    /// [`TAGS_CACHE_MARGIN`] after that time: a change within the same
    /// timestamp tick as the listing could otherwise go unseen. Since the
    /// check is against storage, replicas sharing it see each other's tags
    /// at once. Where there is no such time (object stores), a listing is
    /// reused for [`TAGS_CACHE_TTL`], and this process drops it whenever it
    /// changes a tag itself.
    pub fn list_tags(&self, name: &RepoName) -> Result<Option<Arc<Vec<String>>>> {
        let dir = paths::tags_dir(name);
        let Some(meta) = self.backend.stat_prefix(&dir).context("listing tags")? else {
            // Without tags, a repository that still holds manifests or blobs
            // lists none; one that holds nothing is unknown. (Its last
            // manifest deleted, it leaves the catalog but keeps its blobs
            // until they are deleted too, as the OCI conformance suite
            // expects: the tag list then shrinks to nothing, not to 404.)
            let known = self.repo_exists(name)?
                || self
                    .backend
                    .stat_prefix(&paths::layers_dir(name))
                    .context("listing tags")?
                    .is_some();
            return Ok(known.then(|| Arc::new(Vec::new())));
        };
        if let Some(cached) = self.tags.get(name) {
            let fresh = match (cached.modified, meta.modified) {
                (Some(then), Some(now)) => {
                    then == now
                        && cached
                            .listed_at
                            .duration_since(now)
                            .is_ok_and(|d| d >= TAGS_CACHE_MARGIN)
                }
                (None, None) => cached
                    .listed_at
                    .elapsed()
                    .is_ok_and(|age| age < TAGS_CACHE_TTL),
                _ => false,
            };
            if fresh {
                return Ok(Some(cached.tags.clone()));
            }
        }
        let listed_at = SystemTime::now();
        let mut tags: Vec<String> = self
            .backend
            .list(&dir)
            .context("listing tags")?
            .into_iter()
            .filter(|e| e.is_prefix && token::name::is_valid_tag(&e.name))
            .map(|e| e.name)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let tags = Arc::new(tags);
        self.tags.insert(
            name.clone(),
            Arc::new(CachedTags {
                modified: meta.modified,
                listed_at,
                tags: tags.clone(),
            }),
        );
        Ok(Some(tags))
    }

    /// Deletes a tag (not the manifest it points at). Returns whether it
    /// existed. A repository left without tags or manifests disappears from
    /// the catalog.
    pub fn delete_tag(&self, name: &RepoName, tag: &Tag) -> Result<bool> {
        let existed = self
            .backend
            .delete_prefix(&paths::tag_dir(name, tag), &paths::repositories_root())
            .context("deleting a tag")?;
        self.tags.invalidate(name);
        Ok(existed)
    }

    // ----- referrers -----

    /// Manifests of the repository whose `subject` is `subject`.
    pub fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Vec<Arc<StoredManifest>>> {
        let mut out = Vec::new();
        for d in self.digests_in(&paths::referrers_dir(name, subject))? {
            // Still a manifest of this repository (not deleted since).
            if self.resolve(name, &Reference::Digest(d.clone()))?.is_none() {
                continue;
            }
            if let Some(m) = self.load_manifest(&d)? {
                out.push(m);
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
