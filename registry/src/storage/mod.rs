//! The registry's storage: repositories, blobs, manifests, tags, uploads and
//! referrers, over a [`Backend`]. The HTTP layer calls these methods and
//! never touches files; `paths` is the only module that knows the layout.
//!
//! Methods are blocking (they run on tokio's blocking pool, see
//! [`Storage::run`]), except the streaming upload in `uploads`.

pub mod browse;
pub mod fs;
pub mod fsck;
pub mod gc;
pub mod paths;
pub mod upload_limits;
pub mod uploads;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use self::fs::{Backend, FsBackend};
use crate::error::{Error, ErrorCode, Result};
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

/// A tag listing and the state of the tags directory it was made from.
#[derive(Debug)]
struct CachedTags {
    modified: std::time::SystemTime,
    listed_at: std::time::SystemTime,
    tags: Arc<Vec<String>>,
}

/// How long after the last change of a tags directory its listing must have
/// been made to be reused (coarse or remote filesystem timestamps).
pub const TAGS_CACHE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Memory given to the cache of manifest bodies, in bytes.
const MANIFEST_CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct Storage<B: Backend = FsBackend> {
    backend: B,
    /// Manifest bodies by digest. Content-addressed, hence never stale:
    /// whether a repository holds the manifest is still checked on disk.
    manifests: moka::sync::Cache<Digest, Arc<StoredManifest>>,
    uploads: uploads::UploadStates,
    /// Tag listings by repository, see [`Storage::list_tags`].
    tags: moka::sync::Cache<RepoName, Arc<CachedTags>>,
}

impl<B: Backend> std::fmt::Debug for Storage<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

fn io_err(context: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, &e)
}

impl<B: Backend> Storage<B> {
    pub fn new(backend: B) -> Storage<B> {
        Storage {
            backend,
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
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Runs blocking storage work on tokio's blocking pool.
    pub async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        F: FnOnce(&Storage<B>) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| Error::internal("storage task failed", e))?
    }

    /// Reads a link file: the digest it holds, or `None` when absent. A link
    /// that does not hold a digest is treated as absent (and logged): it can
    /// only come from outside interference.
    fn read_link(&self, path: &Path) -> Result<Option<Digest>> {
        let Some(bytes) = self.backend.read(path).map_err(io_err("reading a link"))? else {
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
            .write_atomic(path, d.to_string().as_bytes())
            .map_err(io_err("writing a link"))
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
            .stat(&paths::manifests_dir(name))
            .map_err(io_err("reading a repository"))?
            .is_some_and(|m| m.is_dir))
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
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for entry in self
                .backend
                .list(&dir)
                .map_err(io_err("listing repositories"))?
            {
                if !entry.is_dir || entry.name.starts_with('.') {
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
                        stack.push((dir.join(&entry.name), name));
                    }
                }
            }
        }
        Ok(out)
    }

    /// One page of the catalog: repositories after `last` in lexical order,
    /// for which `keep` holds, at most `n` (all when `None`); and whether
    /// more follow.
    ///
    /// The walk produces names in lexical order directly (a directory's
    /// entries are visited as the keys `name` and `name/`, sorted), so it can
    /// skip every subtree that lies wholly before `last` and stop once the
    /// page is full: a page costs what it lists, not the whole catalog.
    pub fn catalog_page(
        &self,
        last: Option<&str>,
        n: Option<usize>,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<String>, bool)> {
        let mut out = Vec::new();
        let limit = n.map_or(usize::MAX, |n| n.saturating_add(1));
        if limit > 0 {
            self.catalog_walk(&paths::repositories_root(), "", last, limit, keep, &mut out)?;
        }
        let more = n.is_some_and(|n| out.len() > n);
        out.truncate(n.unwrap_or(usize::MAX));
        Ok((out, more))
    }

    fn catalog_walk(
        &self,
        dir: &Path,
        prefix: &str,
        last: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&str) -> bool,
        out: &mut Vec<String>,
    ) -> Result<()> {
        // Each child appears twice: as the repository it may be (`name`)
        // and as the parent of nested ones (`name/`).
        let mut keys: Vec<(String, bool)> = Vec::new();
        for entry in self
            .backend
            .list(dir)
            .map_err(io_err("listing repositories"))?
        {
            if !entry.is_dir || entry.name.starts_with(['.', '_']) {
                continue;
            }
            let name = if prefix.is_empty() {
                entry.name.clone()
            } else {
                format!("{prefix}/{}", entry.name)
            };
            if !token::name::is_valid_repository(&name) {
                continue;
            }
            keys.push((format!("{name}/"), true));
            keys.push((name, false));
        }
        keys.sort_unstable();
        for (key, is_subtree) in keys {
            if out.len() >= limit {
                break;
            }
            if is_subtree {
                // Every name below starts with `key`; all of them come before
                // `last` when `last` is past `key` without starting with it.
                if last.is_some_and(|l| l > key.as_str() && !l.starts_with(&key)) {
                    continue;
                }
                let name = &key[..key.len() - 1];
                let sub = dir.join(&name[name.rfind('/').map_or(0, |i| i + 1)..]);
                self.catalog_walk(&sub, name, last, limit, keep, out)?;
            } else {
                if last.is_some_and(|l| key.as_str() <= l) {
                    continue;
                }
                let child = &key[key.rfind('/').map_or(0, |i| i + 1)..];
                let is_repo = self
                    .backend
                    .stat(&dir.join(child).join("_manifests"))
                    .map_err(io_err("reading a repository"))?
                    .is_some_and(|m| m.is_dir);
                if is_repo && keep(&key) {
                    out.push(key);
                }
            }
        }
        Ok(())
    }

    /// The digests named by the entries `<dir>/<algorithm>/<hex>` (blob
    /// links, revisions, referrers, content set aside); entries that name
    /// no digest are skipped.
    fn digests_in(&self, dir: &Path) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in self
            .backend
            .list(dir)
            .map_err(io_err("listing a directory"))?
        {
            if !alg.is_dir {
                continue;
            }
            for entry in self
                .backend
                .list(&dir.join(&alg.name))
                .map_err(io_err("listing a directory"))?
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
        Ok(self
            .backend
            .stat(&paths::blob_data(d))
            .map_err(io_err("reading a blob"))?
            .filter(|m| !m.is_dir)
            .map(|m| m.size))
    }

    fn blob_linked(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        Ok(self.link_is(&paths::layer_link(name, d), d)?
            || self.link_is(&paths::revision_link(name, d), d)?)
    }

    /// Opens blob `d` of the repository for reading.
    pub fn open_blob(&self, name: &RepoName, d: &Digest) -> Result<Option<(B::Reader, u64)>> {
        if !self.blob_linked(name, d)? {
            return Ok(None);
        }
        self.backend
            .open_read(&paths::blob_data(d))
            .map_err(io_err("opening a blob"))
    }

    /// Whether blob data for `d` exists in the store, whatever repository
    /// holds it.
    pub fn blob_data_exists(&self, d: &Digest) -> Result<bool> {
        Ok(self
            .backend
            .stat(&paths::blob_data(d))
            .map_err(io_err("reading a blob"))?
            .is_some())
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
        let link = paths::layer_link(name, d);
        let existed = self
            .backend
            .remove_file(&link)
            .map_err(io_err("deleting a blob link"))?;
        if existed {
            let dir = link.parent().map(Path::to_path_buf).unwrap_or_default();
            self.backend
                .prune_empty_dirs(&dir, &paths::layers_dir(name))
                .map_err(io_err("deleting a blob link"))?;
        }
        Ok(existed)
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
            }
            return Err(e);
        }
        // A request body is often a view into a larger read buffer: cache an
        // exact copy, so that the cache's byte bound is what it holds.
        self.manifests.insert(
            digest.clone(),
            Arc::new(StoredManifest {
                digest: digest.clone(),
                media_type: manifest.media_type,
                bytes: Bytes::copy_from_slice(bytes),
            }),
        );
        Ok(())
    }

    /// Makes sure the manifest's own bytes are in the blob store and its
    /// revision link is in the repository.
    fn ensure_manifest_linked(&self, name: &RepoName, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let data = paths::blob_data(digest);
        if self
            .backend
            .stat(&data)
            .map_err(io_err("reading a manifest"))?
            .is_none()
        {
            self.backend
                .write_atomic(&data, bytes)
                .map_err(io_err("writing a manifest"))?;
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
        let blob_unknown = |d: &Digest| {
            Error::new(
                ErrorCode::ManifestBlobUnknown,
                format!("manifest references {d}, which is not in {name}"),
            )
            .with_detail(serde_json::json!({ "digest": d }))
        };
        for desc in m.required_blobs() {
            match self.stat_blob(name, &desc.digest)? {
                None => return Err(blob_unknown(&desc.digest)),
                Some(size) if size != desc.size => {
                    return Err(Error::new(
                        ErrorCode::ManifestInvalid,
                        format!(
                            "blob {} is {size} bytes, the manifest says {}",
                            desc.digest, desc.size
                        ),
                    ));
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
        let digest = match reference {
            Reference::Tag(tag) => match self.read_link(&paths::tag_current_link(name, tag))? {
                Some(d) => d,
                None => return Ok(None),
            },
            Reference::Digest(d) => d.clone(),
        };
        Ok(self
            .link_is(&paths::revision_link(name, &digest), &digest)?
            .then_some(digest))
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
        let Some(bytes) = self
            .backend
            .read(&paths::blob_data(d))
            .map_err(io_err("reading a manifest"))?
        else {
            return Ok(None);
        };
        let m = Arc::new(StoredManifest {
            digest: d.clone(),
            media_type: stored_media_type(&bytes),
            bytes: Bytes::from(bytes),
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
        Ok(true)
    }

    /// Removes a link file and then every directory above it left empty, up
    /// to `stop`: the last tag or manifest of a repository takes
    /// `_manifests` with it, which takes the repository out of the catalog.
    fn remove_link(&self, link: &Path, stop: &Path) -> Result<()> {
        self.backend
            .remove_file(link)
            .map_err(io_err("deleting a link"))?;
        if let Some(dir) = link.parent() {
            self.backend
                .prune_empty_dirs(dir, stop)
                .map_err(io_err("pruning directories"))?;
        }
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
        let mut existed = false;
        for dir in &dirs {
            if self
                .backend
                .stat(dir)
                .map_err(io_err("reading a repository"))?
                .is_some()
            {
                existed = true;
                self.backend
                    .remove_dir_all(dir)
                    .map_err(io_err("deleting a repository"))?;
            }
        }
        self.backend
            .prune_empty_dirs(&paths::repo_dir(name), &paths::repositories_root())
            .map_err(io_err("pruning directories"))?;
        Ok(existed)
    }

    // ----- tags -----

    /// The repository's tags, sorted; `None` when the repository does not
    /// exist.
    ///
    /// Listings are cached by the modification time of the tags directory,
    /// which changes whenever a tag appears or goes. A cached listing is
    /// only trusted when it was made [`TAGS_CACHE_MARGIN`] after that time:
    /// a change within the same timestamp tick as the listing could
    /// otherwise go unseen. Since the check is against storage, replicas
    /// sharing it see each other's tags.
    pub fn list_tags(&self, name: &RepoName) -> Result<Option<Arc<Vec<String>>>> {
        let dir = paths::tags_dir(name);
        let Some(meta) = self.backend.stat(&dir).map_err(io_err("listing tags"))? else {
            // Without tags, a repository that still holds manifests or blobs
            // lists none; one that holds nothing is unknown. (Its last
            // manifest deleted, it leaves the catalog but keeps its blobs
            // until they are deleted too, as the OCI conformance suite
            // expects: the tag list then shrinks to nothing, not to 404.)
            let known = self.repo_exists(name)?
                || self
                    .backend
                    .stat(&paths::layers_dir(name))
                    .map_err(io_err("listing tags"))?
                    .is_some();
            return Ok(known.then(|| Arc::new(Vec::new())));
        };
        if let Some(cached) = self.tags.get(name)
            && cached.modified == meta.modified
            && cached
                .listed_at
                .duration_since(meta.modified)
                .is_ok_and(|d| d >= TAGS_CACHE_MARGIN)
        {
            return Ok(Some(cached.tags.clone()));
        }
        let listed_at = std::time::SystemTime::now();
        let mut tags: Vec<String> = self
            .backend
            .list(&dir)
            .map_err(io_err("listing tags"))?
            .into_iter()
            .filter(|e| e.is_dir && token::name::is_valid_tag(&e.name))
            .map(|e| e.name)
            .collect();
        tags.sort_unstable();
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
        let dir = paths::tag_dir(name, tag);
        if self
            .backend
            .stat(&dir)
            .map_err(io_err("reading a tag"))?
            .is_none()
        {
            return Ok(false);
        }
        self.backend
            .remove_dir_all(&dir)
            .map_err(io_err("deleting a tag"))?;
        self.backend
            .prune_empty_dirs(&paths::tags_dir(name), &paths::repositories_root())
            .map_err(io_err("pruning directories"))?;
        Ok(true)
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
