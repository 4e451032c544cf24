//! The registry's one error type. Every failure a client can see becomes an
//! OCI error body `{"errors":[{"code","message","detail"}]}` with the status
//! code distribution clients expect, plus any header the error needs
//! (`WWW-Authenticate` on 401, `Range` on 416, `Retry-After` on 429).

use std::io;

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;

/// The error codes of the OCI distribution spec, plus the few extra ones
/// distribution also emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    TagInvalid,
    RangeInvalid,
    PaginationNumberInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    Unavailable,
    Unknown,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::TagInvalid => "TAG_INVALID",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Unknown => "UNKNOWN",
        }
    }

    /// The status distribution answers with for this code.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown => StatusCode::NOT_FOUND,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::TagInvalid
            | ErrorCode::PaginationNumberInvalid => StatusCode::BAD_REQUEST,
            ErrorCode::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Denied => StatusCode::FORBIDDEN,
            ErrorCode::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered to the client.
#[derive(Debug)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub status: StatusCode,
    /// Rarely set, so kept out of line to keep `Result`s small.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    detail: Option<serde_json::Value>,
    headers: HeaderMap,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
            status: code.status(),
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    #[must_use]
    pub fn with_detail(mut self, detail: serde_json::Value) -> Error {
        self.extra().detail = Some(detail);
        self
    }

    /// The headers this error adds to its response.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.extra.as_ref().map(|e| &e.headers)
    }

    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Error {
        self.status = status;
        self
    }

    /// Adds a header. Values are built by this crate from validated parts,
    /// so an invalid one is a bug; it is dropped rather than panicking.
    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: &str) -> Error {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.extra().headers.append(name, v);
        }
        self
    }

    pub fn name_unknown(name: &impl std::fmt::Display) -> Error {
        Error::new(
            ErrorCode::NameUnknown,
            format!("repository name not known to registry: {name}"),
        )
    }

    pub fn blob_unknown(digest: &impl std::fmt::Display) -> Error {
        Error::new(
            ErrorCode::BlobUnknown,
            format!("blob unknown to registry: {digest}"),
        )
        .with_detail(serde_json::json!({ "digest": digest.to_string() }))
    }

    pub fn manifest_unknown(reference: &impl std::fmt::Display) -> Error {
        Error::new(
            ErrorCode::ManifestUnknown,
            format!("manifest unknown: {reference}"),
        )
    }

    pub fn upload_unknown() -> Error {
        Error::new(
            ErrorCode::BlobUploadUnknown,
            "blob upload unknown to registry",
        )
    }

    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Unsupported, message)
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Error {
        tracing::error!("{context}: {err}");
        Error::new(ErrorCode::Unknown, format!("internal error: {context}"))
    }

    /// Maps a storage I/O error. A full disk is told apart (507) so an
    /// operator reading the client's output knows what to fix.
    pub fn io(context: &str, err: &io::Error) -> Error {
        if is_no_space(err) {
            tracing::error!("{context}: storage is full: {err}");
            return Error::new(
                ErrorCode::Unknown,
                "storage is full: no space left on the registry's disk",
            )
            .with_status(StatusCode::INSUFFICIENT_STORAGE);
        }
        Error::internal(context, err)
    }
}

/// What a refused upload client is told to wait, in seconds: pushes in
/// progress complete and free their sessions within about that much.
const UPLOADS_RETRY_AFTER_SECS: &str = "60";

/// What a client is told to wait when the storage backend is unavailable.
const UNAVAILABLE_RETRY_AFTER_SECS: &str = "5";

/// Storage errors as the client sees them: the registry's refusals become
/// their OCI codes; backend failures become 503 (unavailable, worth a
/// retry), 507 (full) or 500, with the cause logged, not shown.
impl From<crate::storage::Error> for Error {
    fn from(e: crate::storage::Error) -> Error {
        use crate::storage::Error as S;
        match e {
            S::UploadUnknown => Error::upload_unknown(),
            S::DigestMismatch {
                ref expected,
                ref actual,
            } => {
                let message = e.to_string();
                Error::new(ErrorCode::DigestInvalid, message)
                    .with_detail(serde_json::json!({ "expected": expected, "actual": actual }))
            }
            S::ManifestBlobUnknown { ref digest, .. } => {
                let detail = serde_json::json!({ "digest": digest });
                Error::new(ErrorCode::ManifestBlobUnknown, e.to_string()).with_detail(detail)
            }
            S::BlobSizeMismatch { .. } => Error::new(ErrorCode::ManifestInvalid, e.to_string()),
            S::TooManyUploads { .. } => Error::new(ErrorCode::TooManyRequests, e.to_string())
                .with_header(http::header::RETRY_AFTER, UPLOADS_RETRY_AFTER_SECS),
            S::GcRunning => Error::new(ErrorCode::Denied, e.to_string()),
            S::Invalid(_) => Error::new(ErrorCode::BlobUploadInvalid, e.to_string()),
            S::Unavailable(ref m) => {
                tracing::error!("storage unavailable: {m}");
                Error::new(
                    ErrorCode::Unavailable,
                    "storage is unavailable, retry later",
                )
                .with_header(http::header::RETRY_AFTER, UNAVAILABLE_RETRY_AFTER_SECS)
            }
            S::NoSpace(ref m) => {
                tracing::error!("storage is full: {m}");
                Error::new(
                    ErrorCode::Unknown,
                    "storage is full: no space left on the registry's disk",
                )
                .with_status(StatusCode::INSUFFICIENT_STORAGE)
            }
            S::NotFound(m) | S::Conflict(m) | S::Io(m) => Error::internal("storage", m),
        }
    }
}

/// Whether `err` means the storage has no room left (ENOSPC or EDQUOT).
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

#[derive(Serialize)]
struct Body<'a> {
    errors: [Entry<'a>; 1],
}

#[derive(Serialize)]
struct Entry<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a serde_json::Value>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: self.extra.as_ref().and_then(|e| e.detail.as_ref()),
            }],
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = (self.status, json).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        if let Some(extra) = &self.extra {
            for (name, value) in &extra.headers {
                headers.append(name, value.clone());
            }
        }
        resp
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Error as S;

    #[test]
    fn storage_errors_become_oci_errors() {
        let e = Error::from(S::Unavailable("connection refused".into()));
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::Unavailable, StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(
            e.headers()
                .is_some_and(|h| h.contains_key(http::header::RETRY_AFTER))
        );
        assert!(
            !e.message.contains("refused"),
            "the cause is logged, not shown"
        );
        let e = Error::from(S::Io("disk on fire".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = Error::from(S::NoSpace("ENOSPC".into()));
        assert_eq!(e.status, StatusCode::INSUFFICIENT_STORAGE);
        let e = Error::from(S::TooManyUploads {
            scope: "in this repository",
            cap: 3,
        });
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            e.headers()
                .is_some_and(|h| h.contains_key(http::header::RETRY_AFTER))
        );
        assert_eq!(
            Error::from(S::UploadUnknown).code,
            ErrorCode::BlobUploadUnknown
        );
        assert_eq!(Error::from(S::GcRunning).status, StatusCode::FORBIDDEN);
    }
}
