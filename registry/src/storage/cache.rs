//! What the pull-through cache (`proxy`) needs from storage beyond a push:
//! storing a manifest fetched from an upstream before its blobs are here,
//! the time a tag was last checked against its upstream, and the expiry of
//! tags nobody pulled within their ttl (run by garbage collection).
//!
//! Mirrored content is stored exactly like pushed content (the same links,
//! the same blob store, blobs written through the upload API), so garbage
//! collection, fsck and every backend treat it alike. The time a tag was
//! checked is the time of its `current` link, which a check that finds the
//! upstream unchanged writes again: no second record to keep in step, and
//! a tag written by a push (in a repository that was not mirrored then)
//! simply counts as checked at its push.

use std::time::{Duration, SystemTime};

use super::error::Context;
use super::{Result, Storage, paths};
use crate::oci::{Digest, Manifest, RepoName, Tag};

impl Storage {
    /// Stores a manifest fetched from an upstream under its digest and
    /// points `tag` at it. Unlike [`Storage::put_manifest`] its blobs need
    /// not be here: a mirror fetches them when a client asks.
    pub fn put_mirrored_manifest(
        &self,
        name: &RepoName,
        tag: Option<&Tag>,
        digest: &Digest,
        bytes: &[u8],
        manifest: &Manifest,
    ) -> Result<()> {
        self.ensure_manifest_linked(name, digest, bytes)?;
        if let Some(subject) = &manifest.subject {
            self.write_link(&paths::referrer_link(name, &subject.digest, digest), digest)?;
        }
        if let Some(tag) = tag {
            self.write_link(&paths::tag_current_link(name, tag), digest)?;
            self.write_link(&paths::tag_index_link(name, tag, digest), digest)?;
            self.tags.invalidate(name);
        }
        self.cache_manifest(digest, manifest.media_type, bytes);
        Ok(())
    }

    /// The digest a tag points at and when it was last written or checked
    /// against its upstream; `None` when the tag does not exist.
    pub fn tag_checked(&self, name: &RepoName, tag: &Tag) -> Result<Option<(Digest, SystemTime)>> {
        let link = paths::tag_current_link(name, tag);
        let Some(digest) = self.read_link(&link)? else {
            return Ok(None);
        };
        let Some(meta) = self.backend.stat(&link).context("reading a tag")? else {
            return Ok(None);
        };
        Ok(Some((digest, meta.modified)))
    }

    /// Records that the upstream still has `tag` at `digest`, now.
    pub fn mark_tag_checked(&self, name: &RepoName, tag: &Tag, digest: &Digest) -> Result<()> {
        self.write_link(&paths::tag_current_link(name, tag), digest)
    }

    /// Deletes the tags of mirrored repositories not checked for longer
    /// than their upstream's ttl: `ttls` maps repository prefixes (`""`:
    /// every repository) to ttls, the longest matching prefix deciding.
    /// What the tags alone kept alive goes in the same collection
    /// (untagged manifests only with `delete_untagged`). Returns the
    /// number of tags deleted (or that would be, on a dry run).
    pub fn expire_mirrored_tags(
        &self,
        ttls: &[(String, Duration)],
        dry_run: bool,
    ) -> Result<usize> {
        let now = SystemTime::now();
        let mut expired = 0;
        for name in self.list_repositories()? {
            let Some(ttl) = ttl_for(ttls, name.as_str()) else {
                continue;
            };
            for tag in self.list_tags(&name)?.unwrap_or_default().iter() {
                let Ok(tag) = Tag::parse(tag) else { continue };
                let Some((_, checked)) = self.tag_checked(&name, &tag)? else {
                    continue;
                };
                if now.duration_since(checked).is_ok_and(|age| age > ttl) {
                    tracing::info!(repository = %name, tag = %tag, "mirrored tag not pulled within its ttl: deleting it");
                    expired += 1;
                    if !dry_run {
                        self.delete_tag(&name, &tag)?;
                    }
                }
            }
        }
        Ok(expired)
    }
}

/// The ttl of the longest prefix of `ttls` that holds `name`.
fn ttl_for(ttls: &[(String, Duration)], name: &str) -> Option<Duration> {
    ttls.iter()
        .filter(|(prefix, _)| {
            prefix.is_empty()
                || name
                    .strip_prefix(prefix.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, ttl)| *ttl)
}

#[cfg(test)]
mod tests {
    use super::ttl_for;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};
    use crate::storage::Storage;
    use crate::storage::backend::memory::MemoryBackend;
    use crate::storage::gc::GcOptions;

    /// A mirrored tag not checked within its ttl goes with the next
    /// collection; its manifest too with `delete_untagged`; a tag of a
    /// repository that is not mirrored stays.
    #[test]
    fn gc_drops_mirrored_tags_past_their_ttl() {
        let s = Storage::new(Arc::new(MemoryBackend::new()));
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let config_digest = Digest::sha256_of(config);
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[]}}"#,
            config.len()
        );
        let manifest = Manifest::parse(None, body.as_bytes()).unwrap();
        let digest = Digest::sha256_of(body.as_bytes());
        let tag = Tag::parse("latest").unwrap();
        let mirrored = RepoName::parse("hub/library/busybox").unwrap();
        let own = RepoName::parse("private/busybox").unwrap();
        for name in [&mirrored, &own] {
            s.put_mirrored_manifest(name, Some(&tag), &digest, body.as_bytes(), &manifest)
                .unwrap();
        }
        let gc = |ttl: Duration| GcOptions {
            grace: Duration::ZERO,
            delete_untagged: true,
            expire_tags: vec![("hub".to_owned(), ttl)],
            ..GcOptions::default()
        };
        // Within the ttl: nothing goes.
        let report = s.gc(&gc(Duration::from_secs(3600))).unwrap();
        assert_eq!(report.tags_expired, 0);
        assert!(s.tag_checked(&mirrored, &tag).unwrap().is_some());
        std::thread::sleep(Duration::from_millis(20));
        let report = s.gc(&gc(Duration::from_millis(10))).unwrap();
        assert_eq!(report.tags_expired, 1, "{report}");
        assert!(s.tag_checked(&mirrored, &tag).unwrap().is_none());
        let by_digest = Reference::Digest(digest.clone());
        assert!(
            s.resolve(&mirrored, &by_digest).unwrap().is_none(),
            "untagged manifest collected"
        );
        assert!(
            s.tag_checked(&own, &tag).unwrap().is_some(),
            "own repository untouched"
        );
        assert!(s.resolve(&own, &by_digest).unwrap().is_some());
    }

    #[test]
    fn longest_prefix_decides_the_ttl() {
        let h = Duration::from_secs(3600);
        let ttls = vec![
            ("hub".to_owned(), h),
            ("hub/library".to_owned(), 2 * h),
            (String::new(), 3 * h),
        ];
        assert_eq!(ttl_for(&ttls, "hub/library/busybox"), Some(2 * h));
        assert_eq!(ttl_for(&ttls, "hub/x"), Some(h));
        assert_eq!(ttl_for(&ttls, "hubble/x"), Some(3 * h));
        assert_eq!(ttl_for(&ttls[..2], "hubble/x"), None);
        assert_eq!(ttl_for(&ttls[..2], "hub"), None);
    }
}
