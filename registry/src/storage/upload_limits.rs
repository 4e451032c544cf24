//! Caps on open upload sessions, per repository and per owner (the
//! authenticated user, else the client's address), so that nobody can
//! open sessions faster than they are purged (each one is kept for a week
//! otherwise).
//!
//! The counts live in memory. They are loaded from storage — every
//! `_uploads/<id>` and its `owner` file — when the first upload starts, so
//! they survive restarts, and follow sessions as they open, complete, are
//! cancelled or purged. Whatever else removes sessions (another process, a
//! repository delete, a crash) is caught up with when a cap is reached: the
//! sessions counted are then checked against storage, and those that never
//! received data and are older than `empty_age` are purged on the spot.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::backend::Durability;
use super::error::Context;
use super::{Error, Result, Storage, paths};
use crate::config::UploadLimits;
use crate::oci::RepoName;

/// Longest owner key kept from an `owner` file (a user name or address).
const MAX_OWNER_LEN: usize = 512;

/// Who opened an upload: `user:<name>` or `addr:<address>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadOwner(String);

impl UploadOwner {
    /// An authenticated user (token subject or htpasswd user).
    pub fn user(name: &str) -> UploadOwner {
        UploadOwner(format!("user:{name}"))
    }

    /// An unauthenticated client by its address. IPv6 clients count by
    /// /64, the block one host usually holds; without an address (tests
    /// in-process) every client is the same one.
    pub fn address(ip: Option<IpAddr>) -> UploadOwner {
        UploadOwner(match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => format!("addr:{v4}"),
            Some(IpAddr::V6(v6)) => {
                let s = v6.segments();
                format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            None => "addr:unknown".to_owned(),
        })
    }

    /// The key as stored in an `owner` file; `None` for anything not
    /// written by [`UploadOwner::user`] or [`UploadOwner::address`].
    fn parse(stored: &[u8]) -> Option<UploadOwner> {
        let s = std::str::from_utf8(stored).ok()?.trim();
        let valid = (s.starts_with("user:") || s.starts_with("addr:"))
            && s.len() <= MAX_OWNER_LEN
            && !s.chars().any(char::is_control);
        valid.then(|| UploadOwner(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Open sessions and their counts.
#[derive(Default)]
struct Open {
    /// Whether storage was read yet.
    loaded: bool,
    sessions: HashMap<Uuid, (RepoName, Option<UploadOwner>)>,
    per_repository: HashMap<RepoName, usize>,
    per_owner: HashMap<UploadOwner, usize>,
}

fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Open {
    fn add(&mut self, id: Uuid, name: &RepoName, owner: Option<UploadOwner>) {
        if self.sessions.contains_key(&id) {
            return;
        }
        *self.per_repository.entry(name.clone()).or_default() += 1;
        if let Some(o) = &owner {
            *self.per_owner.entry(o.clone()).or_default() += 1;
        }
        self.sessions.insert(id, (name.clone(), owner));
    }

    fn remove(&mut self, id: Uuid) {
        if let Some((name, owner)) = self.sessions.remove(&id) {
            decrement(&mut self.per_repository, &name);
            if let Some(o) = &owner {
                decrement(&mut self.per_owner, o);
            }
        }
    }

    fn repository_count(&self, name: &RepoName) -> usize {
        self.per_repository.get(name).copied().unwrap_or(0)
    }

    fn owner_count(&self, owner: &UploadOwner) -> usize {
        self.per_owner.get(owner).copied().unwrap_or(0)
    }
}

/// The open sessions of a [`Storage`].
#[derive(Default)]
pub(super) struct OpenUploads(Mutex<Open>);

impl OpenUploads {
    /// Forgets a session that was completed, cancelled or purged.
    pub(super) fn release(&self, id: Uuid) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

fn at_cap(count: usize, cap: usize) -> bool {
    cap != 0 && count >= cap
}

fn too_many(scope: &'static str, cap: usize) -> Error {
    Error::TooManyUploads { scope, cap }
}

impl Storage {
    /// Reserves a session for a new upload of `owner` into `name` and runs
    /// `create` to make it in storage, unless a cap is reached: then 429
    /// `TOOMANYREQUESTS` with `Retry-After`. The lock is held while the
    /// session is created, so a recount never misses one half made.
    pub(super) fn open_upload(
        &self,
        name: &RepoName,
        owner: &UploadOwner,
        limits: &UploadLimits,
        create: impl FnOnce(Uuid) -> Result<()>,
    ) -> Result<Uuid> {
        let mut open = self
            .uploads
            .open
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !open.loaded {
            self.load_open_uploads(&mut open)?;
        }
        if at_cap(open.repository_count(name), limits.per_repository) {
            self.recount_repository(&mut open, name, limits.empty_age)?;
            if at_cap(open.repository_count(name), limits.per_repository) {
                return Err(too_many("in this repository", limits.per_repository));
            }
        }
        if at_cap(open.owner_count(owner), limits.per_client) {
            self.recount_owner(&mut open, owner, limits.empty_age)?;
            if at_cap(open.owner_count(owner), limits.per_client) {
                return Err(too_many("by this client", limits.per_client));
            }
        }
        let id = Uuid::new_v4();
        if let Err(e) = create(id).and_then(|()| {
            self.backend
                .put(
                    &paths::upload_owner(name, id),
                    owner.as_str().as_bytes(),
                    Durability::Scratch,
                )
                .context("starting an upload")
        }) {
            let _ = self
                .backend
                .delete_prefix(&paths::upload_dir(name, id), &paths::uploads_dir(name));
            return Err(e);
        }
        open.add(id, name, Some(owner.clone()));
        Ok(id)
    }

    /// Counts every session in storage.
    fn load_open_uploads(&self, open: &mut Open) -> Result<()> {
        for name in self.repositories_holding(&paths::repositories_root(), "_uploads")? {
            for id in self.upload_ids(&name)? {
                let owner = self.upload_owner(&name, id)?;
                open.add(id, &name, owner);
            }
        }
        open.loaded = true;
        Ok(())
    }

    pub(super) fn upload_ids(&self, name: &RepoName) -> Result<Vec<Uuid>> {
        Ok(self
            .backend
            .list(&paths::uploads_dir(name))
            .context("listing uploads")?
            .into_iter()
            .filter(|e| e.is_prefix)
            .filter_map(|e| Uuid::try_parse(&e.name).ok())
            .collect())
    }

    fn upload_owner(&self, name: &RepoName, id: Uuid) -> Result<Option<UploadOwner>> {
        Ok(self
            .backend
            .get(&paths::upload_owner(name, id))
            .context("reading an upload")?
            .and_then(|b| UploadOwner::parse(&b)))
    }

    /// Brings the repository's count in line with storage and purges its
    /// stale empty sessions.
    fn recount_repository(
        &self,
        open: &mut Open,
        name: &RepoName,
        empty_age: Duration,
    ) -> Result<()> {
        let present: HashSet<Uuid> = self.upload_ids(name)?.into_iter().collect();
        let counted: Vec<Uuid> = open
            .sessions
            .iter()
            .filter(|(_, (n, _))| n == name)
            .map(|(id, _)| *id)
            .collect();
        for id in counted {
            if !present.contains(&id) {
                open.remove(id);
            }
        }
        for &id in &present {
            if !open.sessions.contains_key(&id) {
                let owner = self.upload_owner(name, id)?;
                open.add(id, name, owner);
            }
            if self.is_stale_and_empty(name, id, empty_age)? {
                self.discard_upload(name, id, &paths::uploads_dir(name))?;
                open.remove(id);
            }
        }
        Ok(())
    }

    /// Drops the owner's sessions that are gone from storage and purges
    /// their stale empty ones.
    fn recount_owner(
        &self,
        open: &mut Open,
        owner: &UploadOwner,
        empty_age: Duration,
    ) -> Result<()> {
        let theirs: Vec<(Uuid, RepoName)> = open
            .sessions
            .iter()
            .filter(|(_, (_, o))| o.as_ref() == Some(owner))
            .map(|(id, (n, _))| (*id, n.clone()))
            .collect();
        for (id, name) in theirs {
            let exists = self
                .backend
                .stat_prefix(&paths::upload_dir(&name, id))
                .context("reading an upload")?
                .is_some();
            if !exists {
                open.remove(id);
            } else if self.is_stale_and_empty(&name, id, empty_age)? {
                self.discard_upload(&name, id, &paths::uploads_dir(&name))?;
                open.remove(id);
            }
        }
        Ok(())
    }

    /// Whether the session never received data, was started more than
    /// `age` ago, and no request is working on it right now.
    fn is_stale_and_empty(&self, name: &RepoName, id: Uuid, age: Duration) -> Result<bool> {
        let size = self
            .backend
            .stat(&paths::upload_data(name, id))
            .context("reading an upload")?
            .map_or(0, |m| m.size);
        if size > 0 || self.upload_in_use(name, id) {
            return Ok(false);
        }
        Ok(self
            .upload_started(name, id)?
            .is_some_and(|t| SystemTime::now().duration_since(t).is_ok_and(|d| d >= age)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners() {
        let v6 = "2001:db8:1:2:3:4:5:6".parse().ok();
        assert_eq!(UploadOwner::address(v6).as_str(), "addr:2001:db8:1:2::/64");
        let same_block = "2001:db8:1:2:ffff::1".parse().ok();
        assert_eq!(UploadOwner::address(v6), UploadOwner::address(same_block));
        let mapped = "::ffff:192.0.2.7".parse().ok();
        assert_eq!(UploadOwner::address(mapped).as_str(), "addr:192.0.2.7");
        assert_eq!(UploadOwner::address(None).as_str(), "addr:unknown");
        let alice = UploadOwner::user("alice");
        assert_eq!(UploadOwner::parse(b"user:alice\n"), Some(alice));
        assert_eq!(UploadOwner::parse(b"alice"), None);
        assert_eq!(UploadOwner::parse(b"user:a\x00b"), None);
        assert_eq!(UploadOwner::parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn counts_follow_sessions() {
        let name = RepoName::parse("a/b").unwrap();
        let owner = UploadOwner::user("alice");
        let mut open = Open::default();
        let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
        open.add(x, &name, Some(owner.clone()));
        open.add(x, &name, Some(owner.clone()));
        open.add(y, &name, None);
        assert_eq!(
            (open.repository_count(&name), open.owner_count(&owner)),
            (2, 1)
        );
        open.remove(x);
        open.remove(x);
        assert_eq!(
            (open.repository_count(&name), open.owner_count(&owner)),
            (1, 0)
        );
        open.remove(y);
        assert!(open.per_repository.is_empty() && open.per_owner.is_empty());
    }
}
