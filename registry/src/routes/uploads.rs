//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (start, monolithic
//! upload, cross-repository mount), and `GET`/`PATCH`/`PUT`/`DELETE` on
//! `/v2/<name>/blobs/uploads/<id>` (status, chunk, completion, cancel).

use axum::body::Body;
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
use crate::storage::uploads::AppendError;

pub async fn start(
    state: &AppState,
    _: &Granted,
    caller: &Caller,
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
    let n = name.clone();
    let id = state.storage.run(move |s| s.create_upload(&n)).await?;
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
    let (n, d) = (name.clone(), digest.clone());
    let mounted = state
        .storage
        .run(move |s| {
            if s.stat_blob(&from, &d)?.is_none() {
                return Ok(false);
            }
            s.link_blob(&n, &d)?;
            Ok(true)
        })
        .await?;
    Ok(mounted.then(|| blob_created(name, digest)))
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
    let mut upload = state.storage.lock_upload(name, id).await?;
    append(state, name, id, &mut upload, req_headers, body).await?;
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
    Ok(blob_created(name, digest))
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
    let length = match header("content-length") {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            Error::new(
                ErrorCode::SizeInvalid,
                format!("invalid Content-Length {v:?}"),
            )
        })?),
        None => None,
    };
    let mut expected = length;
    if let Some(range) = header("content-range") {
        let (start, end) = parse_content_range(range).ok_or_else(|| {
            Error::new(
                ErrorCode::BlobUploadInvalid,
                format!("invalid Content-Range {range:?}"),
            )
        })?;
        if start != upload.offset {
            return Err(range_not_satisfiable(name, id, upload.offset));
        }
        let span = end - start + 1;
        if length.is_some_and(|l| l != span) {
            return Err(Error::new(
                ErrorCode::SizeInvalid,
                format!(
                    "Content-Length {} does not match Content-Range {range}",
                    length.unwrap_or_default()
                ),
            ));
        }
        expected = Some(span);
    }
    if expected == Some(0) {
        return Ok(());
    }
    let start = upload.offset;
    match state
        .storage
        .append_upload(name, id, upload, body, expected)
        .await
    {
        Ok(_) => Ok(()),
        Err(AppendError::Storage(e)) => Err(e),
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

/// `<start>-<end>` (also with a `bytes ` prefix and `/size` suffix).
fn parse_content_range(v: &str) -> Option<(u64, u64)> {
    let v = v.trim();
    let v = v
        .strip_prefix("bytes")
        .map_or(v, |r| r.trim_start_matches([' ', '=']));
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (start, end) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (start <= end).then_some((start, end))
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

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    let mut headers = HeaderMap::new();
    h::set(
        &mut headers,
        LOCATION,
        &format!("/v2/{name}/blobs/{digest}"),
    );
    h::set_digest(&mut headers, digest);
    empty_response(StatusCode::CREATED, headers)
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/1000"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        assert_eq!(parse_content_range("9-0"), None);
        assert_eq!(parse_content_range("x-y"), None);
        assert_eq!(parse_content_range(""), None);
    }
}
