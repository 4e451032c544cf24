//! The listener of both servers: accepts connections (plain or TLS), bounds
//! how long a connection may sit without a request in progress, caps the
//! number of connections, and drains on shutdown.
//!
//! Why not hyper's own `header_read_timeout`: hyper starts its deadline when
//! it begins waiting for a request head, which on a keep-alive connection is
//! the end of the previous response, so it cannot tell an idle keep-alive
//! connection (cheap, worth keeping for a while) from one trickling header
//! bytes (an attack, to be cut early); and hyper-util's protocol detection
//! (HTTP/1 or HTTP/2) before it is not timed at all. Here every connection's
//! stream and service are wrapped ([`LimitAcceptor`]): the service marks the
//! connection *busy* from the moment a request reaches it until its response
//! body is finished, and the stream enforces, while it is not busy,
//!
//! - `idle`: from accept or the end of the last response until the first byte
//!   of the next request;
//! - `header_read`: from that first byte until the request reaches the
//!   service, a total deadline (trickling bytes does not extend it); it also
//!   covers a TLS handshake.
//!
//! A busy connection has no deadline, so a multi-GB upload that keeps going
//! is never cut. When `max_connections` are open, a new connection closes
//! the one that has been without a request for the longest (idle or still
//! sending its headers — a slow-loris socket is always older than a fresh
//! client); only when every connection is busy is the new one refused. So a
//! flood of slow sockets cannot keep real clients out.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use futures_util::task::AtomicWaker;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Connection limits; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Total time for a request's headers (and a TLS handshake), from their
    /// first byte.
    pub header_read: Duration,
    /// How long a connection may wait for the first byte of a request.
    pub idle: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Default `header_read`.
pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(10);
/// Default `idle`.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read: DEFAULT_HEADER_READ,
            idle: DEFAULT_IDLE,
            max_connections: default_max_connections(),
        }
    }
}

/// Half the process's open-file limit (the other half is for files and
/// outgoing connections), between 16 and 4096.
pub fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 2).unwrap_or(4096).clamp(16, 4096)
}

/// The connections of one listener.
#[derive(Debug)]
struct Tracker {
    limits: Limits,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    /// Requests in progress (several with HTTP/2).
    busy: AtomicU32,
    /// Milliseconds since `Tracker::base` when the connection last became
    /// not busy (or was accepted).
    idle_since: AtomicU64,
    /// Milliseconds since `Tracker::base` + 1 when the first byte of the
    /// next request arrived; 0 while none has.
    header_started: AtomicU64,
    evicted: CancellationToken,
    /// The reader, woken when the connection stops being busy so that it
    /// arms its deadline.
    reader: AtomicWaker,
}

/// Times are kept as milliseconds since one process-wide instant, so that
/// they fit in atomics.
fn base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64
}

fn at(ms: u64) -> tokio::time::Instant {
    tokio::time::Instant::from_std(base() + Duration::from_millis(ms))
}

impl Tracker {
    /// Registers a new connection, closing the longest-waiting one that is
    /// not busy when the cap is reached. `None`: every connection is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut conns = self
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if conns.len() >= self.limits.max_connections {
            let victim = conns
                .values()
                .filter(|c| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.idle_since.load(Ordering::Relaxed))
                .map(|c| c.id)?;
            if let Some(v) = conns.remove(&victim) {
                v.evicted.cancel();
                crate::metrics::connection_event("evicted");
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            busy: AtomicU32::new(0),
            idle_since: AtomicU64::new(now_ms()),
            header_started: AtomicU64::new(0),
            evicted: CancellationToken::new(),
            reader: AtomicWaker::new(),
        });
        conns.insert(id, conn.clone());
        Some(conn)
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

/// An acceptor (for axum-server) applying [`Limits`]; wraps another
/// acceptor (`NoDelayAcceptor`), and is itself wrapped by the TLS one, so
/// that the handshake is under the header deadline.
#[derive(Debug, Clone)]
pub struct LimitAcceptor<A> {
    inner: A,
    tracker: Arc<Tracker>,
}

impl<A> LimitAcceptor<A> {
    pub fn new(inner: A, limits: Limits) -> LimitAcceptor<A> {
        LimitAcceptor {
            inner,
            tracker: Arc::new(Tracker {
                limits,
                next_id: AtomicU64::new(0),
                conns: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Open connections (for tests and metrics).
    pub fn open_connections(&self) -> usize {
        self.tracker
            .conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

impl<I, S, A> axum_server::accept::Accept<I, S> for LimitAcceptor<A>
where
    A: axum_server::accept::Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = LimitedStream<A::Stream>;
    type Service = LimitedService<A::Service>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let tracker = self.tracker.clone();
        let Some(conn) = tracker.admit() else {
            crate::metrics::connection_event("refused");
            tracing::warn!(
                max = tracker.limits.max_connections,
                "every connection is busy; refusing a new one"
            );
            // Dropping the stream closes it.
            drop(stream);
            return Box::pin(std::future::ready(Err(io::Error::other(
                "connection limit reached",
            ))));
        };
        let inner = self.inner.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = match inner.await {
                Ok(s) => s,
                Err(e) => {
                    tracker.remove(conn.id);
                    return Err(e);
                }
            };
            let deadline = at(conn.idle_since.load(Ordering::Relaxed)) + tracker.limits.idle;
            Ok((
                LimitedStream {
                    inner: stream,
                    evicted: Box::pin(conn.evicted.clone().cancelled_owned()),
                    sleep: Box::pin(tokio::time::sleep_until(deadline)),
                    conn: conn.clone(),
                    tracker,
                },
                LimitedService {
                    inner: service,
                    conn,
                },
            ))
        })
    }
}

/// A connection's stream: reads end (EOF) when the connection is evicted or
/// its idle/header deadline passes while it is not busy.
pub struct LimitedStream<S> {
    inner: S,
    conn: Arc<Conn>,
    tracker: Arc<Tracker>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    sleep: Pin<Box<Sleep>>,
}

impl<S> Drop for LimitedStream<S> {
    fn drop(&mut self) {
        self.tracker.remove(self.conn.id);
    }
}

impl<S> LimitedStream<S> {
    /// The deadline in force, `None` while a request is in progress.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        if self.conn.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let limits = &self.tracker.limits;
        Some(match self.conn.header_started.load(Ordering::Acquire) {
            0 => at(self.conn.idle_since.load(Ordering::Acquire)) + limits.idle,
            started => at(started - 1) + limits.header_read,
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LimitedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(()));
        }
        this.conn.reader.register(cx.waker());
        let deadline = this.deadline();
        if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
            crate::metrics::connection_event("timed_out");
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && this.conn.busy.load(Ordering::Acquire) == 0
                    && this.conn.header_started.load(Ordering::Acquire) == 0
                {
                    this.conn
                        .header_started
                        .store(now_ms() + 1, Ordering::Release);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(deadline) = deadline {
                    if this.sleep.deadline() != deadline {
                        this.sleep.as_mut().reset(deadline);
                    }
                    if this.sleep.as_mut().poll(cx).is_ready() {
                        crate::metrics::connection_event("timed_out");
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LimitedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A connection's service: marks the connection busy from a request's
/// arrival until its response body is finished or dropped.
#[derive(Clone)]
pub struct LimitedService<S> {
    inner: S,
    conn: Arc<Conn>,
}

struct BusyGuard(Arc<Conn>);

impl BusyGuard {
    fn new(conn: &Arc<Conn>) -> BusyGuard {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        BusyGuard(conn.clone())
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.header_started.store(0, Ordering::Release);
            self.0.idle_since.store(now_ms(), Ordering::Release);
            self.0.reader.wake();
        }
    }
}

impl<S, R, B> tower::Service<Request<R>> for LimitedService<S>
where
    S: tower::Service<Request<R>, Response = Response<B>>,
{
    type Response = Response<BusyBody<B>>;
    type Error = S::Error;
    type Future = BusyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<R>) -> Self::Future {
        let guard = BusyGuard::new(&self.conn);
        BusyFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct BusyFuture<F> {
        #[pin]
        inner: F,
        guard: Option<BusyGuard>,
    }
}

impl<F, B, E> Future for BusyFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<BusyBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|inner| BusyBody {
            inner,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy until it is done.
    pub struct BusyBody<B> {
        #[pin]
        inner: B,
        _guard: Option<BusyGuard>,
    }
}

impl<B: http_body::Body> http_body::Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            // Finished: the connection is free for its next request now,
            // even if hyper keeps the body value a while longer.
            this._guard.take();
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

/// How to serve: TLS, connection limits, drain time on shutdown.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    pub tls: Option<axum_server::tls_rustls::RustlsConfig>,
    /// How long in-flight requests get to finish after the shutdown signal.
    pub drain: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish for up to `drain` and drops the rest. Handlers
/// see the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let on_signal = handle.clone();
    let drain = options.drain;
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down; draining requests for up to {drain:?}");
        on_signal.graceful_shutdown(Some(drain));
    });
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Small responses must not wait for delayed ACKs (40 ms each).
    let acceptor = LimitAcceptor::new(axum_server::accept::NoDelayAcceptor::new(), options.limits);
    match options.tls {
        Some(tls) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                .handshake_timeout(options.limits.header_read)
                .acceptor(acceptor);
            axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(service)
                .await
        }
        None => {
            axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle)
                .serve(service)
                .await
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
