//! Online garbage collection: mark and sweep while the registry serves.
//!
//! 1. **Mark.** Every manifest revision of every repository is a root
//!    (with `delete_untagged`, only those reachable from a tag — directly,
//!    as the child of a kept index, or as a referrer of a kept manifest —
//!    plus any revision younger than the grace period). The manifests and
//!    everything they reference are marked, in a compact set of digests.
//! 2. **Set aside.** Unmarked blob data older than the grace period, and the
//!    revision links of untagged manifests, are renamed into
//!    `_gc/<run>/` — atomic, and undoable. The grace period keeps the
//!    blobs of a push in progress (uploaded, manifest not yet sent).
//! 3. **Look again.** Links written since the mark began (new revisions,
//!    moved tags) are read, and whatever they reference is put back.
//!    A manifest push does the mirror image: it writes its links, then
//!    checks its content is still there (see `Storage::put_manifest`).
//!    Whichever of the two comes second sees the other's write, so a push
//!    that succeeds never references collected content. Until this look
//!    such content is missing from its place, though: a request that
//!    needs it meanwhile (a pull of the image just pushed) puts it back
//!    itself (see `Storage::take_back_blob`).
//! 4. **Delete** what is still set aside, drop blob links left dangling,
//!    and purge uploads older than their age limit.
//!
//! Content set aside by a collection that crashed is put back by the next
//! one before it starts.
//!
//! # Why this holds on every backend
//!
//! "Set aside" is [`Backend::rename`]: a `rename(2)` on the filesystem, a
//! copy then a delete on S3. The argument needs only that a set-aside
//! object is either still in place or (also) in the run's directory, and
//! that a put back makes it visible in place again — both true of a copy
//! and a delete; a crash between the two leaves two identical copies
//! (content-addressed), the one in `_gc/<run>/` put back or dropped by
//! the next collection. Step 3's "whichever comes second sees the other"
//! needs each side's writes to be visible to the other's later reads:
//! POSIX gives it, and so does S3 (strongly consistent reads after writes
//! and for listings since 2020; Garage likewise).
//!
//! The grace period is measured on the blob's own time (mtime; S3's
//! `LastModified`), never on a directory's.
//!
//! One collection runs at a time, by a *lease* object (`_gc.lease`)
//! created with [`Backend::put_new`] (`link(2)` on the filesystem,
//! `If-None-Match: *` on S3) and renewed while the collection runs; a
//! lease not renewed for [`LEASE_TTL`] is stale (its holder crashed) and
//! is taken over. The lease saves work but correctness does not rest on
//! it: two collections that do overlap (a takeover racing a slow holder)
//! each delete only what they set aside themselves and found unreferenced
//! on their own second look, and one's crash recovery only moves the
//! other's content *back* — so they can waste work or miscount, never
//! delete something referenced.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use super::backend::{Backend, Durability};
use super::error::Context;
use super::{Error, Result, Storage, paths};
use crate::oci::{Digest, DigestAlgorithm, Manifest, RepoName, Tag};

/// A lease not renewed for this long belongs to a collection that died.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How often a running collection renews its lease.
const LEASE_RENEW: Duration = Duration::from_secs(15);

/// What a collection does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Content younger than this is never collected.
    pub grace: Duration,
    /// Also delete manifests no tag reaches.
    pub delete_untagged: bool,
    /// Delete uploads started longer ago than this.
    pub upload_max_age: Option<Duration>,
    /// Delete uploads that never received data started longer ago than
    /// this (`storage.maintenance.uploadlimits.emptyage`).
    pub empty_upload_max_age: Option<Duration>,
    /// Only purge uploads (the scheduled `uploadpurging` of distribution).
    pub uploads_only: bool,
    /// Mirrored repository prefixes and their ttls: their tags not checked
    /// against the upstream within the ttl are deleted first (see `cache`).
    pub expire_tags: Vec<(String, Duration)>,
}

impl Default for GcOptions {
    fn default() -> GcOptions {
        GcOptions {
            dry_run: false,
            grace: Duration::from_secs(3600),
            delete_untagged: false,
            upload_max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            empty_upload_max_age: Some(Duration::from_secs(3600)),
            uploads_only: false,
            expire_tags: Vec::new(),
        }
    }
}

/// What a collection found and did.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub dry_run: bool,
    pub repositories: usize,
    pub manifests: usize,
    pub blobs: usize,
    pub marked: usize,
    pub blobs_deleted: usize,
    pub bytes_freed: u64,
    pub manifests_deleted: usize,
    pub restored: usize,
    pub layer_links_removed: usize,
    pub uploads_deleted: usize,
    pub upload_bytes_freed: u64,
    pub recovered_from_crash: usize,
    /// Mirrored tags deleted because nobody pulled them within their ttl.
    pub tags_expired: usize,
    pub elapsed: Duration,
    /// Peak resident memory of the process, in KiB, when known.
    pub peak_rss_kib: Option<u64>,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        writeln!(
            f,
            "scanned {} repositories, {} manifests, {} blobs ({} in use)",
            self.repositories, self.manifests, self.blobs, self.marked
        )?;
        writeln!(
            f,
            "{verb} {} blobs ({} bytes), {} untagged manifests, {} uploads ({} bytes)",
            self.blobs_deleted,
            self.bytes_freed,
            self.manifests_deleted,
            self.uploads_deleted,
            self.upload_bytes_freed
        )?;
        writeln!(
            f,
            "kept {} items referenced by pushes made during the collection; removed {} dangling blob links",
            self.restored, self.layer_links_removed
        )?;
        if self.tags_expired > 0 {
            writeln!(
                f,
                "{verb} {} mirrored tags not pulled within their ttl",
                self.tags_expired
            )?;
        }
        if self.recovered_from_crash > 0 {
            writeln!(
                f,
                "put back {} items set aside by an interrupted collection",
                self.recovered_from_crash
            )?;
        }
        write!(f, "took {:.2?}", self.elapsed)?;
        if let Some(kib) = self.peak_rss_kib {
            write!(f, ", peak memory {:.1} MiB", kib as f64 / 1024.0)?;
        }
        Ok(())
    }
}

/// A digest in 32 bytes (sha256) instead of its 71-byte text: the
/// collector's sets are proportional to the store, so they stay compact.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Sha256([u8; 32]),
    Other(DigestAlgorithm, Box<[u8]>),
}

impl Key {
    fn of(d: &Digest) -> Key {
        let bytes = hex::decode(d.hex()).unwrap_or_default();
        match (d.algorithm(), <[u8; 32]>::try_from(bytes.as_slice())) {
            (DigestAlgorithm::Sha256, Ok(a)) => Key::Sha256(a),
            (alg, _) => Key::Other(alg, bytes.into_boxed_slice()),
        }
    }
}

/// Everything a manifest points at: blobs and child manifests, and the
/// manifest it refers to (`subject`).
pub(super) struct Refs {
    blobs: Vec<Digest>,
    children: Vec<Digest>,
    subject: Option<Digest>,
}

impl Refs {
    /// Every digest whose data the manifest needs: blobs and children.
    pub(super) fn all(self) -> Vec<Digest> {
        self.blobs.into_iter().chain(self.children).collect()
    }
}

pub(super) fn refs_of(bytes: &[u8]) -> Option<Refs> {
    let media = crate::oci::manifest::stored_media_type(bytes);
    let m = Manifest::parse(Some(media.as_str()), bytes).ok()?;
    Some(Refs {
        blobs: m
            .config
            .iter()
            .chain(m.layers.iter())
            .filter(|d| d.urls.is_empty())
            .map(|d| d.digest.clone())
            .collect(),
        children: m.manifests.iter().map(|d| d.digest.clone()).collect(),
        subject: m.subject.map(|s| s.digest),
    })
}

pub(super) fn older_than(t: SystemTime, age: Duration) -> bool {
    SystemTime::now().duration_since(t).is_ok_and(|d| d >= age)
}

/// Filesystem timestamps can lag the clock by a tick; links written this
/// close before the mark began are looked at again too.
const MTIME_SLACK: Duration = Duration::from_secs(2);

/// One collection's bookkeeping.
struct Run {
    id: String,
    /// Blob data set aside: digest -> size.
    blobs: HashMap<Key, u64>,
    /// Revision links set aside.
    revisions: HashSet<(RepoName, Digest)>,
}

impl Storage {
    /// Runs a garbage collection. Fails when another one holds the lock.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let started = Instant::now();
        let _lease = Lease::take(self.backend.clone())?;
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        report.recovered_from_crash = self.recover_interrupted()?;
        if !opts.uploads_only {
            report.tags_expired = self.expire_mirrored_tags(&opts.expire_tags, opts.dry_run)?;
            self.collect(opts, &mut report)?;
        }
        if opts.upload_max_age.is_some() || opts.empty_upload_max_age.is_some() {
            self.purge_uploads(opts, &mut report)?;
        }
        report.elapsed = started.elapsed();
        report.peak_rss_kib = peak_rss_kib();
        Ok(report)
    }

    fn collect(&self, opts: &GcOptions, report: &mut GcReport) -> Result<()> {
        let started = Instant::now();
        let mark_start = SystemTime::now();
        let mut marked: HashSet<Key> = HashSet::new();
        let mut untagged: Vec<(RepoName, Digest)> = Vec::new();

        // 1. Mark: repositories in parallel on remote backends, each
        // handing back what it marks.
        let repositories = self.list_repositories()?;
        report.repositories = repositories.len();
        let per_repository = self.par_map(repositories, |name| {
            let revisions = self.revisions(&name)?;
            let keep = if opts.delete_untagged {
                self.reachable(&name, &revisions, opts.grace)?
            } else {
                revisions.iter().map(|(d, _)| d.clone()).collect()
            };
            let untagged: Vec<Digest> = revisions
                .iter()
                .filter(|(d, _)| !keep.contains(d))
                .map(|(d, _)| d.clone())
                .collect();
            let mut marks = Vec::new();
            for d in &keep {
                marks.push(Key::of(d));
                if let Some(m) = self.load_manifest(d)?
                    && let Some(refs) = refs_of(&m.bytes)
                {
                    marks.extend(refs.all().iter().map(Key::of));
                }
            }
            Ok((name, revisions.len(), untagged, marks))
        })?;
        for (name, revisions, repo_untagged, marks) in per_repository {
            report.manifests += revisions;
            untagged.extend(repo_untagged.into_iter().map(|d| (name.clone(), d)));
            marked.extend(marks);
        }
        report.marked = marked.len();
        tracing::info!(elapsed = ?started.elapsed(), marked = report.marked, "gc: marked");

        // 2. Set aside (or, on a dry run, only count).
        let mut run = Run {
            id: uuid::Uuid::new_v4().simple().to_string(),
            blobs: HashMap::new(),
            revisions: HashSet::new(),
        };
        if opts.dry_run {
            report.manifests_deleted = untagged.len();
        } else {
            // Counted once deleted, in step 4.
            let set_aside = self.par_map_changes(untagged, |(name, d)| {
                let from = paths::revision_link(&name, &d);
                match self.backend.rename(
                    &from,
                    &paths::gc_trash_revision(&run.id, &name, &d),
                    &paths::repositories_root(),
                    Durability::Scratch,
                ) {
                    Ok(()) => {
                        self.forget_revision(&name, &d);
                        Ok(Some((name, d)))
                    }
                    // Deleted meanwhile.
                    Err(Error::NotFound(_)) => Ok(None),
                    Err(e) => Err(e.context("setting a manifest aside")),
                }
            })?;
            run.revisions.extend(set_aside.into_iter().flatten());
        }
        // The walk picks what to set aside (and notes every blob it saw, for
        // the dangling links of step 4); the moves then run in parallel.
        let mut present: HashSet<Key> = HashSet::new();
        let mut unreferenced: Vec<(Digest, u64)> = Vec::new();
        self.for_each_blob(|d, meta| {
            report.blobs += 1;
            let key = Key::of(&d);
            if marked.contains(&key) || !older_than(meta.modified, opts.grace) {
                present.insert(key);
                return Ok(());
            }
            if opts.dry_run {
                report.blobs_deleted += 1;
                report.bytes_freed += meta.size;
                return Ok(());
            }
            unreferenced.push((d, meta.size));
            Ok(())
        })?;
        drop(marked);
        if opts.dry_run {
            return Ok(());
        }
        let set_aside = self.par_map_changes(unreferenced, |(d, size)| {
            match self.backend.rename(
                &paths::blob_data(&d),
                &paths::gc_trash_blob(&run.id, &d),
                &paths::blobs_root(),
                Durability::Scratch,
            ) {
                Ok(()) => Ok(Some((Key::of(&d), size))),
                Err(Error::NotFound(_)) => Ok(None),
                Err(e) => Err(e.context("setting a blob aside")),
            }
        })?;
        run.blobs.extend(set_aside.into_iter().flatten());

        tracing::info!(elapsed = ?started.elapsed(), blobs = run.blobs.len(), "gc: set aside");
        // 3. Look again at what was written since the mark began.
        report.restored = self.restore_referenced(&mut run, mark_start)?;
        tracing::info!(elapsed = ?started.elapsed(), restored = report.restored, "gc: looked again");

        // 4. Delete. Requests may have taken content back meanwhile (see
        // `take_back_blob`): what is deleted is what is still set aside.
        let names: HashSet<&RepoName> = run.revisions.iter().map(|(name, _)| name).collect();
        for name in names {
            for d in self.digests_in(&paths::gc_trash_revisions(&run.id, name))? {
                if run.revisions.contains(&(name.clone(), d)) {
                    report.manifests_deleted += 1;
                }
            }
        }
        for d in self.digests_in(&paths::gc_trash_blobs(&run.id))? {
            if let Some(size) = run.blobs.get(&Key::of(&d)) {
                report.blobs_deleted += 1;
                report.bytes_freed += size;
                self.manifests.invalidate(&d);
            }
        }
        // The links' emptied prefixes went when they were set aside.
        self.backend
            .delete_prefix(&paths::gc_run_dir(&run.id), &paths::gc_root())
            .context("deleting collected content")?;
        tracing::info!(elapsed = ?started.elapsed(), "gc: deleted");
        report.layer_links_removed = self.remove_dangling_layer_links(&present)?;
        tracing::info!(elapsed = ?started.elapsed(), links = report.layer_links_removed, "gc: dangling links removed");
        Ok(())
    }

    /// Revisions of a repository with the time their link was written:
    /// one walk of its revisions (one paged listing on object stores). A
    /// link counts by its place, whatever it holds: a damaged one keeps
    /// its manifest, which errs on the side of keeping.
    fn revisions(&self, name: &RepoName) -> Result<Vec<(Digest, SystemTime)>> {
        self.links_under(&paths::revisions_dir(name), |d| {
            paths::revision_link(name, d)
        })
    }

    /// The links `<alg>/<hex>/link` under `dir` that lie where `place`
    /// puts the link of their digest, with their times.
    fn links_under(
        &self,
        dir: &Path,
        place: impl Fn(&Digest) -> std::path::PathBuf,
    ) -> Result<Vec<(Digest, SystemTime)>> {
        let mut out = Vec::new();
        self.backend
            .walk(dir, &mut |path, meta| {
                let mut parts = path.iter().filter_map(|p| p.to_str());
                let (Some(alg), Some(hex), Some("link"), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Ok(());
                };
                if let Ok(d) = Digest::parse(&format!("{alg}:{hex}"))
                    && place(&d).ends_with(path)
                {
                    out.push((d, meta.modified));
                }
                Ok(())
            })
            .context("listing links")?;
        Ok(out)
    }

    /// Digests the repository's tags point at.
    fn tag_targets(&self, name: &RepoName) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for tag in self.list_tags(name)?.unwrap_or_default().iter() {
            let Ok(tag) = Tag::parse(tag) else { continue };
            if let Some(d) = self.read_link(&paths::tag_current_link(name, &tag))? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Revisions to keep when untagged manifests are deleted: those reached
    /// from tags (through index children and referrers), and young ones.
    fn reachable(
        &self,
        name: &RepoName,
        revisions: &[(Digest, SystemTime)],
        grace: Duration,
    ) -> Result<HashSet<Digest>> {
        let present: HashSet<&Digest> = revisions.iter().map(|(d, _)| d).collect();
        let mut keep: HashSet<Digest> = HashSet::new();
        let mut work: Vec<Digest> = self.tag_targets(name)?;
        work.extend(
            revisions
                .iter()
                .filter(|(_, t)| !older_than(*t, grace))
                .map(|(d, _)| d.clone()),
        );
        // subject -> referrers, for the referrers of kept manifests.
        let mut referrers: HashMap<Digest, Vec<Digest>> = HashMap::new();
        let mut children: HashMap<Digest, Vec<Digest>> = HashMap::new();
        for (d, _) in revisions {
            if let Some(m) = self.load_manifest(d)?
                && let Some(refs) = refs_of(&m.bytes)
            {
                if let Some(s) = refs.subject {
                    referrers.entry(s).or_default().push(d.clone());
                }
                children.insert(d.clone(), refs.children);
            }
        }
        while let Some(d) = work.pop() {
            if !present.contains(&d) || !keep.insert(d.clone()) {
                continue;
            }
            work.extend(children.get(&d).into_iter().flatten().cloned());
            work.extend(referrers.get(&d).into_iter().flatten().cloned());
        }
        Ok(keep)
    }

    /// Calls `f` for every blob data object of the store: one walk of
    /// the blobs prefix (`<alg>/<2 hex>/<hex>/data`), which is one flat
    /// paged listing on object stores, with no stat per blob.
    pub(super) fn for_each_blob(
        &self,
        mut f: impl FnMut(Digest, super::backend::Meta) -> Result<()>,
    ) -> Result<()> {
        self.backend
            .walk(&paths::blobs_root(), &mut |path, meta| {
                let mut parts = path.iter().filter_map(|p| p.to_str());
                let (Some(alg), Some(_), Some(hex), Some("data"), None) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                ) else {
                    return Ok(());
                };
                if DigestAlgorithm::parse(alg).is_none() {
                    return Ok(());
                }
                match Digest::parse(&format!("{alg}:{hex}")) {
                    // Only where `paths` puts it (not a stray copy).
                    Ok(d) if paths::blob_data(&d).ends_with(path) => f(d, meta),
                    _ => Ok(()),
                }
            })
            .context("listing blobs")
    }

    /// Puts back whatever links written since `since` reference: the
    /// content of new manifests, and revisions that tags point at again.
    fn restore_referenced(&self, run: &mut Run, since: SystemTime) -> Result<usize> {
        let since = since.checked_sub(MTIME_SLACK).unwrap_or(since);
        let mut restored = 0;
        // What each repository links now, read in parallel on remote
        // backends; the (rare) putting back is done one by one.
        let linked = self.par_map(self.list_repositories()?, |name| {
            let fresh: Vec<Digest> = self
                .revisions(&name)?
                .into_iter()
                .filter(|(_, t)| *t >= since)
                .map(|(d, _)| d)
                .collect();
            // Tags matter only to put back revisions set aside (untagged
            // manifests), which not every collection does.
            let tagged = if run.revisions.is_empty() {
                Vec::new()
            } else {
                self.tag_targets(&name)?
            };
            Ok((name, fresh, tagged))
        })?;
        for (name, mut work, tagged) in linked {
            for d in tagged {
                if run.revisions.contains(&(name.clone(), d.clone())) {
                    work.push(d);
                }
            }
            let mut seen = HashSet::new();
            while let Some(d) = work.pop() {
                if !seen.insert(d.clone()) {
                    continue;
                }
                if run.revisions.remove(&(name.clone(), d.clone())) {
                    self.put_back(
                        &paths::gc_trash_revision(&run.id, &name, &d),
                        &paths::revision_link(&name, &d),
                    )?;
                    restored += 1;
                }
                if run.blobs.remove(&Key::of(&d)).is_some() {
                    self.put_back(&paths::gc_trash_blob(&run.id, &d), &paths::blob_data(&d))?;
                    restored += 1;
                }
                let Some(bytes) = self
                    .backend
                    .get(&paths::blob_data(&d))
                    .context("reading a manifest")?
                else {
                    continue;
                };
                let Some(refs) = refs_of(&bytes) else {
                    continue;
                };
                for b in refs.blobs {
                    if run.blobs.remove(&Key::of(&b)).is_some() {
                        self.put_back(&paths::gc_trash_blob(&run.id, &b), &paths::blob_data(&b))?;
                        restored += 1;
                    }
                }
                work.extend(refs.children);
            }
        }
        Ok(restored)
    }

    /// Puts blob `d`'s data back if a running collection set it aside,
    /// for a request that needs it now. Returns whether it did.
    ///
    /// Step 2 may set aside content a manifest pushed meanwhile references;
    /// step 3 puts it back, and in between a pull of the pushed image would
    /// find it missing. Requests that find a blob linked but its data gone
    /// (a pull, a HEAD, a push's check of its references) take it back
    /// themselves instead. That only ever keeps content: what a collection
    /// finds gone from its directory at step 4 it does not delete.
    pub(super) fn take_back_blob(&self, d: &Digest) -> Result<bool> {
        self.take_back(|run| paths::gc_trash_blob(run, d), &paths::blob_data(d))
    }

    /// Puts a revision link back if a running collection set it aside (an
    /// untagged manifest, tagged since the mark): see `take_back_blob`.
    pub(super) fn take_back_revision(&self, name: &RepoName, d: &Digest) -> Result<bool> {
        self.take_back(
            |run| paths::gc_trash_revision(run, name, d),
            &paths::revision_link(name, d),
        )
    }

    fn take_back(&self, trash: impl Fn(&str) -> PathBuf, place: &Path) -> Result<bool> {
        for run in self
            .backend
            .list(&paths::gc_root())
            .context("listing collections")?
        {
            let from = trash(&run.name);
            if self
                .backend
                .stat(&from)
                .context("looking for collected content")?
                .is_some()
            {
                self.put_back(&from, place)?;
                tracing::info!(
                    path = %place.display(),
                    "put back content a running garbage collection had set aside, for a request that needs it"
                );
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves set-aside content back, unless the place was filled again
    /// meanwhile (then the copy set aside is surplus).
    fn put_back(&self, from: &Path, to: &Path) -> Result<()> {
        let stop = paths::gc_root();
        if self
            .backend
            .stat(to)
            .context("restoring content")?
            .is_some()
        {
            self.backend
                .delete(from, &stop)
                .context("restoring content")?;
            return Ok(());
        }
        match self.backend.rename(from, to, &stop, Durability::Durable) {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.context("restoring content")),
        }
    }

    /// Puts back everything left set aside by collections that did not
    /// finish (a crash, a kill), then removes their directories.
    fn recover_interrupted(&self) -> Result<usize> {
        let mut count = 0;
        for run in self
            .backend
            .list(&paths::gc_root())
            .context("listing collections")?
        {
            for d in self.digests_in(&paths::gc_trash_blobs(&run.name))? {
                self.put_back(&paths::gc_trash_blob(&run.name, &d), &paths::blob_data(&d))?;
                count += 1;
            }
            let repositories = paths::gc_trash_repositories(&run.name);
            for name in self.repositories_holding(&repositories, "_revisions")? {
                for d in self.digests_in(&paths::gc_trash_revisions(&run.name, &name))? {
                    self.put_back(
                        &paths::gc_trash_revision(&run.name, &name, &d),
                        &paths::revision_link(&name, &d),
                    )?;
                    count += 1;
                }
            }
            self.backend
                .delete_prefix(&paths::gc_run_dir(&run.name), &paths::gc_root())
                .context("removing an interrupted collection")?;
        }
        if count > 0 {
            tracing::warn!("put back {count} items set aside by an interrupted garbage collection");
        }
        Ok(count)
    }

    /// Removes `_layers` links whose blob data is gone. Blobs in
    /// `present` were seen by this collection's walk and kept; any other
    /// link's blob is looked up — also one this collection deleted, since
    /// a push may have uploaded it again meanwhile.
    fn remove_dangling_layer_links(&self, present: &HashSet<Key>) -> Result<usize> {
        let repositories = self.repositories_holding(&paths::repositories_root(), "_layers")?;
        let removed = self.par_map_changes(repositories, |name| {
            let mut removed = 0;
            let links =
                self.links_under(&paths::layers_dir(&name), |d| paths::layer_link(&name, d))?;
            for (d, _) in links {
                if !present.contains(&Key::of(&d)) && !self.blob_data_exists(&d)? {
                    let link = paths::layer_link(&name, &d);
                    self.remove_link(&link, &paths::repositories_root())?;
                    // A push may have uploaded the blob again between the
                    // look and the removal, found its link still there and
                    // not written it: look again, and put the link back if
                    // the data is there. (A push that uploads after this
                    // look finds the link gone and writes it itself.)
                    if self.blob_data_exists(&d)? {
                        self.write_link(&link, &d)?;
                    } else {
                        removed += 1;
                    }
                }
            }
            Ok(removed)
        })?;
        Ok(removed.into_iter().sum())
    }

    /// Deletes uploads started more than `upload_max_age` ago, and those
    /// without data started more than `empty_upload_max_age` ago.
    fn purge_uploads(&self, opts: &GcOptions, report: &mut GcReport) -> Result<()> {
        for name in self.repositories_holding(&paths::repositories_root(), "_uploads")? {
            self.purge_repo_uploads(&name, opts, report)?;
        }
        Ok(())
    }

    fn purge_repo_uploads(
        &self,
        name: &RepoName,
        opts: &GcOptions,
        report: &mut GcReport,
    ) -> Result<()> {
        let is_older = |started: SystemTime, age: Option<Duration>| {
            age.is_some_and(|age| older_than(started, age))
        };
        for e in self
            .backend
            .list(&paths::uploads_dir(name))
            .context("listing uploads")?
        {
            let Ok(id) = uuid::Uuid::try_parse(&e.name) else {
                continue;
            };
            let Some(started) = self.upload_started(name, id)? else {
                continue;
            };
            let size = self
                .backend
                .stat(&paths::upload_data(name, id))
                .context("reading an upload")?
                .map_or(0, |m| m.size);
            let expired = is_older(started, opts.upload_max_age)
                || (size == 0 && is_older(started, opts.empty_upload_max_age));
            if !expired || self.upload_in_use(name, id) {
                continue;
            }
            report.uploads_deleted += 1;
            report.upload_bytes_freed += size;
            if !opts.dry_run {
                // The repository's emptied prefixes go too.
                self.discard_upload(name, id, &paths::repositories_root())?;
                self.uploads.open.release(id);
            }
        }
        Ok(())
    }
}

/// The garbage collection lease, renewed by a thread of its own while
/// held, deleted when dropped.
struct Lease {
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease, or fails with [`Error::GcRunning`] while another
    /// collection holds it.
    fn take(backend: std::sync::Arc<dyn Backend>) -> Result<Lease> {
        let path = paths::gc_lease();
        let token = format!("{} {}", uuid::Uuid::new_v4().simple(), std::process::id());
        let mut taken = backend
            .put_new(&path, token.as_bytes())
            .context("taking the garbage collection lease")?;
        if !taken {
            let stale = backend
                .stat(&path)
                .context("reading the garbage collection lease")?
                .is_none_or(|m| older_than(m.modified, LEASE_TTL));
            if stale {
                tracing::warn!("taking over a stale garbage collection lease");
                backend
                    .delete(&path, &paths::gc_root())
                    .context("removing a stale lease")?;
                taken = backend
                    .put_new(&path, token.as_bytes())
                    .context("taking the garbage collection lease")?;
            }
        }
        if !taken {
            return Err(Error::GcRunning);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(LEASE_RENEW) {
                let ours = backend
                    .get(&path)
                    .ok()
                    .flatten()
                    .is_some_and(|b| b == token.as_bytes());
                if !ours {
                    tracing::warn!("the garbage collection lease was taken over");
                    return;
                }
                if let Err(e) = backend.put(&path, token.as_bytes(), Durability::Durable) {
                    tracing::warn!("renewing the garbage collection lease: {e}");
                }
            }
            // Released: gone, unless someone else holds it now.
            let ours = backend
                .get(&path)
                .ok()
                .flatten()
                .is_some_and(|b| b == token.as_bytes());
            if ours && let Err(e) = backend.delete(&path, &paths::gc_root()) {
                tracing::warn!("releasing the garbage collection lease: {e}");
            }
        });
        Ok(Lease {
            stop: Some(stop),
            renewer: Some(renewer),
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
    }
}

/// `VmHWM` of this process, from /proc.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
