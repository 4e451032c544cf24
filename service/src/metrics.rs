//! Prometheus metrics: the process-wide recorder (the `metrics` facade with
//! `metrics-exporter-prometheus`), the `/metrics` handler, and the HTTP
//! series both servers share, with their handles cached so that the hot
//! path does one read-locked map lookup and atomic increments, nothing
//! allocated.
//!
//! Label values are always from small fixed sets (route names, methods,
//! status codes, reasons): never repository or user names.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, StatusCode};
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ServeOptions;

/// Buckets of every `*_duration_seconds` histogram: 0.5 ms to 5 min.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// Installs the process-wide recorder on first use and returns its handle.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first (a test
        // harness); the handle then renders nothing, which is harmless.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        // Histograms' summaries are kept until rendered; render now and
        // then so a server nobody scrapes does not grow.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                }
            })
            .expect("spawning a thread");
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests answered, by route, method and status"
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from a request's arrival to the end of its response body"
    );
    metrics::describe_counter!(
        "http_request_bytes_total",
        metrics::Unit::Bytes,
        "Request body bytes received, by route"
    );
    metrics::describe_counter!(
        "http_response_bytes_total",
        metrics::Unit::Bytes,
        "Response body bytes sent, by route"
    );
    metrics::describe_gauge!("http_requests_in_flight", "Requests being served");
    metrics::describe_counter!(
        "http_connections_closed_total",
        "Connections closed by the server's limits: timed_out (idle or header deadline), \
         evicted (to make room past the connection cap), refused (cap reached, all busy)"
    );
}

/// `GET /metrics`: the text exposition format.
#[allow(clippy::unused_async)] // an axum handler
pub async fn render() -> Response {
    let body = handle().render();
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// Serves `GET path` ([`render`]) on its own listener in the background,
/// with the main listener's limits and drain time, in plain HTTP even when
/// the main listener has TLS. A failure is logged, not fatal: the main
/// listener goes on.
pub fn spawn_listener(listener: std::net::TcpListener, path: &str, options: &ServeOptions) {
    let router = axum::Router::new().route(path, axum::routing::get(render));
    let options = ServeOptions {
        tls: None,
        ..options.clone()
    };
    tokio::spawn(async move {
        if let Err(e) = crate::serve(listener, router, options, crate::shutdown_signal()).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
}

/// Counts a connection closed by the listener's limits.
pub(crate) fn connection_event(reason: &'static str) {
    static HANDLES: OnceLock<[Counter; 3]> = OnceLock::new();
    let [timed_out, evicted, refused] = HANDLES.get_or_init(|| {
        handle();
        ["timed_out", "evicted", "refused"]
            .map(|r| metrics::counter!("http_connections_closed_total", "reason" => r))
    });
    match reason {
        "timed_out" => timed_out.increment(1),
        "evicted" => evicted.increment(1),
        _ => refused.increment(1),
    }
}

/// A method as a label: the standard ones, else `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The series of one (route, method, status).
#[derive(Clone)]
pub(crate) struct Series {
    pub requests: Counter,
    pub duration: Histogram,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
}

type SeriesKey = (&'static str, &'static str, u16);

/// The handles of one (route, method, status), made on first use.
pub(crate) fn series(route: &'static str, method: &'static str, status: StatusCode) -> Series {
    static CACHE: OnceLock<RwLock<HashMap<SeriesKey, Series>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        handle();
        RwLock::default()
    });
    let key = (route, method, status.as_u16());
    if let Some(s) = cache
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
    {
        return s.clone();
    }
    let s = Series {
        requests: metrics::counter!("http_requests_total",
            "route" => route, "method" => method, "status" => status.as_u16().to_string()),
        duration: metrics::histogram!("http_request_duration_seconds",
            "route" => route, "method" => method),
        bytes_in: metrics::counter!("http_request_bytes_total", "route" => route),
        bytes_out: metrics::counter!("http_response_bytes_total", "route" => route),
    };
    cache
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, s.clone());
    s
}

/// Requests being served.
pub(crate) fn in_flight() -> &'static Gauge {
    static G: OnceLock<Gauge> = OnceLock::new();
    G.get_or_init(|| {
        handle();
        metrics::gauge!("http_requests_in_flight")
    })
}

/// A counter with fixed labels, registered once (a `static`), for the
/// servers' own series.
pub struct LazyCounter {
    make: fn() -> Counter,
    cell: OnceLock<Counter>,
}

impl LazyCounter {
    pub const fn new(make: fn() -> Counter) -> LazyCounter {
        LazyCounter {
            make,
            cell: OnceLock::new(),
        }
    }

    pub fn increment(&self, n: u64) {
        self.cell
            .get_or_init(|| {
                handle();
                (self.make)()
            })
            .increment(n);
    }
}

impl std::fmt::Debug for LazyCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyCounter")
    }
}

/// A gauge with fixed labels, registered once, counting what is in
/// progress through [`LazyGauge::enter`].
pub struct LazyGauge {
    make: fn() -> Gauge,
    cell: OnceLock<Gauge>,
}

impl LazyGauge {
    pub const fn new(make: fn() -> Gauge) -> LazyGauge {
        LazyGauge {
            make,
            cell: OnceLock::new(),
        }
    }

    /// One more in progress, until the guard is dropped.
    pub fn enter(&'static self) -> GaugeGuard {
        let gauge = self.cell.get_or_init(|| {
            handle();
            (self.make)()
        });
        gauge.increment(1.0);
        GaugeGuard(gauge)
    }
}

impl std::fmt::Debug for LazyGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LazyGauge")
    }
}

/// See [`LazyGauge::enter`].
#[derive(Debug)]
pub struct GaugeGuard(&'static Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
