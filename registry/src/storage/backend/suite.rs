//! The tests every backend passes (distribution's `driver/testsuites`).
//! A backend's test module runs all of them with one line:
//!
//! ```ignore
//! crate::backend_suite!(make_fixture());
//! ```
//!
//! where the expression is evaluated afresh for each test and yields a
//! [`Fixture`]: the backend itself, or a value that owns what the backend
//! needs (a temporary directory, a server) next to it.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{Backend, Durability, Entry, Error, WriteMode};

/// A backend under test, with whatever keeps it alive.
pub trait Fixture {
    fn backend(&self) -> &dyn Backend;
}

impl<B: Backend> Fixture for B {
    fn backend(&self) -> &dyn Backend {
        self
    }
}

/// Runs every test of the suite against the backend `$make` builds.
#[macro_export]
macro_rules! backend_suite {
    ($make:expr) => {
        $crate::backend_suite!(@tests $make;
            put_get_stat, read_from_offsets, list_one_level, prefixes_follow_objects,
            walk_everything, put_new_is_exclusive, writer_close_resume_abort,
            writer_commit_moves_whole, writer_deferred_writeback_keeps_every_byte,
            writer_resume_checks, delete_prefix_removes_all,
            rename_moves_and_replaces, concurrent_puts_never_tear);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let fixture = $make;
                $crate::storage::backend::suite::$name(
                    $crate::storage::backend::suite::Fixture::backend(&fixture),
                );
            }
        )*
    };
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn read_all(b: &dyn Backend, path: &str, offset: u64) -> Option<(Vec<u8>, u64)> {
    let (mut r, size) = b.read_from(p(path), offset).unwrap()?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    Some((out, size))
}

fn names(entries: Vec<Entry>) -> Vec<(String, bool)> {
    let mut v: Vec<_> = entries.into_iter().map(|e| (e.name, e.is_prefix)).collect();
    v.sort();
    v
}

pub fn put_get_stat(b: &dyn Backend) {
    assert_eq!(b.get(p("t/a/obj")).unwrap(), None);
    assert_eq!(b.stat(p("t/a/obj")).unwrap(), None);
    let before = SystemTime::now() - Duration::from_secs(5);
    b.put(p("t/a/obj"), b"one", Durability::Durable).unwrap();
    b.put(p("t/a/obj"), b"second", Durability::Durable).unwrap();
    assert_eq!(
        b.get(p("t/a/obj")).unwrap(),
        Some(Bytes::from_static(b"second"))
    );
    let meta = b.stat(p("t/a/obj")).unwrap().unwrap();
    assert_eq!(meta.size, 6);
    assert!(meta.modified >= before, "modified is the time of the write");
    b.put(p("t/a/scratch"), b"s", Durability::Scratch).unwrap();
    assert_eq!(b.get(p("t/a/scratch")).unwrap().as_deref(), Some(&b"s"[..]));
    b.put(p("t/empty"), b"", Durability::Durable).unwrap();
    assert_eq!(b.stat(p("t/empty")).unwrap().unwrap().size, 0);
    assert_eq!(b.get(p("t/empty")).unwrap().as_deref(), Some(&b""[..]));
    // A prefix is not an object.
    assert_eq!(b.get(p("t/a")).unwrap(), None);
    assert_eq!(b.stat(p("t/a")).unwrap(), None);
}

pub fn read_from_offsets(b: &dyn Backend) {
    assert!(b.read_from(p("t/none"), 0).unwrap().is_none());
    b.put(p("t/data"), b"0123456789", Durability::Durable)
        .unwrap();
    assert_eq!(read_all(b, "t/data", 0), Some((b"0123456789".to_vec(), 10)));
    assert_eq!(read_all(b, "t/data", 7), Some((b"789".to_vec(), 10)));
    assert_eq!(read_all(b, "t/data", 10), Some((Vec::new(), 10)));
    assert!(matches!(
        b.read_from(p("t/data"), 11).map(|_| ()),
        Err(Error::Invalid(_))
    ));
}

pub fn list_one_level(b: &dyn Backend) {
    assert!(b.list(p("t")).unwrap().is_empty());
    for path in ["t/x/one", "t/x/two", "t/x/sub/deep/three", "t/y/four"] {
        b.put(p(path), path.as_bytes(), Durability::Durable)
            .unwrap();
    }
    assert_eq!(
        names(b.list(p("t/x")).unwrap()),
        [
            ("one".to_owned(), false),
            ("sub".to_owned(), true),
            ("two".to_owned(), false)
        ]
    );
    assert_eq!(
        names(b.list(p("t")).unwrap()),
        [("x".to_owned(), true), ("y".to_owned(), true)]
    );
    // A prefix of a name is not a parent: `t/x` does not list `t/xy`.
    b.put(p("t/xy/five"), b"5", Durability::Durable).unwrap();
    assert_eq!(b.list(p("t/x")).unwrap().len(), 3);
    assert!(b.list(p("t/nothing")).unwrap().is_empty());
}

pub fn prefixes_follow_objects(b: &dyn Backend) {
    assert_eq!(b.stat_prefix(p("t/r")).unwrap(), None);
    b.put(p("t/r/a/b/link"), b"x", Durability::Durable).unwrap();
    b.put(p("t/r/keep"), b"k", Durability::Durable).unwrap();
    for prefix in ["t/r", "t/r/a", "t/r/a/b"] {
        assert!(b.stat_prefix(p(prefix)).unwrap().is_some(), "{prefix}");
    }
    assert!(b.delete(p("t/r/a/b/link"), p("t")).unwrap());
    assert!(!b.delete(p("t/r/a/b/link"), p("t")).unwrap());
    assert_eq!(b.stat_prefix(p("t/r/a/b")).unwrap(), None);
    assert_eq!(b.stat_prefix(p("t/r/a")).unwrap(), None);
    assert!(
        b.stat_prefix(p("t/r")).unwrap().is_some(),
        "still holds keep"
    );
    assert_eq!(
        names(b.list(p("t/r")).unwrap()),
        [("keep".to_owned(), false)]
    );
}

pub fn walk_everything(b: &dyn Backend) {
    b.put(p("t/w/a"), b"1", Durability::Durable).unwrap();
    b.put(p("t/w/b/c"), b"22", Durability::Durable).unwrap();
    b.put(p("t/w/b/d/e"), b"333", Durability::Durable).unwrap();
    b.put(p("t/other"), b"4444", Durability::Durable).unwrap();
    let mut seen = Vec::new();
    b.walk(p("t/w"), &mut |path, meta| {
        seen.push((path.to_string_lossy().into_owned(), meta.size));
        Ok(())
    })
    .unwrap();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("a".to_owned(), 1),
            ("b/c".to_owned(), 2),
            ("b/d/e".to_owned(), 3)
        ]
    );
    let mut none = 0;
    b.walk(p("t/nothing"), &mut |_, _| {
        none += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(none, 0);
    // An error from the callback stops the walk and comes back.
    let stopped = b.walk(p("t/w"), &mut |_, _| Err(Error::Conflict("stop".into())));
    assert!(matches!(stopped, Err(Error::Conflict(_))));
}

pub fn put_new_is_exclusive(b: &dyn Backend) {
    assert!(b.put_new(p("t/lease"), b"first").unwrap());
    assert!(!b.put_new(p("t/lease"), b"second").unwrap());
    assert_eq!(b.get(p("t/lease")).unwrap().as_deref(), Some(&b"first"[..]));
    let winners = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| s.spawn(move || b.put_new(p("t/race"), format!("{i}").as_bytes()).unwrap()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|won| *won)
            .count()
    });
    assert_eq!(winners, 1, "exactly one concurrent put_new wins");
}

pub fn writer_close_resume_abort(b: &dyn Backend) {
    let up = p("t/up/data");
    let mut w = b.writer(up, WriteMode::Create).unwrap();
    w.write(Bytes::from_static(b"hello ")).unwrap();
    assert_eq!(w.size(), 6);
    w.close().unwrap();
    assert_eq!(b.stat(up).unwrap().unwrap().size, 6);
    // A failed request: its bytes go, the object is as before.
    let mut w = b.writer(up, WriteMode::Resume { size: 6 }).unwrap();
    w.write(Bytes::from_static(b"garbage")).unwrap();
    w.abort().unwrap();
    assert_eq!(b.stat(up).unwrap().unwrap().size, 6);
    // Dropped without a word: the same.
    let mut w = b.writer(up, WriteMode::Resume { size: 6 }).unwrap();
    w.write(Bytes::from_static(b"more garbage")).unwrap();
    drop(w);
    assert_eq!(b.stat(up).unwrap().unwrap().size, 6);
    let mut w = b.writer(up, WriteMode::Resume { size: 6 }).unwrap();
    w.write(Bytes::from_static(b"wor")).unwrap();
    w.write(Bytes::from_static(b"ld")).unwrap();
    assert_eq!(w.size(), 11);
    w.close().unwrap();
    assert_eq!(b.stat(up).unwrap().unwrap().size, 11);
    let w = b.writer(up, WriteMode::Resume { size: 11 }).unwrap();
    w.commit(p("t/blob/data")).unwrap();
    assert_eq!(
        b.get(p("t/blob/data")).unwrap().as_deref(),
        Some(&b"hello world"[..])
    );
}

pub fn writer_commit_moves_whole(b: &dyn Backend) {
    let up = p("t/up2/data");
    let dest = p("t/blobs/ab/abcdef/data");
    b.put(dest, b"old", Durability::Durable).unwrap();
    let mut w = b.writer(up, WriteMode::Create).unwrap();
    // Large enough to span the buffers and parts of any backend.
    let chunk = Bytes::from(vec![7u8; 3 * 1024 * 1024 + 17]);
    w.write(chunk.clone()).unwrap();
    w.write(chunk.clone()).unwrap();
    w.commit(dest).unwrap();
    let (data, size) = read_all(b, "t/blobs/ab/abcdef/data", 0).unwrap();
    assert_eq!(size, 2 * chunk.len() as u64);
    assert!(data.iter().all(|&x| x == 7) && data.len() as u64 == size);
    assert_eq!(b.stat(up).unwrap(), None, "the resumable object is gone");
    // Committing an empty object.
    let w = b.writer(p("t/up3/data"), WriteMode::Create).unwrap();
    w.commit(p("t/blobs/e3/e3b0/data")).unwrap();
    assert_eq!(b.stat(p("t/blobs/e3/e3b0/data")).unwrap().unwrap().size, 0);
}

/// A writer that leaves writeback to the commit (what the mirror asks)
/// still stores every byte in order, across a close and a resume, over
/// more than the filesystem's writeback windows.
pub fn writer_deferred_writeback_keeps_every_byte(b: &dyn Backend) {
    let up = p("t/up4/data");
    let dest = p("t/blobs/cd/cdef01/data");
    let pattern: Vec<u8> = (0..20 * 1024 * 1024 + 5).map(|i| (i % 251) as u8).collect();
    let (first, second) = pattern.split_at(13 * 1024 * 1024 + 3);
    let mut w = b.writer(up, WriteMode::Create).unwrap();
    w.defer_writeback();
    for piece in first.chunks(1024 * 1024 + 7) {
        w.write_pieces(vec![Bytes::copy_from_slice(piece)]).unwrap();
    }
    w.close().unwrap();
    let mut w = b
        .writer(
            up,
            WriteMode::Resume {
                size: first.len() as u64,
            },
        )
        .unwrap();
    w.defer_writeback();
    w.write(Bytes::copy_from_slice(second)).unwrap();
    w.commit(dest).unwrap();
    let (data, size) = read_all(b, "t/blobs/cd/cdef01/data", 0).unwrap();
    assert_eq!(size, pattern.len() as u64);
    assert!(
        data == pattern,
        "the stored bytes differ from those written"
    );
}

pub fn writer_resume_checks(b: &dyn Backend) {
    let up = p("t/up4/data");
    assert!(matches!(
        b.writer(up, WriteMode::Resume { size: 0 }).map(|_| ()),
        Err(Error::NotFound(_))
    ));
    let mut w = b.writer(up, WriteMode::Create).unwrap();
    w.write(Bytes::from_static(b"abc")).unwrap();
    w.close().unwrap();
    assert!(matches!(
        b.writer(up, WriteMode::Resume { size: 2 }).map(|_| ()),
        Err(Error::Invalid(_))
    ));
    // A fresh Create starts over.
    let w = b.writer(up, WriteMode::Create).unwrap();
    w.close().unwrap();
    assert_eq!(b.stat(up).unwrap().unwrap().size, 0);
    // Deleting the upload's prefix discards it.
    assert!(b.delete_prefix(p("t/up4"), p("t")).unwrap());
    assert_eq!(b.stat(up).unwrap(), None);
}

pub fn delete_prefix_removes_all(b: &dyn Backend) {
    assert!(!b.delete_prefix(p("t/none"), p("t")).unwrap());
    for path in [
        "t/d/tag/current/link",
        "t/d/tag/index/sha256/ab/link",
        "t/d/other",
    ] {
        b.put(p(path), b"x", Durability::Durable).unwrap();
    }
    assert!(b.delete_prefix(p("t/d/tag"), p("t")).unwrap());
    assert_eq!(b.stat_prefix(p("t/d/tag")).unwrap(), None);
    assert_eq!(b.get(p("t/d/tag/current/link")).unwrap(), None);
    assert_eq!(
        names(b.list(p("t/d")).unwrap()),
        [("other".to_owned(), false)]
    );
}

pub fn rename_moves_and_replaces(b: &dyn Backend) {
    b.put(p("t/m/src/data"), b"content", Durability::Durable)
        .unwrap();
    b.put(p("t/m/dst/data"), b"old", Durability::Durable)
        .unwrap();
    b.rename(
        p("t/m/src/data"),
        p("t/m/dst/data"),
        p("t"),
        Durability::Durable,
    )
    .unwrap();
    assert_eq!(
        b.get(p("t/m/dst/data")).unwrap().as_deref(),
        Some(&b"content"[..])
    );
    assert_eq!(b.get(p("t/m/src/data")).unwrap(), None);
    assert_eq!(
        b.stat_prefix(p("t/m/src")).unwrap(),
        None,
        "emptied prefix goes"
    );
    // Into a prefix that does not exist yet, set aside without fsyncs.
    b.rename(
        p("t/m/dst/data"),
        p("t/gc/run/sha256/ab"),
        p("t"),
        Durability::Scratch,
    )
    .unwrap();
    assert_eq!(
        b.get(p("t/gc/run/sha256/ab")).unwrap().as_deref(),
        Some(&b"content"[..])
    );
    assert!(matches!(
        b.rename(p("t/m/none"), p("t/m/x"), p("t"), Durability::Durable),
        Err(Error::NotFound(_))
    ));
}

pub fn concurrent_puts_never_tear(b: &dyn Backend) {
    let a = vec![b'a'; 256 * 1024];
    let z = vec![b'z'; 128 * 1024];
    b.put(p("t/c/link"), &a, Durability::Durable).unwrap();
    std::thread::scope(|s| {
        for i in 0..4 {
            let (a, z) = (&a, &z);
            s.spawn(move || {
                for j in 0..20 {
                    let data = if (i + j) % 2 == 0 { a } else { z };
                    b.put(p("t/c/link"), data, Durability::Durable).unwrap();
                }
            });
        }
        s.spawn(|| {
            for _ in 0..100 {
                let got = b.get(p("t/c/link")).unwrap().unwrap();
                assert!(got[..] == a[..] || got[..] == z[..], "torn read");
            }
        });
    });
}
