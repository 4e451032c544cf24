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
//!    that succeeds never references collected content.
//! 4. **Delete** what is still set aside, drop blob links left dangling,
//!    and purge uploads older than their age limit.
//!
//! One collection runs at a time (a lock file); content set aside by a
//! collection that crashed is put back by the next one before it starts.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use super::{Backend, Storage, io_err, paths};
use crate::error::{Error, ErrorCode, Result};
use crate::oci::{Digest, DigestAlgorithm, Manifest, RepoName, Tag};

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

    fn digest(&self) -> Option<Digest> {
        let (alg, bytes): (DigestAlgorithm, &[u8]) = match self {
            Key::Sha256(a) => (DigestAlgorithm::Sha256, a),
            Key::Other(alg, b) => (*alg, b),
        };
        Digest::parse(&format!("{}:{}", alg.as_str(), hex::encode(bytes))).ok()
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

impl<B: Backend> Storage<B> {
    /// Runs a garbage collection. Fails when another one holds the lock.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        let started = Instant::now();
        let _lock = self
            .backend
            .try_lock(&paths::gc_lock())
            .map_err(io_err("locking for garbage collection"))?
            .ok_or_else(|| {
                Error::new(ErrorCode::Denied, "another garbage collection is running")
            })?;
        let mut report = GcReport {
            dry_run: opts.dry_run,
            ..GcReport::default()
        };
        report.recovered_from_crash = self.recover_interrupted()?;
        if !opts.uploads_only {
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
        let mark_start = SystemTime::now();
        let mut marked: HashSet<Key> = HashSet::new();
        let mut untagged: Vec<(RepoName, Digest)> = Vec::new();

        // 1. Mark.
        for name in self.list_repositories()? {
            report.repositories += 1;
            let revisions = self.revisions(&name)?;
            report.manifests += revisions.len();
            let keep = if opts.delete_untagged {
                self.reachable(&name, &revisions, opts.grace)?
            } else {
                revisions.iter().map(|(d, _)| d.clone()).collect()
            };
            for (d, _) in &revisions {
                if !keep.contains(d) {
                    untagged.push((name.clone(), d.clone()));
                }
            }
            for d in &keep {
                marked.insert(Key::of(d));
                if let Some(m) = self.load_manifest(d)?
                    && let Some(refs) = refs_of(&m.bytes)
                {
                    for r in refs.all() {
                        marked.insert(Key::of(&r));
                    }
                }
            }
        }
        report.marked = marked.len();

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
            for (name, d) in &untagged {
                let from = paths::revision_link(name, d);
                match self
                    .backend
                    .move_aside(&from, &paths::gc_trash_revision(&run.id, name, d))
                {
                    Ok(()) => {
                        run.revisions.insert((name.clone(), d.clone()));
                    }
                    // Deleted meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("setting a manifest aside", &e)),
                }
            }
        }
        // Set aside while walking: nothing but the compact sets is held.
        self.for_each_blob(|d, meta| {
            report.blobs += 1;
            if marked.contains(&Key::of(&d)) || !older_than(meta.modified, opts.grace) {
                return Ok(());
            }
            if opts.dry_run {
                report.blobs_deleted += 1;
                report.bytes_freed += meta.size;
                return Ok(());
            }
            match self
                .backend
                .move_aside(&paths::blob_data(&d), &paths::gc_trash_blob(&run.id, &d))
            {
                Ok(()) => {
                    run.blobs.insert(Key::of(&d), meta.size);
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("setting a blob aside", &e)),
            }
        })?;
        drop(marked);
        if opts.dry_run {
            return Ok(());
        }

        // 3. Look again at what was written since the mark began.
        report.restored = self.restore_referenced(&mut run, mark_start)?;

        // 4. Delete.
        report.manifests_deleted = run.revisions.len();
        for (key, size) in &run.blobs {
            report.blobs_deleted += 1;
            report.bytes_freed += size;
            if let Some(d) = key.digest() {
                self.manifests.invalidate(&d);
            }
        }
        self.backend
            .remove_dir_all(&paths::gc_run_dir(&run.id))
            .map_err(io_err("deleting collected content"))?;
        for (name, d) in &run.revisions {
            // The link's directories, left empty, go too.
            let link = paths::revision_link(name, d);
            if let Some(dir) = link.parent() {
                self.backend
                    .prune_empty_dirs(dir, &paths::repositories_root())
                    .map_err(io_err("pruning directories"))?;
            }
        }
        report.layer_links_removed = self.remove_dangling_layer_links()?;
        Ok(())
    }

    /// Revisions of a repository with the time their link was written.
    fn revisions(&self, name: &RepoName) -> Result<Vec<(Digest, SystemTime)>> {
        let mut out = Vec::new();
        for d in self.digests_in(&paths::revisions_dir(name))? {
            let link = paths::revision_link(name, &d);
            if let Some(meta) = self
                .backend
                .stat(&link)
                .map_err(io_err("reading a manifest link"))?
                && self.link_is(&link, &d)?
            {
                out.push((d, meta.modified));
            }
        }
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

    /// Calls `f` for every blob data file of the store.
    pub(super) fn for_each_blob(
        &self,
        mut f: impl FnMut(Digest, super::fs::Meta) -> Result<()>,
    ) -> Result<()> {
        let root = paths::blobs_root();
        for alg in self.backend.list(&root).map_err(io_err("listing blobs"))? {
            if DigestAlgorithm::parse(&alg.name).is_none() {
                continue;
            }
            let alg_dir = root.join(&alg.name);
            for prefix in self
                .backend
                .list(&alg_dir)
                .map_err(io_err("listing blobs"))?
            {
                let prefix_dir = alg_dir.join(&prefix.name);
                for entry in self
                    .backend
                    .list(&prefix_dir)
                    .map_err(io_err("listing blobs"))?
                {
                    let Ok(d) = Digest::parse(&format!("{}:{}", alg.name, entry.name)) else {
                        continue;
                    };
                    if let Some(meta) = self
                        .backend
                        .stat(&paths::blob_data(&d))
                        .map_err(io_err("reading a blob"))?
                    {
                        f(d, meta)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts back whatever links written since `since` reference: the
    /// content of new manifests, and revisions that tags point at again.
    fn restore_referenced(&self, run: &mut Run, since: SystemTime) -> Result<usize> {
        let since = since.checked_sub(MTIME_SLACK).unwrap_or(since);
        let mut restored = 0;
        for name in self.list_repositories()? {
            let mut work: Vec<Digest> = self
                .revisions(&name)?
                .into_iter()
                .filter(|(_, t)| *t >= since)
                .map(|(d, _)| d)
                .collect();
            for d in self.tag_targets(&name)? {
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
                    .read(&paths::blob_data(&d))
                    .map_err(io_err("reading a manifest"))?
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

    /// Moves set-aside content back, unless the place was filled again
    /// meanwhile (then the copy set aside is surplus).
    fn put_back(&self, from: &Path, to: &Path) -> Result<()> {
        if self
            .backend
            .stat(to)
            .map_err(io_err("restoring content"))?
            .is_some()
        {
            self.backend
                .remove_file(from)
                .map_err(io_err("restoring content"))?;
            return Ok(());
        }
        match self.backend.rename_durable(from, to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("restoring content", &e))
            }
            _ => Ok(()),
        }
    }

    /// Puts back everything left set aside by collections that did not
    /// finish (a crash, a kill), then removes their directories.
    fn recover_interrupted(&self) -> Result<usize> {
        let mut count = 0;
        for run in self
            .backend
            .list(&paths::gc_root())
            .map_err(io_err("listing collections"))?
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
                .remove_dir_all(&paths::gc_run_dir(&run.name))
                .map_err(io_err("removing an interrupted collection"))?;
        }
        if count > 0 {
            tracing::warn!("put back {count} items set aside by an interrupted garbage collection");
        }
        Ok(count)
    }

    /// Removes `_layers` links whose blob data is gone.
    fn remove_dangling_layer_links(&self) -> Result<usize> {
        let mut removed = 0;
        for name in self.repositories_holding(&paths::repositories_root(), "_layers")? {
            for d in self.digests_in(&paths::layers_dir(&name))? {
                if !self.blob_data_exists(&d)? {
                    self.remove_link(&paths::layer_link(&name, &d), &paths::repositories_root())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
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
            .map_err(io_err("listing uploads"))?
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
                .map_err(io_err("reading an upload"))?
                .map_or(0, |m| m.size);
            let expired = is_older(started, opts.upload_max_age)
                || (size == 0 && is_older(started, opts.empty_upload_max_age));
            if !expired || self.upload_in_use(name, id) {
                continue;
            }
            report.uploads_deleted += 1;
            report.upload_bytes_freed += size;
            if !opts.dry_run {
                self.cancel_upload(name, id)?;
                self.backend
                    .prune_empty_dirs(&paths::uploads_dir(name), &paths::repositories_root())
                    .map_err(io_err("pruning directories"))?;
            }
        }
        Ok(())
    }
}

/// `VmHWM` of this process, from /proc.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
