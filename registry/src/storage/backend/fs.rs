//! The filesystem backend: objects are files under one root directory,
//! prefixes are directories (distribution's `filesystem` driver layout,
//! byte for byte).
//!
//! Write rule: temp file in the same directory → write → fsync → rename →
//! fsync the directory, and every directory created on the way is made
//! durable in its parent. A crash leaves the old state or the new one,
//! never a torn file. A missing directory subtree is built under a
//! temporary name and renamed into place in one step, so listings never
//! see a tag, revision or blob directory without its file.
//!
//! Moves are `rename(2)`: atomic, and durable once both directories are
//! synced. Exclusive creation ([`Backend::put_new`]) is `link(2)` of a
//! finished temp file, which fails when the name exists. Directories left
//! empty by a delete are removed up to the caller's stop, so that a
//! directory exists exactly while it holds something — what a prefix is
//! on an object store, and what distribution's catalog walk expects.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use super::{Backend, Durability, Entry, Error, Meta, PrefixMeta, Read, Result, WriteMode, Writer};

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

/// Something that must reach the disk before a placement counts as done.
enum Pending {
    /// A file's data (and the metadata needed to read it back).
    Data(File),
    /// A directory's entries.
    Dir(PathBuf),
}

impl Pending {
    fn sync(&self) -> io::Result<()> {
        match self {
            Pending::Data(f) => f.sync_data(),
            Pending::Dir(d) => sync_dir(d),
        }
    }
}

/// Syncs independent things at once rather than one after the other. On a
/// journaling filesystem (ext4, xfs) concurrent fsyncs of changes made in
/// the same transaction are served by one journal commit and one cache
/// flush, instead of one each in a row: the count of fsyncs stays what
/// POSIX asks for, the time a commit waits for them is about one.
fn sync_together(items: &[Pending]) -> io::Result<()> {
    let Some((first, rest)) = items.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        return first.sync();
    }
    std::thread::scope(|s| {
        let others: Vec<_> = rest.iter().map(|p| s.spawn(move || p.sync())).collect();
        let mut result = first.sync();
        for t in others {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")));
            result = result.and(r);
        }
        result
    })
}

/// Makes the file `target` appear complete, atomically, and with `sync`
/// durably. `fill(p)` creates the file's content at `p` (writes it, or
/// renames a finished file there) and hands back the file when its data
/// still has to be synced.
///
/// When the parent directory exists, `p` is a temporary sibling renamed
/// over `target`. When directories are missing, the whole missing subtree
/// (e.g. `<tag>/current/link`, `<hex>/data`) is built under a temporary
/// name and renamed into place in one step. So a crash never leaves a tag,
/// revision or blob directory without its file: listings see complete
/// entries or none, plus `.*.tmp-*` leftovers that no name can match.
///
/// What a durable placement syncs is what POSIX needs and no more: the
/// file's data, every directory created (each holds a new entry), and the
/// existing directory that receives the new entry — never a directory that
/// already existed and did not change. The file and the staged directories
/// are independent of each other and are synced together (see
/// [`sync_together`]); only the rename into place, and the sync of the
/// directory receiving it, must come after them.
///
/// `moved_from` says that `fill` renames that finished file into place
/// (itself atomic, so no temporary sibling is needed); on failure the file
/// is moved back there rather than lost.
fn place_atomically(
    target: &Path,
    moved_from: Option<&Path>,
    sync: bool,
    fill: &mut dyn FnMut(&Path) -> io::Result<Option<File>>,
) -> io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    if fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
        if moved_from.is_some() {
            // Renamed in place already: its data and the entry, together.
            let file = fill(target)?;
            if !sync {
                return Ok(());
            }
            let mut pending: Vec<Pending> = file.into_iter().map(Pending::Data).collect();
            pending.push(Pending::Dir(dir.to_path_buf()));
            return sync_together(&pending);
        }
        let tmp = temp_sibling(target);
        let result = fill(&tmp)
            .and_then(|file| match file {
                Some(f) if sync => f.sync_data(),
                _ => Ok(()),
            })
            .and_then(|()| fs::rename(&tmp, target))
            .and_then(|()| if sync { sync_dir(dir) } else { Ok(()) });
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
    if sync {
        create_dir_all_durable(base)?;
    } else {
        fs::create_dir_all(base)?;
    }
    let staged = temp_sibling(top);
    let rel = target.strip_prefix(top).map_err(io::Error::other)?;
    let staged_target = staged.join(rel);
    let result = (|| {
        let staged_dir = staged_target
            .parent()
            .ok_or_else(|| io::Error::other("no parent directory"))?;
        fs::create_dir_all(staged_dir)?;
        let file = fill(&staged_target)?;
        if sync {
            // The file and every directory of the staged subtree.
            let mut pending: Vec<Pending> = file.into_iter().map(Pending::Data).collect();
            let mut d = staged_dir;
            loop {
                pending.push(Pending::Dir(d.to_path_buf()));
                if d == staged {
                    break;
                }
                d = d
                    .parent()
                    .ok_or_else(|| io::Error::other("no parent directory"))?;
            }
            sync_together(&pending)?;
        }
        match fs::rename(&staged, top) {
            Ok(()) if sync => sync_dir(base),
            Ok(()) => Ok(()),
            // Created meanwhile by a concurrent writer: place the finished
            // file into what exists now, again atomically (the missing
            // part, if any, is deeper this time).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                place_atomically(target, Some(&staged_target), sync, &mut |p| {
                    fs::rename(&staged_target, p).map(|()| None)
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

/// A resumable object written in place: appends to the file and keeps the
/// kernel writing it back as it goes, so that the fsync at commit of a
/// large upload has little left to do and the disk is busy while the
/// network is (instead of one long flush at the end, with gigabytes of
/// dirty pages in between); unless the client does not wait for the
/// commit ([`Writer::defer_writeback`]).
#[derive(Debug)]
struct FsWriter {
    file: File,
    /// The storage root and the file's absolute path.
    root: PathBuf,
    path: PathBuf,
    /// Size of the file when the writer was opened: `abort` cuts it back.
    start: u64,
    /// File offset up to which writeback has been started.
    kicked: u64,
    /// Writeback is left to the commit's sync ([`Writer::defer_writeback`]).
    deferred: bool,
    /// Current end of the file.
    end: u64,
    /// Closed, aborted or committed: nothing left to undo on drop.
    finished: bool,
    /// A write failed partway: the file may hold more than `end`.
    torn: bool,
}

/// Writeback is started for every window of this many bytes written.
const WRITEBACK_WINDOW: u64 = 8 * 1024 * 1024;

impl FsWriter {
    fn kick_writeback(&mut self) {
        if self.deferred {
            return;
        }
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

    /// Writes all of `slices` (one `writev` where it takes them all);
    /// `end` moves only once every byte is written.
    fn append(&mut self, slices: &mut [IoSlice<'_>]) -> Result<()> {
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let mut rest = slices;
        while !rest.is_empty() {
            let written = match self.file.write_vectored(rest) {
                Ok(0) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            match written {
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) => {
                    self.torn = true;
                    return Err(Error::io("writing an upload", &e));
                }
            }
        }
        self.end += total as u64;
        self.kick_writeback();
        Ok(())
    }

    fn cut_back(&mut self) -> io::Result<()> {
        self.finished = true;
        if self.end != self.start || self.torn {
            self.file.set_len(self.start)?;
        }
        Ok(())
    }
}

impl Writer for FsWriter {
    fn size(&self) -> u64 {
        self.end
    }

    fn defer_writeback(&mut self) {
        self.deferred = true;
    }

    fn write(&mut self, data: Bytes) -> Result<()> {
        self.append(&mut [IoSlice::new(&data)])
    }

    fn write_pieces(&mut self, pieces: Vec<Bytes>) -> Result<()> {
        let mut slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        self.append(&mut slices)
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.finished = true;
        Ok(())
    }

    fn abort(mut self: Box<Self>) -> Result<()> {
        self.cut_back()
            .map_err(|e| Error::io("rolling back an upload", &e))
    }

    fn commit(mut self: Box<Self>, dest: &Path) -> Result<()> {
        self.finished = true;
        let (from, to) = (self.path.clone(), self.root.join(dest));
        // The data is synced once moved, together with the directories
        // that receive it. A vanished source is retried too, harmlessly:
        // it stays vanished.
        let file = &self.file;
        retry_if_dir_vanished(|| {
            place_atomically(&to, Some(&from), true, &mut |p| {
                fs::rename(&from, p)?;
                file.try_clone().map(Some)
            })
        })
        .map_err(|e| Error::io("completing an upload", &e))
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        if !self.finished
            && let Err(e) = self.cut_back()
        {
            tracing::error!(path = %self.path.display(), "could not cut an abandoned write back: {e}");
        }
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

impl FsBackend {
    /// Removes `dir` and then each parent that is left empty, stopping at
    /// `stop` (exclusive). Non-empty directories are left alone.
    fn prune_empty_dirs(&self, dir: &Path, stop: &Path) {
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
    }

    fn prune_parent(&self, path: &Path, stop: &Path) {
        if let Some(dir) = path.parent() {
            self.prune_empty_dirs(dir, stop);
        }
    }
}

/// Calls `f` for every file below `dir`, with its path after `rel`.
fn walk_dir(dir: &Path, rel: &Path, f: &mut dyn FnMut(&Path, Meta) -> Result<()>) -> Result<()> {
    let Some(rd) =
        not_found_as_none(fs::read_dir(dir)).map_err(|e| Error::io("listing storage", &e))?
    else {
        return Ok(());
    };
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("listing storage", &e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let rel = rel.join(&name);
        // The type comes with the listing on most filesystems: only files
        // are stat'ed, for their size and time.
        // Removed since the listing: skipped.
        let Some(kind) =
            not_found_as_none(entry.file_type()).map_err(|e| Error::io("listing storage", &e))?
        else {
            continue;
        };
        if kind.is_dir() {
            walk_dir(&entry.path(), &rel, f)?;
            continue;
        }
        // Removed since the listing: skipped.
        let Some(meta) =
            not_found_as_none(entry.metadata()).map_err(|e| Error::io("listing storage", &e))?
        else {
            continue;
        };
        f(&rel, file_meta(&meta))?;
    }
    Ok(())
}

/// Below this many files, a deleted prefix is removed by one thread.
const FILES_FOR_PARALLEL_REMOVAL: usize = 64;

/// Removes the files under `dir` (not its directories), several at once
/// when there are many: a collection's run directory holds thousands.
fn remove_files_at_once(dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    walk_dir(dir, Path::new(""), &mut |rel, _| {
        files.push(dir.join(rel));
        Ok(())
    })?;
    if files.len() < FILES_FOR_PARALLEL_REMOVAL {
        return Ok(());
    }
    let per_thread = files.len().div_ceil(super::LOCAL_CHANGES_PARALLELISM);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .try_for_each(|f| not_found_as_none(fs::remove_file(f)).map(|_| ()))
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(io::Error::other("a removal thread panicked")))
                .map_err(io_err("deleting from storage"))
        })
    })
}

fn file_meta(m: &fs::Metadata) -> Meta {
    Meta {
        size: m.len(),
        modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
    }
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::io(context, &e)
}

/// Writes `data` to a new file at `p`, not yet synced.
fn write_new(p: &Path, data: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(p)?;
    f.write_all(data)?;
    Ok(f)
}

impl Backend for FsBackend {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        match fs::read(self.abs(path)) {
            Ok(v) => Ok(Some(Bytes::from(v))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A directory where an object was asked for: no such object.
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(e) => Err(Error::io("reading storage", &e)),
        }
    }

    fn read_from(&self, path: &Path, offset: u64) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        let Some(mut f) =
            not_found_as_none(File::open(self.abs(path))).map_err(io_err("opening a blob"))?
        else {
            return Ok(None);
        };
        let meta = f.metadata().map_err(io_err("opening a blob"))?;
        if meta.is_dir() {
            return Ok(None);
        }
        let size = meta.len();
        if offset > size {
            return Err(Error::Invalid(format!(
                "offset {offset} is past the end ({size} bytes)"
            )));
        }
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .map_err(io_err("reading a blob"))?;
        }
        Ok(Some((Box::new(f), size)))
    }

    fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        Ok(not_found_as_none(fs::metadata(self.abs(path)))
            .map_err(io_err("reading storage"))?
            .filter(|m| !m.is_dir())
            .map(|m| file_meta(&m)))
    }

    fn stat_prefix(&self, prefix: &Path) -> Result<Option<PrefixMeta>> {
        Ok(not_found_as_none(fs::metadata(self.abs(prefix)))
            .map_err(io_err("reading storage"))?
            .filter(fs::Metadata::is_dir)
            .map(|m| PrefixMeta {
                modified: m.modified().ok(),
            }))
    }

    fn list(&self, dir: &Path) -> Result<Vec<Entry>> {
        let Some(rd) =
            not_found_as_none(fs::read_dir(self.abs(dir))).map_err(io_err("listing storage"))?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err("listing storage"))?;
            // Names that are not UTF-8 were not written by a registry.
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let is_prefix = entry
                .file_type()
                .map_err(io_err("listing storage"))?
                .is_dir();
            out.push(Entry { name, is_prefix });
        }
        Ok(out)
    }

    fn walk(&self, prefix: &Path, f: &mut dyn FnMut(&Path, Meta) -> Result<()>) -> Result<()> {
        walk_dir(&self.abs(prefix), Path::new(""), f)
    }

    fn put(&self, path: &Path, data: &[u8], durability: Durability) -> Result<()> {
        let abs = self.abs(path);
        // Scratch: the same staging and renames without any fsync —
        // atomic, not durable.
        let sync = durability == Durability::Durable;
        retry_if_dir_vanished(|| {
            place_atomically(&abs, None, sync, &mut |p| write_new(p, data).map(Some))
        })
        .map_err(io_err("writing storage"))
    }

    fn put_new(&self, path: &Path, data: &[u8]) -> Result<bool> {
        let abs = self.abs(path);
        let dir = abs
            .parent()
            .ok_or_else(|| Error::Invalid("no parent directory".into()))?;
        let result = retry_if_dir_vanished(|| {
            create_dir_all_durable(dir)?;
            let tmp = temp_sibling(&abs);
            // link(2) refuses an existing name: the finished file appears
            // whole, or not at all when someone was first.
            let r = write_new(&tmp, data)
                .and_then(|f| f.sync_data())
                .and_then(|()| match fs::hard_link(&tmp, &abs) {
                    Ok(()) => sync_dir(dir).map(|()| true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                });
            let _ = fs::remove_file(&tmp);
            r
        });
        result.map_err(io_err("creating an object"))
    }

    fn writer(&self, path: &Path, mode: WriteMode) -> Result<Box<dyn Writer>> {
        let abs = self.abs(path);
        let (file, start) = match mode {
            // Scratch state until committed: a crash of the machine may
            // lose it (the client then starts the upload again).
            WriteMode::Create => {
                let file = retry_if_dir_vanished(|| {
                    if let Some(dir) = abs.parent() {
                        fs::create_dir_all(dir)?;
                    }
                    File::create(&abs)
                })
                .map_err(io_err("starting an upload"))?;
                (file, 0)
            }
            WriteMode::Resume { size: expected } => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&abs)
                    .map_err(io_err("resuming an upload"))?;
                let size = file.metadata().map_err(io_err("resuming an upload"))?.len();
                if size != expected {
                    return Err(Error::Invalid(format!(
                        "upload holds {size} bytes, expected {expected}"
                    )));
                }
                (file, size)
            }
        };
        Ok(Box::new(FsWriter {
            file,
            root: self.root.clone(),
            path: abs,
            start,
            kicked: start,
            deferred: false,
            end: start,
            finished: false,
            torn: false,
        }))
    }

    fn delete(&self, path: &Path, stop: &Path) -> Result<bool> {
        let existed = not_found_as_none(fs::remove_file(self.abs(path)))
            .map_err(io_err("deleting from storage"))?
            .is_some();
        if existed {
            self.prune_parent(path, stop);
        }
        Ok(existed)
    }

    fn delete_prefix(&self, prefix: &Path, stop: &Path) -> Result<bool> {
        let abs = self.abs(prefix);
        remove_files_at_once(&abs)?;
        let existed = not_found_as_none(fs::remove_dir_all(&abs))
            .map_err(io_err("deleting from storage"))?
            .is_some();
        self.prune_parent(prefix, stop);
        Ok(existed)
    }

    fn rename(&self, from: &Path, to: &Path, stop: &Path, durability: Durability) -> Result<()> {
        let (abs_from, abs_to) = (self.abs(from), self.abs(to));
        let result = match durability {
            // A vanished source is retried too, harmlessly: it stays vanished.
            Durability::Durable => retry_if_dir_vanished(|| {
                place_atomically(&abs_to, Some(&abs_from), true, &mut |p| {
                    fs::rename(&abs_from, p).map(|()| None)
                })
            }),
            // The directory made may be pruned by a move out of its
            // neighbour (a collection's set-aside content taken back).
            Durability::Scratch => retry_if_dir_vanished(|| {
                if let Some(dir) = abs_to.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::rename(&abs_from, &abs_to)
            }),
        };
        result.map_err(io_err("moving an object"))?;
        self.prune_parent(from, stop);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filesystem backend in a temporary directory that lives as long.
    struct TempFs(FsBackend, #[allow(dead_code)] tempfile::TempDir);

    impl crate::storage::backend::suite::Fixture for TempFs {
        fn backend(&self) -> &dyn Backend {
            &self.0
        }
    }

    fn temp_fs() -> TempFs {
        let dir = tempfile::tempdir().unwrap();
        TempFs(FsBackend::new(dir.path()), dir)
    }

    crate::backend_suite!(temp_fs());

    /// A prefix with more files than one thread removes is deleted whole
    /// (its files by several threads, then its directories), and the
    /// directory above it stays.
    #[test]
    fn a_prefix_of_many_files_is_deleted_whole() {
        let t = temp_fs();
        let b = &t.0;
        let n = FILES_FOR_PARALLEL_REMOVAL * 2 + 3;
        for i in 0..n {
            let p = format!("run/r1/blobs/sha256/{:02x}/{i}", i % 7);
            b.put(Path::new(&p), b"x", Durability::Scratch).unwrap();
        }
        b.put(Path::new("run/keep"), b"k", Durability::Scratch)
            .unwrap();
        assert!(
            b.delete_prefix(Path::new("run/r1"), Path::new("run"))
                .unwrap()
        );
        assert!(!t.1.path().join("run/r1").exists());
        assert!(b.get(Path::new("run/keep")).unwrap().is_some());
        assert!(
            !b.delete_prefix(Path::new("run/r1"), Path::new("run"))
                .unwrap()
        );
    }

    #[test]
    fn no_temp_files_left_and_empty_dirs_go() {
        let t = temp_fs();
        let b = &t.0;
        let p = Path::new("a/b/c/link");
        b.put(p, b"one", Durability::Durable).unwrap();
        b.put(p, b"two", Durability::Scratch).unwrap();
        let names: Vec<_> = b
            .list(Path::new("a/b/c"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["link"], "no temp file left behind");
        assert!(b.delete(p, Path::new("a")).unwrap());
        // The stop stays, even empty, as distribution's directories do.
        assert!(b.stat_prefix(Path::new("a")).unwrap().is_some());
        assert!(b.stat_prefix(Path::new("a/b")).unwrap().is_none());
    }

    #[test]
    fn prefix_times_follow_entries() {
        let t = temp_fs();
        let b = &t.0;
        b.put(Path::new("tags/x/link"), b"1", Durability::Durable)
            .unwrap();
        let before = b.stat_prefix(Path::new("tags")).unwrap().unwrap();
        assert!(before.modified.is_some(), "directories have times");
    }
}
