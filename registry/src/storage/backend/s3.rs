//! S3-compatible object storage (distribution's `s3` driver), through the
//! `object_store` crate.
//!
//! # Layout
//!
//! Object `p` is the key `<rootdirectory>/p`, exactly as distribution's s3
//! driver writes it, so one bucket can be served by either registry. The
//! only keys of our own are those of a resumable object in progress (a blob
//! upload between requests), next to its path `p`:
//! - `p.parts`: a small JSON record — the S3 multipart upload id, the parts
//!   uploaded so far (number, ETag, size) and the name of the tail object;
//! - `p.tail.<uuid>`: the bytes after the last part, fewer than a part
//!   needs (S3 parts are at least 5 MiB, chunked uploads send less).
//!
//! The record is the single source of truth and is replaced with one PUT,
//! which S3 makes atomic: a crash leaves the old record (whose tail object
//! is still there, tails are only deleted after the new record is in) or
//! the new one. Any replica can resume from it — that is how an upload
//! started on one registry is finished on another. Listings show a
//! resumable object under its own name `p` and hide the tails.
//!
//! # Calls block
//!
//! The trait is blocking (see `backend`); each call drives its futures to
//! completion on a tokio runtime: the server's (the caller is a thread of
//! its blocking pool) or, for the offline commands, one the backend starts.
//! A caller on a worker thread of a multi-threaded runtime is tolerated
//! (`block_in_place`); one on a current-thread runtime is not.
//!
//! # What S3 does not give
//!
//! - `rename` is a copy and a delete (see `Backend::rename`): `to` appears
//!   whole, `from` may survive a crash.
//! - A committed resumable object is completed at `p` and then copied to
//!   its destination (S3 fixes a multipart upload's key when it starts,
//!   and a blob's digest is only known at the end). Objects over
//!   `multipartcopythresholdsize` are copied by parts (see `copy`), which
//!   is also how objects over Amazon S3's 5 GiB limit of one CopyObject
//!   are copied.
//! - `put_new` uses conditional writes (`If-None-Match: *`) where the
//!   server honours them (Amazon S3, MinIO); Garage ignores the header, so
//!   a probe at start decides, and without them `put_new` writes a nonce
//!   and reads it back (see `put_new_by_readback` for when that holds).
//! - Prefixes have no times: [`PrefixMeta::modified`] is `None`.

use std::fmt;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use self::copy::Copier;
pub use self::copy::{DEFAULT_COPY_CONCURRENCY, DEFAULT_COPY_PART, DEFAULT_COPY_THRESHOLD};
use super::{Backend, Durability, Entry, Error, Meta, PrefixMeta, Result, WriteMode, Writer};

mod copy;

/// The smallest part S3 accepts (but for the last one).
pub const MIN_CHUNK_SIZE: u64 = 5 * 1024 * 1024;
/// distribution's default `chunksize`.
pub const DEFAULT_CHUNK_SIZE: u64 = 10 * 1024 * 1024;
/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Suffix of a resumable object's record.
const PARTS_SUFFIX: &str = ".parts";
/// Infix of a resumable object's tail (`p.tail.<uuid>`).
const TAIL_INFIX: &str = ".tail.";
/// Tries of a delete that S3 refuses as busy, and the first pause between
/// them (then 4× longer each time: 0.1 s, 0.4 s, 1.6 s).
const BUSY_ATTEMPTS: u32 = 4;
const BUSY_PAUSE: Duration = Duration::from_millis(100);

/// The pause after busy try `attempt` (from 1) of a delete.
fn busy_pause(attempt: u32) -> Duration {
    BUSY_PAUSE * 4u32.pow(attempt.saturating_sub(1))
}

/// The `storage.s3` settings, named as distribution names them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:3900`);
    /// empty means Amazon's for the region.
    pub regionendpoint: String,
    pub accesskey: String,
    pub secretkey: String,
    /// Key prefix of everything the registry stores.
    pub rootdirectory: String,
    /// https to the endpoint (when `regionendpoint` has no scheme).
    pub secure: bool,
    /// Path-style requests (`endpoint/bucket/key`) instead of virtual-host
    /// style (`bucket.endpoint/key`).
    pub forcepathstyle: bool,
    /// Size of the parts of a multipart upload.
    pub chunksize: u64,
    /// Copies of objects larger than this (a committed upload to its blob)
    /// are made by parts (UploadPartCopy); smaller ones by one CopyObject.
    pub multipartcopythresholdsize: u64,
    /// Size of the parts of such a copy.
    pub multipartcopychunksize: u64,
    /// Parts of one copy in flight at once.
    pub multipartcopymaxconcurrency: usize,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("regionendpoint", &self.regionendpoint)
            .field("accesskey", &self.accesskey)
            .field("secretkey", &"<redacted>")
            .field("rootdirectory", &self.rootdirectory)
            .field("secure", &self.secure)
            .field("forcepathstyle", &self.forcepathstyle)
            .field("chunksize", &self.chunksize)
            .field(
                "multipartcopythresholdsize",
                &self.multipartcopythresholdsize,
            )
            .field("multipartcopychunksize", &self.multipartcopychunksize)
            .field(
                "multipartcopymaxconcurrency",
                &self.multipartcopymaxconcurrency,
            )
            .finish()
    }
}

impl S3Config {
    /// The endpoint URL with its scheme.
    fn endpoint(&self) -> Option<String> {
        let e = self.regionendpoint.trim();
        if e.is_empty() {
            None
        } else if e.contains("://") {
            Some(e.trim_end_matches('/').to_owned())
        } else {
            let scheme = if self.secure { "https" } else { "http" };
            Some(format!("{scheme}://{}", e.trim_end_matches('/')))
        }
    }
}

/// Where the backend's futures run.
enum Runtime {
    /// The server's runtime; calls come from its blocking pool.
    Handle(tokio::runtime::Handle),
    /// A runtime of our own, for callers outside any runtime.
    Owned(tokio::runtime::Runtime),
}

impl Runtime {
    fn handle(&self) -> &tokio::runtime::Handle {
        match self {
            Runtime::Handle(h) => h,
            Runtime::Owned(rt) => rt.handle(),
        }
    }
}

/// A bucket (under a root prefix) as a [`Backend`].
pub struct S3Backend {
    store: Arc<AmazonS3>,
    /// `rootdirectory` without its slashes; empty for the bucket's root.
    root: String,
    chunk_size: usize,
    runtime: Runtime,
    /// Bucket and endpoint, for messages.
    describe: String,
    /// Whether the server honours `If-None-Match: *` (see `put_new`).
    conditional_writes: bool,
    records: Records,
    copier: Arc<Copier>,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("at", &self.describe)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Connects to the bucket and checks that it can be listed with the
    /// credentials given: a wrong key, a missing bucket or an unreachable
    /// endpoint fail here, with one line saying which.
    pub fn open(config: &S3Config) -> Result<S3Backend> {
        if config.bucket.is_empty() {
            return Err(Error::Invalid("storage.s3.bucket is not set".into()));
        }
        if config.chunksize < MIN_CHUNK_SIZE {
            return Err(Error::Invalid(format!(
                "storage.s3.chunksize {} is below S3's minimum part size of {MIN_CHUNK_SIZE}",
                config.chunksize
            )));
        }
        let endpoint = config.endpoint();
        let region = if config.region.is_empty() {
            "us-east-1"
        } else {
            &config.region
        };
        // Also installs the TLS provider the store's client needs.
        let copier = Copier::new(
            &config.bucket,
            region,
            config.multipartcopythresholdsize,
            config.multipartcopychunksize,
            config.multipartcopymaxconcurrency,
        )?;
        // Credentials and settings from AWS_* variables first, as
        // distribution's AWS SDK reads them; the configuration overrides.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(region)
            .with_virtual_hosted_style_request(!config.forcepathstyle)
            .with_unsigned_payload(payload_protected_in_transit(endpoint.as_deref()))
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(20),
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(
                        endpoint
                            .as_deref()
                            .is_some_and(|e| e.starts_with("http://")),
                    )
                    .with_connect_timeout(Duration::from_secs(5))
                    // Whole requests, bodies included: a part, or a blob
                    // streamed to a slow client.
                    .with_timeout(Duration::from_secs(600)),
            );
        if !config.accesskey.is_empty() {
            builder = builder
                .with_access_key_id(&config.accesskey)
                .with_secret_access_key(&config.secretkey);
        }
        if let Some(e) = &endpoint {
            builder = builder.with_endpoint(e);
        }
        let store = builder
            .build()
            .map_err(|e| Error::Invalid(format!("storage.s3: {e}")))?;
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(h) => Runtime::Handle(h),
            Err(_) => Runtime::Owned(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| Error::io("starting the S3 client's runtime", &e))?,
            ),
        };
        let describe = format!(
            "bucket {:?} at {}",
            config.bucket,
            endpoint.as_deref().unwrap_or("Amazon S3")
        );
        let backend = S3Backend {
            store: Arc::new(store),
            root: config.rootdirectory.trim_matches('/').to_owned(),
            chunk_size: usize::try_from(config.chunksize).unwrap_or(usize::MAX),
            runtime,
            describe,
            conditional_writes: false,
            records: Records::default(),
            copier: Arc::new(copier),
        };
        // On a thread of its own: `open` may be called from async code
        // (the server's start), where blocking on the runtime is forbidden.
        let conditional = std::thread::scope(|s| {
            s.spawn(|| {
                backend.check()?;
                backend.block_on(probe_conditional_writes(&backend.store, &backend.root))
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Io("checking the bucket panicked".into())))
        })?;
        let mut backend = backend;
        backend.conditional_writes = conditional;
        Ok(backend)
    }

    /// One listing request under the root: proves endpoint, bucket and
    /// credentials.
    fn check(&self) -> Result<()> {
        let root = self.key_of(Path::new(""));
        let store = self.store.clone();
        let first = self.block_on(async move {
            let mut listing = store.list(Some(&root));
            listing.next().await.transpose()
        });
        let Err(e) = first else { return Ok(()) };
        let said = server_said(&e);
        let what = &self.describe;
        if said.contains("NoSuchBucket") {
            return Err(Error::NotFound(format!("{what}: no such bucket{said}")));
        }
        Err(match map_err(e, "") {
            Error::NotFound(_) => Error::NotFound(format!("{what}: no such bucket{said}")),
            Error::Unavailable(m) if said.is_empty() => {
                Error::Unavailable(format!("cannot reach {what}: {m}"))
            }
            Error::Unavailable(_) => Error::Unavailable(format!("{what} is unavailable{said}")),
            Error::Io(_) if said.contains("AccessDenied") || said.contains("Forbidden") => {
                Error::Io(format!(
                    "{what}: access denied, check storage.s3.accesskey and secretkey{said}"
                ))
            }
            other => other.context(&format!("reaching {what}")),
        })
    }

    /// Runs a future to completion from a thread that may block.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        wait(self.runtime.handle(), f)
    }

    /// The key of a path (relative to the storage root).
    fn key_of(&self, path: &Path) -> Key {
        key_in(&self.root, path)
    }

    fn with_suffix(key: &Key, suffix: &str) -> Key {
        Key::from(format!("{key}{suffix}"))
    }

    /// An object's metadata, `None` when absent.
    async fn head(store: &AmazonS3, key: &Key) -> Result<Option<Meta>> {
        match store.head(key).await {
            Ok(m) => Ok(Some(Meta {
                size: m.size,
                modified: m.last_modified.into(),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e, key.as_ref())),
        }
    }

    /// A small object whole, `None` when absent.
    async fn fetch(store: &AmazonS3, key: &Key) -> Result<Option<(Bytes, SystemTime)>> {
        match store.get(key).await {
            Ok(r) => {
                let modified = r.meta.last_modified.into();
                let data = r.bytes().await.map_err(|e| map_err(e, key.as_ref()))?;
                Ok(Some((data, modified)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e, key.as_ref())),
        }
    }

    /// The record of the resumable object at `key`, with its own time.
    async fn record(
        store: &AmazonS3,
        records: &Records,
        key: &Key,
    ) -> Result<Option<(Record, SystemTime)>> {
        let rkey = Self::with_suffix(key, PARTS_SUFFIX);
        let known = records.known.get(&rkey);
        let options = GetOptions::new().with_if_none_match(known.as_ref().map(|k| k.etag.clone()));
        let got = match store.get_opts(&rkey, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotModified { .. }) => {
                if let Some(k) = known {
                    #[cfg(test)]
                    records
                        .confirmed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Some((k.record.clone(), k.modified)));
                }
                return Err(Error::Io(format!(
                    "{rkey}: the server answered 304 to an unconditional read"
                )));
            }
            Err(object_store::Error::NotFound { .. }) => {
                records.known.invalidate(&rkey);
                return Ok(None);
            }
            Err(e) => return Err(map_err(e, rkey.as_ref())),
        };
        let modified: SystemTime = got.meta.last_modified.into();
        let etag = got.meta.e_tag.clone();
        let data = got.bytes().await.map_err(|e| map_err(e, rkey.as_ref()))?;
        let record: Record = serde_json::from_slice(&data)
            .map_err(|e| Error::Io(format!("unreadable upload record {rkey}: {e}")))?;
        records.remember(rkey, etag, &record, modified);
        Ok(Some((record, modified)))
    }

    /// Deletes one key; absent is fine. S3 answers a delete (object_store
    /// sends DeleteObjects) with a 200 that may hold a per-key error, which
    /// object_store's retries never see: a busy server's is tried again
    /// here.
    async fn delete_key(store: &AmazonS3, key: &Key) -> Result<()> {
        let mut attempt = 1;
        loop {
            match store.delete(key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => return Ok(()),
                Err(e) if attempt < BUSY_ATTEMPTS && busy_key(&e) => {
                    tracing::debug!(%key, error = %e, "S3 is busy, deleting again");
                }
                Err(e) => return Err(map_err(e, key.as_ref())),
            }
            tokio::time::sleep(busy_pause(attempt)).await;
            attempt += 1;
        }
    }

    /// Deletes what `cleanup` removes once an operation has succeeded
    /// without it (the leftovers of a committed upload, a replaced tail).
    /// A failure is logged, not returned: what stays is under the upload's
    /// prefix, which its removal or the purge of old uploads deletes.
    async fn tidy(what: &str, key: &Key, cleanup: impl Future<Output = Result<()>>) {
        if let Err(e) = cleanup.await {
            tracing::warn!(%key, error = %e, "{what} not deleted; the upload's removal will");
        }
    }

    /// Discards a resumable object: its multipart upload, tail and record.
    async fn discard(store: &AmazonS3, key: &Key, record: &Record) -> Result<()> {
        if let Some(id) = &record.upload_id {
            match store.abort_multipart(key, id).await {
                // Already completed or aborted: nothing left to free.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err(e, key.as_ref())),
            }
        }
        if let Some(tail) = &record.tail {
            Self::delete_key(store, &Self::with_suffix(key, tail)).await?;
        }
        Self::delete_key(store, &Self::with_suffix(key, PARTS_SUFFIX)).await
    }

    /// The prefix key of `prefix` with a trailing `/` dropped, or `None`
    /// for the bucket's root.
    fn prefix_key(&self, prefix: &Path) -> Option<Key> {
        let key = self.key_of(prefix);
        (!key.as_ref().is_empty()).then_some(key)
    }

    /// `key` relative to `prefix` (both as text).
    fn relative<'a>(prefix: Option<&Key>, key: &'a Key) -> &'a str {
        let k = key.as_ref();
        match prefix {
            Some(p) => k
                .strip_prefix(p.as_ref())
                .map_or(k, |r| r.trim_start_matches('/')),
            None => k,
        }
    }
}

/// What a resumable object is made of; stored as JSON at `p.parts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    /// The multipart upload, once a part was needed.
    upload_id: Option<String>,
    /// Parts in order: part `i` is S3 part number `i + 1`.
    parts: Vec<Part>,
    /// Suffix of the tail object (`.tail.<uuid>`), when there is a tail.
    tail: Option<String>,
    tail_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    etag: String,
    size: u64,
}

impl Record {
    fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.tail_size
    }

    /// The parts as CompleteMultipartUpload names them.
    fn part_ids(&self) -> Vec<PartId> {
        self.parts
            .iter()
            .map(|p| PartId {
                content_id: p.etag.clone(),
            })
            .collect()
    }
}

/// What an S3 server said in its XML error (`Code: Message`), as
/// ` (server said: …)`, or nothing when the error holds no such answer.
fn server_said(e: &object_store::Error) -> String {
    xml_error(&e.to_string()).map_or_else(String::new, |said| format!(" (server said: {said})"))
}

/// The `Code: Message` (or `Code`) of an S3 XML error in `text`.
fn xml_error(text: &str) -> Option<String> {
    let code = xml_tag(text, "Code")?;
    Some(match xml_tag(text, "Message") {
        Some(m) => format!("{code}: {m}"),
        None => code,
    })
}

/// The text of the first element `name` in `xml` (S3's answers are
/// flat enough for this).
fn xml_tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find("</")?;
    Some(xml[start..start + len].to_owned())
}

/// Maps an `object_store` error to the storage layer's kinds: absent,
/// lost a race, unreachable or overloaded (worth a retry later), other.
fn map_err(e: object_store::Error, what: &str) -> Error {
    use object_store::Error as E;
    let what = if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    };
    match e {
        E::NotFound { .. } => Error::NotFound(format!("{what}{e}")),
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } => {
            Error::Conflict(format!("{what}{e}"))
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::Io(format!(
            "{what}: access refused, check storage.s3.accesskey and secretkey: {e}"
        )),
        other => {
            if is_unavailable(&other) {
                Error::Unavailable(format!("{what}{other}"))
            } else {
                Error::Io(format!("{what}{other}"))
            }
        }
    }
}

/// Whether an error says the server could not be reached, timed out, or
/// answered 5xx / 429 (throttling), for the whole request or for one key
/// of a DeleteObjects.
fn is_unavailable(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if busy_key(err) {
            return true;
        }
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            return matches!(h.kind(), K::Connect | K::Timeout | K::Request);
        }
        // The status of an answer is only in the text of object_store's
        // (private) retry error: "... status code: 503 Service Unavailable".
        let text = err.to_string();
        if let Some((_, rest)) = text.split_once("status code: ") {
            return rest.starts_with('5') || rest.starts_with("429");
        }
        cur = err.source();
    }
    false
}

/// Whether an error is a DeleteObjects answer's per-key error that S3
/// gives for a busy server (`SlowDown`, `ServiceUnavailable`,
/// `InternalError`); object_store keeps the code only in its text:
/// "DeleteObjects request failed for key …: … (code: SlowDown)".
fn busy_key(e: &(dyn std::error::Error + 'static)) -> bool {
    let text = e.to_string();
    text.contains("DeleteObjects request failed for key")
        && ["SlowDown", "ServiceUnavailable", "InternalError"]
            .iter()
            .any(|code| text.contains(&format!("(code: {code})")))
}

impl Backend for S3Backend {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        let key = self.key_of(path);
        self.block_on(Self::fetch(&self.store, &key))
            .map(|o| o.map(|(data, _)| data))
    }

    fn read_from(&self, path: &Path, offset: u64) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        let key = self.key_of(path);
        let store = self.store.clone();
        let opened = self.block_on(async move {
            // A range starting at the size is unsatisfiable for S3 (416):
            // the size decides first, then the ranged GET.
            let options = if offset == 0 {
                GetOptions::default()
            } else {
                let Some(meta) = Self::head(&store, &key).await? else {
                    return Ok(None);
                };
                if offset > meta.size {
                    return Err(Error::Invalid(format!(
                        "offset {offset} is past the end ({} bytes)",
                        meta.size
                    )));
                }
                if offset == meta.size {
                    return Ok(Some((None, meta.size)));
                }
                GetOptions {
                    range: Some(GetRange::Offset(offset)),
                    ..GetOptions::default()
                }
            };
            match store.get_opts(&key, options).await {
                Ok(r) => {
                    let size = r.meta.size;
                    Ok(Some((Some(r.into_stream()), size)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(map_err(e, key.as_ref())),
            }
        })?;
        Ok(opened.map(|(stream, size)| {
            let reader: Box<dyn Read + Send> = Box::new(StreamReader {
                stream,
                handle: self.runtime.handle().clone(),
                chunk: Bytes::new(),
                left: size - offset,
            });
            (reader, size)
        }))
    }

    fn stat(&self, path: &Path) -> Result<Option<Meta>> {
        let key = self.key_of(path);
        let store = &self.store;
        self.block_on(async {
            let (object, record) = tokio::join!(
                Self::head(store, &key),
                Self::record(store, &self.records, &key)
            );
            if let Some(meta) = object? {
                return Ok(Some(meta));
            }
            Ok(record?.map(|(r, modified)| Meta {
                size: r.size(),
                modified,
            }))
        })
    }

    fn stat_prefix(&self, prefix: &Path) -> Result<Option<PrefixMeta>> {
        let key = self.prefix_key(prefix);
        let store = self.store.clone();
        let first = self.block_on(async move {
            let mut listing = store.list(key.as_ref());
            listing.next().await.transpose()
        });
        first
            .map(|o| o.map(|_| PrefixMeta { modified: None }))
            .map_err(|e| map_err(e, &prefix.to_string_lossy()))
    }

    fn list(&self, prefix: &Path) -> Result<Vec<Entry>> {
        let key = self.prefix_key(prefix);
        let listed = self
            .block_on(self.store.list_with_delimiter(key.as_ref()))
            .map_err(|e| map_err(e, &prefix.to_string_lossy()))?;
        let mut out: Vec<Entry> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .map(|name| Entry {
                name: name.to_owned(),
                is_prefix: true,
            })
            .collect();
        let mut objects: Vec<String> = Vec::new();
        for o in &listed.objects {
            let Some(name) = o.location.filename() else {
                continue;
            };
            if let Some(base) = name.strip_suffix(PARTS_SUFFIX) {
                objects.push(base.to_owned());
            } else if !name.contains(TAIL_INFIX) {
                objects.push(name.to_owned());
            }
        }
        objects.sort_unstable();
        objects.dedup();
        out.extend(objects.into_iter().map(|name| Entry {
            name,
            is_prefix: false,
        }));
        Ok(out)
    }

    fn list_prefixes_page(
        &self,
        prefix: &Path,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<String>, Option<String>)> {
        // ListObjectsV2 with a delimiter, `start-after` and `max-keys`: the
        // page alone, however large the listing is.
        let base = self
            .prefix_key(prefix)
            .map_or_else(String::new, |k| format!("{k}/"));
        let opts = PaginatedListOptions {
            offset: start_after.map(|after| format!("{base}{after}")),
            delimiter: Some("/".into()),
            max_keys: Some(max.clamp(1, 1000)),
            ..PaginatedListOptions::default()
        };
        let page = self
            .block_on(
                self.store
                    .list_paginated((!base.is_empty()).then_some(base.as_str()), opts),
            )
            .map_err(|e| map_err(e, &prefix.to_string_lossy()))?;
        let names: Vec<String> = page
            .result
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename())
            .map(str::to_owned)
            .collect();
        // The page's last key, directories with their `/`, is where the
        // next one starts.
        let next = page.page_token.is_some().then(|| {
            let dirs = names.iter().map(|n| format!("{n}/"));
            let objects = page
                .result
                .objects
                .iter()
                .filter_map(|o| o.location.filename().map(str::to_owned));
            dirs.chain(objects).max().unwrap_or_default()
        });
        if next.as_deref() == Some("") {
            return Err(Error::Io(format!(
                "listing {}: a page was cut but held no key",
                prefix.display()
            )));
        }
        Ok((names, next))
    }

    fn walk(&self, prefix: &Path, f: &mut dyn FnMut(&Path, Meta) -> Result<()>) -> Result<()> {
        let pkey = self.prefix_key(prefix);
        let mut listing = self.store.list(pkey.as_ref());
        let handle = self.runtime.handle().clone();
        loop {
            // One page at a time; `f` runs between pages on this thread.
            let next = wait(&handle, listing.next());
            let Some(item) = next else { return Ok(()) };
            let o = item.map_err(|e| map_err(e, &prefix.to_string_lossy()))?;
            let rel = Self::relative(pkey.as_ref(), &o.location).to_owned();
            if rel.contains(TAIL_INFIX) {
                continue;
            }
            if let Some(base) = rel.strip_suffix(PARTS_SUFFIX) {
                // A resumable object: reported under its own name, with its
                // size so far (unless it was completed meanwhile).
                let key = self.key_of(&prefix.join(base));
                if let Some((record, modified)) =
                    self.block_on(Self::record(&self.store, &self.records, &key))?
                {
                    f(
                        Path::new(base),
                        Meta {
                            size: record.size(),
                            modified,
                        },
                    )?;
                }
                continue;
            }
            f(
                Path::new(&rel),
                Meta {
                    size: o.size,
                    modified: o.last_modified.into(),
                },
            )?;
        }
    }

    fn put(&self, path: &Path, data: &[u8], _: Durability) -> Result<()> {
        let key = self.key_of(path);
        let payload = PutPayload::from(Bytes::copy_from_slice(data));
        self.block_on(self.store.put(&key, payload))
            .map(|_| ())
            .map_err(|e| map_err(e, key.as_ref()))
    }

    fn put_new(&self, path: &Path, data: &[u8]) -> Result<bool> {
        let key = self.key_of(path);
        let data = Bytes::copy_from_slice(data);
        if self.conditional_writes {
            return self.block_on(put_if_absent(&self.store, &key, data));
        }
        self.block_on(put_new_by_readback(&self.store, &key, data))
    }

    fn writer(&self, path: &Path, mode: WriteMode) -> Result<Box<dyn Writer>> {
        let key = self.key_of(path);
        let store = self.store.clone();
        let (record, buf) = self.block_on(async {
            let existing = Self::record(&store, &self.records, &key).await?;
            match mode {
                WriteMode::Create => {
                    if let Some((old, _)) = existing {
                        Self::discard(&store, &key, &old).await?;
                    }
                    Self::delete_key(&store, &key).await?;
                    let record = Record::default();
                    put_record(&store, &self.records, &key, &record).await?;
                    Ok::<_, Error>((record, Pending::default()))
                }
                WriteMode::Resume { size } => {
                    let Some((record, _)) = existing else {
                        return Err(Error::NotFound(format!("resumable object {key}")));
                    };
                    if record.size() != size {
                        return Err(Error::Invalid(format!(
                            "resumable object {key} holds {} bytes, not {size}",
                            record.size()
                        )));
                    }
                    let mut buf = Pending::default();
                    if let Some(tail) = &record.tail {
                        let tkey = Self::with_suffix(&key, tail);
                        let (data, _) = Self::fetch(&store, &tkey).await?.ok_or_else(|| {
                            Error::Io(format!("the tail {tkey} of an upload is missing"))
                        })?;
                        if data.len() as u64 != record.tail_size {
                            return Err(Error::Io(format!(
                                "the tail {tkey} of an upload holds {} bytes, not {}",
                                data.len(),
                                record.tail_size
                            )));
                        }
                        buf.push(data);
                    }
                    Ok((record, buf))
                }
            }
        })?;
        Ok(Box::new(S3Writer {
            store,
            handle: self.runtime.handle().clone(),
            root: self.root.clone(),
            key,
            chunk_size: self.chunk_size,
            committed_parts: record.parts.len(),
            record,
            buf,
            in_flight: Vec::new(),
            records: self.records.clone(),
            copier: self.copier.clone(),
        }))
    }

    fn delete(&self, path: &Path, _stop: &Path) -> Result<bool> {
        let key = self.key_of(path);
        let store = &self.store;
        self.block_on(async {
            let (object, record) = tokio::join!(
                Self::head(store, &key),
                Self::record(store, &self.records, &key)
            );
            let existed = object?.is_some();
            if existed {
                Self::delete_key(store, &key).await?;
            }
            let record = record?;
            if let Some((r, _)) = &record {
                Self::discard(store, &key, r).await?;
            }
            Ok(existed || record.is_some())
        })
    }

    fn delete_prefix(&self, prefix: &Path, _stop: &Path) -> Result<bool> {
        let Some(pkey) = self.prefix_key(prefix) else {
            return Err(Error::Invalid("refusing to delete the whole bucket".into()));
        };
        let store = &self.store;
        self.block_on(async {
            let mut found = false;
            for round in 1..=BUSY_ATTEMPTS {
                let mut keys: Vec<Key> = Vec::new();
                let mut listing = store.list(Some(&pkey));
                while let Some(item) = listing.next().await {
                    let o = item.map_err(|e| map_err(e, pkey.as_ref()))?;
                    keys.push(o.location);
                }
                // Multipart uploads hold parts outside any listing: abort
                // them.
                for k in &keys {
                    if let Some(base) = k.as_ref().strip_suffix(PARTS_SUFFIX) {
                        let base = Key::from(base);
                        if let Some((r, _)) = Self::record(store, &self.records, &base).await? {
                            Self::discard(store, &base, &r).await?;
                        }
                    }
                }
                found |= !keys.is_empty();
                let stream = futures_util::stream::iter(keys.into_iter().map(Ok)).boxed();
                let mut deleted = store.delete_stream(stream);
                let mut busy = None;
                while let Some(r) = deleted.next().await {
                    match r {
                        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                        // Keys S3 was too busy to delete: listed and
                        // deleted again in the next round.
                        Err(e) if round < BUSY_ATTEMPTS && busy_key(&e) => busy = Some(e),
                        Err(e) => return Err(map_err(e, pkey.as_ref())),
                    }
                }
                let Some(e) = busy else { break };
                tracing::debug!(prefix = %pkey, error = %e, "S3 is busy, deleting again");
                tokio::time::sleep(busy_pause(round)).await;
            }
            Ok(found)
        })
    }

    fn presigned_get(&self, path: &Path, expires: Duration) -> Result<Option<String>> {
        let key = self.key_of(path);
        self.block_on(self.store.signed_url(http::Method::GET, &key, expires))
            .map(|u| Some(u.to_string()))
            .map_err(|e| map_err(e, key.as_ref()))
    }

    fn rename(&self, from: &Path, to: &Path, _stop: &Path, _: Durability) -> Result<()> {
        let (src, dst) = (self.key_of(from), self.key_of(to));
        self.block_on(async {
            self.copier.copy(&self.store, &src, &dst, None).await?;
            Self::delete_key(&self.store, &src).await
        })
        .map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("moving {}", from.display())),
            other => other,
        })
    }
}

/// Whether request bodies reach the endpoint unaltered without a SigV4
/// payload hash: over https (TLS protects them), or over plain http to
/// this machine. Signing a payload hashes every byte of every part a
/// second time (the digest check is the first) before the part can be
/// sent; over http to another host the signature is what keeps the bytes
/// from being altered on the way, so it stays.
fn payload_protected_in_transit(endpoint: Option<&str>) -> bool {
    let Some(endpoint) = endpoint else {
        return true; // Amazon S3: https
    };
    let Ok(uri) = endpoint.parse::<http::Uri>() else {
        return false;
    };
    match uri.scheme_str() {
        Some("https") => true,
        Some("http") => uri.host().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// Runs a future to completion on `handle`'s runtime from a thread that
/// may block: a thread of the blocking pool or outside any runtime, or a
/// worker of a multi-threaded runtime, which `block_in_place` first turns
/// into a blocking thread (code that calls storage from async code, such
/// as tests, instead of through `Storage::run`).
fn wait<F: Future>(handle: &tokio::runtime::Handle, f: F) -> F::Output {
    tokio::task::block_in_place(|| handle.block_on(f))
}

/// The key of `path` under the root prefix `root`.
fn key_in(root: &str, path: &Path) -> Key {
    let rel = path.to_string_lossy();
    let rel = rel.trim_matches('/');
    match (root.is_empty(), rel.is_empty()) {
        (true, _) => Key::from(rel),
        (false, true) => Key::from(root),
        (false, false) => Key::from(format!("{root}/{rel}")),
    }
}

/// `put_new` where the server honours `If-None-Match: *`.
async fn put_if_absent(store: &AmazonS3, key: &Key, data: Bytes) -> Result<bool> {
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store.put_opts(key, PutPayload::from(data), options).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(map_err(e, key.as_ref())),
    }
}

/// The user metadata that tells writers of `put_new_by_readback` apart.
const NONCE: &str = "registry-nonce";
/// How long `put_new_by_readback` lets concurrent writes land.
const READBACK_DELAY: Duration = Duration::from_millis(300);

/// `put_new` where the server ignores conditional writes (Garage): absent
/// → write with a nonce of ours → wait → read the nonce back. Of writers
/// that raced past the absence check, the one whose write landed last is
/// the one every one of them reads back, so exactly one wins — provided
/// the writes land within [`READBACK_DELAY`] and reads see the latest
/// write (Garage with one node or quorum reads; Amazon S3 since 2020).
async fn put_new_by_readback(store: &AmazonS3, key: &Key, data: Bytes) -> Result<bool> {
    if S3Backend::head(store, key).await?.is_some() {
        return Ok(false);
    }
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let mut attributes = object_store::Attributes::new();
    attributes.insert(
        object_store::Attribute::Metadata(NONCE.into()),
        nonce.clone().into(),
    );
    let options = PutOptions {
        attributes,
        ..PutOptions::default()
    };
    store
        .put_opts(key, PutPayload::from(data), options)
        .await
        .map_err(|e| map_err(e, key.as_ref()))?;
    tokio::time::sleep(READBACK_DELAY).await;
    let options = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let got = store
        .get_opts(key, options)
        .await
        .map_err(|e| map_err(e, key.as_ref()))?;
    let theirs = got
        .attributes
        .get(&object_store::Attribute::Metadata(NONCE.into()))
        .map(|v| v.as_ref().to_owned());
    Ok(theirs.as_deref() == Some(nonce.as_str()))
}

/// Whether the server refuses a second `If-None-Match: *` write of one key
/// (Amazon S3, MinIO) or silently overwrites (Garage): tried once, on a
/// key of its own, when the backend opens.
async fn probe_conditional_writes(store: &AmazonS3, root: &str) -> Result<bool> {
    let key = key_in(
        root,
        Path::new(&format!(".probe-{}", uuid::Uuid::new_v4().simple())),
    );
    let first = put_if_absent(store, &key, Bytes::from_static(b"1")).await;
    let second = match first {
        Ok(_) => put_if_absent(store, &key, Bytes::from_static(b"2")).await,
        Err(e) => Err(e),
    };
    S3Backend::delete_key(store, &key).await?;
    match second {
        Ok(refused_second) => Ok(!refused_second),
        // Refused as unsupported (501): the same as ignored.
        Err(Error::Io(m)) if m.contains("501") || m.contains("NotImplemented") => Ok(false),
        Err(e) => Err(e),
    }
}

async fn put_record(store: &AmazonS3, records: &Records, key: &Key, record: &Record) -> Result<()> {
    let rkey = S3Backend::with_suffix(key, PARTS_SUFFIX);
    let json =
        serde_json::to_vec(record).map_err(|e| Error::Io(format!("encoding {rkey}: {e}")))?;
    // Whatever happens to the write, what is remembered is no longer sure.
    records.known.invalidate(&rkey);
    let put = store
        .put(&rkey, PutPayload::from(json))
        .await
        .map_err(|e| map_err(e, rkey.as_ref()))?;
    records.remember(rkey, put.e_tag, record, SystemTime::now());
    Ok(())
}

/// Upload records as this process last read or wrote them, with the ETag
/// the server gave them. A record is read again each time an upload
/// continues (another replica may have written it), but as a conditional
/// GET (`If-None-Match`): an unchanged record costs a `304` without a body.
///
/// Why not simply a GET: Garage answers a GET of an object over 3 KiB
/// (a record of about 50 parts and more) with its headers and its body in
/// two writes on a connection without `TCP_NODELAY`, and on a reused
/// connection the body then waits for our delayed ACK: 40 ms per read,
/// twice per chunk of a chunked upload. A `304` is one write.
///
/// The cache is only ever a shortcut to the same bytes: an entry is used
/// only when the server confirms its ETag is still the object's.
#[derive(Clone)]
struct Records {
    known: moka::sync::Cache<Key, Arc<KnownRecord>>,
    /// Reads answered from `known` after a `304`.
    #[cfg(test)]
    confirmed: Arc<std::sync::atomic::AtomicUsize>,
}

struct KnownRecord {
    etag: String,
    record: Record,
    /// The server's time for a record read, ours for one written.
    modified: SystemTime,
}

impl Default for Records {
    fn default() -> Records {
        Records {
            known: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            #[cfg(test)]
            confirmed: Arc::default(),
        }
    }
}

impl Records {
    fn remember(&self, rkey: Key, etag: Option<String>, record: &Record, modified: SystemTime) {
        match etag {
            Some(etag) => self.known.insert(
                rkey,
                Arc::new(KnownRecord {
                    etag,
                    record: record.clone(),
                    modified,
                }),
            ),
            None => self.known.invalidate(&rkey),
        }
    }
}

/// Reads an object's body stream from a blocking thread.
struct StreamReader {
    stream: Option<futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>>,
    handle: tokio::runtime::Handle,
    chunk: Bytes,
    /// Bytes still announced; the stream must deliver exactly these.
    left: u64,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let Some(stream) = self.stream.as_mut() else {
                return Ok(0);
            };
            match wait(&self.handle, stream.next()) {
                Some(Ok(chunk)) => {
                    if chunk.len() as u64 > self.left {
                        return Err(io::Error::other("the object is longer than announced"));
                    }
                    self.left -= chunk.len() as u64;
                    self.chunk = chunk;
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
                None if self.left > 0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the object ended {} bytes early", self.left),
                    ));
                }
                None => {
                    self.stream = None;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

/// Bytes written and not yet sent, kept as the pieces they came in: a part
/// is sent as those pieces (cut where it ends), so the data is not copied
/// on its way from the request to S3.
#[derive(Debug, Default)]
struct Pending {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    /// Takes the first `n` bytes (at most all of them).
    fn take(&mut self, n: usize) -> PutPayload {
        let mut left = n.min(self.len);
        self.len -= left;
        let mut taken = Vec::new();
        let mut rest = std::mem::take(&mut self.pieces).into_iter();
        while left > 0 {
            let Some(mut piece) = rest.next() else { break };
            if piece.len() > left {
                let head = piece.split_to(left);
                self.pieces.push(piece);
                left = 0;
                taken.push(head);
            } else {
                left -= piece.len();
                taken.push(piece);
            }
        }
        self.pieces.extend(rest);
        taken.into_iter().collect()
    }

    fn into_payload(self) -> PutPayload {
        self.pieces.into_iter().collect()
    }
}

/// A part upload in flight: its index and the task.
type InFlight = (usize, u64, JoinHandle<object_store::Result<PartId>>);

/// Writes a resumable object as an S3 multipart upload, a part at a time
/// (up to [`PARTS_IN_FLIGHT`] at once), keeping what is short of a part in
/// memory until `close` stores it as the tail.
struct S3Writer {
    store: Arc<AmazonS3>,
    handle: tokio::runtime::Handle,
    /// The backend's root prefix, for the destination of `commit`.
    root: String,
    key: Key,
    chunk_size: usize,
    /// Parts recorded when the writer was opened: `abort` keeps these.
    committed_parts: usize,
    record: Record,
    /// Bytes after the last part sent.
    buf: Pending,
    in_flight: Vec<InFlight>,
    records: Records,
    copier: Arc<Copier>,
}

impl fmt::Debug for S3Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Writer")
            .field("key", &self.key)
            .field("parts", &self.record.parts.len())
            .finish_non_exhaustive()
    }
}

impl S3Writer {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        wait(&self.handle, f)
    }

    /// Starts the multipart upload if there is none yet, and records it at
    /// once, so that a writer that dies leaves nothing unfindable.
    fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.record.upload_id {
            return Ok(id.clone());
        }
        let id = self
            .block_on(self.store.create_multipart(&self.key))
            .map_err(|e| map_err(e, self.key.as_ref()))?;
        self.record.upload_id = Some(id.clone());
        let mut on_record = self.record.clone();
        on_record.parts.truncate(self.committed_parts);
        self.block_on(put_record(
            &self.store,
            &self.records,
            &self.key,
            &on_record,
        ))?;
        Ok(id)
    }

    /// Sends `data` as the next part.
    fn send_part(&mut self, data: PutPayload) -> Result<()> {
        let id = self.upload_id()?;
        if self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.settle_one()?;
        }
        let idx = self.record.parts.len() + self.in_flight.len();
        let size = data.content_length() as u64;
        let store = self.store.clone();
        let key = self.key.clone();
        let task = self
            .handle
            .spawn(async move { store.put_part(&key, &id, idx, data).await });
        self.in_flight.push((idx, size, task));
        Ok(())
    }

    /// Waits for the oldest part in flight and records it.
    fn settle_one(&mut self) -> Result<()> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let (idx, size, task) = self.in_flight.remove(0);
        let part = self
            .block_on(task)
            .map_err(|e| Error::Io(format!("uploading a part of {}: {e}", self.key)))?
            .map_err(|e| map_err(e, self.key.as_ref()))?;
        debug_assert_eq!(idx, self.record.parts.len());
        self.record.parts.push(Part {
            etag: part.content_id,
            size,
        });
        Ok(())
    }

    /// Sends `tail` as the last part (it may be short) and completes the
    /// multipart upload `id` at the writer's key.
    fn complete(&mut self, id: String, tail: PutPayload) -> Result<()> {
        if tail.content_length() > 0 {
            self.send_part(tail)?;
        }
        self.settle_all()?;
        let parts = self.record.part_ids();
        let (store, key) = (self.store.clone(), self.key.clone());
        self.block_on(async move {
            store
                .complete_multipart(&key, &id, parts)
                .await
                .map(|_| ())
                .map_err(|e| map_err(e, key.as_ref()))
        })
    }

    fn settle_all(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_one()?;
        }
        Ok(())
    }
}

impl Writer for S3Writer {
    fn size(&self) -> u64 {
        self.record.parts.iter().map(|p| p.size).sum::<u64>()
            + self.in_flight.iter().map(|f| f.1).sum::<u64>()
            + self.buf.len() as u64
    }

    fn write(&mut self, data: Bytes) -> Result<()> {
        self.buf.push(data);
        while self.buf.len() >= self.chunk_size {
            let part = self.buf.take(self.chunk_size);
            self.send_part(part)?;
        }
        Ok(())
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        // What is left goes out as one more part when S3 accepts it as
        // one (parts need not be of equal size), so the next writer need
        // not fetch it back: only a rest under the minimum part size is
        // kept as a tail object.
        if self.buf.len() as u64 >= MIN_CHUNK_SIZE {
            let rest = std::mem::take(&mut self.buf).into_payload();
            self.send_part(rest)?;
        }
        self.settle_all()?;
        let old_tail = self.record.tail.take();
        let tail = std::mem::take(&mut self.buf).into_payload();
        let store = self.store.clone();
        let key = self.key.clone();
        let mut record = self.record.clone();
        let records = self.records.clone();
        self.block_on(async move {
            record.tail_size = tail.content_length() as u64;
            if tail.content_length() > 0 {
                let suffix = format!("{TAIL_INFIX}{}", uuid::Uuid::new_v4().simple());
                let tkey = S3Backend::with_suffix(&key, &suffix);
                store
                    .put(&tkey, tail)
                    .await
                    .map_err(|e| map_err(e, tkey.as_ref()))?;
                record.tail = Some(suffix);
            }
            put_record(&store, &records, &key, &record).await?;
            if let Some(old) = old_tail {
                let okey = S3Backend::with_suffix(&key, &old);
                S3Backend::tidy(
                    "a replaced tail",
                    &key,
                    S3Backend::delete_key(&store, &okey),
                )
                .await;
            }
            Ok(())
        })
    }

    fn abort(self: Box<Self>) -> Result<()> {
        // Parts sent by this writer are not in the record; the next writer
        // reuses their numbers, which replaces them. A multipart upload this
        // writer started is in the record (see `upload_id`) and is freed by
        // the upload's deletion.
        for (_, _, task) in &self.in_flight {
            task.abort();
        }
        Ok(())
    }

    fn commit(mut self: Box<Self>, dest: &Path) -> Result<()> {
        self.settle_all()?;
        let dest = key_in(&self.root, dest);
        let size = self.size();
        let tail = std::mem::take(&mut self.buf).into_payload();
        let upload = self.record.upload_id.clone();
        match upload {
            Some(id) if !self.record.parts.is_empty() => {
                let (store, key) = (self.store.clone(), self.key.clone());
                match self.complete(id, tail) {
                    Ok(()) => {}
                    // A commit before this one completed the multipart
                    // upload and then failed (its copy): the upload id is
                    // gone and the object is at `key`, whole. A retried
                    // commit goes on from there.
                    Err(Error::NotFound(m)) => {
                        let whole = self.block_on(S3Backend::head(&store, &key))?;
                        if whole.is_none_or(|w| w.size != size) {
                            return Err(Error::NotFound(m));
                        }
                    }
                    Err(e) => return Err(e),
                }
                let copier = self.copier.clone();
                self.block_on(copier.copy(&store, &key, &dest, Some(size)))?;
            }
            _ => {
                // Everything is in the tail: one PUT.
                let store = self.store.clone();
                self.block_on(async move {
                    store
                        .put(&dest, tail)
                        .await
                        .map_err(|e| map_err(e, dest.as_ref()))
                })?;
            }
        }
        // The object is at its destination: the resumable object's remains
        // go (the completed upload, or a multipart upload started without a
        // part recorded; the tail; the record last, as it names the rest).
        let (store, key) = (self.store.clone(), self.key.clone());
        let mut remains = std::mem::take(&mut self.record);
        let completed = !remains.parts.is_empty() && remains.upload_id.is_some();
        if completed {
            // Nothing to abort: the upload is the object at `key`.
            remains.upload_id = None;
        }
        self.records
            .known
            .invalidate(&S3Backend::with_suffix(&key, PARTS_SUFFIX));
        self.block_on(S3Backend::tidy(
            "a committed upload's remains",
            &key,
            async {
                if completed {
                    S3Backend::delete_key(&store, &key).await?;
                }
                S3Backend::discard(&store, &key, &remains).await
            },
        ));
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use e2e::garage::{Garage, REGION};

    use object_store::PutPayload;
    use object_store::multipart::MultipartStore;

    use super::{
        DEFAULT_COPY_CONCURRENCY, DEFAULT_COPY_PART, DEFAULT_COPY_THRESHOLD, MIN_CHUNK_SIZE,
        S3Backend, S3Config,
    };
    use crate::storage::backend::suite::Fixture;
    use crate::storage::backend::{Backend, Error, WriteMode};

    /// A Garage of its own and a backend on a fresh root in its bucket.
    struct GarageFixture {
        // The backend goes first: Garage stops at once only when no client
        // holds a connection open.
        backend: S3Backend,
        garage: Garage,
    }

    impl Fixture for GarageFixture {
        fn backend(&self) -> &dyn Backend {
            &self.backend
        }
    }

    /// A backend configuration for `g`'s bucket under `root`, with the
    /// smallest parts (also used by the storage layer's tests).
    pub(crate) fn config(g: &Garage, root: &str) -> S3Config {
        S3Config {
            bucket: g.bucket.clone(),
            region: REGION.into(),
            regionendpoint: g.endpoint.clone(),
            accesskey: g.access_key.clone(),
            secretkey: g.secret_key.clone(),
            rootdirectory: root.into(),
            secure: false,
            forcepathstyle: true,
            // The smallest parts, so that the suite's objects span several.
            chunksize: MIN_CHUNK_SIZE,
            multipartcopythresholdsize: DEFAULT_COPY_THRESHOLD,
            multipartcopychunksize: DEFAULT_COPY_PART,
            multipartcopymaxconcurrency: DEFAULT_COPY_CONCURRENCY,
        }
    }

    fn fixture() -> GarageFixture {
        let garage = Garage::start("registry");
        let backend = S3Backend::open(&config(&garage, "/suite/")).expect("open the bucket");
        GarageFixture { backend, garage }
    }

    crate::backend_suite!(fixture());

    #[test]
    fn an_upload_started_on_one_replica_completes_on_another() {
        let f = fixture();
        let other = S3Backend::open(&config(&f.garage, "suite")).unwrap();
        let up = Path::new("t/_uploads/u1/data");
        let part = Bytes::from(vec![1u8; MIN_CHUNK_SIZE as usize + 3]);
        let mut w = f.backend.writer(up, WriteMode::Create).unwrap();
        w.write(part.clone()).unwrap();
        w.close().unwrap();
        // The other replica sees the size and goes on from there.
        assert_eq!(other.stat(up).unwrap().unwrap().size, part.len() as u64);
        let listed = other.list(Path::new("t/_uploads/u1")).unwrap();
        assert_eq!(
            listed.len(),
            1,
            "only `data`, not the record or tail: {listed:?}"
        );
        assert_eq!(listed[0].name, "data");
        let mut expected = part.to_vec();
        resume(&other, up, &mut expected, b"end")
            .commit(Path::new("t/blobs/x/data"))
            .unwrap();
        let got = f.backend.get(Path::new("t/blobs/x/data")).unwrap().unwrap();
        assert!(got[..] == expected[..], "the committed bytes differ");
        // Nothing of the upload is left in the bucket.
        assert!(f.backend.list(Path::new("t/_uploads")).unwrap().is_empty());
    }

    /// Resumes the upload at `up` where `expected` ends and writes `data`,
    /// keeping `expected` in step; the caller closes or commits.
    fn resume(
        b: &S3Backend,
        up: &Path,
        expected: &mut Vec<u8>,
        data: &[u8],
    ) -> Box<dyn crate::storage::backend::Writer> {
        let mut w = b
            .writer(
                up,
                WriteMode::Resume {
                    size: expected.len() as u64,
                },
            )
            .unwrap();
        w.write(Bytes::copy_from_slice(data)).unwrap();
        expected.extend_from_slice(data);
        w
    }

    /// Continuing an upload reads its record again (another replica may
    /// have written it), but an unchanged record is confirmed by a `304`
    /// instead of sent again, and one changed elsewhere is read anew.
    #[test]
    fn an_unchanged_upload_record_is_confirmed_and_a_changed_one_read_again() {
        use std::sync::atomic::Ordering::Relaxed;
        let f = fixture();
        let other = S3Backend::open(&config(&f.garage, "suite")).unwrap();
        let up = Path::new("t/_uploads/u3/data");
        let min = MIN_CHUNK_SIZE as usize;
        let mut expected = vec![4u8; min];
        let mut w = f.backend.writer(up, WriteMode::Create).unwrap();
        w.write(Bytes::from(expected.clone())).unwrap();
        w.close().unwrap();
        let confirmed = || f.backend.records.confirmed.load(Relaxed);
        let before = confirmed();
        // A PATCH's two reads of the record: its stat, then its writer.
        assert_eq!(f.backend.stat(up).unwrap().unwrap().size, min as u64);
        let w = resume(&f.backend, up, &mut expected, b"ab");
        assert_eq!(confirmed(), before + 2, "the record was sent again");
        w.close().unwrap();
        // The other replica goes on: what this one remembers is stale.
        resume(&other, up, &mut expected, b"cd").close().unwrap();
        let before = confirmed();
        assert_eq!(
            f.backend.stat(up).unwrap().unwrap().size,
            expected.len() as u64,
            "a record changed elsewhere was taken as unchanged"
        );
        assert_eq!(confirmed(), before);
        resume(&f.backend, up, &mut expected, b"ef")
            .commit(Path::new("t/blobs/z/data"))
            .unwrap();
        let got = f.backend.get(Path::new("t/blobs/z/data")).unwrap().unwrap();
        assert!(got[..] == expected[..], "the committed bytes differ");
        // The record is gone with the upload, and so is what was known of it.
        assert!(f.backend.stat(up).unwrap().is_none());
    }

    /// A PATCH of at least the minimum part size leaves its rest as a
    /// part, not as a tail object the next PATCH must download again; a
    /// smaller rest is a tail. Either way the bytes come out in order.
    #[test]
    fn a_rest_of_a_part_s_size_is_sent_as_a_part() {
        let f = fixture();
        // Parts of twice the minimum, so that a rest can be a part's size.
        let backend = S3Backend::open(&S3Config {
            chunksize: 2 * MIN_CHUNK_SIZE,
            ..config(&f.garage, "suite")
        })
        .unwrap();
        let up = Path::new("t/_uploads/u2/data");
        let key = backend.key_of(up);
        let record = || {
            backend
                .block_on(S3Backend::record(&backend.store, &backend.records, &key))
                .unwrap()
                .unwrap()
                .0
        };
        let min = MIN_CHUNK_SIZE as usize;
        let mut expected = Vec::new();
        let mut w = backend.writer(up, WriteMode::Create).unwrap();
        let first = vec![2u8; min + min / 2];
        w.write(Bytes::from(first.clone())).unwrap();
        w.close().unwrap();
        expected.extend_from_slice(&first);
        let r = record();
        assert_eq!(r.tail, None, "{r:?}");
        assert_eq!(
            r.parts.iter().map(|p| p.size).collect::<Vec<_>>(),
            [first.len() as u64]
        );
        resume(&f.backend, up, &mut expected, b"short")
            .close()
            .unwrap();
        let r = record();
        assert!(r.tail.is_some(), "{r:?}");
        assert_eq!(r.tail_size, 5);
        let other = S3Backend::open(&config(&f.garage, "suite")).unwrap();
        resume(&other, up, &mut expected, &vec![3u8; min])
            .commit(Path::new("t/blobs/y/data"))
            .unwrap();
        let got = f.backend.get(Path::new("t/blobs/y/data")).unwrap().unwrap();
        assert!(got[..] == expected[..], "the committed bytes differ");
    }

    /// Above `multipartcopythresholdsize` a committed upload reaches its
    /// place by UploadPartCopy in parts of `multipartcopychunksize` (the
    /// destination's ETag counts the copy's parts, not the upload's);
    /// below it, by one CopyObject. An upload resumed from a tail commits
    /// its exact bytes either way.
    #[test]
    fn large_objects_are_copied_by_parts_of_the_configured_size() {
        let f = fixture();
        let min = MIN_CHUNK_SIZE as usize;
        let by_parts = S3Backend::open(&S3Config {
            multipartcopythresholdsize: 2 * MIN_CHUNK_SIZE,
            multipartcopychunksize: 7 << 20,
            multipartcopymaxconcurrency: 2,
            ..config(&f.garage, "suite")
        })
        .unwrap();
        let etag = |b: &S3Backend, path: &str| {
            let key = b.key_of(Path::new(path));
            b.block_on(object_store::ObjectStoreExt::head(&*b.store, &key))
                .unwrap()
                .e_tag
                .unwrap()
        };
        let commit = |b: &S3Backend, id: &str, dest: &str| {
            let up = format!("t/_uploads/{id}/data");
            let up = Path::new(&up);
            let mut expected = vec![4u8; min + 7];
            let mut w = b.writer(up, WriteMode::Create).unwrap();
            w.write(Bytes::from(expected.clone())).unwrap();
            w.close().unwrap(); // one part and a tail of 7 bytes
            let more: Vec<u8> = (0..min * 2).map(|i| (i % 251) as u8).collect();
            resume(b, up, &mut expected, &more)
                .commit(Path::new(dest))
                .unwrap();
            let got = f.backend.get(Path::new(dest)).unwrap().unwrap();
            assert!(got[..] == expected[..], "the committed bytes differ");
            expected.len()
        };
        // 15 MiB + 7 bytes in upload parts of 5 MiB: 4 parts; copied in
        // parts of 7 MiB: 3 parts.
        let len = commit(&by_parts, "c1", "t/blobs/c1/data");
        assert_eq!(len, 3 * min + 7);
        let tag = etag(&by_parts, "t/blobs/c1/data");
        assert!(tag.trim_matches('"').ends_with("-3"), "{tag}");
        // Under the default threshold the same upload is one CopyObject:
        // the destination keeps the upload's own 4 parts.
        commit(&f.backend, "c2", "t/blobs/c2/data");
        let tag = etag(&f.backend, "t/blobs/c2/data");
        assert!(tag.trim_matches('"').ends_with("-4"), "{tag}");
        // Nothing of either upload is left: the copy's multipart upload
        // was completed, the source deleted.
        assert!(f.backend.list(Path::new("t/_uploads")).unwrap().is_empty());
    }

    /// A commit that completed the multipart upload and then failed (in
    /// its copy, say) leaves the object whole at the upload's key and the
    /// record naming an upload id S3 no longer knows; the client's retry
    /// of the PUT commits it.
    #[test]
    fn a_commit_retried_after_its_upload_was_completed_succeeds() {
        let f = fixture();
        let up = Path::new("t/_uploads/r1/data");
        let min = MIN_CHUNK_SIZE as usize;
        let expected: Vec<u8> = (0..min + 9).map(|i| (i % 241) as u8).collect();
        let mut w = f.backend.writer(up, WriteMode::Create).unwrap();
        w.write(Bytes::copy_from_slice(&expected)).unwrap();
        w.close().unwrap(); // one part, and a tail of 9 bytes
        // What the first commit did before it failed: the tail sent as
        // the last part, the upload completed.
        let b = &f.backend;
        let key = b.key_of(up);
        let (record, _) = b
            .block_on(S3Backend::record(&b.store, &b.records, &key))
            .unwrap()
            .unwrap();
        let id = record.upload_id.clone().unwrap();
        let mut parts = record.part_ids();
        b.block_on(async {
            let tail = PutPayload::from(expected[min..].to_vec());
            parts.push(b.store.put_part(&key, &id, 1, tail).await.unwrap());
            b.store.complete_multipart(&key, &id, parts).await.unwrap();
        });
        let size = expected.len() as u64;
        assert_eq!(b.stat(up).unwrap().unwrap().size, size);
        b.writer(up, WriteMode::Resume { size })
            .unwrap()
            .commit(Path::new("t/blobs/r1/data"))
            .unwrap();
        let got = b.get(Path::new("t/blobs/r1/data")).unwrap().unwrap();
        assert!(got[..] == expected[..], "the committed bytes differ");
        assert!(b.list(Path::new("t/_uploads")).unwrap().is_empty());
    }

    #[test]
    fn pending_bytes_are_cut_into_parts_in_order_without_joining_pieces() {
        let mut p = super::Pending::default();
        for piece in [&b"abc"[..], b"", b"defgh", b"i", b"jklmnop"] {
            p.push(Bytes::copy_from_slice(piece));
        }
        assert_eq!(p.len(), 16);
        let join = |payload: object_store::PutPayload| {
            payload.iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>()
        };
        // A cut inside a piece keeps its rest first.
        let first = p.take(5);
        assert_eq!(first.as_ref().len(), 2, "pieces are handed on as they are");
        assert_eq!(join(first), b"abcde");
        assert_eq!(p.len(), 11);
        // A cut at a piece's end.
        assert_eq!(join(p.take(4)), b"fghi");
        // More than is there: what is there.
        assert_eq!(join(p.take(100)), b"jklmnop");
        assert_eq!(p.len(), 0);
        assert_eq!(p.take(3).content_length(), 0);
        p.push(Bytes::from_static(b"qr"));
        assert_eq!(join(p.into_payload()), b"qr");
    }

    /// A DeleteObjects key refused by a busy server (Garage under load
    /// answers `ServiceUnavailable` for one key of a 200) is worth a retry
    /// and reaches the client as 503; a key refused for good is not.
    #[test]
    fn a_busy_servers_per_key_delete_error_is_unavailable() {
        let failed = |code: &str| object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other(format!(
                "DeleteObjects request failed for key r/_uploads/x/data.tail.1: \
                 Internal error: Could not reach quorum of 1 (code: {code})"
            ))),
        };
        for code in ["ServiceUnavailable", "SlowDown", "InternalError"] {
            assert!(super::busy_key(&failed(code)), "{code}");
            let mapped = super::map_err(failed(code), "k");
            assert!(
                matches!(mapped, Error::Unavailable(_)),
                "{code}: {mapped:?}"
            );
        }
        for code in ["AccessDenied", "InvalidArgument"] {
            assert!(!super::busy_key(&failed(code)), "{code}");
            let mapped = super::map_err(failed(code), "k");
            assert!(matches!(mapped, Error::Io(_)), "{code}: {mapped:?}");
        }
        // The same code outside a DeleteObjects answer is not this case.
        let other = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::other("listing (code: SlowDown)")),
        };
        assert!(!super::busy_key(&other));
    }

    #[test]
    fn payloads_are_signed_unless_tls_or_loopback_protects_them() {
        use super::payload_protected_in_transit as unsigned;
        assert!(unsigned(None));
        assert!(unsigned(Some("https://s3.example.net")));
        assert!(unsigned(Some("http://127.0.0.1:3900")));
        assert!(unsigned(Some("http://[::1]:3900")));
        assert!(unsigned(Some("http://localhost:3900")));
        assert!(!unsigned(Some("http://garage:3900")));
        assert!(!unsigned(Some("http://10.0.0.5:3900")));
        assert!(!unsigned(Some("not a url")));
    }

    #[test]
    fn bad_configuration_fails_at_open_with_one_clear_line() {
        let g = Garage::start("registry");
        let wrong_key = S3Config {
            secretkey: "0".repeat(64),
            ..config(&g, "")
        };
        let e = S3Backend::open(&wrong_key).unwrap_err().to_string();
        assert!(
            e.contains("access denied") && e.contains("accesskey"),
            "{e}"
        );
        assert!(!e.contains('\n') && !e.contains('<'), "{e}");
        let no_bucket = S3Config {
            bucket: "missing".into(),
            ..config(&g, "")
        };
        let e = S3Backend::open(&no_bucket).unwrap_err().to_string();
        assert!(e.contains("no such bucket") && e.contains("missing"), "{e}");
        assert!(!e.contains('\n') && !e.contains('<'), "{e}");
        let port = e2e::bins::free_port();
        let unreachable = S3Config {
            regionendpoint: format!("http://127.0.0.1:{port}"),
            ..config(&g, "")
        };
        let started = std::time::Instant::now();
        let e = S3Backend::open(&unreachable).unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("cannot reach"), "{e}");
        assert!(
            started.elapsed().as_secs() < 60,
            "gave up in {:?}",
            started.elapsed()
        );
        let small = S3Config {
            chunksize: 1024,
            ..config(&g, "")
        };
        assert!(matches!(S3Backend::open(&small), Err(Error::Invalid(_))));
    }
}
