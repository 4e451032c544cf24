//! The listener's limits over real sockets on 127.0.0.1: a trickled header
//! is cut at its total deadline, an idle keep-alive connection is closed,
//! slow sockets filling the connection cap do not keep a normal request
//! out, and a slow but steady body is never cut.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, put};
use service::{Limits, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

struct TestServer {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

fn start(limits: Limits) -> TestServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/upload",
        put(|body: Body| async move {
            let mut body = body.into_data_stream();
            let mut n = 0usize;
            while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                n += chunk.unwrap().len();
            }
            n.to_string()
        }),
    );
    let (tx, rx) = oneshot::channel::<()>();
    let options = ServeOptions {
        limits,
        tls: None,
        drain: Duration::from_secs(1),
    };
    tokio::spawn(service::serve(listener, router, options, async {
        let _ = rx.await;
    }));
    TestServer { addr, _stop: tx }
}

/// Waits until the server closes `stream` (EOF or reset), up to `limit`;
/// returns when, or `None` if it stayed open.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

/// A complete `GET /` on a new connection: the response, or why not.
async fn get_root(addr: SocketAddr) -> Result<String, String> {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
}

fn limits(header_read: u64, idle: u64, max_connections: usize) -> Limits {
    Limits {
        header_read: Duration::from_secs(header_read),
        idle: Duration::from_secs(idle),
        max_connections,
    }
}

#[tokio::test]
async fn trickled_headers_are_cut_at_a_total_deadline() {
    let server = start(limits(2, 30, 64));
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let started = Instant::now();
    // One header byte per second: each byte would reset a per-read
    // timeout, never a total one.
    let trickle = async {
        for b in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if writer.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let closed = async {
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(6), async {
        tokio::select! {
            at = closed => Some(at),
            () = trickle => None,
        }
    })
    .await;
    let Ok(Some(at)) = result else {
        panic!("a connection trickling header bytes stayed open for 6 s")
    };
    let after = at - started;
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(4),
        "closed after {after:?}, expected about 2 s"
    );
}

#[tokio::test]
async fn idle_connections_are_closed_and_keepalive_works_until_then() {
    let server = start(limits(5, 1, 64));
    // A connection that never sends anything.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let at = closed_within(&mut silent, Duration::from_secs(4))
        .await
        .expect("a silent connection stayed open for 4 s with a 1 s idle timeout");
    assert!(
        at - started >= Duration::from_millis(800),
        "{:?}",
        at - started
    );

    // Two requests on one keep-alive connection, then silence.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut idle_from = Instant::now();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).ends_with("ok") {
            let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("response in time")
                .unwrap();
            assert!(n > 0, "closed before answering");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        // The idle deadline runs from the end of the last response.
        idle_from = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let at = closed_within(&mut s, Duration::from_secs(4))
        .await
        .expect("an idle keep-alive connection stayed open for 4 s");
    let after = at - idle_from;
    assert!(
        after >= Duration::from_millis(700) && after < Duration::from_secs(3),
        "closed {after:?} after its last response, expected about 1 s"
    );
}

#[tokio::test]
async fn slow_sockets_filling_the_cap_do_not_keep_clients_out() {
    // Deadlines far away: only the cap's eviction can make room.
    let server = start(limits(30, 30, 4));
    let mut slow = Vec::new();
    for _ in 0..12 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nX-Slow: a").await.unwrap();
        slow.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 0..3 {
        let answer = get_root(server.addr).await.unwrap_or_else(|e| {
            panic!("round {round}: a normal request got no answer with the cap full: {e}")
        });
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    // The oldest slow sockets made room; the newest ones may remain.
    let evicted = closed_within(&mut slow[0], Duration::from_millis(500)).await;
    assert!(evicted.is_some(), "the oldest slow socket was not closed");
}

#[tokio::test]
async fn a_slow_but_steady_body_is_not_cut() {
    // Both deadlines are much shorter than the upload.
    let server = start(limits(1, 1, 4));
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let chunk = vec![b'x'; 16 * 1024];
    let chunks = 14; // one every 250 ms: 3.5 s
    let total = chunk.len() * chunks;
    s.write_all(
        format!("PUT /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    for _ in 0..chunks {
        s.write_all(&chunk)
            .await
            .expect("the server cut a steady upload");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(&total.to_string()), "{out}");
}
