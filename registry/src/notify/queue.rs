//! The durable event queue: one log of events shared by all endpoints, in
//! append-only segment files, and one cursor file per endpoint.
//!
//! ```text
//! <directory>/lock                      held (flock) while a registry uses it
//! <directory>/00000000000000000000.log  events 0.. , one JSON object a line
//! <directory>/00000000000000081920.log  events 81920.. (the current segment)
//! <directory>/cursors/<endpoint>        the next event to send it (decimal)
//! ```
//!
//! An event's sequence number is its segment's base plus its line number.
//! One writer thread appends what requests publish (a batch per write, so
//! concurrent requests share a write and an fsync) and tells the endpoint
//! workers how far the log goes; each worker reads from its cursor and
//! saves the cursor (fsynced) after each delivery. A segment goes once
//! every enabled endpoint's saved cursor is past it, or, oldest first, when
//! the files exceed the configured cap. At start, a torn last line (a crash
//! in the middle of a write) is cut off.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, watch};

/// A segment is closed once it holds this many bytes (or a quarter of the
/// cap, when that is smaller).
const SEGMENT_BYTES: u64 = 8 << 20;
/// Most events one write takes.
const MAX_BATCH: usize = 1024;

/// What the writer thread is asked.
pub enum Msg {
    /// Append one serialised event (without newline); the answer says it
    /// is written (and fsynced, with `queue.fsync`).
    Append(Vec<u8>, oneshot::Sender<io::Result<()>>),
    /// Write what came before, fsync, stop.
    Shutdown(oneshot::Sender<()>),
}

/// The shared state of the log.
pub struct Journal {
    dir: PathBuf,
    /// Base sequence number → bytes, of every segment on disk.
    segments: Mutex<BTreeMap<u64, u64>>,
    /// The oldest event still kept.
    first: AtomicU64,
    /// One past the newest written event.
    end: watch::Sender<u64>,
    /// Saved cursor of each enabled endpoint (by worker index).
    cursors: Mutex<Vec<u64>>,
    max_bytes: u64,
    segment_bytes: u64,
    /// Held for the life of the journal: one registry per directory.
    _lock: File,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("first", &self.first())
            .field("end", &self.end())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A cursor file name: the endpoint name with everything but
/// `[A-Za-z0-9._-]` percent-encoded (names are free text).
fn cursor_file(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl Journal {
    /// Opens (creating) the queue in `dir` and returns it with its writer
    /// (to be run on a thread of its own by [`Writer::run`]).
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        fsync: bool,
        endpoints: usize,
    ) -> io::Result<(Arc<Journal>, Writer)> {
        std::fs::create_dir_all(dir.join("cursors"))?;
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::other(format!(
                    "the notification queue {} is in use by another registry process; \
                     give each one its own notifications.queue.directory",
                    dir.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut segments = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            segments.insert(base, entry.metadata()?.len());
        }
        let (base, end, file) = if let Some((&base, _)) = segments.last_key_value() {
            let path = segment_path(dir, base);
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut data = Vec::new();
            file.read_to_end(&mut data)?;
            let whole = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if whole < data.len() {
                tracing::warn!(
                    "notification queue {}: cut off {} bytes of an event torn by a crash",
                    path.display(),
                    data.len() - whole
                );
                file.set_len(whole as u64)?;
                file.sync_all()?;
            }
            let lines = memchr::memchr_iter(b'\n', &data[..whole]).count() as u64;
            segments.insert(base, whole as u64);
            file.seek(SeekFrom::End(0))?;
            (base, base + lines, file)
        } else {
            let file = File::create(segment_path(dir, 0))?;
            sync_dir(dir)?;
            segments.insert(0, 0);
            (0, 0, file)
        };
        let first = segments.first_key_value().map_or(0, |(b, _)| *b);
        let current_bytes = segments.get(&base).copied().unwrap_or(0);
        let segment_bytes = SEGMENT_BYTES.min(max_bytes / 4).max(64 << 10);
        let journal = Arc::new(Journal {
            dir: dir.to_owned(),
            segments: Mutex::new(segments),
            first: AtomicU64::new(first),
            end: watch::Sender::new(end),
            cursors: Mutex::new(vec![u64::MAX; endpoints]),
            max_bytes,
            segment_bytes,
            _lock: lock_file,
        });
        journal.record_bytes();
        let file = Arc::new(file);
        let syncer = (!fsync).then(spawn_syncer);
        let writer = Writer {
            journal: journal.clone(),
            file,
            base,
            bytes: current_bytes,
            end,
            fsync,
            syncer,
        };
        Ok((journal, writer))
    }

    /// The oldest event kept.
    pub fn first(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// One past the newest written event.
    pub fn end(&self) -> u64 {
        *self.end.borrow()
    }

    /// Follows [`Journal::end`].
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// The saved cursor of endpoint `name` (worker `index`): where it
    /// stopped, or the end of the log for an endpoint new to this queue.
    pub fn load_cursor(&self, index: usize, name: &str) -> io::Result<u64> {
        let path = self.dir.join("cursors").join(cursor_file(name));
        let saved = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().parse::<u64>().unwrap_or_else(|_| {
                tracing::warn!(
                    "notification cursor {} is unreadable; endpoint {name} starts at the oldest queued event",
                    path.display()
                );
                self.first()
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let cursor = if let Some(n) = saved {
            n.min(self.end())
        } else {
            let end = self.end();
            self.write_cursor(name, end)?;
            end
        };
        lock(&self.cursors)[index] = cursor;
        Ok(cursor)
    }

    fn write_cursor(&self, name: &str, seq: u64) -> io::Result<()> {
        let dir = self.dir.join("cursors");
        let file = cursor_file(name);
        let tmp = dir.join(format!(".{file}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(format!("{seq}\n").as_bytes())?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(file))
    }

    /// Saves endpoint `index`'s cursor (fsynced), then removes the
    /// segments every endpoint is done with.
    /// Events written that endpoint `index` has not passed yet (by its
    /// last saved cursor).
    pub fn pending(&self, index: usize) -> u64 {
        let cursor = lock(&self.cursors)[index];
        self.end().saturating_sub(cursor)
    }

    pub fn save_cursor(&self, index: usize, name: &str, seq: u64) -> io::Result<()> {
        self.write_cursor(name, seq)?;
        lock(&self.cursors)[index] = seq;
        self.collect()
    }

    /// Removes the segments whose events every endpoint has passed (never
    /// the current one).
    fn collect(&self) -> io::Result<()> {
        let min = lock(&self.cursors).iter().copied().min().unwrap_or(0);
        let mut segments = lock(&self.segments);
        let bases: Vec<u64> = segments.keys().copied().collect();
        let mut removed = false;
        for pair in bases.windows(2) {
            if pair[1] > min {
                break;
            }
            std::fs::remove_file(segment_path(&self.dir, pair[0]))?;
            segments.remove(&pair[0]);
            removed = true;
        }
        if removed {
            let first = segments.first_key_value().map_or(0, |(b, _)| *b);
            self.first.store(first, Ordering::Release);
            drop(segments);
            self.record_bytes();
        }
        Ok(())
    }

    /// Drops the oldest segments while the queue is over its cap.
    fn enforce_cap(&self) -> io::Result<()> {
        let mut segments = lock(&self.segments);
        let mut total: u64 = segments.values().sum();
        let mut dropped = false;
        while total > self.max_bytes && segments.len() > 1 {
            let Some((base, bytes)) = segments.pop_first() else {
                break;
            };
            std::fs::remove_file(segment_path(&self.dir, base))?;
            total -= bytes;
            dropped = true;
        }
        if dropped {
            let first = segments.first_key_value().map_or(0, |(b, _)| *b);
            self.first.store(first, Ordering::Release);
            tracing::warn!(
                "notification queue over notifications.queue.maxsize ({} bytes): \
                 dropped the oldest events, the queue now starts at event {first}",
                self.max_bytes
            );
        }
        Ok(())
    }

    fn record_bytes(&self) {
        let total: u64 = lock(&self.segments).values().sum();
        metrics::gauge!("registry_notifications_queue_bytes").set(total as f64);
    }

    /// Reads events from `cursor` towards `end` into `out`: at most `max`
    /// of those `keep` accepts (the others are passed over). Returns the
    /// cursor after the last event read. `reader` keeps the open segment
    /// between calls. An error of kind `NotFound` means `cursor` is no
    /// longer in the queue (see [`Journal::first`]).
    pub fn read(
        &self,
        reader: &mut Option<Reader>,
        cursor: u64,
        end: u64,
        max: usize,
        keep: impl Fn(&[u8]) -> bool,
        out: &mut Vec<Vec<u8>>,
    ) -> io::Result<u64> {
        let mut seq = cursor;
        while seq < end && out.len() < max {
            if reader.as_ref().is_none_or(|r| r.seq != seq) {
                *reader = Some(self.open_at(seq)?);
            }
            let Some(r) = reader.as_mut() else {
                unreachable!("opened above")
            };
            let mut line = Vec::new();
            let n = r.file.read_until(b'\n', &mut line)?;
            if line.last() != Some(&b'\n') {
                // The end of this segment: the next one starts here.
                let next = lock(&self.segments).contains_key(&seq) && r.base != seq;
                if n > 0 {
                    r.file.seek_relative(-(n as i64))?;
                }
                if next {
                    *reader = None;
                    continue;
                }
                return Err(io::Error::other(format!(
                    "notification queue: event {seq} is missing from segment {}",
                    r.base
                )));
            }
            line.pop();
            r.seq += 1;
            seq += 1;
            if keep(&line) {
                out.push(line);
            }
        }
        Ok(seq)
    }

    /// A reader positioned at event `seq`.
    fn open_at(&self, seq: u64) -> io::Result<Reader> {
        let base = lock(&self.segments)
            .range(..=seq)
            .next_back()
            .map(|(b, _)| *b)
            .filter(|_| seq >= self.first());
        let Some(base) = base else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("event {seq} was dropped from the notification queue"),
            ));
        };
        let mut file = BufReader::new(File::open(segment_path(&self.dir, base))?);
        let mut skipped = Vec::new();
        for _ in base..seq {
            skipped.clear();
            if file.read_until(b'\n', &mut skipped)? == 0 {
                return Err(io::Error::other(format!(
                    "notification queue: segment {base} ends before event {seq}"
                )));
            }
        }
        Ok(Reader { base, seq, file })
    }
}

/// An open segment and the sequence number of its next line.
pub struct Reader {
    base: u64,
    seq: u64,
    file: BufReader<File>,
}

/// The writer thread's side: the current segment.
pub struct Writer {
    journal: Arc<Journal>,
    file: Arc<File>,
    base: u64,
    bytes: u64,
    end: u64,
    fsync: bool,
    /// Without `fsync`: the thread that fsyncs behind the writes.
    syncer: Option<std::sync::mpsc::Sender<Arc<File>>>,
}

/// fsyncs the files it is sent, coalescing: the writes are acknowledged
/// before, so requests never wait for it.
fn spawn_syncer() -> std::sync::mpsc::Sender<Arc<File>> {
    let (tx, rx) = std::sync::mpsc::channel::<Arc<File>>();
    std::thread::Builder::new()
        .name("notify-fsync".into())
        .spawn(move || {
            while let Ok(mut file) = rx.recv() {
                while let Ok(newer) = rx.try_recv() {
                    if !Arc::ptr_eq(&file, &newer) {
                        let _ = file.sync_data();
                    }
                    file = newer;
                }
                if let Err(e) = file.sync_data() {
                    tracing::warn!("notification queue: fsync failed: {e}");
                }
            }
        })
        .expect("spawn the notification fsync thread");
    tx
}

impl Writer {
    /// Appends what `rx` brings until it is told to stop or every sender
    /// is gone.
    pub fn run(mut self, rx: &std::sync::mpsc::Receiver<Msg>) {
        let mut stop = None;
        while stop.is_none() {
            let Ok(first) = rx.recv() else { break };
            let mut lines = Vec::new();
            let mut acks = Vec::new();
            let mut take = |m: Msg| match m {
                Msg::Append(line, ack) => {
                    lines.push(line);
                    acks.push(ack);
                }
                Msg::Shutdown(done) => stop = Some(done),
            };
            take(first);
            for _ in 1..MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => take(m),
                    Err(_) => break,
                }
            }
            if !lines.is_empty() {
                let result = self.append(&lines);
                for ack in acks {
                    let _ = ack.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    });
                }
            }
        }
        if let Err(e) = self.file.sync_data() {
            tracing::error!("notification queue: final fsync failed: {e}");
        }
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    fn append(&mut self, lines: &[Vec<u8>]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        if let Err(e) = (&*self.file).write_all(&buf) {
            // Leave no partial line behind.
            let _ = self.file.set_len(self.bytes);
            let _ = (&*self.file).seek(SeekFrom::Start(self.bytes));
            return Err(e);
        }
        if self.fsync {
            self.file.sync_data()?;
        } else if let Some(s) = &self.syncer {
            let _ = s.send(self.file.clone());
        }
        self.bytes += buf.len() as u64;
        self.end += lines.len() as u64;
        lock(&self.journal.segments).insert(self.base, self.bytes);
        self.journal.end.send_replace(self.end);
        if self.bytes >= self.journal.segment_bytes
            && let Err(e) = self.roll()
        {
            tracing::error!("notification queue: starting a new segment failed: {e}");
        }
        Ok(())
    }

    /// Closes the current segment and starts the next at the end of the
    /// log; drops old segments when over the cap.
    fn roll(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let file = File::create(segment_path(&self.journal.dir, self.end))?;
        sync_dir(&self.journal.dir)?;
        self.file = Arc::new(file);
        self.base = self.end;
        self.bytes = 0;
        lock(&self.journal.segments).insert(self.base, 0);
        self.journal.enforce_cap()?;
        self.journal.record_bytes();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(tx: &std::sync::mpsc::Sender<Msg>, line: &str) -> oneshot::Receiver<io::Result<()>> {
        let (ack, rx) = oneshot::channel();
        tx.send(Msg::Append(line.as_bytes().to_vec(), ack)).unwrap();
        rx
    }

    fn start(
        dir: &Path,
        max: u64,
    ) -> (
        Arc<Journal>,
        std::sync::mpsc::Sender<Msg>,
        std::thread::JoinHandle<()>,
    ) {
        let (journal, writer) = Journal::open(dir, max, false, 2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || writer.run(&rx));
        (journal, tx, t)
    }

    fn stop(tx: &std::sync::mpsc::Sender<Msg>, t: std::thread::JoinHandle<()>) {
        let (done, rx) = oneshot::channel();
        tx.send(Msg::Shutdown(done)).unwrap();
        rx.blocking_recv().unwrap();
        t.join().unwrap();
    }

    fn read_all(j: &Journal, from: u64, keep: impl Fn(&[u8]) -> bool) -> (Vec<String>, u64) {
        let mut reader = None;
        let mut out = Vec::new();
        let next = j
            .read(&mut reader, from, j.end(), usize::MAX, keep, &mut out)
            .unwrap();
        (
            out.into_iter()
                .map(|l| String::from_utf8(l).unwrap())
                .collect(),
            next,
        )
    }

    #[test]
    fn events_survive_a_restart_and_a_torn_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (j, tx, t) = start(dir.path(), 1 << 30);
        assert_eq!(j.load_cursor(0, "a").unwrap(), 0);
        for i in 0..5 {
            append(&tx, &format!("{{\"n\":{i}}}"))
                .blocking_recv()
                .unwrap()
                .unwrap();
        }
        assert_eq!(j.end(), 5);
        // A second registry on the same directory is refused.
        let Err(err) = Journal::open(dir.path(), 1 << 30, false, 1) else {
            panic!("a second journal on the same directory opened");
        };
        assert!(
            err.to_string().contains("in use by another registry"),
            "{err}"
        );
        stop(&tx, t);
        drop(j);
        // A crash in the middle of a write.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"n\":5, \"torn").unwrap();
        drop(f);

        let (j, tx, t) = start(dir.path(), 1 << 30);
        assert_eq!(j.end(), 5);
        assert_eq!(j.load_cursor(0, "a").unwrap(), 0, "a's cursor was kept");
        assert_eq!(
            j.load_cursor(1, "new one/ü").unwrap(),
            5,
            "a new endpoint starts at the end"
        );
        append(&tx, "{\"n\":5}").blocking_recv().unwrap().unwrap();
        let (lines, next) = read_all(&j, 0, |_| true);
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[5], "{\"n\":5}");
        assert_eq!(next, 6);
        let (lines, _) = read_all(&j, 3, |l| l != b"{\"n\":4}");
        assert_eq!(lines, ["{\"n\":3}", "{\"n\":5}"]);
        assert!(
            dir.path()
                .join("cursors")
                .join("new%20one%2F%C3%BC")
                .exists()
        );
        stop(&tx, t);
    }

    #[test]
    fn segments_roll_are_collected_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB cap: 256 KiB segments.
        let (j, tx, t) = start(dir.path(), 1 << 20);
        j.load_cursor(0, "a").unwrap();
        j.load_cursor(1, "b").unwrap();
        let big = "x".repeat(1000);
        // One at a time: a batch goes whole into one segment, so 600
        // appends at once could fill fewer, larger ones.
        for i in 0..600 {
            append(&tx, &format!("{i:04}{big}"))
                .blocking_recv()
                .unwrap()
                .unwrap();
        }
        assert_eq!(j.end(), 600);
        let segs = lock(&j.segments).len();
        assert!(segs >= 3, "{segs} segments");
        // A reader crosses segment boundaries.
        let (lines, next) = read_all(&j, 0, |_| true);
        assert_eq!((lines.len(), next), (600, 600));
        assert!(
            lines
                .iter()
                .enumerate()
                .all(|(i, l)| l.starts_with(&format!("{i:04}")))
        );
        // a is done, b is not: nothing goes yet.
        j.save_cursor(0, "a", 600).unwrap();
        assert_eq!(j.first(), 0);
        j.save_cursor(1, "b", 300).unwrap();
        let first = j.first();
        assert!(first > 0 && first <= 300, "{first}");
        assert!(!segment_path(dir.path(), 0).exists());
        let (lines, _) = read_all(&j, 300, |_| true);
        assert_eq!(lines.len(), 300);

        // Over the cap (b stuck): the oldest segments are dropped.
        let mut acks = Vec::new();
        for i in 600..2000 {
            acks.push(append(&tx, &format!("{i:04}{big}")));
        }
        for a in acks {
            a.blocking_recv().unwrap().unwrap();
        }
        let total: u64 = lock(&j.segments).values().sum();
        assert!(total <= (1 << 20) + (256 << 10), "{total}");
        assert!(j.first() > 300);
        let mut reader = None;
        let err = j
            .read(&mut reader, 300, j.end(), 10, |_| true, &mut Vec::new())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let (lines, _) = read_all(&j, j.first(), |_| true);
        assert_eq!(lines.last().map(|l| &l[..4]), Some("1999"));
        stop(&tx, t);
    }
}
