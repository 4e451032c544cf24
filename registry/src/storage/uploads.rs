//! Blob uploads: creation, streaming appends hashed on the way in, status,
//! completion into the blob store, and cancellation.
//!
//! The upload's bytes and start time live in storage
//! (`_uploads/<id>/data`, `startedat`), so an upload continues after a
//! restart or on another replica. The running hash is only a cache in
//! process memory: when it is missing or out of step with the data on disk,
//! completion re-reads the data to hash it.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use super::upload_limits::{OpenUploads, UploadOwner};
use super::{Backend, Storage, io_err, paths};
use crate::config::UploadLimits;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::{Digest, DigestAlgorithm, Hasher, RepoName};

/// What the process knows about an upload in progress.
#[derive(Debug)]
pub struct UploadState {
    /// Bytes received so far (the size of the data on disk).
    pub offset: u64,
    /// sha256 of those bytes, when every one of them went through this
    /// process; `None` after a restart or a failure.
    hasher: Option<Hasher>,
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
        }
    }
}

impl<B: Backend> Storage<B> {
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
            .map_err(|e| Error::internal("formatting a time", e))?;
        let id = self.open_upload(name, owner, limits, |id| {
            // Scratch state: nothing here needs to survive a machine crash.
            // The data file comes first: it is what makes the upload usable.
            self.backend
                .write_scratch(&paths::upload_data(name, id), b"")
                .map_err(io_err("starting an upload"))?;
            self.backend
                .write_scratch(&paths::upload_started_at(name, id), now.as_bytes())
                .map_err(io_err("starting an upload"))
        })?;
        self.uploads.states.insert(
            (name.clone(), id),
            Arc::new(Mutex::new(UploadState {
                offset: 0,
                hasher: Some(Hasher::new(DigestAlgorithm::Sha256)),
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
            .run(move |s| s.backend.stat(&data).map_err(io_err("reading an upload")))
            .await?;
        match size {
            Some(meta) if !meta.is_dir => {
                if meta.size != guard.offset {
                    // Written elsewhere or cut short by a crash: the
                    // running hash no longer matches the data.
                    *guard = UploadState {
                        offset: meta.size,
                        hasher: None,
                    };
                }
                Ok(guard)
            }
            _ => {
                self.uploads.states.invalidate(&key);
                Err(Error::upload_unknown())
            }
        }
    }

    /// Appends a request body to the upload, hashing it on the way; when
    /// `expected` is given, the body must be exactly that long. On any
    /// failure the upload is cut back to where it was, so a failed request
    /// leaves nothing behind and can simply be retried. Returns the number
    /// of bytes appended.
    pub async fn append_upload(
        self: &Arc<Self>,
        name: &RepoName,
        id: Uuid,
        state: &mut UploadState,
        body: Body,
        expected: Option<u64>,
    ) -> Result<u64, AppendError> {
        let start = state.offset;
        let saved_hasher = state.hasher.clone();
        let data = paths::upload_data(name, id);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let this = self.clone();
        let path = data.clone();
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut out = this.backend.open_append(&path, start)?;
            while let Some(chunk) = rx.blocking_recv() {
                out.write_all(&chunk)?;
            }
            Ok(())
        });

        let mut body = body;
        let mut buf = BytesMut::new();
        let mut received: u64 = 0;
        let mut body_error = None;
        while let Some(frame) = body.frame().await {
            let chunk = match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(chunk) => chunk,
                    Err(_) => continue, // trailers
                },
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
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_BUFFER && tx.send(buf.split().freeze()).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        if body_error.is_none() && !buf.is_empty() {
            let _ = tx.send(buf.freeze()).await;
        }
        drop(tx);
        let written = writer
            .await
            .map_err(|e| AppendError::Storage(Error::internal("upload writer", e)))?;

        let end = start.checked_add(received);
        let failure = match (written, body_error, end) {
            (Ok(()), None, Some(end)) if expected.is_none_or(|e| e == received) => {
                state.offset = end;
                return Ok(received);
            }
            (Ok(()), None, _) => AppendError::Length { received },
            (Err(e), _, _) => AppendError::Storage(Error::io("writing an upload", &e)),
            (Ok(()), Some(e), _) => AppendError::Body(e),
        };
        state.hasher = saved_hasher;
        let cut = self
            .run(move |s| {
                s.backend
                    .truncate(&data, start)
                    .map_err(io_err("rolling back an upload"))
            })
            .await;
        if let Err(e) = cut {
            // The data no longer matches the state: force a re-check.
            tracing::error!(upload = %id, "could not cut a failed upload back: {e}");
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
        let actual = match (&state.hasher, expected.algorithm()) {
            (Some(h), DigestAlgorithm::Sha256) => h.clone().finish(),
            _ => self
                .hash_object(&data, expected.algorithm())?
                .ok_or_else(Error::upload_unknown)?,
        };
        if &actual != expected {
            self.cancel_upload(name, id)?;
            return Err(Error::new(
                ErrorCode::DigestInvalid,
                format!("provided digest {expected} does not match uploaded content ({actual})"),
            )
            .with_detail(serde_json::json!({ "expected": expected, "actual": actual })));
        }
        let mut f = self
            .backend
            .open_append(&data, state.offset)
            .map_err(io_err("completing an upload"))?;
        self.backend
            .sync(&mut f)
            .map_err(io_err("completing an upload"))?;
        drop(f);
        // Always moved in, even when the blob exists: identical content, and
        // a fresh copy cannot have been set aside by a concurrent garbage
        // collection between our look and the link below.
        self.backend
            .rename_durable(&data, &paths::blob_data(expected))
            .map_err(io_err("completing an upload"))?;
        self.link_blob(name, expected)?;
        self.forget_upload(name, id)
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
            .open_read(path)
            .map_err(io_err("reading stored content"))?
        else {
            return Ok(None);
        };
        let mut hasher = Hasher::new(algorithm);
        let mut buf = vec![0u8; WRITE_BUFFER];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io_err("reading stored content"))?;
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
            .stat(&paths::upload_dir(name, id))
            .map_err(io_err("reading an upload"))?
            .is_some();
        self.forget_upload(name, id)?;
        Ok(existed)
    }

    fn forget_upload(&self, name: &RepoName, id: Uuid) -> Result<()> {
        self.discard_upload(name, id)?;
        self.uploads.open.release(id);
        Ok(())
    }

    /// Removes an upload's state and files, leaving the session counts to
    /// the caller.
    pub(super) fn discard_upload(&self, name: &RepoName, id: Uuid) -> Result<()> {
        self.uploads.states.invalidate(&(name.clone(), id));
        self.backend
            .remove_dir_all(&paths::upload_dir(name, id))
            .map_err(io_err("removing an upload"))
    }

    /// Whether a request holds the upload right now.
    pub(super) fn upload_in_use(&self, name: &RepoName, id: Uuid) -> bool {
        self.uploads
            .states
            .get(&(name.clone(), id))
            .is_some_and(|cell| cell.try_lock().is_err())
    }

    /// When the upload was started: its `startedat`, or else the age of its
    /// directory; `None` when it does not exist.
    pub(super) fn upload_started(&self, name: &RepoName, id: Uuid) -> Result<Option<SystemTime>> {
        let started = self
            .backend
            .read(&paths::upload_started_at(name, id))
            .map_err(io_err("reading an upload"))?
            .and_then(|b| {
                let text = String::from_utf8_lossy(&b).trim().to_owned();
                time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .map(SystemTime::from);
        if started.is_some() {
            return Ok(started);
        }
        Ok(self
            .backend
            .stat(&paths::upload_dir(name, id))
            .map_err(io_err("reading an upload"))?
            .map(|m| m.modified))
    }
}
