//! Read-only queries of the web UI over [`Storage`]'s public methods:
//! repository summaries, tag rows with push time and size (one row per
//! platform for an index), and delete plans — exactly which tags,
//! manifests and bytes a delete takes, computed before anything is
//! touched and then carried out as previewed.
//!
//! Push times are the modification times of tag links (`current/link` is
//! replaced on every push of the tag), so they need no index of their own.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::SystemTime;

use super::error::Result;
use super::{Storage, paths};
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};

/// A repository as listed: tag count and the newest tag push.
#[derive(Debug, Clone)]
pub struct RepoSummary {
    pub name: String,
    pub tags: usize,
    pub last_push: Option<SystemTime>,
}

/// One platform of a multi-arch index.
#[derive(Debug, Clone)]
pub struct PlatformRow {
    /// `os/architecture[/variant]`, or the artifact type of a non-image.
    pub platform: String,
    pub digest: Digest,
    /// Manifest + config + layers, in bytes.
    pub size: u64,
}

/// A tag as listed.
#[derive(Debug, Clone)]
pub struct TagRow {
    pub tag: String,
    pub digest: Digest,
    pub media_type: String,
    pub pushed: Option<SystemTime>,
    /// Manifest + config + layers (an index: its own size plus every
    /// platform's), in bytes.
    pub size: u64,
    pub platforms: Vec<PlatformRow>,
}

/// How tags and repositories are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Name,
    /// Newest push first.
    Pushed,
}

/// When `tag` was last pushed.
pub fn tag_pushed(s: &Storage, name: &RepoName, tag: &Tag) -> Result<Option<SystemTime>> {
    Ok(s.backend()
        .stat(&paths::tag_current_link(name, tag))
        .map_err(|e| e.context("reading a tag"))?
        .map(|m| m.modified))
}

/// A repository's tag count and newest push; `None` when it holds no
/// manifests any more.
pub fn repo_summary(s: &Storage, name: &RepoName) -> Result<Option<RepoSummary>> {
    let Some(tags) = s.list_tags(name)? else {
        return Ok(None);
    };
    let mut last = None;
    for t in tags.iter() {
        let Ok(tag) = Tag::parse(t) else { continue };
        last = last.max(tag_pushed(s, name, &tag)?);
    }
    Ok(Some(RepoSummary {
        name: name.to_string(),
        tags: tags.len(),
        last_push: last,
    }))
}

/// The parsed manifest `d`, if stored and valid.
pub fn manifest(s: &Storage, d: &Digest) -> Result<Option<(Manifest, u64)>> {
    let Some(m) = s.load_manifest(d)? else {
        return Ok(None);
    };
    Ok(Manifest::parse(Some(m.media_type.as_str()), &m.bytes)
        .ok()
        .map(|p| (p, m.bytes.len() as u64)))
}

/// Size of an image manifest with what it references.
fn image_size(m: &Manifest, own: u64) -> u64 {
    own + m.required_blobs().map(|d| d.size).sum::<u64>()
}

/// `os/arch[/variant]` of an index entry.
pub fn platform_label(desc: &crate::oci::Descriptor) -> String {
    if let Some(p) = &desc.platform {
        let part = |k: &str| {
            p.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let mut label = format!("{}/{}", part("os"), part("architecture"));
        let variant = part("variant");
        if !variant.is_empty() {
            label = format!("{label}/{variant}");
        }
        return label;
    }
    desc.artifact_type
        .clone()
        .unwrap_or_else(|| "unknown platform".to_owned())
}

/// The row of tag `t`: digest, size, platforms, push time. `None` when
/// the tag vanished.
pub fn tag_row(s: &Storage, name: &RepoName, t: &str) -> Result<Option<TagRow>> {
    let Ok(tag) = Tag::parse(t) else {
        return Ok(None);
    };
    let Some(digest) = s.resolve(name, &Reference::Tag(tag.clone()))? else {
        return Ok(None);
    };
    let pushed = tag_pushed(s, name, &tag)?;
    let Some((m, own)) = manifest(s, &digest)? else {
        return Ok(None);
    };
    let mut platforms = Vec::new();
    let size = if m.media_type.is_index() {
        let mut total = own;
        for child in &m.manifests {
            let size = match manifest(s, &child.digest)? {
                Some((cm, cown)) => image_size(&cm, cown),
                None => child.size,
            };
            total += size;
            platforms.push(PlatformRow {
                platform: platform_label(child),
                digest: child.digest.clone(),
                size,
            });
        }
        total
    } else {
        image_size(&m, own)
    };
    Ok(Some(TagRow {
        tag: t.to_owned(),
        digest,
        media_type: m.media_type.as_str().to_owned(),
        pushed,
        size,
        platforms,
    }))
}

/// Every tag of the repository, newest push first (one `stat` per tag);
/// `None` when the repository does not exist.
pub fn tags_by_push(s: &Storage, name: &RepoName) -> Result<Option<Vec<String>>> {
    let Some(tags) = s.list_tags(name)? else {
        return Ok(None);
    };
    let mut timed = Vec::with_capacity(tags.len());
    for t in tags.iter() {
        let time = match Tag::parse(t) {
            Ok(tag) => tag_pushed(s, name, &tag)?,
            Err(_) => None,
        };
        timed.push((std::cmp::Reverse(time), t.clone()));
    }
    timed.sort();
    Ok(Some(timed.into_iter().map(|(_, t)| t).collect()))
}

/// One page of `ordered` (a repository's tags in the order to show) that
/// match `query` (a substring): rows `offset..offset + n`, and how many
/// tags match. Only the page's tags are read.
pub fn tag_page(
    s: &Storage,
    name: &RepoName,
    ordered: &[String],
    query: &str,
    offset: usize,
    n: usize,
) -> Result<(Vec<TagRow>, usize)> {
    let matching: Vec<&String> = ordered.iter().filter(|t| t.contains(query)).collect();
    let mut rows = Vec::new();
    for t in matching.iter().skip(offset).take(n) {
        if let Some(row) = tag_row(s, name, t)? {
            rows.push(row);
        }
    }
    Ok((rows, matching.len()))
}

/// The tags of the repository that point at `d`.
pub fn tags_of(s: &Storage, name: &RepoName, d: &Digest) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in s.list_tags(name)?.unwrap_or_default().iter() {
        let Ok(tag) = Tag::parse(t) else { continue };
        if s.resolve(name, &Reference::Tag(tag))?.as_ref() == Some(d) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// Every manifest revision of the repository.
pub fn revisions(s: &Storage, name: &RepoName) -> Result<Vec<Digest>> {
    let dir = paths::revisions_dir(name);
    let mut out = Vec::new();
    let list = |p: &std::path::Path| {
        s.backend()
            .list(p)
            .map_err(|e| e.context("listing manifests"))
    };
    for alg in list(&dir)? {
        if !alg.is_prefix {
            continue;
        }
        for e in list(&dir.join(&alg.name))? {
            if let Ok(d) = Digest::parse(&format!("{}:{}", alg.name, e.name))
                && s.resolve(name, &Reference::Digest(d.clone()))?.is_some()
            {
                out.push(d);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What a manifest is, for a delete preview.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// The manifest asked for.
    Target,
    /// A platform of an index that goes.
    Child(String),
    /// A manifest whose `subject` is one that goes (signature, SBOM, …).
    Referrer(String),
}

/// Exactly what a delete takes, computed before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePlan {
    pub target: Digest,
    /// Tags removed.
    pub tags: Vec<String>,
    /// Tags on the same digest that stay (deleting one tag of several).
    pub other_tags: Vec<String>,
    /// Manifests removed, with why.
    pub manifests: Vec<(Digest, Role)>,
    /// Platforms of a removed index kept, because a tag or another index
    /// still uses them.
    pub kept_children: Vec<Digest>,
    /// Blobs (layers, configs, manifests) no remaining manifest of this
    /// repository references and no other repository holds: what the next
    /// garbage collection frees once they are older than its grace period.
    pub blobs_freed: usize,
    pub bytes_freed: u64,
    /// Whether the repository is left without manifests (it then leaves
    /// the list).
    pub empties_repository: bool,
}

impl DeletePlan {
    /// A short fingerprint: a delete is carried out only if the plan
    /// computed at that time is the one the user saw.
    pub fn fingerprint(&self) -> String {
        let text = format!("{self:?}");
        Digest::sha256_of(text.as_bytes()).hex()[..16].to_owned()
    }
}

/// The blobs a manifest stands for: itself, its config and layers.
fn blobs_of(m: &Manifest, d: &Digest, out: &mut BTreeSet<Digest>) {
    out.insert(d.clone());
    for b in m.required_blobs() {
        out.insert(b.digest.clone());
    }
}

/// Plans deleting `tag` alone (the manifest stays when `with_manifest` is
/// false or other tags point at it), or the manifest `digest` with every
/// tag on it, the platforms only it uses and its referrers.
pub fn plan_delete(
    s: &Storage,
    name: &RepoName,
    reference: &Reference,
    with_manifest: bool,
) -> Result<Option<DeletePlan>> {
    let Some(target) = s.resolve(name, reference)? else {
        return Ok(None);
    };
    let on_digest = tags_of(s, name, &target)?;
    if let Reference::Tag(tag) = reference {
        let others: Vec<String> = on_digest
            .iter()
            .filter(|t| t.as_str() != tag.as_str())
            .cloned()
            .collect();
        if !with_manifest || !others.is_empty() {
            return Ok(Some(DeletePlan {
                target,
                tags: vec![tag.to_string()],
                other_tags: others,
                manifests: Vec::new(),
                kept_children: Vec::new(),
                blobs_freed: 0,
                bytes_freed: 0,
                // The manifest stays, and the repository with it.
                empties_repository: false,
            }));
        }
    }
    let revisions = revisions(s, name)?;
    let mut parsed: BTreeMap<Digest, Manifest> = BTreeMap::new();
    for d in &revisions {
        if let Some((m, _)) = manifest(s, d)? {
            parsed.insert(d.clone(), m);
        }
    }
    // Which manifests go: the target, then (repeatedly) referrers of what
    // goes and platforms of a removed index that nothing else keeps.
    let mut going: BTreeMap<Digest, Role> = BTreeMap::new();
    going.insert(target.clone(), Role::Target);
    let mut kept_children = BTreeSet::new();
    loop {
        let mut added = false;
        for (d, m) in &parsed {
            if going.contains_key(d) {
                continue;
            }
            if let Some(subject) = &m.subject
                && going.contains_key(&subject.digest)
            {
                let kind = m.effective_artifact_type().unwrap_or("artifact").to_owned();
                going.insert(d.clone(), Role::Referrer(kind));
                added = true;
            }
        }
        let removed_indexes: Vec<Digest> = going.keys().cloned().collect();
        for idx in removed_indexes {
            let Some(m) = parsed.get(&idx) else { continue };
            for child in &m.manifests {
                if going.contains_key(&child.digest) {
                    continue;
                }
                let tagged = !tags_of(s, name, &child.digest)?.is_empty();
                let in_other_index = parsed.iter().any(|(d, other)| {
                    !going.contains_key(d)
                        && other.manifests.iter().any(|c| c.digest == child.digest)
                });
                if tagged || in_other_index || !parsed.contains_key(&child.digest) {
                    kept_children.insert(child.digest.clone());
                } else {
                    kept_children.remove(&child.digest);
                    going.insert(child.digest.clone(), Role::Child(platform_label(child)));
                    added = true;
                }
            }
        }
        if !added {
            break;
        }
    }
    let mut freed = BTreeSet::new();
    let mut kept = BTreeSet::new();
    for (d, m) in &parsed {
        blobs_of(
            m,
            d,
            if going.contains_key(d) {
                &mut freed
            } else {
                &mut kept
            },
        );
    }
    freed.insert(target.clone());
    let candidates: Vec<Digest> = freed.difference(&kept).cloned().collect();
    let others: Vec<RepoName> = s
        .list_repositories()?
        .into_iter()
        .filter(|r| r != name)
        .collect();
    let mut held_elsewhere: HashSet<Digest> = HashSet::new();
    let (mut blobs_freed, mut bytes_freed) = (0, 0);
    for d in &candidates {
        for r in &others {
            if s.stat_blob(r, d)?.is_some() {
                held_elsewhere.insert(d.clone());
                break;
            }
        }
        if held_elsewhere.contains(d) {
            continue;
        }
        if let Some(size) = s.stat_blob(name, d)? {
            blobs_freed += 1;
            bytes_freed += size;
        }
    }
    let mut manifests: Vec<(Digest, Role)> = going.into_iter().collect();
    manifests.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let empties_repository = manifests.len() >= revisions.len();
    Ok(Some(DeletePlan {
        target,
        tags: on_digest,
        other_tags: Vec::new(),
        manifests,
        kept_children: kept_children.into_iter().collect(),
        blobs_freed,
        bytes_freed,
        empties_repository,
    }))
}

/// Carries out a plan: the tag alone, or every manifest it lists (their
/// tags and referrer links go with them).
pub fn apply_delete(s: &Storage, name: &RepoName, plan: &DeletePlan) -> Result<()> {
    if plan.manifests.is_empty() {
        for t in &plan.tags {
            if let Ok(tag) = Tag::parse(t) {
                s.delete_tag(name, &tag)?;
            }
        }
        return Ok(());
    }
    for (d, _) in &plan.manifests {
        s.delete_manifest(name, d)?;
    }
    Ok(())
}
