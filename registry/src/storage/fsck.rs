//! Consistency check of the storage: every blob's content against its
//! digest, and every link (blob links, manifest revisions, tags,
//! referrers) against what it points at.
//!
//! With `repair`, corrupt blobs are moved aside to `_corrupt/` (never
//! deleted: an operator may want them) and dangling links are dropped. A
//! manifest referencing a missing blob cannot be repaired; it is reported.
//!
//! Everything goes through the backend trait, so the check runs the same
//! on every backend. Moving a corrupt blob aside is a rename on the
//! filesystem and a copy and a delete on S3: a crash in between leaves the
//! corrupt blob in place too, and the next check finds it again. Leftovers
//! of interrupted writes (`.<name>.tmp-<id>` files and staged directories)
//! only exist on the filesystem; object stores never show a partial
//! object.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::backend::Durability;
use super::error::Context;
use super::{Result, Storage, paths};
use crate::oci::{Digest, RepoName, Tag};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Blob data whose content does not hash to its digest.
    CorruptBlob(Digest),
    /// A link whose content is not the digest its path names.
    BadLink(PathBuf),
    /// A repository's blob link to missing blob data.
    DanglingLayer(String, Digest),
    /// A manifest revision whose manifest is missing or unreadable.
    DanglingRevision(String, Digest),
    /// A tag pointing at a manifest the repository does not hold.
    DanglingTag(String, String),
    /// A manifest referencing blob data that is missing.
    MissingReference {
        repository: String,
        manifest: Digest,
        missing: Digest,
    },
    /// A temporary file left behind by an interrupted write.
    LeftoverTemp(PathBuf),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptBlob(d) => {
                write!(f, "corrupt blob {d}: content does not match the digest")
            }
            Problem::BadLink(p) => write!(
                f,
                "bad link {}: does not hold the digest its path names",
                p.display()
            ),
            Problem::DanglingLayer(r, d) => {
                write!(f, "{r}: blob link {d} points at missing blob data")
            }
            Problem::DanglingRevision(r, d) => {
                write!(f, "{r}: manifest {d} is linked but missing or unreadable")
            }
            Problem::DanglingTag(r, t) => write!(
                f,
                "{r}: tag {t} points at a manifest the repository does not hold"
            ),
            Problem::MissingReference {
                repository,
                manifest,
                missing,
            } => {
                write!(
                    f,
                    "{repository}: manifest {manifest} references missing blob {missing}"
                )
            }
            Problem::LeftoverTemp(p) => write!(f, "leftover temporary file {}", p.display()),
        }
    }
}

/// What a check found (and, with repair, fixed).
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub blobs: usize,
    pub bytes: u64,
    pub repositories: usize,
    pub links: usize,
    pub problems: Vec<Problem>,
    pub repaired: usize,
    pub elapsed: Duration,
}

impl FsckReport {
    /// Whether problems remain (found and not repaired).
    pub fn is_clean(&self) -> bool {
        self.problems.len() == self.repaired
    }
}

impl fmt::Display for FsckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        write!(
            f,
            "checked {} blobs ({} bytes), {} repositories, {} links in {:.2?}: {} problems",
            self.blobs,
            self.bytes,
            self.repositories,
            self.links,
            self.elapsed,
            self.problems.len()
        )?;
        if self.repaired > 0 {
            write!(f, ", {} repaired", self.repaired)?;
        }
        Ok(())
    }
}

/// Temporary files younger than this may belong to a write in progress.
const TEMP_AGE: Duration = Duration::from_secs(3600);

impl Storage {
    /// Checks the whole storage; with `repair`, fixes what can be fixed.
    pub fn fsck(&self, repair: bool) -> Result<FsckReport> {
        let started = Instant::now();
        let mut report = FsckReport::default();
        self.check_blobs(repair, &mut report)?;
        for name in self.list_repositories()? {
            report.repositories += 1;
            self.check_repository(&name, repair, &mut report)?;
        }
        self.check_temp_files(repair, &mut report)?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    fn check_blobs(&self, repair: bool, report: &mut FsckReport) -> Result<()> {
        self.for_each_blob(|d, meta| {
            let data = paths::blob_data(&d);
            // `None`: deleted meanwhile.
            let Some(actual) = self.hash_object(&data, d.algorithm())? else {
                return Ok(());
            };
            report.blobs += 1;
            report.bytes += meta.size;
            if actual != d {
                report.problems.push(Problem::CorruptBlob(d.clone()));
                if repair {
                    self.backend
                        .rename(
                            &data,
                            &paths::corrupt_blob(&d),
                            &paths::blobs_root(),
                            Durability::Durable,
                        )
                        .context("moving a corrupt blob aside")?;
                    self.manifests.invalidate(&d);
                    report.repaired += 1;
                }
            }
            Ok(())
        })
    }

    fn check_repository(
        &self,
        name: &RepoName,
        repair: bool,
        report: &mut FsckReport,
    ) -> Result<()> {
        let repo = name.to_string();
        let root = paths::repositories_root();
        // Blob links.
        for d in self.digests_in(&paths::layers_dir(name))? {
            report.links += 1;
            let link = paths::layer_link(name, &d);
            let problem = if !self.link_is(&link, &d)? {
                Some(Problem::BadLink(link.clone()))
            } else if !self.blob_data_exists(&d)? {
                Some(Problem::DanglingLayer(repo.clone(), d.clone()))
            } else {
                None
            };
            if let Some(p) = problem {
                report.problems.push(p);
                if repair {
                    self.remove_link(&link, &root)?;
                    report.repaired += 1;
                }
            }
        }
        // Manifest revisions and what they reference.
        for d in self.digests_in(&paths::revisions_dir(name))? {
            report.links += 1;
            let link = paths::revision_link(name, &d);
            if !self.link_is(&link, &d)? {
                report.problems.push(Problem::BadLink(link.clone()));
                if repair {
                    self.remove_link(&link, &root)?;
                    report.repaired += 1;
                }
                continue;
            }
            let refs = self
                .load_manifest(&d)?
                .and_then(|m| super::gc::refs_of(&m.bytes))
                .map(super::gc::Refs::all);
            let Some(refs) = refs else {
                report
                    .problems
                    .push(Problem::DanglingRevision(repo.clone(), d.clone()));
                if repair {
                    self.remove_link(&link, &root)?;
                    report.repaired += 1;
                }
                continue;
            };
            for b in refs {
                if !self.blob_data_exists(&b)? {
                    report.problems.push(Problem::MissingReference {
                        repository: repo.clone(),
                        manifest: d.clone(),
                        missing: b,
                    });
                }
            }
        }
        // Tags (after revisions, which a repair may have dropped).
        for tag in self.list_tags(name)?.unwrap_or_default().iter() {
            let Ok(t) = Tag::parse(tag) else { continue };
            report.links += 1;
            let target = self.read_link(&paths::tag_current_link(name, &t))?;
            let ok = match &target {
                Some(d) => self.link_is(&paths::revision_link(name, d), d)?,
                None => false,
            };
            if !ok {
                report
                    .problems
                    .push(Problem::DanglingTag(repo.clone(), tag.clone()));
                if repair {
                    self.delete_tag(name, &t)?;
                    report.repaired += 1;
                }
            }
        }
        Ok(())
    }

    /// Temporary files and staged directories of atomic writes
    /// (`.<name>.tmp-<id>`) that an interrupted write left behind: the
    /// outermost such path segment of every object, older than
    /// [`TEMP_AGE`] (by its newest object).
    fn check_temp_files(&self, repair: bool, report: &mut FsckReport) -> Result<()> {
        let root = PathBuf::from(paths::ROOT);
        // Leftover -> (whether it is a prefix, its newest object's time).
        let mut found: HashMap<PathBuf, (bool, SystemTime)> = HashMap::new();
        self.backend
            .walk(&root, &mut |path, meta| {
                let mut leftover = PathBuf::new();
                let segments: Vec<_> = path.iter().collect();
                for (i, seg) in segments.iter().enumerate() {
                    leftover.push(seg);
                    let name = seg.to_string_lossy();
                    if name.starts_with('.') && name.contains(".tmp-") {
                        let is_prefix = i + 1 < segments.len();
                        let entry = found.entry(leftover).or_insert((is_prefix, meta.modified));
                        entry.1 = entry.1.max(meta.modified);
                        break;
                    }
                }
                Ok(())
            })
            .context("listing storage")?;
        let mut leftovers: Vec<_> = found.into_iter().collect();
        leftovers.sort();
        for (rel, (is_prefix, modified)) in leftovers {
            if !super::gc::older_than(modified, TEMP_AGE) {
                continue;
            }
            let path = root.join(&rel);
            report.problems.push(Problem::LeftoverTemp(path.clone()));
            if repair {
                let stop = path.parent().unwrap_or(Path::new(""));
                if is_prefix {
                    self.backend
                        .delete_prefix(&path, stop)
                        .context("removing a staged directory")?;
                } else {
                    self.backend
                        .delete(&path, stop)
                        .context("removing a temporary file")?;
                }
                report.repaired += 1;
            }
        }
        Ok(())
    }
}
