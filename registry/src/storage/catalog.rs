//! Catalog pages: repository names in lexical order, after `last`, at most
//! `n`, found by walking the repositories' directories.
//!
//! A directory's entries are visited as the keys `name` (the repository
//! it may be) and `name/` (the parent of nested ones), in string order,
//! so names come out sorted, every subtree that lies wholly before `last`
//! is skipped, and the walk stops once the page is full.
//!
//! On an object store a directory with 10,000 repositories would take ten
//! listing requests of 1,000 names to read whole, so its entries are
//! fetched a page at a time from where `last` points (S3 `start-after`).
//! Listings are ordered by key, with a directory's key `name/`, while the
//! catalog orders names: `a-b/` lists before `a/`, yet `a` comes before
//! `a-b`. So an entry is only emitted once nothing still unlisted can sort
//! before it: every unlisted directory's key is past the listing's cursor
//! `c`, and such a name is either past `c` too or is `c` cut just before a
//! byte up to `/` (`a` for the cursor `a-b/`); those few cut names are
//! looked up directly when the next key to emit is past one of them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::error::{Context, Result};
use super::{Storage, paths};

/// How many repository directories a page lists ahead at once on a
/// remote backend.
const PREFETCH: usize = 64;

/// A listing of one directory's subdirectories, as far as it was read.
#[derive(Debug, Default)]
struct Listing {
    names: Vec<String>,
    /// The key the listing goes on after; `None` when read to its end.
    next: Option<String>,
}

struct Walk<'a> {
    s: &'a Storage,
    last: Option<&'a str>,
    /// Names wanted in all (`n + 1`, to tell whether more follow).
    limit: usize,
    keep: &'a (dyn Fn(&str) -> bool + Sync),
}

impl Storage {
    /// One page of the catalog: repositories after `last` in lexical order,
    /// for which `keep` holds, at most `n` (all when `None`); and whether
    /// more follow. A page costs what it lists, not the whole catalog.
    pub fn catalog_page(
        &self,
        last: Option<&str>,
        n: Option<usize>,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<(Vec<String>, bool)> {
        let mut out = Vec::new();
        let walk = Walk {
            s: self,
            last,
            limit: n.map_or(usize::MAX, |n| n.saturating_add(1)),
            keep,
        };
        if walk.limit > 0 {
            let root = paths::repositories_root();
            let listing = walk.children(&root, "", 0)?;
            walk.walk(&root, "", listing, &mut out)?;
        }
        let more = n.is_some_and(|n| out.len() > n);
        out.truncate(n.unwrap_or(usize::MAX));
        Ok((out, more))
    }
}

impl Walk<'_> {
    fn remote(&self) -> bool {
        self.s.backend.is_remote()
    }

    /// Entries to ask for in one listing request: what the page still
    /// needs and a few more (directories that are not repositories), or
    /// everything at once where listing is local.
    fn page_size(&self, found: usize) -> usize {
        if self.remote() {
            self.limit
                .saturating_sub(found)
                .saturating_add(8)
                .clamp(16, 1000)
        } else {
            usize::MAX
        }
    }

    /// Where the listing of the directory of repository prefix `name`
    /// starts: at `last`'s component below it, when `last` lies inside.
    fn start_after(&self, name: &str) -> Option<String> {
        let last = self.last?;
        let rel = if name.is_empty() {
            last
        } else {
            last.strip_prefix(name)?.strip_prefix('/')?
        };
        let first = rel.split('/').next().unwrap_or_default();
        (!first.is_empty()).then(|| first.to_owned())
    }

    /// The first page of the subdirectories of `dir`, the directory of
    /// repository prefix `name`.
    fn children(&self, dir: &Path, name: &str, found: usize) -> Result<Listing> {
        let after = self.start_after(name);
        self.page(dir, after.as_deref(), found)
    }

    fn page(&self, dir: &Path, after: Option<&str>, found: usize) -> Result<Listing> {
        let (names, next) = self
            .s
            .backend
            .list_prefixes_page(dir, after, self.page_size(found))
            .context("listing repositories")?;
        Ok(Listing { names, next })
    }

    /// Whether the directory `dir/child` (whose listing may have been
    /// read, `listing`) is a repository: it holds `_manifests`.
    fn is_repository(&self, dir: &Path, child: &str, listing: Option<&Listing>) -> Result<bool> {
        const MARKER: &str = "_manifests";
        if let Some(l) = listing {
            if l.names.iter().any(|n| n == MARKER) {
                return Ok(true);
            }
            // Read to its end, or past where `_manifests/` would be.
            if l.next.as_deref().is_none_or(|c| c >= "_manifests/") {
                return Ok(false);
            }
        }
        let (names, _) = self
            .s
            .backend
            .list_prefixes_page(&dir.join(child), Some(MARKER), 1)
            .context("listing repositories")?;
        Ok(names.iter().any(|n| n == MARKER))
    }

    /// Whether the catalog key `key` (a full name, or a name and `/` for
    /// its subtree) holds anything after `last`.
    fn wanted(&self, key: &str, is_subtree: bool) -> bool {
        match self.last {
            None => true,
            // Every name below `key/` starts with it: all of them come
            // before `last` when `last` is past it without starting with it.
            Some(l) if is_subtree => l <= key || l.starts_with(key),
            Some(l) => key > l,
        }
    }

    /// The full name of the entry `rel` of the directory of prefix `prefix`.
    fn full(prefix: &str, rel: &str) -> String {
        if prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{prefix}/{rel}")
        }
    }

    /// Queues the keys of the subdirectories `names` not seen before.
    fn add(
        &self,
        prefix: &str,
        names: Vec<String>,
        pending: &mut BTreeSet<(String, bool)>,
        known: &mut HashSet<String>,
    ) {
        for child in names {
            if child.starts_with(['.', '_']) || !known.insert(child.clone()) {
                continue;
            }
            let name = Self::full(prefix, &child);
            if !token::name::is_valid_repository(&name) {
                continue;
            }
            if self.wanted(&format!("{name}/"), true) {
                pending.insert((format!("{child}/"), true));
            }
            if self.wanted(&name, false) {
                pending.insert((child, false));
            }
        }
    }

    /// The catalog below `dir`, the directory of repository prefix
    /// `prefix` whose listing so far is `listing`, appended to `out` until
    /// it holds `limit` names. Keys in `pending` are relative to `dir`.
    fn walk(
        &self,
        dir: &Path,
        prefix: &str,
        listing: Listing,
        out: &mut Vec<String>,
    ) -> Result<()> {
        let mut pending: BTreeSet<(String, bool)> = BTreeSet::new();
        let mut known: HashSet<String> = HashSet::new();
        let mut probed: HashSet<String> = HashSet::new();
        let mut listings: HashMap<String, Listing> = HashMap::new();
        let mut cursor = listing.next;
        self.add(prefix, listing.names, &mut pending, &mut known);
        while out.len() < self.limit {
            let first = pending.first().map(|(k, _)| k.clone());
            if let Some(c) = cursor.clone() {
                // Unlisted names cut from the cursor that could come
                // before the next key: look them up.
                let cut: Vec<String> = cut_names(&c)
                    .filter(|p| first.as_ref().is_none_or(|f| p <= f))
                    .filter(|p| !known.contains(p) && !probed.contains(p))
                    .collect();
                if !cut.is_empty() {
                    let found = out.len();
                    let lists = self.s.par_map(cut.clone(), |p| {
                        self.children(&dir.join(&p), &Self::full(prefix, &p), found)
                    })?;
                    for (p, l) in cut.into_iter().zip(lists) {
                        probed.insert(p.clone());
                        if !l.names.is_empty() || l.next.is_some() {
                            self.add(prefix, vec![p.clone()], &mut pending, &mut known);
                            listings.insert(p, l);
                        }
                    }
                    continue;
                }
                // Everything else unlisted sorts after the cursor.
                if first.as_ref().is_none_or(|f| *f > c) {
                    let page = self.page(dir, Some(&c), out.len())?;
                    cursor = page.next;
                    self.add(prefix, page.names, &mut pending, &mut known);
                    continue;
                }
            }
            let Some((key, is_subtree)) = pending.pop_first() else {
                break;
            };
            let child = key.trim_end_matches('/').to_owned();
            if !listings.contains_key(&child) {
                // A subtree may fill the page by itself: only a name's
                // turn reads the listings of the names after it.
                let ahead = if is_subtree { None } else { Some(&pending) };
                self.prefetch(dir, prefix, &child, ahead, &mut listings, out.len())?;
            }
            if is_subtree {
                let l = listings.remove(&child).unwrap_or_default();
                self.walk(&dir.join(&child), &Self::full(prefix, &child), l, out)?;
            } else if self.is_repository(dir, &child, listings.get(&child))? {
                let name = Self::full(prefix, &child);
                if (self.keep)(&name) {
                    out.push(name);
                }
            }
        }
        Ok(())
    }

    /// Lists `child` and, on a remote backend, the directories the walk
    /// will visit next (from `pending`), in parallel.
    fn prefetch(
        &self,
        dir: &Path,
        prefix: &str,
        child: &str,
        pending: Option<&BTreeSet<(String, bool)>>,
        listings: &mut HashMap<String, Listing>,
        found: usize,
    ) -> Result<()> {
        let batch = if self.remote() {
            PREFETCH.min(self.limit.saturating_sub(found).saturating_add(4))
        } else {
            1
        };
        let mut ahead: Vec<String> = vec![child.to_owned()];
        for (key, _) in pending.into_iter().flatten() {
            if ahead.len() >= batch {
                break;
            }
            let c = key.trim_end_matches('/');
            if !listings.contains_key(c) && !ahead.iter().any(|a| a == c) {
                ahead.push(c.to_owned());
            }
        }
        let fetched = self.s.par_map(ahead.clone(), |c| {
            self.children(&dir.join(&c), &Self::full(prefix, &c), found)
        })?;
        listings.extend(ahead.into_iter().zip(fetched));
        Ok(())
    }
}

/// The names a directory may have whose key `name/` sorts after the
/// listing key `c` although the name itself does not: `c` cut before each
/// byte up to `/` (`a` for `a-b/`, `a` and `a-b` for `a-b.c`).
fn cut_names(c: &str) -> impl Iterator<Item = String> + '_ {
    c.bytes()
        .enumerate()
        .filter(|&(i, b)| i > 0 && b <= b'/')
        .map(|(i, _)| c[..i].to_owned())
}

#[cfg(test)]
mod tests {
    use super::cut_names;

    #[test]
    fn names_cut_from_a_listing_key() {
        let cut = |c: &str| cut_names(c).collect::<Vec<_>>();
        assert_eq!(cut("a-b/"), ["a", "a-b"]);
        assert_eq!(cut("a-b.c"), ["a", "a-b"]);
        assert_eq!(cut("plain/"), ["plain"]);
        assert_eq!(cut("object"), Vec::<String>::new());
        // Every name whose key `name/` sorts after the cursor but which
        // sorts before it is among the cut names.
        let names = ["a", "a-b", "a.b", "a-", "ab", "a0", "b", "a-b-c", "a_b"];
        for c in ["a-b/", "a./", "a-b-c/", "a/", "a0/", "a_b/"] {
            for n in names {
                if format!("{n}/").as_str() > c && n < c {
                    assert!(cut(c).contains(&n.to_owned()), "{n} for cursor {c}");
                }
            }
        }
    }
}
