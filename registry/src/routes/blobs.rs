//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: blob download (with
//! `Range`) and removal from a repository.

use std::io::Read;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LOCATION,
    RANGE,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::auth::Granted;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::{Digest, RepoName};
use crate::routes::{empty_response, headers as h};
use crate::state::AppState;

/// `307` to where the storage serves the blob itself (`storage.redirect`);
/// the client sends its `Range` there.
fn redirect(digest: &Digest, url: &str) -> Result<Response> {
    let location =
        HeaderValue::from_str(url).map_err(|e| Error::internal("making a blob redirect", e))?;
    let mut headers = HeaderMap::new();
    headers.insert(LOCATION, location);
    h::set_digest(&mut headers, digest);
    Ok(empty_response(StatusCode::TEMPORARY_REDIRECT, headers))
}

/// Bytes read from storage per chunk of a download.
const READ_CHUNK: usize = 1024 * 1024;

pub async fn get(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    digest: &Digest,
    req_headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let range_header = req_headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (n, d) = (name.clone(), digest.clone());
    if head {
        let size = state.storage.run(move |s| s.stat_blob(&n, &d)).await?;
        let size = size.ok_or_else(|| Error::blob_unknown(digest))?;
        let mut resp = Response::new(Body::empty());
        set_blob_headers(resp.headers_mut(), digest, size);
        return Ok(resp);
    }
    if state.config.redirect {
        let (n, d) = (name.clone(), digest.clone());
        if let Some(url) = state.storage.run(move |s| s.blob_redirect(&n, &d)).await? {
            return redirect(digest, &url);
        }
    }
    // The size decides the range, the range where reading starts: both in
    // one trip to the blocking pool.
    let range = range_header.clone();
    let opened = state
        .storage
        .run(move |s| {
            let Some(size) = s.stat_blob(&n, &d)? else {
                return Ok(None);
            };
            let span = match range.as_deref() {
                None => Some((0, size)),
                Some(r) => parse_range(r, size).map(|(start, end)| (start, end - start + 1)),
            };
            let Some((start, len)) = span else {
                return Ok(Some(Opened::Unsatisfiable(size)));
            };
            Ok(s.read_blob(&n, &d, start)?
                .map(|(reader, size)| Opened::Reader(reader, size, start, len)))
        })
        .await?;
    let (mut reader, size, start, len) = match opened {
        None => return Err(Error::blob_unknown(digest)),
        Some(Opened::Unsatisfiable(size)) => {
            return Err(Error::new(
                ErrorCode::RangeInvalid,
                format!(
                    "range {:?} cannot be satisfied",
                    range_header.unwrap_or_default()
                ),
            )
            .with_header(CONTENT_RANGE, &format!("bytes */{size}")));
        }
        Some(Opened::Reader(reader, size, start, len)) => (reader, size, start, len),
    };
    let status = if range_header.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut remaining = len;
        while remaining > 0 {
            let want = READ_CHUNK.min(usize::try_from(remaining).unwrap_or(READ_CHUNK));
            let chunk = read_chunk(&mut reader, want);
            let failed = chunk.is_err();
            remaining -= want as u64;
            if tx.blocking_send(chunk).is_err() || failed {
                return; // client went away, or the error was sent
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    set_blob_headers(headers, digest, len);
    if status == StatusCode::PARTIAL_CONTENT {
        h::set(
            headers,
            CONTENT_RANGE,
            &format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    Ok(resp)
}

/// A blob opened for a download, or why not.
enum Opened {
    /// Reader from `start`, the blob's size, `start`, bytes to send.
    Reader(Box<dyn Read + Send>, u64, u64, u64),
    /// The range lies outside a blob of this size.
    Unsatisfiable(u64),
}

/// Reads the next `len` bytes. A file that ends early fails the body,
/// which the client sees as a failed transfer, never as wrong data.
fn read_chunk(reader: &mut impl Read, len: usize) -> std::io::Result<Bytes> {
    // read_to_end fills spare capacity without zeroing it first.
    let mut buf = Vec::with_capacity(len);
    reader.by_ref().take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "blob is shorter than its size",
        ));
    }
    Ok(Bytes::from(buf))
}

fn set_blob_headers(headers: &mut HeaderMap, digest: &Digest, len: u64) {
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Content-addressed: it never changes.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    h::set(headers, ETAG, &format!("\"{digest}\""));
    h::set_digest(headers, digest);
}

/// `bytes=start-end`, `bytes=start-` or `bytes=-suffix` (one range only),
/// as an inclusive `(start, end)` within `size`.
fn parse_range(header: &str, size: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let suffix: u64 = b.parse().ok()?;
        if suffix == 0 {
            return None;
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end: u64 = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().ok()?.min(size - 1)
        };
        (start, end)
    };
    (start <= end && start < size).then_some((start, end))
}

pub async fn delete(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    digest: &Digest,
) -> Result<Response> {
    super::deletes_allowed(state)?;
    let (n, d) = (name.clone(), digest.clone());
    if !state.storage.run(move |s| s.unlink_blob(&n, &d)).await? {
        return Err(Error::blob_unknown(digest));
    }
    let mut headers = HeaderMap::new();
    h::set_digest(&mut headers, digest);
    Ok(empty_response(StatusCode::ACCEPTED, headers))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=-500", 100), Some((0, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-0", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
        assert_eq!(parse_range("bytes=-0", 100), None);
        assert_eq!(
            parse_range("bytes=0-18446744073709551615", 10),
            Some((0, 9))
        );
        assert_eq!(parse_range("bytes=-18446744073709551615", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=18446744073709551615-", 10), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn ranges_never_panic_and_stay_inside_the_blob(
            header in "(bytes=|bytes |items=|)[0-9 ]{0,22}-?[0-9 ]{0,22}(,[0-9]{0,3}-[0-9]{0,3})?",
            size: u64,
        ) {
            if let Some((start, end)) = parse_range(&header, size) {
                proptest::prop_assert!(start <= end && end < size, "{header} on {size}");
            }
        }

        #[test]
        fn any_range_never_panics(header in "\\PC{0,40}", size: u64) {
            let _ = parse_range(&header, size);
        }
    }
}
