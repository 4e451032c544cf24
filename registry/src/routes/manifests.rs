//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use crate::auth::Granted;
use crate::error::{Error, ErrorCode, Result};
use crate::oci::manifest::MAX_MANIFEST_SIZE;
use crate::oci::{Digest, Manifest, Reference, RepoName};
use crate::routes::{empty_response, headers as h};
use crate::state::AppState;

/// What a read or delete of a manifest hears when the URL's reference is
/// not a valid tag: no such manifest can exist, so 404 `MANIFEST_UNKNOWN`,
/// as distribution and zot answer and the OCI conformance suite expects.
/// Only a `PUT` is told `TAG_INVALID`: there the client tries to create it.
pub fn unparsable_reference(err: Error, method: &Method) -> Error {
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::DELETE);
    if reads && err.code == ErrorCode::TagInvalid {
        Error::new(
            ErrorCode::ManifestUnknown,
            format!("manifest unknown: {}", err.message),
        )
    } else {
        err
    }
}

pub async fn get(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    reference: &Reference,
    head: bool,
) -> Result<Response> {
    let (n, r) = (name.clone(), reference.clone());
    let manifest = state.storage.run(move |s| s.get_manifest(&n, &r)).await?;
    let Some(m) = manifest else {
        return Err(Error::manifest_unknown(reference));
    };
    let body = if head {
        Body::empty()
    } else {
        Body::from(m.bytes.clone())
    };
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(m.media_type.as_str()),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
    h::set_digest(headers, &m.digest);
    h::set(headers, ETAG, &format!("\"{}\"", m.digest));
    if let Some(n) = state.notifier.as_ref().filter(|_| !head) {
        let references = if n.include_references() {
            Manifest::parse(Some(m.media_type.as_str()), &m.bytes)
                .map(|p| crate::notify::references(&p))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        resp.extensions_mut().insert(crate::notify::Detail {
            media_type: m.media_type.as_str().to_owned(),
            size: m.bytes.len() as u64,
            references,
            mounted_from: None,
        });
    }
    Ok(resp)
}

pub async fn put(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    reference: &Reference,
    req_headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let too_big = || {
        Error::new(
            ErrorCode::ManifestInvalid,
            format!("manifest exceeds the {MAX_MANIFEST_SIZE} byte limit"),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared_len = req_headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_len.is_some_and(|l| l > MAX_MANIFEST_SIZE as u64) {
        return Err(too_big());
    }
    let bytes: Bytes = http_body_util::Limited::new(body, MAX_MANIFEST_SIZE)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_big()
            } else {
                Error::new(
                    ErrorCode::ManifestInvalid,
                    format!("reading the manifest failed: {e}"),
                )
            }
        })?
        .to_bytes();
    let content_type = req_headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
    let manifest = Manifest::parse(content_type.as_deref(), &bytes)?;

    let (digest, tag) = match reference {
        Reference::Digest(expected) => {
            let actual = Digest::of(expected.algorithm(), &bytes);
            if &actual != expected {
                return Err(Error::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest digest {actual} does not match {expected} in the URL"),
                ));
            }
            (actual, None)
        }
        Reference::Tag(tag) => (Digest::sha256_of(&bytes), Some(tag.clone())),
    };

    let detail = state.notifier.as_ref().map(|n| crate::notify::Detail {
        media_type: manifest.media_type.as_str().to_owned(),
        size: bytes.len() as u64,
        references: if n.include_references() {
            crate::notify::references(&manifest)
        } else {
            Vec::new()
        },
        mounted_from: None,
    });
    let (n, d) = (name.clone(), digest.clone());
    let subject = manifest.subject.as_ref().map(|s| s.digest.clone());
    state
        .storage
        .run(move |s| s.put_manifest(&n, tag.as_ref(), &d, &bytes, &manifest))
        .await?;

    let mut headers = HeaderMap::new();
    h::set(
        &mut headers,
        LOCATION,
        &format!("/v2/{name}/manifests/{digest}"),
    );
    h::set_digest(&mut headers, &digest);
    if let Some(subject) = subject {
        h::set(&mut headers, h::OCI_SUBJECT, &subject.to_string());
    }
    let mut resp = empty_response(StatusCode::CREATED, headers);
    if let Some(d) = detail {
        resp.extensions_mut().insert(d);
    }
    Ok(resp)
}

pub async fn delete(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    reference: &Reference,
) -> Result<Response> {
    super::deletes_allowed(state)?;
    let (n, r) = (name.clone(), reference.clone());
    let deleted = state
        .storage
        .run(move |s| match &r {
            Reference::Tag(tag) => s.delete_tag(&n, tag),
            Reference::Digest(d) => s.delete_manifest(&n, d),
        })
        .await?;
    if !deleted {
        return Err(Error::manifest_unknown(reference));
    }
    Ok(empty_response(StatusCode::ACCEPTED, HeaderMap::new()))
}
