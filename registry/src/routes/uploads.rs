//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic
//! upload, cross-repository mount), and `GET`/`PATCH`/`PUT`/`DELETE` on
//! `/v2/<name>/blobs/uploads/<id>` (status, chunk, completion, cancel).

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, LOCATION, RANGE};
use http::{HeaderMap, StatusCode};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::auth::{Caller, Granted};
use crate::error::{Error, ErrorCode, Result};
use crate::oci::{Digest, RepoName};
use crate::routes::{empty_response, headers as h, query_param};
use crate::state::AppState;
use crate::storage::UploadState;
use crate::storage::upload_limits::UploadOwner;
use crate::storage::uploads::AppendError;

/// The peer's address, when the server was started with it (not in
/// in-process tests).
pub fn peer(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip())
}

/// Whose session an upload counts as: the authenticated user, else the
/// client's address (anonymous tokens included: they name nobody).
fn owner(caller: &Caller, peer: Option<IpAddr>) -> UploadOwner {
    match caller {
        Caller::User(user) => UploadOwner::user(user),
        Caller::Token(v) if !v.subject.is_empty() => UploadOwner::user(&v.subject),
        _ => UploadOwner::address(peer),
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn start(
    state: &AppState,
    _: &Granted,
    caller: &Caller,
    peer: Option<IpAddr>,
    name: &RepoName,
    query: &str,
    req_headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    if let Some(mount) = query_param(query, "mount") {
        let digest = Digest::parse(&mount)?;
        if let Some(resp) =
            try_mount(state, caller, name, &digest, query_param(query, "from")).await?
        {
            return Ok(resp);
        }
    }
    let digest = query_param(query, "digest")
        .map(|d| Digest::parse(&d))
        .transpose()?;
    let (n, owner) = (name.clone(), owner(caller, peer));
    let limits = state.config.upload_limits.clone();
    let id = state
        .storage
        .run(move |s| s.create_upload(&n, &owner, &limits))
        .await?;
    match digest {
        // Monolithic upload in one POST.
        Some(digest) => {
            let result = complete(state, name, id, &digest, req_headers, body).await;
            if result.is_err() {
                let n = name.clone();
                let _ = state.storage.run(move |s| s.cancel_upload(&n, id)).await;
            }
            result
        }
        None => Ok(upload_response(StatusCode::ACCEPTED, name, id, 0)),
    }
}

/// Links `digest` from repository `from` into `name` when the caller may
/// pull from `from` and it holds the blob. `None` means: fall back to a
/// normal upload (without telling whether the blob exists elsewhere).
async fn try_mount(
    state: &AppState,
    caller: &Caller,
    name: &RepoName,
    digest: &Digest,
    from: Option<String>,
) -> Result<Option<Response>> {
    let Some(from) = from.and_then(|f| RepoName::parse(&f).ok()) else {
        return Ok(None);
    };
    if !caller.may_pull(&from) {
        return Ok(None);
    }
    let (n, d, f) = (name.clone(), digest.clone(), from.clone());
    let mounted = state
        .storage
        .run(move |s| {
            let Some(size) = s.stat_blob(&f, &d)? else {
                return Ok(None);
            };
            s.link_blob(&n, &d)?;
            Ok(Some(size))
        })
        .await?;
    Ok(mounted.map(|size| blob_created(name, digest, size, Some(&from))))
}

pub async fn status(state: &AppState, _: &Granted, name: &RepoName, id: Uuid) -> Result<Response> {
    let upload = state.storage.lock_upload(name, id).await?;
    Ok(upload_response(
        StatusCode::NO_CONTENT,
        name,
        id,
        upload.offset,
    ))
}

pub async fn patch(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    id: Uuid,
    req_headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let mut upload = state.storage.lock_upload(name, id).await?;
    append(state, name, id, &mut upload, req_headers, body).await?;
    Ok(upload_response(
        StatusCode::ACCEPTED,
        name,
        id,
        upload.offset,
    ))
}

pub async fn put(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    id: Uuid,
    query: &str,
    req_headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let digest = query_param(query, "digest")
        .ok_or_else(|| {
            Error::new(
                ErrorCode::DigestInvalid,
                "the digest parameter is required to complete an upload",
            )
        })
        .and_then(|d| Digest::parse(&d))?;
    complete(state, name, id, &digest, req_headers, body).await
}

pub async fn cancel(state: &AppState, _: &Granted, name: &RepoName, id: Uuid) -> Result<Response> {
    let _upload = state.storage.lock_upload(name, id).await?;
    let n = name.clone();
    state.storage.run(move |s| s.cancel_upload(&n, id)).await?;
    Ok(empty_response(StatusCode::NO_CONTENT, HeaderMap::new()))
}

/// Takes the upload, appends the final chunk, if any, and completes the
/// upload as `digest`.
async fn complete(
    state: &AppState,
    name: &RepoName,
    id: Uuid,
    digest: &Digest,
    req_headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let mut upload = match state.storage.lock_upload(name, id).await {
        Ok(upload) => upload,
        Err(crate::storage::Error::UploadUnknown) => {
            return already_completed(state, name, id, digest).await;
        }
        Err(e) => return Err(e.into()),
    };
    let length = content_length(req_headers)?;
    let (n, d, offset, known) = (
        name.clone(),
        digest.clone(),
        upload.offset,
        upload.known_digest(),
    );
    let replayed = state
        .storage
        .run(move |s| s.begin_completion(&n, id, offset, known.as_ref(), &d, length))
        .await?;
    // A retry of a completion that appended this body before it died:
    // the body is in, and the commit checks the digest.
    if !replayed {
        append(state, name, id, &mut upload, req_headers, body).await?;
    }
    let size = upload.offset;
    let (n, d) = (name.clone(), digest.clone());
    let mut taken = std::mem::replace(&mut *upload, UploadState::empty());
    let (result, back) = state
        .storage
        .run(move |s| {
            let r = s.commit_upload(&n, id, &mut taken, &d);
            Ok((r, taken))
        })
        .await?;
    *upload = back;
    result?;
    Ok(blob_created(name, digest, size, None))
}

/// The answer to completing an upload that is gone: `201` when the
/// repository holds the blob, or when a try of this completion committed
/// it and died before linking it, as a retried completion whose first
/// answer was lost finds them (a replica killed mid-completion, and a
/// proxy such as nginx retrying the PUT on another);
/// `BLOB_UPLOAD_UNKNOWN` otherwise. A blob the upload could not have made
/// is never linked here on the client's word.
async fn already_completed(
    state: &AppState,
    name: &RepoName,
    id: Uuid,
    digest: &Digest,
) -> Result<Response> {
    let (n, d) = (name.clone(), digest.clone());
    let size = state
        .storage
        .run(move |s| match s.stat_blob(&n, &d)? {
            Some(size) => Ok(Some(size)),
            None => s.finish_completed(&n, id, &d),
        })
        .await?;
    match size {
        Some(size) => Ok(blob_created(name, digest, size, None)),
        None => Err(crate::storage::Error::UploadUnknown.into()),
    }
}

/// The request's Content-Length, if it has one (as text); `SIZE_INVALID`
/// when it is not a number.
fn content_length(req_headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = req_headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let length = v.trim().parse::<u64>().map_err(|_| {
        Error::new(
            ErrorCode::SizeInvalid,
            format!("invalid Content-Length {v:?}"),
        )
    })?;
    Ok(Some(length))
}

/// Streams a request body into the upload, enforcing `Content-Range` (the
/// chunk must start where the upload ends) and `Content-Length`.
async fn append(
    state: &AppState,
    name: &RepoName,
    id: Uuid,
    upload: &mut OwnedMutexGuard<UploadState>,
    req_headers: &HeaderMap,
    body: Body,
) -> Result<()> {
    let header = |n: &str| req_headers.get(n).and_then(|v| v.to_str().ok());
    let length = content_length(req_headers)?;
    let mut expected = length;
    if let Some(range) = header("content-range") {
        let chunk = parse_content_range(range).map_err(|e| match e {
            RangeError::Syntax => Error::new(
                ErrorCode::BlobUploadInvalid,
                format!("invalid Content-Range {range:?}"),
            ),
            RangeError::Impossible => range_not_satisfiable(name, id, upload.offset),
        })?;
        if chunk.start != upload.offset {
            return Err(range_not_satisfiable(name, id, upload.offset));
        }
        if length.is_some_and(|l| l != chunk.len) {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!(
                    "Content-Length {} does not match Content-Range {range}",
                    length.unwrap_or_default()
                ),
            ));
        }
        expected = Some(chunk.len);
    }
    if expected == Some(0) {
        return Ok(());
    }
    let start = upload.offset;
    match state
        .storage
        .append_upload(name, id, upload, body.into_data_stream(), expected)
        .await
    {
        Ok(_) => Ok(()),
        Err(AppendError::Storage(e)) => Err(e.into()),
        Err(AppendError::Length { received }) => Err(Error::new(
            ErrorCode::SizeInvalid,
            format!(
                "received {received} bytes, {} were announced",
                expected.unwrap_or_default()
            ),
        )),
        Err(AppendError::Body(e)) => {
            tracing::info!(upload = %id, "upload body failed at offset {start}: {e}");
            Err(Error::new(
                ErrorCode::BlobUploadInvalid,
                format!("reading the request body failed: {e}"),
            ))
        }
    }
}

/// Where a chunk goes, from its `Content-Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChunkRange {
    start: u64,
    /// At least 1: the range is inclusive.
    len: u64,
}

/// Why a `Content-Range` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeError {
    /// Not `<start>-<end>`: a malformed request (400).
    Syntax,
    /// Well formed but no chunk can have it — the end before the start, or
    /// a length past `u64::MAX` (416).
    Impossible,
}

/// `<start>-<end>` (also with a `bytes ` prefix and `/size` suffix), both
/// inclusive. The length is computed with checked arithmetic: `0-(2^64-1)`
/// would otherwise wrap to an empty chunk.
fn parse_content_range(v: &str) -> Result<ChunkRange, RangeError> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map_or(v, |r| r.trim_start_matches([' ', '=']));
    let v = v.split('/').next().ok_or(RangeError::Syntax)?;
    let (a, b) = v.split_once('-').ok_or(RangeError::Syntax)?;
    let number = |s: &str| {
        let s = s.trim();
        // u64::from_str accepts a leading `+`; a range never has one.
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(RangeError::Syntax);
        }
        // All digits, so the only failure left is a value past u64::MAX.
        s.parse::<u64>().map_err(|_| RangeError::Impossible)
    };
    let (start, end) = (number(a)?, number(b)?);
    let len = end
        .checked_sub(start)
        .and_then(|d| d.checked_add(1))
        .ok_or(RangeError::Impossible)?;
    Ok(ChunkRange { start, len })
}

fn range_value(offset: u64) -> String {
    // distribution's convention: "0-0" for an empty upload.
    format!("0-{}", offset.saturating_sub(1))
}

fn range_not_satisfiable(name: &RepoName, id: Uuid, offset: u64) -> Error {
    Error::new(
        ErrorCode::RangeInvalid,
        format!("chunk does not start at the upload's end (offset {offset})"),
    )
    .with_header(RANGE, &range_value(offset))
    .with_header(LOCATION, &upload_location(name, id))
    .with_header(h::DOCKER_UPLOAD_UUID, &id.to_string())
}

fn upload_location(name: &RepoName, id: Uuid) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn upload_response(status: StatusCode, name: &RepoName, id: Uuid, offset: u64) -> Response {
    let mut headers = HeaderMap::new();
    h::set(&mut headers, LOCATION, &upload_location(name, id));
    h::set(&mut headers, RANGE, &range_value(offset));
    h::set(&mut headers, h::DOCKER_UPLOAD_UUID, &id.to_string());
    let mut resp = empty_response(status, headers);
    if status == StatusCode::NO_CONTENT {
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    resp
}

/// `201 Created` for a blob pushed (of `size` bytes) or mounted `from`
/// another repository.
fn blob_created(name: &RepoName, digest: &Digest, size: u64, from: Option<&RepoName>) -> Response {
    let mut headers = HeaderMap::new();
    h::set(
        &mut headers,
        LOCATION,
        &format!("/v2/{name}/blobs/{digest}"),
    );
    h::set_digest(&mut headers, digest);
    let mut resp = empty_response(StatusCode::CREATED, headers);
    resp.extensions_mut().insert(crate::notify::Detail {
        size,
        mounted_from: from.map(ToString::to_string),
        ..crate::notify::Detail::default()
    });
    resp
}

#[cfg(test)]
mod tests {
    use super::{ChunkRange, RangeError, parse_content_range};

    #[test]
    fn content_ranges() {
        let ok = |start, len| Ok(ChunkRange { start, len });
        assert_eq!(parse_content_range("0-99"), ok(0, 100));
        assert_eq!(parse_content_range("bytes 100-199/1000"), ok(100, 100));
        assert_eq!(parse_content_range("bytes=5-5"), ok(5, 1));
        assert_eq!(parse_content_range("9-0"), Err(RangeError::Impossible));
        assert_eq!(
            parse_content_range("0-18446744073709551615"),
            Err(RangeError::Impossible)
        );
        assert_eq!(
            parse_content_range("0-18446744073709551616"),
            Err(RangeError::Impossible)
        );
        assert_eq!(
            parse_content_range("1-18446744073709551615"),
            ok(1, u64::MAX)
        );
        assert_eq!(parse_content_range("+1-2"), Err(RangeError::Syntax));
        assert_eq!(parse_content_range("x-y"), Err(RangeError::Syntax));
        assert_eq!(parse_content_range(""), Err(RangeError::Syntax));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn content_range_never_panics(s in "\\PC{0,40}") {
            let _ = parse_content_range(&s);
        }

        #[test]
        fn content_range_round_trips(start: u64, end: u64) {
            let r = parse_content_range(&format!("{start}-{end}"));
            if end >= start && end - start < u64::MAX {
                proptest::prop_assert_eq!(r, Ok(ChunkRange { start, len: end - start + 1 }));
            } else {
                proptest::prop_assert_eq!(r, Err(RangeError::Impossible));
            }
        }
    }
}
