//! The one error type of authd and its two renderings: the admin API's
//! `{"error":code,"message":…}` and the token endpoint's OAuth2 + registry
//! shape that docker, containerd and podman each know how to display.
//!
//! Internal errors are logged here, once, and reach the client only as a
//! generic message.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Everything a request or a command can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A malformed request. `code` is machine-readable (`invalid_request`,
    /// `invalid_name`, `unsupported_grant_type`, …); `details` carries
    /// structured extras such as the bad lines of an htpasswd file.
    #[error("{message}")]
    BadRequest {
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// Missing or wrong credentials: the only 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The request contradicts the current state (duplicate user, last
    /// admin).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A body of the wrong content type.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Throttled; the client may retry after this many seconds.
    #[error("too many failed attempts; retry in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an I/O failure. The text is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Error {
        Error::BadRequest {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Error {
        Error::bad_request("invalid_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Error {
        Error::Unauthorized(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Error {
        Error::Forbidden(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound(message.into())
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Error {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Error {
        Error::Internal(message.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code of the admin API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest { code, .. } | Error::Conflict { code, .. } => code,
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::TooManyRequests { .. } => "too_many_requests",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The message shown to the client; internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    fn log(&self) {
        match self {
            Error::Internal(msg) => tracing::error!(error = %msg, "request failed"),
            Error::Unavailable(msg) => tracing::warn!(error = %msg, "service unavailable"),
            _ => {}
        }
    }

    /// Headers every rendering carries: the challenge on 401, the delay on
    /// 429.
    fn decorate(&self, response: &mut Response) {
        let headers = response.headers_mut();
        match self {
            Error::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"authd\", charset=\"UTF-8\""),
                );
            }
            Error::TooManyRequests { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ => {}
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }

    /// The token endpoint's rendering: OAuth2 fields (`error`,
    /// `error_description`), distribution's legacy `details` and the
    /// registry's `errors` list, so that every client shows the message.
    pub fn into_oauth_response(self) -> Response {
        self.log();
        let oauth = match &self {
            Error::BadRequest { code, .. } => match *code {
                c @ ("invalid_request"
                | "unsupported_grant_type"
                | "invalid_scope"
                | "invalid_client") => c,
                _ => "invalid_request",
            },
            Error::Unauthorized(_) | Error::Forbidden(_) | Error::NotFound(_) => "invalid_grant",
            Error::Conflict { .. }
            | Error::PayloadTooLarge(_)
            | Error::UnsupportedMediaType(_)
            | Error::MethodNotAllowed(_) => "invalid_request",
            Error::TooManyRequests { .. } | Error::Unavailable(_) => "temporarily_unavailable",
            Error::Internal(_) => "server_error",
        };
        let registry = match &self {
            Error::Unauthorized(_) => "UNAUTHORIZED",
            Error::Forbidden(_) => "DENIED",
            Error::TooManyRequests { .. } => "TOOMANYREQUESTS",
            _ => "UNSUPPORTED",
        };
        let message = self.public_message();
        let body = json!({
            "error": oauth,
            "error_description": message,
            "details": message,
            "errors": [{"code": registry, "message": message}],
        });
        let mut response = (self.status(), Json(body)).into_response();
        self.decorate(&mut response);
        response
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log();
        let mut body = json!({"error": self.code(), "message": self.public_message()});
        if let Error::BadRequest {
            details: Some(details),
            ..
        } = &self
        {
            body["details"] = details.clone();
        }
        let mut response = (self.status(), Json(body)).into_response();
        self.decorate(&mut response);
        response
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Error {
        match e {
            sqlx::Error::PoolTimedOut => Error::Unavailable("database is busy".into()),
            e => Error::Internal(format!("database: {e}")),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        Error::Internal(format!("I/O: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn admin_shape_hides_internal_details() {
        let r = Error::internal("disk on fire at /secret/path").into_response();
        assert_eq!(r.status(), 500);
        let v = body(r).await;
        assert_eq!(v, json!({"error": "internal", "message": "internal error"}));
    }

    #[tokio::test]
    async fn oauth_shape_has_every_field() {
        let r = Error::unauthorized("bad credentials").into_oauth_response();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        let v = body(r).await;
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["error_description"], "bad credentials");
        assert_eq!(v["details"], "bad credentials");
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");

        let r = Error::TooManyRequests { retry_after: 7 }.into_oauth_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "7");
        assert_eq!(body(r).await["errors"][0]["code"], "TOOMANYREQUESTS");

        let r = Error::bad_request("unsupported_grant_type", "nope").into_oauth_response();
        assert_eq!(r.status(), 400);
        assert_eq!(body(r).await["error"], "unsupported_grant_type");
        let r = Error::bad_request("invalid_name", "nope").into_oauth_response();
        assert_eq!(body(r).await["error"], "invalid_request");
    }
}
