//! The web UI's server-side calls to authd: sign-in (a password login that
//! returns a refresh token, like `docker login`), the access token of a
//! page (the session's refresh token, or none for `anonymous`, exchanged
//! for the scopes the page needs), sign-out (revoking the refresh token)
//! and the admin API with the signed-in user's bearer token.
//!
//! Access tokens are verified with the registry's own [`TokenAuth`], so the
//! UI decides with exactly the access `/v2/` would grant the same token.
//! They are cached for [`GRANT_TTL`] by (session, scopes).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::auth::{TokenAuth, Verified};

/// The `client_id` refresh tokens of UI sessions carry (listed by admins).
pub const CLIENT_ID: &str = "registry-web-ui";
/// How long an access token obtained for a page is reused.
pub const GRANT_TTL: Duration = Duration::from_secs(30);

/// An access token for a page and what it allows.
#[derive(Debug)]
pub struct Grant {
    pub jwt: String,
    pub verified: Arc<Verified>,
    /// [`session_hash`] of the refresh token it came from.
    session: [u8; 32],
}

impl Grant {
    /// Whether the token carries authd's admin scope.
    pub fn is_admin(&self) -> bool {
        self.verified
            .access
            .allows(token::ADMIN_TYPE, token::ADMIN_NAME, token::Action::All)
    }
}

/// Why authd did not answer as hoped.
#[derive(Debug)]
pub enum AuthdError {
    /// Wrong credentials, or a refresh token that is no longer valid.
    Unauthorized,
    /// Too many failed logins; retry after this many seconds.
    Throttled(Option<u64>),
    /// authd refused the request with this status and message.
    Refused(StatusCode, String),
    /// authd could not be reached or answered nonsense.
    Unavailable(String),
}

impl std::fmt::Display for AuthdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthdError::Unauthorized => f.write_str("wrong user name or password"),
            AuthdError::Throttled(Some(s)) => {
                write!(f, "too many failed sign-ins: try again in {s} s")
            }
            AuthdError::Throttled(None) => f.write_str("too many failed sign-ins: try again later"),
            AuthdError::Refused(status, m) => write!(f, "authd refused ({status}): {m}"),
            AuthdError::Unavailable(m) => write!(f, "the user service (authd) is unavailable: {m}"),
        }
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// authd, as seen from the registry.
pub struct AuthdClient {
    base: String,
    service: String,
    http: reqwest::Client,
    grants: moka::sync::Cache<[u8; 32], Arc<Grant>>,
}

impl std::fmt::Debug for AuthdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthdClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The cache key of a session (or anonymous) and a set of scopes.
fn grant_key(session: Option<&str>, scopes: &[String]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(session.unwrap_or("").as_bytes());
    for s in scopes {
        h.update(b"\n");
        h.update(s.as_bytes());
    }
    h.finalize().into()
}

/// Percent-encodes a form body.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

impl AuthdClient {
    /// A client for authd at `base` (`http://127.0.0.1:5001`), issuing
    /// tokens for `service`.
    pub fn new(base: &str, service: &str) -> anyhow::Result<AuthdClient> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(AuthdClient {
            base: base.trim_end_matches('/').to_owned(),
            service: service.to_owned(),
            http,
            grants: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(GRANT_TTL)
                .build(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn token_answer(resp: reqwest::Response) -> Result<TokenAnswer, AuthdError> {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(AuthdError::Unauthorized);
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            return Err(AuthdError::Throttled(after));
        }
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(AuthdError::Refused(
                status,
                text.chars().take(300).collect(),
            ));
        }
        resp.json()
            .await
            .map_err(|e| AuthdError::Unavailable(format!("unreadable token answer: {e}")))
    }

    /// Signs in: a password login asking for a refresh token. The password
    /// goes to authd and nowhere else.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, AuthdError> {
        let body = form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("client_id", CLIENT_ID),
            ("access_type", "offline"),
            ("service", &self.service),
        ]);
        let resp = self
            .http
            .post(self.url(token::TOKEN_PATH))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| AuthdError::Unavailable(e.to_string()))?;
        Self::token_answer(resp)
            .await?
            .refresh_token
            .ok_or_else(|| AuthdError::Unavailable("no refresh token in the answer".into()))
    }

    /// An access token for `scopes`: from the session's refresh token, or
    /// anonymous without one; verified by the registry's token checker.
    pub async fn grant(
        &self,
        verifier: &TokenAuth,
        session: Option<&str>,
        scopes: &[String],
    ) -> Result<Arc<Grant>, AuthdError> {
        let key = grant_key(session, scopes);
        if let Some(g) = self.grants.get(&key) {
            return Ok(g);
        }
        let sent = if let Some(refresh) = session {
            let mut pairs = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("client_id", CLIENT_ID),
                ("service", self.service.as_str()),
            ];
            pairs.extend(scopes.iter().map(|s| ("scope", s.as_str())));
            self.http
                .post(self.url(token::TOKEN_PATH))
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form(&pairs))
                .send()
                .await
        } else {
            let mut pairs = vec![("service", self.service.as_str())];
            pairs.extend(scopes.iter().map(|s| ("scope", s.as_str())));
            self.http
                .get(format!("{}?{}", self.url(token::TOKEN_PATH), form(&pairs)))
                .send()
                .await
        };
        let resp = sent.map_err(|e| AuthdError::Unavailable(e.to_string()))?;
        let answer = Self::token_answer(resp).await?;
        let verified = verifier
            .verify(&answer.token)
            .await
            .map_err(|e| AuthdError::Unavailable(format!("authd's token does not verify: {e}")))?;
        let g = Arc::new(Grant {
            jwt: answer.token,
            verified,
            session: session_hash(session.unwrap_or_default()),
        });
        self.grants.insert(key, g.clone());
        Ok(g)
    }

    /// Signs out: revokes the refresh token at authd and forgets the access
    /// tokens obtained with it.
    pub async fn revoke(&self, refresh: &str) -> Result<(), AuthdError> {
        // Cached grants of this session go first: a stolen cookie must not
        // outlive the sign-out here either.
        let session = session_hash(refresh);
        let keys: Vec<[u8; 32]> = self
            .grants
            .iter()
            .filter(|(_, g)| g.session == session)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.grants.invalidate(&k);
        }
        let resp = self
            .http
            .post(self.url("/token/revoke"))
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form(&[("token", refresh), ("client_id", CLIENT_ID)]))
            .send()
            .await
            .map_err(|e| AuthdError::Unavailable(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            let status = resp.status();
            Err(AuthdError::Refused(
                status,
                resp.text().await.unwrap_or_default(),
            ))
        }
    }

    /// An admin API call (`/api/v1{path}`) with the user's bearer token;
    /// authd decides whether the user may. Returns the status and the JSON
    /// answer (`null` when there is none).
    pub async fn admin(
        &self,
        bearer: &str,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), AuthdError> {
        let mut req = self
            .http
            .request(method, self.url(&format!("/api/v1{path}")))
            .bearer_auth(bearer);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| AuthdError::Unavailable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AuthdError::Unavailable(e.to_string()))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        ))
    }
}

/// The SHA-256 of a session's refresh token (what the grant cache keeps
/// to find a session's entries).
fn session_hash(refresh: &str) -> [u8; 32] {
    Sha256::digest(refresh.as_bytes()).into()
}
