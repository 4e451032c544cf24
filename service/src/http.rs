//! The outermost layer of both routers: gives each request an id (returned
//! as `X-Request-Id`, and carried by every log line of the request through
//! a span), counts it in the HTTP metrics, and writes the access log line
//! once the response body is finished.
//!
//! The id is always our own: an incoming `X-Request-Id` (from a proxy) is
//! not trusted to be unique or honest, so it is only logged beside ours as
//! `upstream_request_id` when it is well-formed, to join both logs.
//!
//! Access lines carry the path without its query string (queries carry
//! tokens and passwords in some clients), never headers or bodies.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use bytes::Buf;
use http::header::HeaderName;
use http::{HeaderValue, StatusCode};
use tracing::Instrument;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The route of a response, as a metrics label; set by the application
/// in the response's extensions (else [`Observer::classify`] decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLabel(pub &'static str);

/// Who made the request, when known (a user name or token subject); set by
/// the application in the response's extensions; logged, never a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(pub String);

/// This request's id, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub HeaderValue);

/// How one application is observed.
#[derive(Debug, Clone, Copy)]
pub struct Observer {
    /// The server's name, in access lines (`service`).
    pub service: &'static str,
    /// Write an access line per request (target `access`).
    pub access_log: bool,
    /// The route label of a request whose response names none.
    pub classify: fn(&str) -> &'static str,
}

/// Wraps `router` in the observing layer.
pub fn observe(router: Router, observer: Observer) -> Router {
    crate::metrics::handle();
    router.layer(middleware::from_fn_with_state(Arc::new(observer), run))
}

fn next_id() -> HeaderValue {
    use std::fmt::Write;
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut s = String::with_capacity(24);
    let _ = write!(s, "{prefix:08x}{n:012x}");
    HeaderValue::from_str(&s).expect("hex digits")
}

/// An upstream id worth logging: short, printable, no spaces or quotes.
fn upstream_id(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b)))
    .then_some(s)
}

async fn run(State(observer): State<Arc<Observer>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = next_id();
    let method = crate::metrics::method_label(req.method());
    let path = req.uri().path().to_owned();
    let upstream = req
        .headers()
        .get(X_REQUEST_ID)
        .and_then(upstream_id)
        .map(str::to_owned);
    req.extensions_mut().insert(RequestId(id.clone()));
    // Bodies are counted only when there is one (GETs pay nothing).
    let bytes_in = if http_body::Body::is_end_stream(req.body()) {
        None
    } else {
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        req = req.map(|b| {
            Body::new(Counted {
                inner: b,
                count: counted,
            })
        });
        Some(count)
    };
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or_default());
    crate::metrics::in_flight().increment(1.0);
    let mut resp = next.run(req).instrument(span).await;
    resp.headers_mut().insert(X_REQUEST_ID, id.clone());
    let route = match resp.extensions().get::<RouteLabel>() {
        Some(r) => r.0,
        None => (observer.classify)(&path),
    };
    let subject = resp.extensions_mut().remove::<Subject>().map(|s| s.0);
    let finish = Finish {
        started,
        route,
        method,
        status: resp.status(),
        access_log: observer.access_log,
        service: observer.service,
        id,
        upstream,
        path,
        subject,
        bytes_in,
        bytes_out: 0,
    };
    resp.map(|inner| {
        Body::new(Observed {
            inner,
            finish: Some(finish),
        })
    })
}

/// Records the request when its response body is done (or dropped: the
/// client went away).
struct Finish {
    started: Instant,
    route: &'static str,
    method: &'static str,
    status: StatusCode,
    access_log: bool,
    service: &'static str,
    id: HeaderValue,
    upstream: Option<String>,
    path: String,
    subject: Option<String>,
    bytes_in: Option<Arc<AtomicU64>>,
    bytes_out: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        let series = crate::metrics::series(self.route, self.method, self.status);
        series.requests.increment(1);
        series.duration.record(elapsed.as_secs_f64());
        if bytes_in > 0 {
            series.bytes_in.increment(bytes_in);
        }
        if self.bytes_out > 0 {
            series.bytes_out.increment(self.bytes_out);
        }
        crate::metrics::in_flight().decrement(1.0);
        if self.access_log {
            tracing::info!(
                target: "access",
                service = self.service,
                request_id = self.id.to_str().unwrap_or_default(),
                upstream_request_id = self.upstream.as_deref(),
                method = self.method,
                path = self.path.as_str(),
                route = self.route,
                status = self.status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                bytes_in,
                bytes_out = self.bytes_out,
                subject = self.subject.as_deref(),
            );
        }
    }
}

pin_project_lite::pin_project! {
    struct Observed {
        #[pin]
        inner: Body,
        finish: Option<Finish>,
    }
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(finish)) = (f.data_ref(), this.finish.as_mut()) {
                    finish.bytes_out += data.remaining() as u64;
                }
            }
            // Finished (or failed): record now, not when hyper drops us.
            None | Some(Err(_)) => drop(this.finish.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    struct Counted {
        #[pin]
        inner: Body,
        count: Arc<AtomicU64>,
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(data) = f.data_ref()
        {
            this.count
                .fetch_add(data.remaining() as u64, Ordering::Relaxed);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
