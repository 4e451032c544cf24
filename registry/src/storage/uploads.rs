//! Blob uploads: creation, streaming appends hashed on the way in, status,
//! completion into the blob store, and cancellation.
//!
//! The upload's bytes and start time live in storage
//! (`_uploads/<id>/data`, a resumable object, and `startedat`), so an
//! upload continues after a restart or on another replica. The running
//! hash is only a cache in process memory: when it is missing or out of
//! step with the stored size, completion commits the data to a place of
//! its own, reads it back to hash it, and only then moves it into the
//! blob store (a resumable object cannot be read before its commit on S3).
//!
//! Request bodies arrive as plain byte streams; the route adapts the HTTP
//! body.
//!
//! # Retried completions
//!
//! A completion (`PUT ?digest=`) may be sent again after its first try
//! did its work but its answer was lost: a proxy such as nginx retries an
//! idempotent PUT on another replica when the first one dies mid-request.
//! Before it writes anything, a completion records what it sets out to do
//! (`completing`: digest, offset of its body, length). A retry then finds
//! - the upload holding that very body (the first try appended it and
//!   died before its commit): it is not appended twice
//!   ([`Storage::begin_completion`] says so), and the commit checks the
//!   digest by reading the data back, as for any upload of unknown hash;
//! - the upload's data gone with the record still there (the first try
//!   committed and died before linking): the blob is linked
//!   ([`Storage::finish_completed`]); data the first try set aside to
//!   check its digest (`committed`) is checked and moved in first. The
//!   data leaves an upload only by a commit that verified the digest, by
//!   one to `committed`, or by a removal that deletes the record first
//!   (cancel, purge, a repository's deletion), so a record without either
//!   proves the commit.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::backend::{Durability, WriteMode};
use super::error::Context;
use super::upload_limits::{OpenUploads, UploadOwner};
use super::{Error, Result, Storage, paths};
use crate::config::UploadLimits;
use crate::oci::{Digest, DigestAlgorithm, Hasher, RepoName};

/// The record of a completion in progress (`completing`).
#[derive(serde::Serialize, serde::Deserialize)]
struct Completing {
    digest: Digest,
    offset: u64,
    length: Option<u64>,
}

/// What the process knows about an upload in progress.
#[derive(Debug)]
pub struct UploadState {
    /// Bytes received so far (the size of the data on disk).
    pub offset: u64,
    /// sha256 of those bytes, when every one of them went through this
    /// process; `None` after a restart or a failure.
    hasher: Option<Hasher>,
    /// Appends leave writeback to the commit ([`Writer::defer_writeback`](super::backend::Writer::defer_writeback)).
    deferred_writeback: bool,
}

type Key = (RepoName, Uuid);

/// What the process keeps about uploads.
pub(super) struct UploadStates {
    /// Upload states by repository and upload ID. The mutex also serialises
    /// requests on one upload.
    states: moka::sync::Cache<Key, Arc<Mutex<UploadState>>>,
    /// Open sessions, for the caps.
    pub(super) open: OpenUploads,
}

impl UploadStates {
    pub(super) fn new() -> UploadStates {
        UploadStates {
            // An upload idle this long has most likely been abandoned; if it
            // is resumed anyway, its state is rebuilt from storage.
            states: moka::sync::Cache::builder()
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            open: OpenUploads::default(),
        }
    }
}

/// Bytes handed to the writer thread at a time.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Why an append failed.
#[derive(Debug)]
pub enum AppendError {
    /// The client's body failed (disconnect, timeout, size limit).
    Body(String),
    /// The body was not as long as announced.
    Length {
        received: u64,
    },
    Storage(Error),
}

impl UploadState {
    /// A state that knows nothing: it is rebuilt from storage when locked.
    pub fn empty() -> UploadState {
        UploadState {
            offset: 0,
            hasher: None,
            deferred_writeback: false,
        }
    }

    /// The sha256 digest of the upload's bytes so far, when this process
    /// saw every one of them.
    pub fn known_digest(&self) -> Option<Digest> {
        self.hasher.clone().map(Hasher::finish)
    }

    /// Stops hashing on the way: appends then only write, and the commit
    /// hashes the data by reading it back (as after a restart).
    pub fn clear_hash(&mut self) {
        self.hasher = None;
    }

    /// Appends then leave writing to the disk to the commit's sync (see
    /// [`Writer::defer_writeback`](super::backend::Writer::defer_writeback)): for an upload whose client does not
    /// wait for the commit, such as a blob the mirror streams to its
    /// client while storing it.
    pub fn defer_writeback(&mut self) {
        self.deferred_writeback = true;
    }
}

impl Storage {
    /// Starts an upload of `owner` in the repository and returns its ID;
    /// refused when `limits` are reached (see `upload_limits`).
    pub fn create_upload(
        &self,
        name: &RepoName,
        owner: &UploadOwner,
        limits: &UploadLimits,
    ) -> Result<Uuid> {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::Io(format!("formatting a time: {e}")))?;
        let id = self.open_upload(name, owner, limits, |id| {
            // Scratch state: nothing here needs to survive a machine crash.
            // The data comes first: it is what makes the upload usable.
            self.backend
                .writer(&paths::upload_data(name, id), WriteMode::Create)
                .and_then(super::backend::Writer::close)
                .context("starting an upload")?;
            self.backend
                .put(
                    &paths::upload_started_at(name, id),
                    now.as_bytes(),
                    Durability::Scratch,
                )
                .context("starting an upload")
        })?;
        self.uploads.states.insert(
            (name.clone(), id),
            Arc::new(Mutex::new(UploadState {
                offset: 0,
                hasher: Some(Hasher::new(DigestAlgorithm::Sha256)),
                deferred_writeback: false,
            })),
        );
        Ok(id)
    }

    /// Takes the upload for one request, its state checked against storage.
    /// Fails with BLOB_UPLOAD_UNKNOWN when the upload does not exist.
    pub async fn lock_upload(
        self: &Arc<Self>,
        name: &RepoName,
        id: Uuid,
    ) -> Result<OwnedMutexGuard<UploadState>> {
        let key = (name.clone(), id);
        let cell = self
            .uploads
            .states
            .get_with(key.clone(), || Arc::new(Mutex::new(UploadState::empty())));
        let mut guard = cell.lock_owned().await;
        let data = paths::upload_data(name, id);
        let size = self
            .run(move |s| s.backend.stat(&data).context("reading an upload"))
            .await?;
        let Some(meta) = size else {
            self.uploads.states.invalidate(&key);
            return Err(Error::UploadUnknown);
        };
        if meta.size != guard.offset {
            // Written elsewhere or cut short by a crash: the running hash
            // no longer matches the data.
            *guard = UploadState {
                offset: meta.size,
                hasher: None,
                deferred_writeback: false,
            };
        }
        Ok(guard)
    }

    /// Appends a request body to the upload, hashing it on the way; when
    /// `expected` is given, the body must be exactly that long. On any
    /// failure the bytes of this request are dropped, so a failed request
    /// leaves nothing behind and can simply be retried. Returns the number
    /// of bytes appended.
    pub async fn append_upload<S, E>(
        self: &Arc<Self>,
        name: &RepoName,
        id: Uuid,
        state: &mut UploadState,
        body: S,
        expected: Option<u64>,
    ) -> Result<u64, AppendError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
        E: std::fmt::Display,
    {
        let start = state.offset;
        let saved_hasher = state.hasher.clone();
        let data = paths::upload_data(name, id);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(4);
        let this = self.clone();
        // The writer keeps or drops the bytes as the body ends: `true` to
        // keep them.
        let (keep_tx, keep_rx) = tokio::sync::oneshot::channel::<bool>();
        let deferred = state.deferred_writeback;
        let writer = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut out = this
                .backend
                .writer(&data, WriteMode::Resume { size: start })
                .context("writing an upload")?;
            if deferred {
                out.defer_writeback();
            }
            while let Some(pieces) = rx.blocking_recv() {
                out.write_pieces(pieces).context("writing an upload")?;
            }
            match keep_rx.blocking_recv() {
                Ok(false) => out.abort().context("rolling back an upload"),
                // `Err`: the request was dropped midway (the server shutting
                // down). What arrived is kept too, so that the client
                // resumes from it after the restart, as the status says.
                Ok(true) | Err(_) => out.close().context("writing an upload"),
            }
        });

        let mut body = body;
        // The body's chunks as they came (no copy), handed over by the
        // megabyte.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        let mut received: u64 = 0;
        let mut body_error = None;
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            };
            received = received.saturating_add(chunk.len() as u64);
            // Past the announced length, or past what an offset can hold.
            if expected.is_some_and(|e| received > e) || start.checked_add(received).is_none() {
                break; // too long: refused below, without writing the excess
            }
            if let Some(h) = state.hasher.as_mut() {
                h.update(&chunk);
            }
            batched += chunk.len();
            batch.push(chunk);
            if batched >= WRITE_BUFFER {
                batched = 0;
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
        }
        if body_error.is_none() && !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        drop(tx);
        let end = start.checked_add(received);
        let complete =
            body_error.is_none() && end.is_some() && expected.is_none_or(|e| e == received);
        let _ = keep_tx.send(complete);
        let written = writer
            .await
            .map_err(|e| AppendError::Storage(Error::Io(format!("upload writer: {e}"))))?;

        let failure = match (written, body_error, end) {
            (Ok(()), None, Some(end)) if complete => {
                state.offset = end;
                return Ok(received);
            }
            (Ok(()), None, _) => AppendError::Length { received },
            (Err(e), _, _) => AppendError::Storage(e),
            (Ok(()), Some(e), _) => AppendError::Body(e),
        };
        state.hasher = saved_hasher;
        if matches!(failure, AppendError::Storage(_)) {
            // The writer failed midway: whether its bytes were dropped is
            // unknown, so the state is re-read from storage next time.
            state.hasher = None;
        }
        Err(failure)
    }

    /// Completes an upload as blob `expected`: checks the digest of the data,
    /// makes it durable, moves it into the blob store and links it into the
    /// repository. On a digest mismatch the upload is discarded.
    pub fn commit_upload(
        &self,
        name: &RepoName,
        id: Uuid,
        state: &mut UploadState,
        expected: &Digest,
    ) -> Result<()> {
        let data = paths::upload_data(name, id);
        let blob = paths::blob_data(expected);
        let writer = self
            .backend
            .writer(&data, WriteMode::Resume { size: state.offset })
            .map_err(|e| match e {
                Error::NotFound(_) => Error::UploadUnknown,
                e => e.context("completing an upload"),
            })?;
        // Always moved in, even when the blob exists: identical content, and
        // a fresh copy cannot have been set aside by a concurrent garbage
        // collection between our look and the link below.
        if let (Some(h), DigestAlgorithm::Sha256) = (&state.hasher, expected.algorithm()) {
            let actual = h.clone().finish();
            if &actual != expected {
                drop(writer);
                return self.refuse_upload(name, id, expected, actual);
            }
            writer.commit(&blob).context("completing an upload")?;
        } else {
            // The hash is not known here (another process wrote the data,
            // or another algorithm): the data is committed to a place of
            // its own, read back, and moved in only when it matches.
            writer
                .commit(&paths::upload_committed(name, id))
                .context("completing an upload")?;
            self.check_committed(name, id, expected)?;
        }
        self.link_blob(name, expected)?;
        self.forget_completed(name, id);
        Ok(())
    }

    /// Hashes an upload's data committed to its place of its own
    /// (`committed`) and moves it into the blob store when it is
    /// `expected`; otherwise discards the upload.
    fn check_committed(&self, name: &RepoName, id: Uuid, expected: &Digest) -> Result<()> {
        let committed = paths::upload_committed(name, id);
        let actual = self
            .hash_object(&committed, expected.algorithm())?
            .ok_or(Error::UploadUnknown)?;
        if &actual != expected {
            return self.refuse_upload(name, id, expected, actual);
        }
        self.backend
            .rename(
                &committed,
                &paths::blob_data(expected),
                &paths::upload_dir(name, id),
                Durability::Durable,
            )
            .context("completing an upload")
    }

    /// Records that a completion of the upload as `expected` starts, its
    /// body of `length` bytes (when known) to go at `offset`, the size
    /// the upload has now. Returns `true` when the upload already holds
    /// that very body: the record of an earlier try of this completion
    /// says so, the upload is `length` bytes longer than where that try
    /// started, and `known` (the digest of the upload's bytes, when this
    /// process saw them all) is `expected` or not known. The body must
    /// then not be appended again.
    pub fn begin_completion(
        &self,
        name: &RepoName,
        id: Uuid,
        offset: u64,
        known: Option<&Digest>,
        expected: &Digest,
        length: Option<u64>,
    ) -> Result<bool> {
        let path = paths::upload_completing(name, id);
        // Only then is a record read: an upload whose bytes this process
        // hashed to something else is being completed for the first time.
        if known.is_none_or(|k| k == expected) && length.is_some_and(|l| l > 0) {
            let earlier = self.completing(name, id)?;
            if earlier.is_some_and(|c| {
                &c.digest == expected
                    && c.length == length
                    && c.offset.checked_add(c.length.unwrap_or(0)) == Some(offset)
            }) {
                return Ok(true);
            }
        }
        let record = Completing {
            digest: expected.clone(),
            offset,
            length,
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| Error::Io(format!("encoding an upload's completion: {e}")))?;
        self.backend
            .put(&path, &bytes, Durability::Scratch)
            .context("completing an upload")?;
        Ok(false)
    }

    /// Finishes a completion as `expected` whose upload is gone: when a
    /// try of it committed the data and died before linking the blob (see
    /// the module's comment), links it and returns its size; otherwise
    /// `None`.
    pub fn finish_completed(
        &self,
        name: &RepoName,
        id: Uuid,
        expected: &Digest,
    ) -> Result<Option<u64>> {
        if self
            .completing(name, id)?
            .is_none_or(|c| &c.digest != expected)
        {
            return Ok(None);
        }
        let stat = |path: std::path::PathBuf| {
            self.backend
                .stat(&path)
                .context("reading an upload")
                .map(|m| m.map(|m| m.size))
        };
        // The data still there is an upload in progress.
        if stat(paths::upload_data(name, id))?.is_some() {
            return Ok(None);
        }
        // Data set aside for a read-back check (its hash was not known)
        // whose check was cut short: the check is made now.
        if stat(paths::upload_committed(name, id))?.is_some() {
            self.check_committed(name, id, expected)?;
        }
        let Some(size) = stat(paths::blob_data(expected))? else {
            return Ok(None);
        };
        self.link_blob(name, expected)?;
        self.forget_completed(name, id);
        Ok(Some(size))
    }

    fn completing(&self, name: &RepoName, id: Uuid) -> Result<Option<Completing>> {
        let Some(bytes) = self
            .backend
            .get(&paths::upload_completing(name, id))
            .context("reading an upload")?
        else {
            return Ok(None);
        };
        // Unreadable (torn by no backend, but written by another version):
        // as if absent, which only forgoes the retry's shortcut.
        Ok(serde_json::from_slice(&bytes).ok())
    }

    /// Removes a completed upload. The blob is in and linked: the upload
    /// is complete whatever becomes of its remains, so a failure is logged
    /// (what stays goes with the purge of old uploads) and its session is
    /// freed all the same. Its completion record goes with the rest, after
    /// the data, which proves the commit meanwhile.
    fn forget_completed(&self, name: &RepoName, id: Uuid) {
        self.uploads.states.invalidate(&(name.clone(), id));
        let removed = self
            .backend
            .delete_prefix(&paths::upload_dir(name, id), &paths::uploads_dir(name))
            .context("removing an upload");
        self.uploads.open.release(id);
        if let Err(e) = removed {
            tracing::warn!(
                repository = %name,
                upload = %id,
                error = %e,
                "a completed upload's objects were not all removed; the purge of old uploads will"
            );
        }
    }

    fn refuse_upload(
        &self,
        name: &RepoName,
        id: Uuid,
        expected: &Digest,
        actual: Digest,
    ) -> Result<()> {
        self.cancel_upload(name, id)?;
        Err(Error::DigestMismatch {
            expected: expected.clone(),
            actual,
        })
    }

    /// Hashes an object's content with `algorithm` by reading it back;
    /// `None` when the object does not exist.
    pub(super) fn hash_object(
        &self,
        path: &std::path::Path,
        algorithm: DigestAlgorithm,
    ) -> Result<Option<Digest>> {
        let Some((mut reader, _)) = self
            .backend
            .read_from(path, 0)
            .context("reading stored content")?
        else {
            return Ok(None);
        };
        let mut hasher = Hasher::new(algorithm);
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| Error::io("reading stored content", &e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Some(hasher.finish()))
    }

    /// Discards an upload. Returns whether it existed.
    pub fn cancel_upload(&self, name: &RepoName, id: Uuid) -> Result<bool> {
        let existed = self
            .backend
            .stat_prefix(&paths::upload_dir(name, id))
            .context("reading an upload")?
            .is_some();
        self.forget_upload(name, id)?;
        Ok(existed)
    }

    fn forget_upload(&self, name: &RepoName, id: Uuid) -> Result<()> {
        self.discard_upload(name, id, &paths::uploads_dir(name))?;
        self.uploads.open.release(id);
        Ok(())
    }

    /// Removes an upload's state and objects, leaving the session counts
    /// to the caller; emptied prefixes go up to `stop`.
    pub(super) fn discard_upload(
        &self,
        name: &RepoName,
        id: Uuid,
        stop: &std::path::Path,
    ) -> Result<()> {
        self.uploads.states.invalidate(&(name.clone(), id));
        self.delete_completion_record(name, id)?;
        self.backend
            .delete_prefix(&paths::upload_dir(name, id), stop)
            .context("removing an upload")?;
        Ok(())
    }

    /// Deletes an upload's completion record, which every removal of an
    /// upload must do before it touches the data: a record left without
    /// the data (a removal cut short) would pass for a commit (see the
    /// module's comment).
    pub(super) fn delete_completion_record(&self, name: &RepoName, id: Uuid) -> Result<()> {
        self.backend
            .delete(
                &paths::upload_completing(name, id),
                &paths::upload_dir(name, id),
            )
            .context("removing an upload")?;
        Ok(())
    }

    /// Whether a request holds the upload right now.
    pub(super) fn upload_in_use(&self, name: &RepoName, id: Uuid) -> bool {
        self.uploads
            .states
            .get(&(name.clone(), id))
            .is_some_and(|cell| cell.try_lock().is_err())
    }

    /// When the upload was started: its `startedat`, or else the time of
    /// its prefix or data; `None` when it does not exist.
    pub(super) fn upload_started(&self, name: &RepoName, id: Uuid) -> Result<Option<SystemTime>> {
        let started = self
            .backend
            .get(&paths::upload_started_at(name, id))
            .context("reading an upload")?
            .and_then(|b| {
                let text = String::from_utf8_lossy(&b).trim().to_owned();
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .map(SystemTime::from);
        if started.is_some() {
            return Ok(started);
        }
        let prefix = self
            .backend
            .stat_prefix(&paths::upload_dir(name, id))
            .context("reading an upload")?;
        match prefix {
            None => Ok(None),
            Some(p) => match p.modified {
                Some(t) => Ok(Some(t)),
                None => Ok(Some(
                    self.backend
                        .stat(&paths::upload_data(name, id))
                        .context("reading an upload")?
                        .map_or(SystemTime::UNIX_EPOCH, |m| m.modified),
                )),
            },
        }
    }
}
