//! The backend trait: what the registry needs from a storage medium, shaped
//! like distribution's storage driver (`Reader(offset)`, `Writer` →
//! `FileWriter{Size, Cancel, Commit}`, `Move`, `List`, `Delete`), plus the
//! filesystem and in-memory implementations and the test suite every
//! backend passes (`suite`).
//!
//! # Model
//!
//! A backend stores *objects* (byte strings) under *paths* — relative,
//! `/`-separated, built only by `storage::paths`. Paths group into
//! *prefixes* (`a/b` is the prefix of `a/b/c`), which exist while an
//! object lies under them: S3 has nothing else, and the filesystem backend
//! keeps its directories in step (a delete takes the directories it leaves
//! empty with it, up to a stop the caller names). There is no rename, no
//! lock and no append on object storage, so the trait has none: a move
//! may be a copy and a delete, mutual exclusion is a conditional put
//! ([`Backend::put_new`]), and an append is a [`Writer`] resumed at the
//! size it left off at.
//!
//! # Blocking calls
//!
//! Methods block. The logical layer (`Storage`) makes many small dependent
//! calls per request (a manifest push reads and writes about ten links),
//! and runs each request's sequence as one task on tokio's blocking pool
//! (`Storage::run`): one thread hop per request instead of one per call,
//! which is what the filesystem — blocking syscalls, and the backend the
//! benchmarks measure — wants. An asynchronous backend (S3 through
//! `object_store`) drives its futures to completion with a runtime handle
//! inside each call; the caller is always a thread that may block (the
//! blocking pool, or the offline commands' plain main thread — the S3
//! backend then brings its own runtime). A blocked pool thread waiting on
//! the network costs a few KiB of stack, and tokio's pool grows to 512.
//! Backend calls must never be made from an async task directly.
//!
//! # Durability
//!
//! Whatever a method reports done is durable unless it says otherwise
//! ([`Durability::Scratch`]): a crash of the machine afterwards keeps it.
//! Object stores are durable on acknowledgement; the filesystem backend
//! gets there with fsyncs (see `fs`).

pub mod fs;
pub mod memory;
pub mod s3;
#[cfg(test)]
pub mod suite;

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

pub use super::error::{Error, Result};

/// How many moves or removals run at once on a local filesystem (GC's
/// set-aside and link removal, the files of a deleted prefix). Each waits
/// for the filesystem's journal rather than for the CPU, and calls made at
/// once share its commits.
pub const LOCAL_CHANGES_PARALLELISM: usize = 8;

/// Metadata of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub size: u64,
    /// When the object was last written (its creation, for the
    /// write-once objects the registry stores).
    pub modified: SystemTime,
}

/// Metadata of a prefix that exists (has objects under it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixMeta {
    /// A time that changes whenever an entry directly under the prefix
    /// appears or goes, where the backend tracks one for free (a
    /// directory's mtime); `None` on object stores. Caches of listings use
    /// it to tell that nothing changed without listing again.
    pub modified: Option<SystemTime>,
}

/// One entry of a one-level listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The last path segment.
    pub name: String,
    /// Whether the entry is a prefix (has objects below it) rather than an
    /// object. A name can be both on object stores; it is then listed once
    /// as each.
    pub is_prefix: bool,
}

/// Whether a write must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Survives a crash once the call returns.
    Durable,
    /// May be lost (or left as it was) by a crash of the machine, never
    /// torn: for state that can be rebuilt or given up, such as an upload's
    /// bookkeeping or content set aside by a garbage collection.
    Scratch,
}

/// Where a [`Writer`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// A new resumable object, replacing any object there.
    Create,
    /// Continue the resumable object, which must hold exactly `size` bytes
    /// (else [`Error::Invalid`]; absent is [`Error::NotFound`]). Another
    /// process (a replica) may have written those bytes.
    Resume { size: u64 },
}

/// The operations the registry needs from a storage medium. Every method
/// may be called concurrently from many threads and processes; what each
/// guarantees under concurrency is said on it.
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The driver's name, for logs and messages (`filesystem`, `inmemory`).
    fn name(&self) -> &'static str;

    /// Whether every call is a network round trip (object stores), so that
    /// the logical layer keeps what it safely can in memory (see
    /// `Storage`); `false` where calls are local and cheap.
    fn is_remote(&self) -> bool {
        false
    }

    // ----- reads -----

    /// A small object whole, or `None` when absent.
    fn get(&self, path: &Path) -> Result<Option<Bytes>>;

    /// Reads an object from `offset` to its end: a reader and the object's
    /// whole size, or `None` when absent. `offset` past the size is
    /// [`Error::Invalid`]. A reader that meets an error (or an object
    /// shorter than announced) fails; it never returns wrong bytes.
    fn read_from(&self, path: &Path, offset: u64) -> Result<Option<(Box<dyn Read + Send>, u64)>>;

    /// Metadata of an object, or `None` when absent (a prefix is not an
    /// object). A closed resumable object (see [`Writer`]) is reported
    /// with its size so far.
    fn stat(&self, path: &Path) -> Result<Option<Meta>>;

    /// Metadata of a prefix, or `None` when no object lies under it.
    fn stat_prefix(&self, prefix: &Path) -> Result<Option<PrefixMeta>>;

    /// The entries directly under `prefix`, in no particular order; empty
    /// when absent. Cheap on both media (a directory read; a delimited
    /// listing).
    fn list(&self, prefix: &Path) -> Result<Vec<Entry>>;

    /// One page of the directories directly under `prefix`, for walks
    /// that stop early (catalog pages). Entries are ordered by their key
    /// relative to `prefix` (`name/` for a directory, `name` for an
    /// object) as bytes, start after the key `start_after`, and number at
    /// most `max` of either kind; only the directories' names are
    /// returned. The second value is the key to continue after, `None`
    /// when the listing is complete.
    ///
    /// The default reads the whole listing and cuts the page out of it;
    /// object stores ask for the page alone (S3: `start-after`,
    /// `max-keys`).
    fn list_prefixes_page(
        &self,
        prefix: &Path,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<String>, Option<String>)> {
        let mut keys: Vec<(String, bool)> = self
            .list(prefix)?
            .into_iter()
            .map(|e| {
                if e.is_prefix {
                    (format!("{}/", e.name), true)
                } else {
                    (e.name, false)
                }
            })
            .filter(|(key, _)| start_after.is_none_or(|after| key.as_str() > after))
            .collect();
        keys.sort_unstable();
        let next = (keys.len() > max.max(1)).then(|| keys[max.max(1) - 1].0.clone());
        keys.truncate(max.max(1));
        let names = keys
            .into_iter()
            .filter_map(|(key, is_prefix)| is_prefix.then(|| key.trim_end_matches('/').to_owned()))
            .collect();
        Ok((names, next))
    }

    /// Every object under `prefix` at any depth, in no particular order,
    /// with its path relative to `prefix` and its metadata: one directory
    /// walk, or one flat paged listing (no per-object stat). `f` may stop
    /// the walk by returning an error, which is passed on.
    fn walk(&self, prefix: &Path, f: &mut dyn FnMut(&Path, Meta) -> Result<()>) -> Result<()>;

    // ----- writes -----

    /// Replaces the object at `path` with `data`, atomically: readers see
    /// the old object or the new one, never a part.
    fn put(&self, path: &Path, data: &[u8], durability: Durability) -> Result<()>;

    /// Creates the object at `path` with `data`, durably, unless an object
    /// is there: `Ok(false)` then, and the object is left alone. Of several
    /// concurrent calls at most one returns `true` (S3: `If-None-Match: *`).
    fn put_new(&self, path: &Path, data: &[u8]) -> Result<bool>;

    /// Opens a resumable writer on the object at `path` (see [`Writer`]).
    fn writer(&self, path: &Path, mode: WriteMode) -> Result<Box<dyn Writer>>;

    /// Deletes an object; absent is not an error. Returns whether it
    /// existed. Prefixes left empty disappear, up to `stop` (exclusive),
    /// which stays even when empty on backends that keep empty directories.
    fn delete(&self, path: &Path, stop: &Path) -> Result<bool>;

    /// Deletes every object under `prefix`; absent is not an error.
    /// Returns whether anything was there. Prefixes left empty disappear
    /// as with [`Backend::delete`]. Not atomic: a crash may leave part of
    /// the objects, which a retry removes.
    fn delete_prefix(&self, prefix: &Path, stop: &Path) -> Result<bool>;

    /// Moves the object `from` to `to`, replacing any object there; missing
    /// source is [`Error::NotFound`]. Prefixes left empty at `from`
    /// disappear up to `stop`.
    ///
    /// Atomic where the medium can (a rename): readers of `to` see the old
    /// object or the whole new one. On object stores it is a copy then a
    /// delete: `to` appears whole (a copy is atomic per object), but for a
    /// moment both exist, and a crash in between leaves both. Callers only
    /// move content-addressed or write-once data, so two copies are never
    /// two different contents; what they must handle is a source that
    /// still exists after the move (see `gc`, `fsck`).
    fn rename(&self, from: &Path, to: &Path, stop: &Path, durability: Durability) -> Result<()>;

    // ----- direct access -----

    /// A URL through which a client can GET the object at `path` itself,
    /// valid for `expires`, where the medium offers one (S3: a presigned
    /// URL, made locally without a request); `None` where it does not
    /// (the filesystem). Whether the object exists is not checked.
    fn presigned_get(&self, _path: &Path, _expires: Duration) -> Result<Option<String>> {
        Ok(None)
    }
}

/// A resumable writer: the data of a blob upload, written across requests
/// and possibly across processes (distribution's `FileWriter`).
///
/// The bytes a writer accepted become part of the resumable object with
/// [`Writer::close`], are dropped with [`Writer::abort`], or become the
/// final object with [`Writer::commit`]. Dropping a writer without one of
/// these is an abort. While written, the resumable object may live
/// elsewhere than an ordinary object (S3: a multipart upload whose upload
/// id and parts are recorded in the bucket, so that another replica
/// resumes it). What is observable of it is its size and time:
/// [`Backend::stat`] on `path` reports them once closed. Its bytes are
/// not readable before [`Writer::commit`] (S3 cannot read a multipart
/// upload in progress). [`Backend::delete_prefix`] over it discards it
/// (S3: aborts the multipart upload).
pub trait Writer: Send {
    /// Size of the resumable object with the bytes accepted so far.
    fn size(&self) -> u64;

    /// Appends bytes.
    fn write(&mut self, data: Bytes) -> Result<()>;

    /// Leaves writing the bytes to the disk to the commit's sync, instead
    /// of starting it every few MiB as they come (what the filesystem does
    /// by default, so that a commit the client waits for is short). For
    /// writes whose client does not wait for the commit: the disk work
    /// then follows the transfer instead of competing with it. Backends
    /// that write nothing locally ignore it.
    fn defer_writeback(&mut self) {}

    /// Appends several pieces, in order (the filesystem: one system call,
    /// no copy to join them).
    fn write_pieces(&mut self, pieces: Vec<Bytes>) -> Result<()> {
        pieces.into_iter().try_for_each(|p| self.write(p))
    }

    /// Keeps the bytes written: a later `WriteMode::Resume` (here or on
    /// another replica) continues after them. Not necessarily durable: a
    /// crash of the machine may cut the object back, never tear it.
    fn close(self: Box<Self>) -> Result<()>;

    /// Forgets the bytes written through this writer: the resumable
    /// object is as it was when the writer was opened.
    fn abort(self: Box<Self>) -> Result<()>;

    /// Makes the whole resumable object the object at `dest`, atomically
    /// and durably, replacing any object there; the resumable object is
    /// gone afterwards (as if moved).
    fn commit(self: Box<Self>, dest: &Path) -> Result<()>;
}
