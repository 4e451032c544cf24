//! The pull-through cache (registry mirror): repositories under a
//! configured prefix (`proxy.upstreams`), or every repository
//! (distribution's `proxy.remoteurl`), are filled from an upstream
//! registry on demand and served from storage afterwards.
//!
//! - Requests reach this module after the caller was authorised like any
//!   other (a pull grant on `hub/*` is what lets a user pull through
//!   `hub/`). Pushes and deletes in mirrored repositories are refused with
//!   `UNSUPPORTED` (405, as distribution's proxy answers); tag lists and
//!   referrers are the local ones.
//! - Manifests by digest are fetched once and kept (content-addressed).
//!   Manifests by tag are served from storage within the upstream's ttl;
//!   after it, a `HEAD` asks the upstream for the tag's digest, and the
//!   manifest is fetched again only when it changed. When the upstream is
//!   down (no answer, 5xx, throttling) what is cached is served as it is.
//! - Blobs are fetched on their first `GET` and written through the upload
//!   API (`create_upload`, `append_upload`, `commit_upload`: the digest is
//!   checked, the blob is linked into the repository), so mirrored content
//!   lives exactly like pushed content: on any backend, seen by GC and fsck.
//!   The client that caused the fetch gets the bytes as they arrive, and
//!   wrong content is never stored. How far the client waits for the
//!   digest depends on the size, since SHA-256 (~200 MB/s a core without
//!   SHA instructions) is slower than a network or a disk:
//!   - up to [`INLINE_HASH_MAX`] (as the upstream announces it), bytes are
//!     hashed on the way and the last chunk is held back until the blob is
//!     stored and its digest checked: the client never receives a complete
//!     body of wrong content;
//!   - larger blobs (or of unannounced length) are written as they arrive,
//!     unhashed, and the client's body ends with the upstream's; the commit
//!     then hashes the written data by reading it back and refuses it on a
//!     mismatch. Such a client may receive a complete body of wrong content:
//!     docker, containerd, podman and skopeo check a layer's digest
//!     themselves and refuse it. distribution's proxy does the same (it
//!     hashes nothing on the client's path).
//!
//!   The fetch runs on its own task: a client that goes away does not stop
//!   it. Other requests for the same blob meanwhile wait for it and are
//!   then served from storage (one upstream fetch per blob, however many
//!   clients ask).
//! - Tags not checked within their ttl are deleted by garbage collection
//!   (`storage::cache`), and what only they kept goes with them.

mod client;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use http::{HeaderMap, HeaderValue, Method};
use tokio::sync::{mpsc, oneshot, watch};

pub use self::client::{Upstream, UpstreamError};
use crate::config::{ProxyUpstream, UploadLimits};
use crate::error::{Error, ErrorCode, Result};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
#[cfg(test)]
use crate::oci::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::oci::{Digest, Manifest, Reference, RepoName, Tag};
use crate::routes::{Endpoint, headers as h};
use crate::state::AppState;
use crate::storage::upload_limits::UploadOwner;

/// What the mirror asks upstreams for: every manifest kind we store, so
/// the upstream never converts one.
/// (`concat!` cannot take the constants; a test checks it names them.)
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The owner mirrored blob uploads are counted under (not a valid user
/// name, so no user's count is touched).
const MIRROR_OWNER: &str = "(mirror)";

/// The largest blob hashed on the way to its first client (see the module
/// comment); larger ones are hashed once stored, after the client's body.
pub const INLINE_HASH_MAX: u64 = 16 << 20;

/// The outcome of one blob fetch, for the requests waiting on it.
type FetchResult = Option<Result<(), String>>;

/// The mirrored upstreams and the blob fetches in progress.
#[derive(Debug, Default)]
pub struct Mirror {
    /// Longest prefix first (see `config::resolve_proxy`).
    upstreams: Vec<Arc<Upstream>>,
    fetches: Mutex<HashMap<(RepoName, Digest), watch::Receiver<FetchResult>>>,
}

impl Mirror {
    pub fn new(config: &[ProxyUpstream]) -> anyhow::Result<Mirror> {
        Ok(Mirror {
            upstreams: config
                .iter()
                .cloned()
                .map(|c| Upstream::new(c).map(Arc::new))
                .collect::<anyhow::Result<_>>()?,
            fetches: Mutex::default(),
        })
    }

    /// The upstream mirrored into `name` and the repository's name there;
    /// `None` for a repository of our own.
    pub fn route(&self, name: &RepoName) -> Option<(Arc<Upstream>, String)> {
        self.upstreams.iter().find_map(|u| {
            let prefix = u.config.prefix.as_str();
            let remote = if prefix.is_empty() {
                Some(name.as_str())
            } else {
                name.as_str()
                    .strip_prefix(prefix)
                    .and_then(|r| r.strip_prefix('/'))
            }?;
            Some((u.clone(), remote.to_owned()))
        })
    }
}

/// A mirrored repository as one request sees it.
struct Mirrored<'a> {
    state: &'a AppState,
    upstream: Arc<Upstream>,
    name: &'a RepoName,
    remote: String,
}

/// Handles a request for a mirrored repository: either answers it, or
/// makes sure storage holds what it asks for and returns `None` so that
/// the ordinary handler serves it from storage.
pub async fn serve(
    state: &AppState,
    endpoint: &Endpoint,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Option<Response>> {
    let Some(name) = endpoint.repository() else {
        return Ok(None);
    };
    let Some((upstream, remote)) = state.mirror.route(name) else {
        return Ok(None);
    };
    let m = Mirrored {
        state,
        upstream,
        name,
        remote,
    };
    let read = matches!(*method, Method::GET | Method::HEAD);
    match endpoint {
        Endpoint::Manifest(_, reference) if read => {
            m.refresh_manifest(reference).await?;
            Ok(None)
        }
        Endpoint::Blob(_, digest) if read => {
            let ranged = headers.contains_key(RANGE);
            m.blob(digest, *method == Method::HEAD, ranged).await
        }
        Endpoint::Tags(_) | Endpoint::Referrers(..) if read => Ok(None),
        _ => Err(Error::unsupported(format!(
            "{name} is a mirror of {}: it cannot be pushed to or deleted from",
            m.upstream.config.url
        ))),
    }
}

impl Mirrored<'_> {
    fn scope(&self) -> String {
        format!("repository:{}:pull", self.remote)
    }

    fn url(&self) -> &str {
        &self.upstream.config.url
    }

    // ----- manifests -----

    /// Makes storage hold the manifest `reference` names, fresh within the
    /// ttl for a tag; leaves what is cached when the upstream is down.
    async fn refresh_manifest(&self, reference: &Reference) -> Result<()> {
        let storage = &self.state.storage;
        let (n, r) = (self.name.clone(), reference.clone());
        match reference {
            Reference::Digest(digest) => {
                if storage.run(move |s| s.resolve(&n, &r)).await?.is_some() {
                    return Ok(());
                }
                let (bytes, content_type) = self
                    .fetch_manifest(&digest.to_string())
                    .await
                    .map_err(|e| e.into_error(self.url(), Error::manifest_unknown(reference)))?;
                if &Digest::of(digest.algorithm(), &bytes) != digest {
                    return Err(upstream_sent_wrong_content(self.url(), digest));
                }
                self.store_manifest(None, digest.clone(), bytes, content_type.as_deref())
                    .await
            }
            Reference::Tag(tag) => {
                let t = tag.clone();
                let local = storage.run(move |s| s.tag_checked(&n, &t)).await?;
                let ttl = self.upstream.config.ttl;
                if let Some((_, checked)) = &local
                    && SystemTime::now()
                        .duration_since(*checked)
                        .is_ok_and(|age| age < ttl)
                {
                    return Ok(());
                }
                let stale = |e: &UpstreamError| {
                    tracing::warn!(
                        repository = %self.name,
                        tag = %tag,
                        upstream = self.url(),
                        "cannot revalidate a mirrored tag ({e:?}); serving the cached one"
                    );
                };
                if let Some((digest, _)) = &local {
                    match self.head_manifest(tag.as_str()).await {
                        Ok(Some(upstream_digest)) if &upstream_digest == digest => {
                            let (n, t, d) = (self.name.clone(), tag.clone(), digest.clone());
                            return Ok(storage
                                .run(move |s| s.mark_tag_checked(&n, &t, &d))
                                .await?);
                        }
                        Ok(_) => {} // changed, or no digest said: fetch it
                        Err(e) if e.is_unavailable() => {
                            stale(&e);
                            return Ok(());
                        }
                        Err(e) => {
                            return Err(e.into_error(self.url(), Error::manifest_unknown(tag)));
                        }
                    }
                }
                let (bytes, content_type) = match self.fetch_manifest(tag.as_str()).await {
                    Ok(got) => got,
                    Err(e) if local.is_some() && e.is_unavailable() => {
                        stale(&e);
                        return Ok(());
                    }
                    Err(e) => {
                        return Err(e.into_error(self.url(), Error::manifest_unknown(tag)));
                    }
                };
                let digest = Digest::sha256_of(&bytes);
                self.store_tagged(tag, digest, bytes, content_type.as_deref())
                    .await
            }
        }
    }

    async fn store_tagged(
        &self,
        tag: &Tag,
        digest: Digest,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<()> {
        self.store_manifest(Some(tag.clone()), digest, bytes, content_type)
            .await
    }

    async fn store_manifest(
        &self,
        tag: Option<Tag>,
        digest: Digest,
        bytes: Bytes,
        content_type: Option<&str>,
    ) -> Result<()> {
        let manifest = Manifest::parse(content_type, &bytes).map_err(|e| {
            Error::new(
                ErrorCode::ManifestInvalid,
                format!(
                    "the upstream registry {} sent a manifest this registry cannot store: {}",
                    self.url(),
                    e.message
                ),
            )
            .with_status(http::StatusCode::BAD_GATEWAY)
        })?;
        let n = self.name.clone();
        Ok(self
            .state
            .storage
            .run(move |s| s.put_mirrored_manifest(&n, tag.as_ref(), &digest, &bytes, &manifest))
            .await?)
    }

    /// The digest the upstream has for `reference`, by `HEAD` (which does
    /// not count as a pull on Docker Hub).
    async fn head_manifest(&self, reference: &str) -> Result<Option<Digest>, UpstreamError> {
        let path = format!("/v2/{}/manifests/{reference}", self.remote);
        let resp = self
            .upstream
            .send(Method::HEAD, &path, Some(ACCEPT_MANIFESTS), &self.scope())
            .await?;
        Ok(resp
            .headers()
            .get(h::DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok()))
    }

    /// A manifest's bytes and content type from the upstream, at most
    /// [`MAX_MANIFEST_SIZE`] bytes.
    async fn fetch_manifest(
        &self,
        reference: &str,
    ) -> Result<(Bytes, Option<String>), UpstreamError> {
        let path = format!("/v2/{}/manifests/{reference}", self.remote);
        let mut resp = self
            .upstream
            .send(Method::GET, &path, Some(ACCEPT_MANIFESTS), &self.scope())
            .await?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
        let too_big = || {
            UpstreamError::Unreachable(format!(
                "manifest {reference} is over {MAX_MANIFEST_SIZE} bytes"
            ))
        };
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_SIZE as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?
        {
            if body.len() + chunk.len() > MAX_MANIFEST_SIZE {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((Bytes::from(body), content_type))
    }

    // ----- blobs -----

    /// A blob this repository does not hold yet: `HEAD` asks the upstream;
    /// `GET` fetches it once, however many ask, streaming it to the request
    /// that started the fetch (unless it asks for a range: it then waits
    /// like the others and is served from storage).
    async fn blob(&self, digest: &Digest, head: bool, ranged: bool) -> Result<Option<Response>> {
        let storage = &self.state.storage;
        let (n, d) = (self.name.clone(), digest.clone());
        if storage.run(move |s| s.stat_blob(&n, &d)).await?.is_some() {
            return Ok(None);
        }
        let path = format!("/v2/{}/blobs/{digest}", self.remote);
        if head {
            let resp = self
                .upstream
                .send(Method::HEAD, &path, None, &self.scope())
                .await
                .map_err(|e| e.into_error(self.url(), Error::blob_unknown(digest)))?;
            let mut out = Response::new(Body::empty());
            set_blob_headers(out.headers_mut(), digest, resp.content_length());
            return Ok(Some(out));
        }
        let key = (self.name.clone(), digest.clone());
        let (fetch, mut done) = {
            let mut fetches = self
                .state
                .mirror
                .fetches
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(rx) = fetches.get(&key) {
                (None, rx.clone())
            } else {
                let (tx, rx) = watch::channel(None);
                fetches.insert(key.clone(), rx.clone());
                let guard = FetchGuard {
                    state: self.state.clone(),
                    key,
                    tx,
                };
                (Some(guard), rx)
            }
        };
        if let Some(guard) = fetch {
            let (started_tx, started_rx) = oneshot::channel();
            let job = Fetch {
                state: self.state.clone(),
                upstream: self.upstream.clone(),
                name: self.name.clone(),
                digest: digest.clone(),
                path,
                scope: self.scope(),
            };
            tokio::spawn(job.run(guard, started_tx));
            let started = started_rx
                .await
                .map_err(|_| fetch_failed(self.url(), "the fetch stopped"))??;
            if let (false, Some((size, chunks))) = (ranged, started) {
                let mut out = Response::new(Body::from_stream(held_back(chunks)));
                set_blob_headers(out.headers_mut(), digest, size);
                return Ok(Some(out));
            }
        }
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_or_else(|_| Some(Err("the fetch stopped".into())), |v| v.clone());
        match outcome {
            Some(Err(e)) => Err(fetch_failed(self.url(), &e)),
            _ => Ok(None),
        }
    }
}

/// What the fetching task tells the request that started it.
enum Chunk {
    Data(Bytes),
    /// The blob is stored (`Ok`) or not; for a blob hashed after it is
    /// written, `Ok` comes once every byte is written, before the commit.
    Done(Result<(), String>),
}

/// Removes a fetch from the table when it ends, however it ends, and tells
/// the requests waiting on it.
struct FetchGuard {
    state: AppState,
    key: (RepoName, Digest),
    tx: watch::Sender<FetchResult>,
}

impl FetchGuard {
    fn finish(self, result: Result<(), String>) {
        self.tx.send_replace(Some(result));
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if self.tx.borrow().is_none() {
            self.tx
                .send_replace(Some(Err("the fetch was abandoned".into())));
        }
        self.state
            .mirror
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

/// One blob fetched from an upstream into storage.
struct Fetch {
    state: AppState,
    upstream: Arc<Upstream>,
    name: RepoName,
    digest: Digest,
    path: String,
    scope: String,
}

/// What the request that started a fetch streams: the size and the
/// chunks, or `None` when the blob was stored meanwhile.
type Started = Result<Option<(Option<u64>, mpsc::Receiver<Chunk>)>>;

impl Fetch {
    async fn run(self, guard: FetchGuard, started: oneshot::Sender<Started>) {
        let url = self.upstream.config.url.clone();
        let (tx, rx) = mpsc::channel::<Chunk>(8);
        let result = self.fetch(started, rx, &tx).await;
        let outcome = match &result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(repository = %self.name, digest = %self.digest, upstream = url, "mirror fetch failed: {}", e.message);
                Err(e.message.clone())
            }
        };
        // Whoever still listens: the requests waiting, then the client.
        guard.finish(outcome.clone());
        let _ = tx.send(Chunk::Done(outcome)).await;
    }

    async fn fetch(
        &self,
        started: oneshot::Sender<Started>,
        rx: mpsc::Receiver<Chunk>,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<()> {
        let storage = &self.state.storage;
        let url = &self.upstream.config.url;
        // A concurrent fetch may have finished between the caller's look
        // and taking the table.
        let (n, d) = (self.name.clone(), self.digest.clone());
        let have = storage.run(move |s| s.stat_blob(&n, &d)).await;
        let resp = match have {
            Ok(Some(_)) => Err(None),
            Ok(None) => self
                .upstream
                .send(Method::GET, &self.path, None, &self.scope)
                .await
                .map_err(|e| Some(e.into_error(url, Error::blob_unknown(&self.digest)))),
            Err(e) => Err(Some(e.into())),
        };
        let resp = match resp {
            Ok(resp) => resp,
            Err(None) => {
                // Stored already: the client reads it from storage.
                let _ = started.send(Ok(None));
                return Ok(());
            }
            Err(Some(e)) => {
                let message = e.message.clone();
                let _ = started.send(Err(e));
                return Err(Error::new(ErrorCode::Unavailable, message));
            }
        };
        let size = resp.content_length();
        let _ = started.send(Ok(Some((size, rx))));

        let owner = UploadOwner::user(MIRROR_OWNER);
        let limits = UploadLimits {
            per_repository: 0,
            per_client: 0,
            ..self.state.config.upload_limits.clone()
        };
        let n = self.name.clone();
        let id = storage
            .run(move |s| s.create_upload(&n, &owner, &limits))
            .await?;
        let mut upload = storage.lock_upload(&self.name, id).await?;
        let hashed_on_the_way = size.is_some_and(|s| s <= INLINE_HASH_MAX);
        if !hashed_on_the_way {
            // The client has the last bytes before the commit, so the
            // commit's hashing and syncing follow its transfer instead of
            // slowing it down.
            upload.clear_hash();
            upload.defer_writeback();
        }
        let client = tx.clone();
        let body = resp.bytes_stream().then(move |item| {
            let client = client.clone();
            async move {
                if let Ok(chunk) = &item {
                    // A client gone does not stop the fetch.
                    let _ = client.send(Chunk::Data(chunk.clone())).await;
                }
                item
            }
        });
        let appended = storage
            .append_upload(&self.name, id, &mut upload, Box::pin(body), size)
            .await;
        let (n, d) = (self.name.clone(), self.digest.clone());
        if let Err(e) = appended {
            storage.run(move |s| s.cancel_upload(&n, id)).await?;
            return Err(fetch_failed(url, &format!("{e:?}")));
        }
        if !hashed_on_the_way {
            // The client's body ends with the upstream's; the digest is
            // checked below, for storage and for the requests waiting.
            let _ = tx.send(Chunk::Done(Ok(()))).await;
        }
        storage
            .run(move |s| {
                let mut upload = upload;
                s.commit_upload(&n, id, &mut upload, &d)
            })
            .await
            .map_err(|e| match e {
                crate::storage::Error::DigestMismatch { .. } => {
                    upstream_sent_wrong_content(url, &self.digest)
                }
                e => e.into(),
            })
    }
}

/// The body of the fetching request: the chunks as they arrive, but the
/// last one only at the first `Chunk::Done` (once the blob is stored with
/// the right digest, or for a large blob once it is written); a failed
/// fetch fails the body instead.
fn held_back(
    chunks: mpsc::Receiver<Chunk>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send {
    futures_util::stream::unfold(
        (chunks, None::<Bytes>, false),
        |(mut chunks, mut held, ended)| async move {
            if ended {
                return None;
            }
            let failed = |m: String| Err(std::io::Error::other(m));
            loop {
                match chunks.recv().await {
                    Some(Chunk::Data(data)) => {
                        if let Some(prev) = held.replace(data) {
                            return Some((Ok(prev), (chunks, held, false)));
                        }
                    }
                    Some(Chunk::Done(Ok(()))) => {
                        return held.take().map(|last| (Ok(last), (chunks, None, true)));
                    }
                    Some(Chunk::Done(Err(m))) => return Some((failed(m), (chunks, None, true))),
                    None => {
                        return Some((failed("the fetch stopped".into()), (chunks, None, true)));
                    }
                }
            }
        },
    )
}

fn set_blob_headers(headers: &mut HeaderMap, digest: &Digest, size: Option<u64>) {
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(size) = size {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    }
    h::set_digest(headers, digest);
}

fn fetch_failed(url: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::Unavailable,
        format!("fetching the blob from the upstream registry {url} failed: {why}"),
    )
    .with_header(http::header::RETRY_AFTER, "5")
}

fn upstream_sent_wrong_content(url: &str, digest: &Digest) -> Error {
    tracing::error!(upstream = url, %digest, "the upstream sent content that does not match its digest");
    Error::new(
        ErrorCode::Unknown,
        format!("the upstream registry {url} sent content that does not match {digest}"),
    )
    .with_status(http::StatusCode::BAD_GATEWAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_upstreams_for_every_manifest_kind() {
        for kind in [
            OCI_INDEX,
            OCI_MANIFEST,
            DOCKER_MANIFEST_LIST,
            DOCKER_MANIFEST,
        ] {
            assert!(ACCEPT_MANIFESTS.split(", ").any(|k| k == kind), "{kind}");
        }
    }

    fn upstream(prefix: &str) -> ProxyUpstream {
        ProxyUpstream {
            prefix: prefix.into(),
            url: format!("http://{prefix}.example"),
            username: None,
            password: None,
            ttl: crate::config::DEFAULT_PROXY_TTL,
        }
    }

    #[test]
    fn routes_by_longest_prefix_then_remoteurl() {
        // reqwest's clients need the process's rustls provider (build_state installs it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let m = Mirror::new(&[upstream("hub/library"), upstream("hub"), upstream("")]).unwrap();
        let route = |n: &str| {
            m.route(&RepoName::parse(n).unwrap())
                .map(|(u, r)| (u.config.prefix.clone(), r))
        };
        assert_eq!(
            route("hub/library/busybox"),
            Some(("hub/library".into(), "busybox".into()))
        );
        assert_eq!(route("hub/x/y"), Some(("hub".into(), "x/y".into())));
        assert_eq!(route("hubble/x"), Some((String::new(), "hubble/x".into())));
        let m = Mirror::new(&[upstream("hub")]).unwrap();
        assert!(m.route(&RepoName::parse("hubble/x").unwrap()).is_none());
        assert!(m.route(&RepoName::parse("hub").unwrap()).is_none());
        assert!(m.route(&RepoName::parse("private/app").unwrap()).is_none());
    }

    #[tokio::test]
    async fn the_last_chunk_waits_for_the_digest_check() {
        let (tx, rx) = mpsc::channel(8);
        for c in ["a", "b"] {
            tx.send(Chunk::Data(Bytes::from(c))).await.unwrap();
        }
        tx.send(Chunk::Done(Err("digest".into()))).await.unwrap();
        let got: Vec<_> = held_back(rx).collect().await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap(), "a");
        assert!(got[1].is_err(), "the held chunk is replaced by an error");

        let (tx, rx) = mpsc::channel(8);
        for c in ["a", "b"] {
            tx.send(Chunk::Data(Bytes::from(c))).await.unwrap();
        }
        tx.send(Chunk::Done(Ok(()))).await.unwrap();
        let got: Vec<_> = held_back(rx).map(Result::unwrap).collect().await;
        assert_eq!(got, ["a", "b"]);

        let (tx, rx) = mpsc::channel(8);
        tx.send(Chunk::Data(Bytes::from("a"))).await.unwrap();
        drop(tx);
        let got: Vec<_> = held_back(rx).collect().await;
        assert!(
            got.len() == 1 && got[0].is_err(),
            "a vanished fetch fails the body"
        );
    }
}
