//! The HTTP client of one upstream registry: requests with the upstream's
//! authentication (a Bearer token fetched after the upstream's challenge,
//! as docker does, or Basic credentials), and upstream failures sorted into
//! what a client of ours should hear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{ACCEPT, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::config::ProxyUpstream;
use crate::error::{Error, ErrorCode};

/// How long a connection to an upstream may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an upstream may stay silent in the middle of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// What a token without `expires_in` lives for (distribution's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// An upstream registry and the credentials the mirror uses there.
pub struct Upstream {
    pub config: ProxyUpstream,
    http: reqwest::Client,
    /// `Authorization` values by scope, with their expiry.
    auth: Mutex<HashMap<String, (String, Option<Instant>)>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Why an upstream request failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// No answer: connection refused, reset, timed out.
    Unreachable(String),
    /// An answer other than success.
    Status {
        status: StatusCode,
        retry_after: Option<String>,
    },
}

impl UpstreamError {
    /// Whether the upstream is down or overloaded rather than answering:
    /// cached content is then served as it is.
    pub fn is_unavailable(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_) => true,
            UpstreamError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    /// Whether the upstream said it does not have the thing (404), or
    /// refused our credentials for it (401/403: Docker Hub answers 401 for
    /// repositories that do not exist).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            UpstreamError::Status { status, .. } if matches!(
                *status,
                StatusCode::NOT_FOUND | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            )
        )
    }

    /// The error a client of ours gets: `not_found` when the upstream does
    /// not have it; 503 `UNAVAILABLE` when it cannot be reached or fails;
    /// 429 with its `Retry-After` when it throttles us; 502 otherwise.
    pub fn into_error(self, url: &str, not_found: Error) -> Error {
        match self {
            UpstreamError::Unreachable(e) => {
                tracing::warn!(upstream = url, "upstream unreachable: {e}");
                Error::new(
                    ErrorCode::Unavailable,
                    format!("the upstream registry {url} cannot be reached"),
                )
                .with_header(RETRY_AFTER, "5")
            }
            e if e.is_not_found() => not_found,
            UpstreamError::Status {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after,
            } => Error::new(
                ErrorCode::TooManyRequests,
                format!("the upstream registry {url} throttles the mirror"),
            )
            .with_header(RETRY_AFTER, retry_after.as_deref().unwrap_or("60")),
            UpstreamError::Status { status, .. } if status.is_server_error() => Error::new(
                ErrorCode::Unavailable,
                format!("the upstream registry {url} failed ({status})"),
            )
            .with_header(RETRY_AFTER, "5"),
            UpstreamError::Status { status, .. } => Error::new(
                ErrorCode::Unknown,
                format!("the upstream registry {url} answered {status}"),
            )
            .with_status(StatusCode::BAD_GATEWAY),
        }
    }
}

/// A token endpoint's answer (docker's token protocol).
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Upstream {
    pub fn new(config: ProxyUpstream) -> anyhow::Result<Upstream> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("registry-mirror/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Upstream {
            config,
            http,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `method` to `path` (`/v2/…`) with the credentials for `scope`
    /// (`repository:<name>:pull`), answering the upstream's challenge once.
    /// Redirects (blobs served from object storage) are followed; reqwest
    /// drops `Authorization` when one leaves the upstream's host.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}{path}", self.config.url);
        let mut auth = self.cached_auth(scope);
        let mut challenged = false;
        loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(a) = &auth {
                req = req.header(AUTHORIZATION, a);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                if let Some(a) = self.answer(&challenge, scope).await? {
                    auth = Some(a);
                    continue;
                }
            }
            if resp.status().is_success() {
                return Ok(resp);
            }
            if resp.status() == StatusCode::UNAUTHORIZED {
                // Not worth keeping: the next request starts over.
                self.forget_auth(scope);
            }
            return Err(UpstreamError::Status {
                status: resp.status(),
                retry_after: resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
        }
    }

    fn cached_auth(&self, scope: &str) -> Option<String> {
        let auth = self
            .auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match auth.get(scope) {
            Some((value, None)) => Some(value.clone()),
            Some((value, Some(until))) if Instant::now() < *until => Some(value.clone()),
            _ => None,
        }
    }

    fn forget_auth(&self, scope: &str) {
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(scope);
    }

    fn basic(&self) -> Option<String> {
        let (Some(user), Some(password)) = (&self.config.username, &self.config.password) else {
            return None;
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {encoded}"))
    }

    /// The `Authorization` value answering a challenge, remembered for the
    /// scope; `None` when there is nothing to answer with (Basic without
    /// credentials, an unknown scheme): the 401 then stands.
    async fn answer(&self, challenge: &str, scope: &str) -> Result<Option<String>, UpstreamError> {
        let Some((scheme, params)) = parse_challenge(challenge) else {
            return Ok(None);
        };
        let (value, until) = if scheme.eq_ignore_ascii_case("basic") {
            let Some(basic) = self.basic() else {
                return Ok(None);
            };
            (basic, None)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            let Some(realm) = params.get("realm") else {
                return Ok(None);
            };
            let mut url = reqwest::Url::parse(realm).map_err(|e| {
                UpstreamError::Unreachable(format!("bad token realm {realm:?}: {e}"))
            })?;
            {
                let mut q = url.query_pairs_mut();
                if let Some(service) = params.get("service") {
                    q.append_pair("service", service);
                }
                q.append_pair("scope", params.get("scope").map_or(scope, String::as_str));
            }
            let mut req = self.http.get(url);
            if let Some(basic) = self.basic() {
                req = req.header(AUTHORIZATION, basic);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
            if !resp.status().is_success() {
                tracing::warn!(
                    upstream = %self.config.url,
                    status = %resp.status(),
                    "the upstream's token service refused the mirror"
                );
                return Err(UpstreamError::Status {
                    status: resp.status(),
                    retry_after: None,
                });
            }
            let answer: TokenAnswer = resp
                .json()
                .await
                .map_err(|e| UpstreamError::Unreachable(format!("token answer: {e}")))?;
            let Some(token) = answer.token.or(answer.access_token) else {
                return Err(UpstreamError::Unreachable(
                    "the token answer holds no token".into(),
                ));
            };
            let lifetime = answer
                .expires_in
                .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
            let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
            (format!("Bearer {token}"), Some(until))
        } else {
            return Ok(None);
        };
        self.auth
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(scope.to_owned(), (value.clone(), until));
        Ok(Some(value))
    }
}

/// An error with its sources (reqwest's top-level message alone says
/// little: "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `Bearer realm="…",service="…",scope="…"` → (`Bearer`, parameters).
/// Quoted values may hold commas and `\"`; unquoted ones end at a comma.
fn parse_challenge(header: &str) -> Option<(String, HashMap<String, String>)> {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.is_empty() {
        return None;
    }
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.insert(key, value);
        rest = next;
    }
    Some((scheme.to_owned(), params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:library/busybox:pull");

        let (scheme, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(scheme, "Basic");
        assert_eq!(p["realm"], "Registry Realm");

        let (_, p) = parse_challenge(r#"Bearer realm=x, scope="a:b:pull,push", k="q\"t""#).unwrap();
        assert_eq!(p["realm"], "x");
        assert_eq!(p["scope"], "a:b:pull,push");
        assert_eq!(p["k"], "q\"t");

        assert!(parse_challenge("").is_none());
        let (_, p) = parse_challenge(r#"Bearer realm="unterminated"#).unwrap();
        assert_eq!(p["realm"], "unterminated");
    }

    #[test]
    fn upstream_failures_become_oci_errors() {
        let not_found = || Error::new(ErrorCode::ManifestUnknown, "x");
        let status = |s: u16| UpstreamError::Status {
            status: StatusCode::from_u16(s).unwrap(),
            retry_after: Some("7".into()),
        };
        let e = UpstreamError::Unreachable("refused".into()).into_error("u", not_found());
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::Unavailable, StatusCode::SERVICE_UNAVAILABLE)
        );
        for s in [404, 401, 403] {
            assert_eq!(
                status(s).into_error("u", not_found()).code,
                ErrorCode::ManifestUnknown
            );
        }
        let e = status(429).into_error("u", not_found());
        assert_eq!(
            (e.code, e.status),
            (ErrorCode::TooManyRequests, StatusCode::TOO_MANY_REQUESTS)
        );
        let e = status(500).into_error("u", not_found());
        assert_eq!(e.code, ErrorCode::Unavailable);
        let e = status(400).into_error("u", not_found());
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        assert!(status(503).is_unavailable() && !status(404).is_unavailable());
    }
}
