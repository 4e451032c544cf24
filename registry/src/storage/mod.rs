//! The registry's storage: repositories, blobs, manifests, tags, uploads and
//! referrers, over a [`Backend`]. The HTTP layer calls these methods and
//! never touches files; `paths` is the only module that knows the layout.
//!
//! Methods are blocking (they run on tokio's blocking pool, see
//! [`Storage::run`]), except the streaming upload in `uploads`.

pub mod fs;
pub mod paths;
pub mod uploads;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

pub use self::fs::{Backend, FsBackend};
use crate::error::{Error, Result};
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

/// Memory given to the cache of manifest bodies, in bytes.
const MANIFEST_CACHE_BYTES: u64 = 64 * 1024 * 1024;

pub struct Storage<B: Backend = FsBackend> {
    backend: B,
    /// Manifest bodies by digest. Content-addressed, hence never stale:
    /// whether a repository holds the manifest is still checked on disk.
    manifests: moka::sync::Cache<Digest, Arc<StoredManifest>>,
    uploads: uploads::UploadStates,
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
    /// `_manifests`; directories starting with `_` are never descended into.
    pub fn list_repositories(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.walk_repositories(&paths::repositories_root(), "", &mut out)?;
        out.sort_unstable();
        Ok(out)
    }

    fn walk_repositories(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
        for entry in self
            .backend
            .list(dir)
            .map_err(io_err("listing repositories"))?
        {
            if !entry.is_dir {
                continue;
            }
            if entry.name == "_manifests" {
                if token::name::is_valid_repository(prefix) {
                    out.push(prefix.to_owned());
                }
            } else if !entry.name.starts_with('_') {
                let name = if prefix.is_empty() {
                    entry.name.clone()
                } else {
                    format!("{prefix}/{}", entry.name)
                };
                if name.len() <= token::name::MAX_REPOSITORY_LEN {
                    self.walk_repositories(&dir.join(&entry.name), &name, out)?;
                }
            }
        }
        Ok(())
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
    /// The tag is written last: it is what makes the push visible.
    pub fn put_manifest(
        &self,
        name: &RepoName,
        tag: Option<&Tag>,
        digest: &Digest,
        bytes: Bytes,
        manifest: &Manifest,
    ) -> Result<()> {
        let data = paths::blob_data(digest);
        if self
            .backend
            .stat(&data)
            .map_err(io_err("reading a manifest"))?
            .is_none()
        {
            self.backend
                .write_atomic(&data, &bytes)
                .map_err(io_err("writing a manifest"))?;
        }
        self.write_link(&paths::revision_link(name, digest), digest)?;
        if let Some(subject) = &manifest.subject {
            self.write_link(&paths::referrer_link(name, &subject.digest, digest), digest)?;
        }
        if let Some(tag) = tag {
            self.write_link(&paths::tag_index_link(name, tag, digest), digest)?;
            let current = paths::tag_current_link(name, tag);
            if !self.link_is(&current, digest)? {
                self.write_link(&current, digest)?;
            }
        }
        self.manifests.insert(
            digest.clone(),
            Arc::new(StoredManifest {
                digest: digest.clone(),
                media_type: manifest.media_type,
                bytes,
            }),
        );
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
    fn load_manifest(&self, d: &Digest) -> Result<Option<Arc<StoredManifest>>> {
        if let Some(m) = self.manifests.get(d) {
            return Ok(Some(m));
        }
        let Some(bytes) = self
            .backend
            .read(&paths::blob_data(d))
            .map_err(io_err("reading a manifest"))?
        else {
            tracing::warn!(digest = %d, "manifest revision is linked but its blob is missing");
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
    /// and its referrers entry. Returns whether the repository held it.
    pub fn delete_manifest(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        let link = paths::revision_link(name, d);
        if !self.link_is(&link, d)? {
            return Ok(false);
        }
        for tag in self.list_tags(name)?.unwrap_or_default() {
            let Ok(tag) = Tag::parse(&tag) else { continue };
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
            self.backend
                .remove_file(&referrer)
                .map_err(io_err("deleting a referrer"))?;
            self.prune(&referrer, &paths::manifests_dir(name))?;
        }
        self.backend
            .remove_file(&link)
            .map_err(io_err("deleting a manifest"))?;
        self.prune(&link, &paths::revisions_dir(name))?;
        Ok(true)
    }

    /// Removes the now-empty directories above a deleted link.
    fn prune(&self, link: &Path, stop: &Path) -> Result<()> {
        if let Some(dir) = link.parent() {
            self.backend
                .prune_empty_dirs(dir, stop)
                .map_err(io_err("pruning directories"))?;
        }
        Ok(())
    }

    // ----- tags -----

    /// The repository's tags, sorted; `None` when the repository does not
    /// exist.
    pub fn list_tags(&self, name: &RepoName) -> Result<Option<Vec<String>>> {
        if !self.repo_exists(name)? {
            return Ok(None);
        }
        let mut tags: Vec<String> = self
            .backend
            .list(&paths::tags_dir(name))
            .map_err(io_err("listing tags"))?
            .into_iter()
            .filter(|e| e.is_dir && token::name::is_valid_tag(&e.name))
            .map(|e| e.name)
            .collect();
        tags.sort_unstable();
        Ok(Some(tags))
    }

    /// Deletes a tag (not the manifest it points at). Returns whether it
    /// existed.
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
        Ok(true)
    }

    // ----- referrers -----

    /// Manifests of the repository whose `subject` is `subject`.
    pub fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Vec<Arc<StoredManifest>>> {
        let dir = paths::referrers_dir(name, subject);
        let mut out = Vec::new();
        for alg in self
            .backend
            .list(&dir)
            .map_err(io_err("listing referrers"))?
        {
            if !alg.is_dir {
                continue;
            }
            for entry in self
                .backend
                .list(&dir.join(&alg.name))
                .map_err(io_err("listing referrers"))?
            {
                let Ok(d) = Digest::parse(&format!("{}:{}", alg.name, entry.name)) else {
                    continue;
                };
                // Still a manifest of this repository (not deleted since).
                if self.resolve(name, &Reference::Digest(d.clone()))?.is_none() {
                    continue;
                }
                if let Some(m) = self.load_manifest(&d)? {
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
