//! The storage backend trait and its filesystem implementation.
//!
//! The trait is deliberately narrow: small whole-file reads and atomic
//! writes, listing, removal, and streaming handles for blob contents. The
//! logical layer above it (blobs, manifests, tags, uploads) uses nothing
//! else, so another backend (S3-compatible object storage) can replace the
//! filesystem. Calls are blocking; the HTTP layer runs them on tokio's
//! blocking pool.
//!
//! Write rule of the filesystem backend: temp file in the same directory →
//! write → fsync → rename → fsync the directory, and every directory created
//! on the way is made durable in its parent. A crash leaves the old state or
//! the new one, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Metadata of a stored object.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub size: u64,
    pub is_dir: bool,
    pub modified: SystemTime,
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
}

/// The operations the registry needs from a storage medium. Paths are
/// relative to the storage root and come from `storage::paths`.
pub trait Backend: Send + Sync + 'static {
    /// Readable content of a blob, seekable for range requests.
    type Reader: io::Read + io::Seek + Send + 'static;
    /// An append handle on an upload's data.
    type Appender: io::Write + Send + 'static;

    /// A small object whole, or `None` when absent.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Replaces `path` with `data` atomically and durably.
    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn stat(&self, path: &Path) -> io::Result<Option<Meta>>;
    /// Entries of a directory in no particular order; empty when absent.
    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>>;
    /// Removes a file; absent is not an error. Returns whether it existed.
    fn remove_file(&self, path: &Path) -> io::Result<bool>;
    /// Removes a directory tree; absent is not an error.
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes `dir` and then each parent that is left empty, stopping at
    /// `stop` (exclusive). Non-empty directories are left alone.
    fn prune_empty_dirs(&self, dir: &Path, stop: &Path) -> io::Result<()>;

    /// Opens an object for reading with its size, or `None` when absent.
    fn open_read(&self, path: &Path) -> io::Result<Option<(Self::Reader, u64)>>;
    /// Writes an object (and its directories) without making it durable:
    /// for scratch state such as an upload in progress, which a crash of
    /// the machine may lose (the client then starts the upload again).
    fn write_scratch(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    /// Opens an object for appending; fails with `InvalidInput` unless its
    /// current size is `expected_size`.
    fn open_append(&self, path: &Path, expected_size: u64) -> io::Result<Self::Appender>;
    /// Flushes an appender's data to stable storage.
    fn sync(&self, appender: &mut Self::Appender) -> io::Result<()>;
    /// Cuts an object back to `size` bytes.
    fn truncate(&self, path: &Path, size: u64) -> io::Result<()>;
    /// Makes the (already synced) object `from` appear atomically at `to`,
    /// replacing any object there, durably.
    fn rename_durable(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Moves an object to `to`, creating directories as needed, without the
    /// fsyncs of [`Backend::rename_durable`]: for content set aside, where a
    /// move lost in a crash only means the content is still in its place.
    fn move_aside(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// An exclusive lock held until the guard is dropped, or `None` when
    /// someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Self::Lock>>;
    type Lock: Send + 'static;
}

/// Storage on a local filesystem under one root directory.
#[derive(Debug, Clone)]
pub struct FsBackend {
    root: PathBuf,
}

impl FsBackend {
    pub fn new(root: impl Into<PathBuf>) -> FsBackend {
        FsBackend { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn abs(&self, path: &Path) -> PathBuf {
        debug_assert!(
            path.is_relative(),
            "storage paths are relative: {}",
            path.display()
        );
        self.root.join(path)
    }
}

/// fsync of a directory, making the entries created or renamed in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `mkdir -p` where every directory created is made durable in its parent.
fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "not a directory",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    create_dir_all_durable(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        // Created concurrently by another request: durable by its creator.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the file `target` appear complete, atomically and durably.
/// `fill(p)` creates the file's content at `p` (writes and syncs it, or
/// renames a finished file there).
///
/// When the parent directory exists, `p` is a temporary sibling renamed
/// over `target`. When directories are missing, the whole missing subtree
/// (e.g. `<tag>/current/link`, `<hex>/data`) is built under a temporary
/// name and renamed into place in one step. So a crash never leaves a tag,
/// revision or blob directory without its file: listings see complete
/// entries or none, plus `.*.tmp-*` leftovers that no name can match.
///
/// `moved_from` says that `fill` renames that finished file into place
/// (itself atomic, so no temporary sibling is needed); on failure the file
/// is moved back there rather than lost.
fn place_atomically(
    target: &Path,
    moved_from: Option<&Path>,
    fill: &mut dyn FnMut(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        if moved_from.is_some() {
            return fill(target).and_then(|()| sync_dir(dir));
        }
        let tmp = temp_sibling(target);
        let result = fill(&tmp)
            .and_then(|()| fs::rename(&tmp, target))
            .and_then(|()| sync_dir(dir));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        return result;
    }
    // The first missing directory on the way down, and its existing parent.
    let mut top = dir;
    loop {
        let parent = top
            .parent()
            .ok_or_else(|| io::Error::other("no existing ancestor"))?;
        if fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
            break;
        }
        top = parent;
    }
    let base = top
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    create_dir_all_durable(base)?;
    let staged = temp_sibling(top);
    let rel = target.strip_prefix(top).map_err(io::Error::other)?;
    let staged_target = staged.join(rel);
    let result = (|| {
        let staged_dir = staged_target
            .parent()
            .ok_or_else(|| io::Error::other("no parent directory"))?;
        fs::create_dir_all(staged_dir)?;
        fill(&staged_target)?;
        // Every directory of the staged subtree, deepest first.
        let mut d = staged_dir;
        loop {
            sync_dir(d)?;
            if d == staged {
                break;
            }
            d = d
                .parent()
                .ok_or_else(|| io::Error::other("no parent directory"))?;
        }
        match fs::rename(&staged, top) {
            Ok(()) => sync_dir(base),
            // Created meanwhile by a concurrent writer: place the finished
            // file into what exists now, again atomically (the missing
            // part, if any, is deeper this time).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                place_atomically(target, Some(&staged_target), &mut |p| {
                    fs::rename(&staged_target, p)
                })
            }
            Err(e) => Err(e),
        }
    })();
    if let (Err(_), Some(origin)) = (&result, moved_from) {
        let _ = fs::rename(&staged_target, origin);
    }
    let _ = fs::remove_dir_all(&staged);
    result
}

/// Runs a write that creates its directories first. An empty directory
/// can be pruned by a concurrent delete between its creation and the write
/// into it (ENOENT); the write then simply starts over.
fn retry_if_dir_vanished<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempts = 0;
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 5 => attempts += 1,
            other => return other,
        }
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A name for a temporary sibling of `path`, unique across processes.
fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("tmp");
    path.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Appends to a file and keeps the kernel writing it back as it goes, so
/// that the fsync at the end of a large upload has little left to do and
/// the disk is busy while the network is (instead of one long flush at the
/// end, with gigabytes of dirty pages in between).
#[derive(Debug)]
pub struct FsAppender {
    file: File,
    /// File offset up to which writeback has been started.
    kicked: u64,
    /// Current end of the file.
    end: u64,
}

/// Writeback is started for every window of this many bytes written.
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

impl FsAppender {
    fn kick_writeback(&mut self) {
        while self.end - self.kicked >= WRITEBACK_WINDOW {
            let start = self.kicked;
            start_writeback(&self.file, start, WRITEBACK_WINDOW, false);
            // Wait for the window before it, which bounds the dirty pages
            // of one upload to about two windows.
            if start >= WRITEBACK_WINDOW {
                start_writeback(&self.file, start - WRITEBACK_WINDOW, WRITEBACK_WINDOW, true);
            }
            self.kicked += WRITEBACK_WINDOW;
        }
    }
}

impl Write for FsAppender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.end += n as u64;
        self.kick_writeback();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// `sync_file_range(2)`: starts writeback of a byte range (and, with `wait`,
/// waits for it). Purely a performance hint: durability still comes from
/// the fsync at commit, so failures are ignored.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, offset: u64, len: u64, wait: bool) {
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // Offsets past i64::MAX cannot be a file position; skip the hint.
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: the descriptor is valid for the lifetime of `file`, and the
    // call reads no memory of ours; offsets beyond the file are harmless.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, flags);
    }
}

/// Elsewhere (macOS, the BSDs) there is no range writeback call: the hint
/// is skipped and the fsync at commit does all the work, as it would
/// without the hint on Linux. Also compiled (unused) in Linux test builds
/// so that this path is type-checked where CI runs.
#[cfg(any(not(target_os = "linux"), test))]
#[cfg_attr(all(target_os = "linux", test), allow(dead_code))]
fn start_writeback_portable(file: &File, offset: u64, len: u64, wait: bool) {
    let _ = (file, offset, len, wait);
}

#[cfg(not(target_os = "linux"))]
use start_writeback_portable as start_writeback;

impl Backend for FsBackend {
    type Reader = File;
    type Appender = FsAppender;
    type Lock = File;

    fn move_aside(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (self.abs(from), self.abs(to));
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::rename(from, to)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        let abs = self.abs(path);
        if let Some(dir) = abs.parent() {
            create_dir_all_durable(dir)?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&abs)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        not_found_as_none(fs::read(self.abs(path)))
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let abs = self.abs(path);
        retry_if_dir_vanished(|| {
            place_atomically(&abs, None, &mut |p| {
                let mut f = OpenOptions::new().write(true).create_new(true).open(p)?;
                f.write_all(data)?;
                f.sync_data()
            })
        })
    }

    fn stat(&self, path: &Path) -> io::Result<Option<Meta>> {
        Ok(
            not_found_as_none(fs::metadata(self.abs(path)))?.map(|m| Meta {
                size: m.len(),
                is_dir: m.is_dir(),
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            }),
        )
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<Entry>> {
        let Some(rd) = not_found_as_none(fs::read_dir(self.abs(dir)))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            // Names that are not UTF-8 were not written by a registry.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_dir = entry.file_type()?.is_dir();
            out.push(Entry { name, is_dir });
        }
        Ok(out)
    }

    fn remove_file(&self, path: &Path) -> io::Result<bool> {
        Ok(not_found_as_none(fs::remove_file(self.abs(path)))?.is_some())
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        not_found_as_none(fs::remove_dir_all(self.abs(dir))).map(drop)
    }

    fn prune_empty_dirs(&self, dir: &Path, stop: &Path) -> io::Result<()> {
        let mut cur = dir.to_path_buf();
        while cur.starts_with(stop) && cur != stop {
            match fs::remove_dir(self.abs(&cur)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Not empty (ENOTEMPTY/EEXIST) ends the walk up.
                Err(_) => break,
            }
            if !cur.pop() {
                break;
            }
        }
        Ok(())
    }

    fn open_read(&self, path: &Path) -> io::Result<Option<(File, u64)>> {
        let Some(f) = not_found_as_none(File::open(self.abs(path)))? else {
            return Ok(None);
        };
        let meta = f.metadata()?;
        if meta.is_dir() {
            return Ok(None);
        }
        Ok(Some((f, meta.len())))
    }

    fn write_scratch(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let abs = self.abs(path);
        retry_if_dir_vanished(|| {
            if let Some(dir) = abs.parent() {
                fs::create_dir_all(dir)?;
            }
            fs::write(&abs, data)
        })
    }

    fn open_append(&self, path: &Path, expected_size: u64) -> io::Result<FsAppender> {
        let file = OpenOptions::new().append(true).open(self.abs(path))?;
        let size = file.metadata()?.len();
        if size != expected_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("size is {size}, expected {expected_size}"),
            ));
        }
        Ok(FsAppender {
            file,
            kicked: size,
            end: size,
        })
    }

    fn sync(&self, appender: &mut FsAppender) -> io::Result<()> {
        appender.file.sync_data()
    }

    fn truncate(&self, path: &Path, size: u64) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(self.abs(path))?
            .set_len(size)
    }

    fn rename_durable(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (self.abs(from), self.abs(to));
        // A vanished source is retried too, harmlessly: it stays vanished.
        retry_if_dir_vanished(|| place_atomically(&to, Some(&from), &mut |p| fs::rename(&from, p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_read_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let b = FsBackend::new(tmp.path());
        let p = Path::new("a/b/c/link");
        assert_eq!(b.read(p).unwrap(), None);
        b.write_atomic(p, b"one").unwrap();
        b.write_atomic(p, b"two").unwrap();
        assert_eq!(b.read(p).unwrap().as_deref(), Some(&b"two"[..]));
        let names: Vec<_> = b
            .list(Path::new("a/b/c"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["link"], "no temp file left behind");
        assert!(b.remove_file(p).unwrap());
        assert!(!b.remove_file(p).unwrap());
        b.prune_empty_dirs(Path::new("a/b/c"), Path::new("a"))
            .unwrap();
        assert!(b.stat(Path::new("a")).unwrap().is_some());
        assert!(b.stat(Path::new("a/b")).unwrap().is_none());
        assert!(b.list(Path::new("nope")).unwrap().is_empty());
    }

    #[test]
    fn append_checks_expected_size() {
        let tmp = tempfile::tempdir().unwrap();
        let b = FsBackend::new(tmp.path());
        let p = Path::new("u/data");
        b.write_scratch(p, b"").unwrap();
        let mut f = b.open_append(p, 0).unwrap();
        f.write_all(b"hello").unwrap();
        drop(f);
        let err = b.open_append(p, 3).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        b.truncate(p, 2).unwrap();
        assert_eq!(b.stat(p).unwrap().unwrap().size, 2);
        b.rename_durable(p, Path::new("blobs/x/data")).unwrap();
        assert_eq!(
            b.read(Path::new("blobs/x/data")).unwrap().as_deref(),
            Some(&b"he"[..])
        );
    }
}
