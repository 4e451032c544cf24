//! An in-memory backend (distribution's `inmemory` driver): objects in a
//! sorted map, gone with the process. For fast tests of everything above
//! the trait, and a second implementation that keeps the trait honest: it
//! behaves like an object store (prefixes exist only through their
//! objects, no directory times), not like a filesystem.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::{Backend, Durability, Entry, Error, Meta, PrefixMeta, Read, Result, WriteMode, Writer};

#[derive(Debug, Clone)]
struct Object {
    data: Bytes,
    modified: SystemTime,
}

type Objects = BTreeMap<String, Object>;

/// Objects by their path (`/`-separated text).
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    objects: Arc<RwLock<Objects>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A path as a map key; paths come from `storage::paths`, always UTF-8.
fn key(path: &Path) -> String {
    path.to_string_lossy().trim_matches('/').to_owned()
}

/// The key prefix of everything under `prefix` (`a/b/`, or `` for the
/// root).
fn dir_key(prefix: &Path) -> String {
    let k = key(prefix);
    if k.is_empty() { k } else { format!("{k}/") }
}

/// The entries of `objects` under `prefix`, as `(rest of the key, object)`.
fn under<'a>(objects: &'a Objects, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Object)> {
    objects
        .range(prefix.to_owned()..)
        .take_while(move |(k, _)| k.starts_with(prefix))
        .map(move |(k, o)| (&k[prefix.len()..], o))
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "inmemory"
    }

    fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        Ok(self.read().get(&key(path)).map(|o| o.data.clone()))
    }

    fn read_from(&self, path: &Path, offset: u64) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        let Some(data) = self.get(path)? else {
            return Ok(None);
        };
        let size = data.len() as u64;
        if offset > size {
            return Err(Error::Invalid(format!(
                "offset {offset} is past the end ({size} bytes)"
            )));
        }
        let mut cursor = Cursor::new(data);
        cursor.set_position(offset);
        Ok(Some((Box::new(cursor), size)))
    }

    fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        Ok(self.read().get(&key(path)).map(|o| Meta {
            size: o.data.len() as u64,
            modified: o.modified,
        }))
    }

    fn stat_prefix(&self, prefix: &Path) -> Result<Option<PrefixMeta>> {
        let p = dir_key(prefix);
        let objects = self.read();
        Ok(under(&objects, &p)
            .next()
            .map(|_| PrefixMeta { modified: None }))
    }

    fn list(&self, prefix: &Path) -> Result<Vec<Entry>> {
        let p = dir_key(prefix);
        let objects = self.read();
        let mut out: Vec<Entry> = Vec::new();
        for (rest, _) in under(&objects, &p) {
            let entry = match rest.split_once('/') {
                Some((name, _)) => Entry {
                    name: name.to_owned(),
                    is_prefix: true,
                },
                None => Entry {
                    name: rest.to_owned(),
                    is_prefix: false,
                },
            };
            // Keys are sorted, so a prefix's objects are adjacent.
            if out.last() != Some(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn walk(&self, prefix: &Path, f: &mut dyn FnMut(&Path, Meta) -> Result<()>) -> Result<()> {
        let p = dir_key(prefix);
        // A snapshot, so that `f` may call back into the backend.
        let found: Vec<(String, Meta)> = under(&self.read(), &p)
            .map(|(rest, o)| {
                let meta = Meta {
                    size: o.data.len() as u64,
                    modified: o.modified,
                };
                (rest.to_owned(), meta)
            })
            .collect();
        for (rest, meta) in found {
            f(Path::new(&rest), meta)?;
        }
        Ok(())
    }

    fn put(&self, path: &Path, data: &[u8], _: Durability) -> Result<()> {
        let object = Object {
            data: Bytes::copy_from_slice(data),
            modified: SystemTime::now(),
        };
        self.write().insert(key(path), object);
        Ok(())
    }

    fn put_new(&self, path: &Path, data: &[u8]) -> Result<bool> {
        let mut objects = self.write();
        let k = key(path);
        if objects.contains_key(&k) {
            return Ok(false);
        }
        let object = Object {
            data: Bytes::copy_from_slice(data),
            modified: SystemTime::now(),
        };
        objects.insert(k, object);
        Ok(true)
    }

    fn writer(&self, path: &Path, mode: WriteMode) -> Result<Box<dyn Writer>> {
        let k = key(path);
        let start = match mode {
            WriteMode::Create => {
                self.put(path, b"", Durability::Scratch)?;
                0
            }
            WriteMode::Resume { size } => {
                let actual = self
                    .stat(path)?
                    .ok_or_else(|| Error::NotFound(format!("resumable object {k}")))?
                    .size;
                if actual != size {
                    return Err(Error::Invalid(format!(
                        "resumable object {k} holds {actual} bytes, not {size}"
                    )));
                }
                size
            }
        };
        Ok(Box::new(MemoryWriter {
            backend: self.clone(),
            key: k,
            start,
            buf: BytesMut::new(),
        }))
    }

    fn delete(&self, path: &Path, _stop: &Path) -> Result<bool> {
        Ok(self.write().remove(&key(path)).is_some())
    }

    fn delete_prefix(&self, prefix: &Path, _stop: &Path) -> Result<bool> {
        let p = dir_key(prefix);
        let mut objects = self.write();
        let doomed: Vec<String> = under(&objects, &p)
            .map(|(rest, _)| format!("{p}{rest}"))
            .collect();
        for k in &doomed {
            objects.remove(k);
        }
        Ok(!doomed.is_empty())
    }

    fn rename(&self, from: &Path, to: &Path, _stop: &Path, _: Durability) -> Result<()> {
        let mut objects = self.write();
        let object = objects
            .remove(&key(from))
            .ok_or_else(|| Error::NotFound(format!("moving {}", from.display())))?;
        objects.insert(key(to), object);
        Ok(())
    }
}

/// Buffers what it is given; `close` appends it to the object.
struct MemoryWriter {
    backend: MemoryBackend,
    key: String,
    /// Size of the object when the writer was opened.
    start: u64,
    buf: BytesMut,
}

impl MemoryWriter {
    /// The object with this writer's bytes, checked to be still the one
    /// the writer was opened on.
    fn finished(&self, objects: &Objects) -> Result<Bytes> {
        let current = objects
            .get(&self.key)
            .ok_or_else(|| Error::NotFound(format!("resumable object {}", self.key)))?;
        if current.data.len() as u64 != self.start {
            return Err(Error::Conflict(format!(
                "resumable object {} changed while written",
                self.key
            )));
        }
        let mut all = BytesMut::from(&current.data[..]);
        all.extend_from_slice(&self.buf);
        Ok(all.freeze())
    }
}

impl Writer for MemoryWriter {
    fn size(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.extend_from_slice(&data);
        Ok(())
    }

    fn close(self: Box<Self>) -> Result<()> {
        let mut objects = self.backend.write();
        let data = self.finished(&objects)?;
        objects.insert(
            self.key.clone(),
            Object {
                data,
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }

    fn commit(self: Box<Self>, dest: &Path) -> Result<()> {
        let mut objects = self.backend.write();
        let data = self.finished(&objects)?;
        objects.remove(&self.key);
        objects.insert(
            key(dest),
            Object {
                data,
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    crate::backend_suite!(super::MemoryBackend::new());
}
