//! The on-disk layout, and the only place that knows it.
//!
//! It is CNCF distribution's layout (`registry/storage/paths.go`), so an
//! existing `/var/lib/registry` is served as it is and can be moved back:
//!
//! ```text
//! docker/registry/v2/
//!   blobs/<alg>/<first 2 hex>/<hex>/data
//!   repositories/<name>/
//!     _layers/<alg>/<hex>/link                       blobs of the repository
//!     _manifests/revisions/<alg>/<hex>/link          manifests of the repository
//!     _manifests/tags/<tag>/current/link             what the tag points at
//!     _manifests/tags/<tag>/index/<alg>/<hex>/link   every digest it pointed at
//!     _manifests/referrers/<alg>/<hex>/<alg>/<hex>/link
//!                                                    subject -> referrer (ours;
//!                                                    distribution ignores it)
//!     _uploads/<id>/data, startedat, owner           uploads in progress
//!                   committed                        (ours: data being verified)
//!   _gc/<run>/…, _gc.lease                           garbage collection (ours)
//! ```
//!
//! Every function returns a path relative to the storage root, built only
//! from parsed newtypes, so no client string reaches the file system
//! unchecked.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::oci::{Digest, RepoName, Tag};

pub const ROOT: &str = "docker/registry/v2";

pub fn blobs_root() -> PathBuf {
    PathBuf::from(ROOT).join("blobs")
}

pub fn blob_dir(d: &Digest) -> PathBuf {
    blobs_root()
        .join(d.algorithm().as_str())
        .join(&d.hex()[..2])
        .join(d.hex())
}

pub fn blob_data(d: &Digest) -> PathBuf {
    blob_dir(d).join("data")
}

pub fn repositories_root() -> PathBuf {
    PathBuf::from(ROOT).join("repositories")
}

pub fn repo_dir(name: &RepoName) -> PathBuf {
    repositories_root().join(name.as_str())
}

/// The directory whose presence makes a directory a repository.
pub fn manifests_dir(name: &RepoName) -> PathBuf {
    repo_dir(name).join("_manifests")
}

fn digest_path(base: &Path, d: &Digest) -> PathBuf {
    base.join(d.algorithm().as_str()).join(d.hex())
}

pub fn layers_dir(name: &RepoName) -> PathBuf {
    repo_dir(name).join("_layers")
}

pub fn layer_link(name: &RepoName, d: &Digest) -> PathBuf {
    digest_path(&layers_dir(name), d).join("link")
}

pub fn revisions_dir(name: &RepoName) -> PathBuf {
    manifests_dir(name).join("revisions")
}

pub fn revision_link(name: &RepoName, d: &Digest) -> PathBuf {
    digest_path(&revisions_dir(name), d).join("link")
}

pub fn tags_dir(name: &RepoName) -> PathBuf {
    manifests_dir(name).join("tags")
}

pub fn tag_dir(name: &RepoName, tag: &Tag) -> PathBuf {
    tags_dir(name).join(tag.as_str())
}

pub fn tag_current_link(name: &RepoName, tag: &Tag) -> PathBuf {
    tag_dir(name, tag).join("current").join("link")
}

pub fn tag_index_link(name: &RepoName, tag: &Tag, d: &Digest) -> PathBuf {
    digest_path(&tag_dir(name, tag).join("index"), d).join("link")
}

pub fn referrers_dir(name: &RepoName, subject: &Digest) -> PathBuf {
    digest_path(&manifests_dir(name).join("referrers"), subject)
}

pub fn referrer_link(name: &RepoName, subject: &Digest, referrer: &Digest) -> PathBuf {
    digest_path(&referrers_dir(name, subject), referrer).join("link")
}

pub fn uploads_dir(name: &RepoName) -> PathBuf {
    repo_dir(name).join("_uploads")
}

pub fn upload_dir(name: &RepoName, id: Uuid) -> PathBuf {
    uploads_dir(name).join(id.hyphenated().to_string())
}

pub fn upload_data(name: &RepoName, id: Uuid) -> PathBuf {
    upload_dir(name, id).join("data")
}

pub fn upload_started_at(name: &RepoName, id: Uuid) -> PathBuf {
    upload_dir(name, id).join("startedat")
}

/// Where an upload's data is committed to be hashed before it moves into
/// the blob store, when the running hash is not known (ours).
pub fn upload_committed(name: &RepoName, id: Uuid) -> PathBuf {
    upload_dir(name, id).join("committed")
}

/// What the latest completion of the upload set out to do: its digest,
/// where its body starts and how long it is (ours; see
/// `Storage::begin_completion`).
pub fn upload_completing(name: &RepoName, id: Uuid) -> PathBuf {
    upload_dir(name, id).join("completing")
}

/// Who opened the upload (ours; distribution ignores the file).
pub fn upload_owner(name: &RepoName, id: Uuid) -> PathBuf {
    upload_dir(name, id).join("owner")
}

/// Where garbage collections set content aside before deleting it
/// (distribution ignores this directory).
pub fn gc_root() -> PathBuf {
    PathBuf::from(ROOT).join("_gc")
}

/// The lease that lets one garbage collection run at a time (see `gc`).
pub fn gc_lease() -> PathBuf {
    PathBuf::from(ROOT).join("_gc.lease")
}

/// Everything one collection set aside.
pub fn gc_run_dir(run: &str) -> PathBuf {
    gc_root().join(run)
}

/// Where one collection sets blob data aside: `<alg>/<hex>` entries.
pub fn gc_trash_blobs(run: &str) -> PathBuf {
    gc_run_dir(run).join("blobs")
}

/// Where one collection sets blob `d`'s data aside.
pub fn gc_trash_blob(run: &str, d: &Digest) -> PathBuf {
    digest_path(&gc_trash_blobs(run), d)
}

/// Where one collection sets revision links aside, by repository.
pub fn gc_trash_repositories(run: &str) -> PathBuf {
    gc_run_dir(run).join("repositories")
}

/// Where one collection sets a repository's revision links aside:
/// `<alg>/<hex>` entries.
pub fn gc_trash_revisions(run: &str, name: &RepoName) -> PathBuf {
    gc_trash_repositories(run)
        .join(name.as_str())
        .join("_revisions")
}

/// Where one collection sets a revision link aside.
pub fn gc_trash_revision(run: &str, name: &RepoName, d: &Digest) -> PathBuf {
    digest_path(&gc_trash_revisions(run, name), d)
}

/// Where fsck moves blobs whose content does not match their digest.
pub fn corrupt_blob(d: &Digest) -> PathBuf {
    PathBuf::from(ROOT)
        .join("_corrupt")
        .join(d.algorithm().as_str())
        .join(d.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_distribution() {
        let name = RepoName::parse("library/alpine").unwrap();
        let d = Digest::sha256_of(b"");
        let hex = d.hex();
        assert_eq!(
            blob_data(&d).to_str().unwrap(),
            format!("docker/registry/v2/blobs/sha256/e3/{hex}/data")
        );
        assert_eq!(
            layer_link(&name, &d).to_str().unwrap(),
            format!("docker/registry/v2/repositories/library/alpine/_layers/sha256/{hex}/link")
        );
        assert_eq!(
            revision_link(&name, &d).to_str().unwrap(),
            format!(
                "docker/registry/v2/repositories/library/alpine/_manifests/revisions/sha256/{hex}/link"
            )
        );
        let tag = Tag::parse("3.19").unwrap();
        assert_eq!(
            tag_current_link(&name, &tag).to_str().unwrap(),
            "docker/registry/v2/repositories/library/alpine/_manifests/tags/3.19/current/link"
        );
        assert_eq!(
            tag_index_link(&name, &tag, &d).to_str().unwrap(),
            format!(
                "docker/registry/v2/repositories/library/alpine/_manifests/tags/3.19/index/sha256/{hex}/link"
            )
        );
        let id = Uuid::nil();
        assert_eq!(
            upload_data(&name, id).to_str().unwrap(),
            "docker/registry/v2/repositories/library/alpine/_uploads/00000000-0000-0000-0000-000000000000/data"
        );
    }
}
