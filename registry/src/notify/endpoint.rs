//! One worker per enabled endpoint: reads the queue from the endpoint's
//! cursor, leaves out what the endpoint ignores, POSTs envelopes of up to
//! `maxevents` events in order, and saves the cursor after each delivery.
//!
//! Delivery follows distribution: a 2xx or 3xx answer (redirects followed)
//! is success; anything else, or no answer within `timeout`, is a failure.
//! The first `threshold` failures in a row are retried at once, every
//! further attempt waits `backoff` after the last failure; the same events
//! are retried until they are accepted, so an endpoint sees them in order.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use tokio::sync::watch;

use super::config::EndpointConfig;
use super::event::{EVENTS_MEDIA_TYPE, Filtered, envelope};
use super::queue::{Journal, Reader};

pub struct Worker {
    pub index: usize,
    pub config: Arc<EndpointConfig>,
    pub journal: Arc<Journal>,
    pub shutdown: watch::Receiver<bool>,
    /// Where it starts: its saved cursor, loaded before the first request.
    pub cursor: u64,
}

/// Whether `endpoint` takes the queued event `line`.
fn wanted(endpoint: &EndpointConfig, line: &[u8]) -> bool {
    match serde_json::from_slice::<Filtered>(line) {
        Ok(f) => endpoint.wants(&f.action, &f.target.media_type),
        // Not ours to judge: the receiver gets it.
        Err(_) => true,
    }
}

/// Where `url` points, without path or query (which may hold a secret),
/// for logs.
pub fn url_for_logs(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "?".to_owned(),
        |u| {
            format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.port().map_or_else(String::new, |p| format!(":{p}"))
            )
        },
    )
}

impl Worker {
    pub async fn run(mut self) {
        let name = self.config.name.clone();
        let client = match reqwest::Client::builder()
            .timeout(self.config.timeout)
            .connect_timeout(self.config.timeout)
            .user_agent(concat!(
                "registry-notifications/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("notification endpoint {name}: cannot make an HTTP client: {e}");
                return;
            }
        };
        let pending = metrics::gauge!("registry_notifications_pending", "endpoint" => name.clone());
        let delivered =
            metrics::counter!("registry_notifications_delivered_total", "endpoint" => name.clone());
        let dropped =
            metrics::counter!("registry_notifications_dropped_total", "endpoint" => name.clone());
        // The backlog follows every new event, also while a delivery is
        // retried or backs off.
        let backlog = {
            let (journal, index, pending) = (self.journal.clone(), self.index, pending.clone());
            let mut end_rx = journal.subscribe();
            tokio::spawn(async move {
                loop {
                    pending.set(journal.pending(index) as f64);
                    if end_rx.changed().await.is_err() {
                        break;
                    }
                }
            })
        };
        let mut end_rx = self.journal.subscribe();
        let mut cursor = self.cursor;
        let mut reader: Option<Reader> = None;
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let end = *end_rx.borrow_and_update();
            let first = self.journal.first();
            if cursor < first {
                tracing::warn!(
                    "notification endpoint {name}: {} events were dropped from the full queue \
                     before they could be sent (notifications.queue.maxsize)",
                    first - cursor
                );
                dropped.increment(first - cursor);
                cursor = first;
                reader = None;
                self.save(cursor).await;
            }
            pending.set(end.saturating_sub(cursor) as f64);
            if cursor >= end {
                tokio::select! {
                    changed = end_rx.changed() => if changed.is_err() { break },
                    _ = self.shutdown.changed() => break,
                }
                continue;
            }
            let (journal, config) = (self.journal.clone(), self.config.clone());
            let mut rd = reader.take();
            let read = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                let r = journal.read(
                    &mut rd,
                    cursor,
                    end,
                    config.max_events,
                    |l| wanted(&config, l),
                    &mut out,
                );
                (r.map(|next| (next, out)), rd)
            })
            .await;
            let (result, rd) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("notification endpoint {name}: reading the queue: {e}");
                    break;
                }
            };
            reader = rd;
            let (next, events) = match result {
                Ok(r) => r,
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && cursor < self.journal.first() =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::error!("notification endpoint {name}: reading the queue: {e}");
                    reader = None;
                    if !self
                        .pause(self.config.backoff.max(Duration::from_secs(1)))
                        .await
                    {
                        break;
                    }
                    continue;
                }
            };
            if !events.is_empty() {
                let body = Bytes::from(envelope(events.iter().map(Vec::as_slice)));
                if !self.deliver(&client, body).await {
                    break; // shutting down: these stay queued
                }
                delivered.increment(events.len() as u64);
            }
            cursor = next;
            self.save(cursor).await;
            pending.set(self.journal.end().saturating_sub(cursor) as f64);
        }
        backlog.abort();
    }

    /// Saves the cursor; a failure is logged (the events are sent again
    /// after a restart).
    async fn save(&self, cursor: u64) {
        let (journal, index, name) = (self.journal.clone(), self.index, self.config.name.clone());
        let result =
            tokio::task::spawn_blocking(move || journal.save_cursor(index, &name, cursor)).await;
        if let Ok(Err(e)) | Err(e) = result.map_err(std::io::Error::other) {
            tracing::error!(
                "notification endpoint {}: saving its cursor failed: {e}",
                self.config.name
            );
        }
    }

    /// Waits `d`; false when the registry is shutting down.
    async fn pause(&mut self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            _ = self.shutdown.changed() => false,
        }
    }

    /// Sends `body` until the endpoint accepts it; false when the registry
    /// shuts down first.
    async fn deliver(&mut self, client: &reqwest::Client, body: Bytes) -> bool {
        let c = self.config.clone();
        let mut failures: u32 = 0;
        loop {
            let mut req = client
                .post(&c.url)
                .header(CONTENT_TYPE, EVENTS_MEDIA_TYPE)
                .body(body.clone());
            for (h, v) in &c.headers {
                req = req.header(h.as_str(), v.as_str());
            }
            let sent = tokio::select! {
                r = req.send() => r,
                _ = self.shutdown.changed() => return false,
            };
            let (reason, why) = match sent {
                Ok(resp) if resp.status().as_u16() < 400 => {
                    if failures > 0 {
                        tracing::info!(
                            "notification endpoint {} accepts events again after {failures} failed attempts",
                            c.name
                        );
                    }
                    return true;
                }
                Ok(resp) => ("status", format!("answered {}", resp.status())),
                Err(e) if e.is_timeout() => {
                    ("timeout", format!("no answer within {:?}", c.timeout))
                }
                Err(e) => ("error", e.without_url().to_string()),
            };
            failures = failures.saturating_add(1);
            metrics::counter!(
                "registry_notifications_failures_total",
                "endpoint" => c.name.clone(),
                "reason" => reason
            )
            .increment(1);
            if failures == 1 {
                tracing::warn!(
                    "notification endpoint {} ({}): {why}; retrying",
                    c.name,
                    url_for_logs(&c.url)
                );
            } else {
                tracing::debug!("notification endpoint {}: {why}", c.name);
            }
            if failures >= c.threshold {
                if failures == c.threshold {
                    tracing::warn!(
                        "notification endpoint {}: {failures} failures in a row, retrying every {:?}",
                        c.name,
                        c.backoff
                    );
                }
                if !self.pause(c.backoff).await {
                    return false;
                }
            } else if *self.shutdown.borrow() {
                return false;
            }
        }
    }
}
