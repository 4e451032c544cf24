//! Event notifications (webhooks), as distribution's `notifications`:
//! pushes, pulls, mounts and deletes become events in distribution's JSON
//! ([`event`]) POSTed to each configured endpoint ([`config`]).
//!
//! Unlike distribution, whose queue lives in memory, events are written to
//! a queue on disk ([`queue`]) before the request that caused them is
//! answered, and delivered at least once, in order per endpoint, also
//! across restarts ([`endpoint`]). A request waits only for the event's
//! `write(2)` by the queue's writer thread (shared with concurrent
//! requests), not for the network; with `notifications.queue.fsync` it
//! also waits for the fsync.
//!
//! The routes add a [`Detail`] to the responses that need one (what only
//! the handler knows: a manifest's media type and size, an upload's size,
//! a mount's source); [`Notifier::record`] turns a successful response
//! into its event.

pub mod config;
mod endpoint;
pub mod event;
pub mod queue;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_RANGE, HOST, USER_AGENT};
use http::{HeaderMap, Method};
use tokio::sync::{oneshot, watch};

use self::config::{EndpointConfig, Notifications};
use self::event::{ActorRecord, Event, RequestRecord, SourceRecord, Target, action};
use self::queue::{Journal, Msg};
use crate::oci::manifest::Descriptor;
use crate::oci::{Reference, RepoName};
use crate::routes::Endpoint;

/// What a handler knows about the object of its event; the route reads
/// the rest from the URL and the response.
#[derive(Debug, Clone, Default)]
pub struct Detail {
    pub media_type: String,
    pub size: u64,
    /// With `events.includereferences`.
    pub references: Vec<Descriptor>,
    /// A blob mounted from this repository.
    pub mounted_from: Option<String>,
}

/// The parts of a request an event records, taken before the handler
/// consumes the request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    record: RequestRecord,
    actor: String,
    /// `scheme://host` of the request, for `target.url`.
    base: String,
}

impl RequestInfo {
    pub fn new(
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        extensions: &http::Extensions,
        actor: Option<&str>,
        tls: bool,
    ) -> RequestInfo {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        // As distribution: the first X-Forwarded-For entry, X-Real-Ip, or
        // the peer.
        let addr = header("x-forwarded-for")
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .or_else(|| header("x-real-ip"))
            .map(str::to_owned)
            .or_else(|| {
                extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|ConnectInfo(a)| a.to_string())
            })
            .unwrap_or_default();
        let host = header(HOST.as_str())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(ToString::to_string))
            .unwrap_or_default();
        let scheme = header("x-forwarded-proto")
            .and_then(|v| v.split(',').next())
            .map_or(if tls { "https" } else { "http" }, str::trim);
        let public_host = header("x-forwarded-host")
            .and_then(|v| v.split(',').next())
            .map_or(host.as_str(), str::trim);
        let id = extensions
            .get::<service::http::RequestId>()
            .and_then(|r| r.0.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        RequestInfo {
            base: format!("{scheme}://{public_host}"),
            record: RequestRecord {
                id,
                addr,
                host,
                method: method.as_str().to_owned(),
                useragent: header(USER_AGENT.as_str()).unwrap_or_default().to_owned(),
            },
            actor: actor.unwrap_or_default().to_owned(),
        }
    }
}

/// The running notification system: the queue's writer thread and one
/// delivery task per enabled endpoint.
pub struct Notifier {
    tx: std::sync::mpsc::Sender<Msg>,
    endpoints: Vec<Arc<EndpointConfig>>,
    include_references: bool,
    base_url: Option<String>,
    source: RwLock<SourceRecord>,
    hostname: String,
    journal: Arc<Journal>,
    shutdown: watch::Sender<bool>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    workers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("endpoints", &self.endpoints)
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Notifier {
    /// Opens the queue and starts delivering; `None` without enabled
    /// endpoints. Must run inside the tokio runtime.
    pub fn start(config: &Notifications) -> anyhow::Result<Option<Arc<Notifier>>> {
        let endpoints: Vec<Arc<EndpointConfig>> = config.enabled().cloned().map(Arc::new).collect();
        if endpoints.is_empty() {
            return Ok(None);
        }
        let dir = &config.queue.directory;
        let (journal, writer) = Journal::open(
            dir,
            config.queue.max_bytes,
            config.queue.fsync,
            endpoints.len(),
        )
        .with_context(|| format!("opening the notification queue {}", dir.display()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("notify-queue".into())
            .spawn(move || writer.run(&rx))
            .context("starting the notification queue's writer")?;
        let (shutdown, _) = watch::channel(false);
        let mut workers = Vec::new();
        for (index, e) in endpoints.iter().enumerate() {
            tracing::info!(
                "notifications: endpoint {} ({}), timeout {:?}, threshold {}, backoff {:?}",
                e.name,
                endpoint::url_for_logs(&e.url),
                e.timeout,
                e.threshold,
                e.backoff
            );
            // Before any request: a new endpoint starts at the end of the
            // queue as it is now, not at a later point.
            let cursor = journal.load_cursor(index, &e.name).with_context(|| {
                format!("reading the cursor of notification endpoint {}", e.name)
            })?;
            let w = endpoint::Worker {
                index,
                config: e.clone(),
                journal: journal.clone(),
                shutdown: shutdown.subscribe(),
                cursor,
            };
            workers.push(tokio::spawn(w.run()));
        }
        tracing::info!(
            "notifications: queue in {} holds events {}..{}",
            dir.display(),
            journal.first(),
            journal.end()
        );
        let hostname = hostname();
        Ok(Some(Arc::new(Notifier {
            tx,
            endpoints,
            include_references: config.include_references,
            base_url: config.base_url.clone(),
            source: RwLock::new(SourceRecord {
                addr: hostname.clone(),
                instance_id: uuid::Uuid::new_v4().to_string(),
            }),
            hostname,
            journal,
            shutdown,
            writer: Mutex::new(Some(writer)),
            workers: Mutex::new(workers),
        })))
    }

    /// Sets `source.addr` to `host:port` once the listener is bound.
    pub fn set_port(&self, port: u16) {
        let mut s = self.source.write().unwrap_or_else(PoisonError::into_inner);
        s.addr = format!("{}:{port}", self.hostname);
    }

    /// Whether manifest events list the manifest's references.
    pub fn include_references(&self) -> bool {
        self.include_references
    }

    /// Queues `event` for the endpoints that take it, and returns once it
    /// is written. A failed write is logged and counted; the request that
    /// caused the event still succeeds.
    pub async fn publish(&self, event: &Event) {
        if !self
            .endpoints
            .iter()
            .any(|e| e.wants(&event.action, &event.target.media_type))
        {
            return;
        }
        let line = match serde_json::to_vec(event) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("notifications: cannot serialise an event: {e}");
                return;
            }
        };
        let (ack, rx) = oneshot::channel();
        let result = if self.tx.send(Msg::Append(line, ack)).is_err() {
            Err("the queue is closed".to_owned())
        } else {
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("the queue's writer stopped".to_owned()),
            }
        };
        if let Err(e) = result {
            metrics::counter!("registry_notifications_write_errors_total").increment(1);
            tracing::error!(
                "notifications: a {} event of {} was not queued: {e}",
                event.action,
                event.target.repository
            );
        }
    }

    /// Stops delivery, writes what is still coming and fsyncs the queue.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).is_ok() {
            let _ = rx.await;
        }
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        let workers: Vec<_> = self
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        for w in workers {
            let _ = w.await;
        }
    }

    /// The event a successful response stands for, if any, queued.
    /// `detail` is what the handler attached.
    pub async fn record(
        &self,
        info: &RequestInfo,
        endpoint: &Endpoint,
        method: &Method,
        resp: &mut Response,
    ) {
        let detail = resp.extensions_mut().remove::<Detail>();
        let status = resp.status();
        if !(status.is_success() || status.is_redirection()) {
            return;
        }
        let Some((action, target)) = target_of(endpoint, method, resp, detail) else {
            return;
        };
        let base = self.base_url.as_deref().unwrap_or(&info.base);
        let mut target = target;
        if action != action::DELETE && !target.digest.is_empty() {
            let kind = if matches!(endpoint, Endpoint::Manifest(..)) {
                "manifests"
            } else {
                "blobs"
            };
            target.url = format!("{base}/v2/{}/{kind}/{}", target.repository, target.digest);
        }
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: now_rfc3339(),
            action: action.to_owned(),
            target,
            request: info.record.clone(),
            actor: ActorRecord {
                name: info.actor.clone(),
            },
            source: self
                .source
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        self.publish(&event).await;
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A manifest's references, as distribution lists them: config and
/// layers, or an index's manifests.
pub fn references(m: &crate::oci::Manifest) -> Vec<Descriptor> {
    m.config
        .iter()
        .chain(&m.layers)
        .chain(&m.manifests)
        .cloned()
        .collect()
}

/// The action and target of a successful response, without its URL.
fn target_of(
    endpoint: &Endpoint,
    method: &Method,
    resp: &Response,
    detail: Option<Detail>,
) -> Option<(&'static str, Target)> {
    let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok());
    let digest = || {
        header("docker-content-digest")
            .unwrap_or_default()
            .to_owned()
    };
    let repo = |n: &RepoName| n.to_string();
    let tag_of = |r: &Reference| match r {
        Reference::Tag(t) => t.to_string(),
        Reference::Digest(_) => String::new(),
    };
    let detail = detail.unwrap_or_default();
    let sized = |t: Target| Target {
        length: t.size,
        ..t
    };
    let pulled_or_pushed = |name: &RepoName, reference: &Reference| {
        sized(Target {
            media_type: detail.media_type.clone(),
            size: detail.size,
            digest: digest(),
            repository: repo(name),
            tag: tag_of(reference),
            references: detail.references.clone(),
            ..Target::default()
        })
    };
    Some(match (endpoint, method.as_str()) {
        (Endpoint::Manifest(name, reference), "GET") => {
            (action::PULL, pulled_or_pushed(name, reference))
        }
        (Endpoint::Manifest(name, reference), "PUT") => {
            (action::PUSH, pulled_or_pushed(name, reference))
        }
        (Endpoint::Manifest(name, reference), "DELETE") => {
            let mut t = Target {
                repository: repo(name),
                ..Target::default()
            };
            match reference {
                Reference::Tag(tag) => t.tag = tag.to_string(),
                Reference::Digest(d) => t.digest = d.to_string(),
            }
            (action::DELETE, t)
        }
        (Endpoint::Blob(name, d), "GET") => {
            // 200: the whole blob; 206: its size after the `/`; 307 (to
            // the storage): unknown here.
            let size = if status_is(resp, 206) {
                header(CONTENT_RANGE.as_str())
                    .and_then(|r| r.rsplit('/').next())
                    .and_then(|s| s.parse().ok())
            } else if status_is(resp, 200) {
                header(CONTENT_LENGTH.as_str()).and_then(|s| s.parse().ok())
            } else {
                None
            };
            (
                action::PULL,
                sized(Target {
                    media_type: event::BLOB_MEDIA_TYPE.to_owned(),
                    size: size.unwrap_or(detail.size),
                    digest: d.to_string(),
                    repository: repo(name),
                    ..Target::default()
                }),
            )
        }
        (Endpoint::Blob(name, d), "DELETE") => (
            action::DELETE,
            Target {
                digest: d.to_string(),
                repository: repo(name),
                ..Target::default()
            },
        ),
        (Endpoint::UploadStart(name), "POST") | (Endpoint::Upload(name, _), "PUT")
            if status_is(resp, 201) =>
        {
            let mounted = detail.mounted_from.clone();
            let t = sized(Target {
                media_type: event::BLOB_MEDIA_TYPE.to_owned(),
                size: detail.size,
                digest: digest(),
                repository: repo(name),
                from_repository: mounted.clone().unwrap_or_default(),
                ..Target::default()
            });
            (
                if mounted.is_some() {
                    action::MOUNT
                } else {
                    action::PUSH
                },
                t,
            )
        }
        (Endpoint::Repository(name), "DELETE") => (
            action::DELETE,
            Target {
                repository: repo(name),
                ..Target::default()
            },
        ),
        _ => return None,
    })
}

fn status_is(resp: &Response, code: u16) -> bool {
    resp.status().as_u16() == code
}
