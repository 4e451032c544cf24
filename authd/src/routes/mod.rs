//! Every HTTP route of authd, listed in one place, and the extractors the
//! handlers share: the client address, the `Authorization` header, JSON and
//! form bodies with size limits, and query parameters.

pub mod admin;
pub mod groups;
pub mod health;
pub mod jwks;
pub mod token;
pub mod tokens;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{delete, get, post, put};
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::state::AppState;

/// Body limit of every endpoint but the htpasswd import.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Body limit of `POST /api/v1/htpasswd`.
pub const HTPASSWD_LIMIT: usize = 16 * 1024 * 1024;

/// The router, without state-independent layers such as tracing.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/users", get(admin::list_users).post(admin::create_user))
        .route(
            "/users/{name}",
            get(admin::get_user)
                .patch(admin::update_user)
                .delete(admin::delete_user),
        )
        .route("/users/{name}/tokens", get(admin::list_tokens))
        .route("/users/{name}/tokens/{id}", delete(admin::revoke_token))
        .route("/grants", get(admin::list_grants).post(admin::create_grant))
        .route("/grants/{id}", delete(admin::delete_grant))
        .route(
            "/htpasswd",
            post(admin::import_htpasswd).layer(DefaultBodyLimit::max(HTPASSWD_LIMIT)),
        )
        .route("/audit", get(admin::audit))
        .route("/tokens", get(tokens::list_own).post(tokens::create_own))
        .route("/tokens/{id}", delete(tokens::revoke_own))
        .route("/access-tokens", get(tokens::list_all))
        .route(
            "/users/{name}/access-tokens",
            get(tokens::list_for).post(tokens::create_for),
        )
        .route(
            "/users/{name}/access-tokens/{id}",
            delete(tokens::revoke_for),
        )
        .route("/users/{name}/permissions", get(groups::permissions))
        .route("/groups", get(groups::list).post(groups::create))
        .route("/groups/{name}", delete(groups::delete))
        .route(
            "/groups/{name}/members/{user}",
            put(groups::add_member).delete(groups::remove_member),
        );
    Router::new()
        .route(::token::TOKEN_PATH, get(token::get).post(token::post))
        .route(::token::JWKS_PATH, get(jwks::jwks))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn not_found(req: Request) -> Error {
    Error::not_found(format!("no such endpoint: {}", req.uri().path()))
}

async fn method_not_allowed(req: Request) -> Error {
    Error::MethodNotAllowed(format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}

/// The client's address: the socket peer, or — when the peer is a trusted
/// proxy — the nearest untrusted address in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| {
                c.0.ip().to_canonical()
            });
        let trusted = &state.config.throttle.trusted_proxies;
        if !trusted.contains(&peer) {
            return Ok(ClientAddr(peer));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical())
            .collect::<Vec<_>>();
        let client = forwarded
            .iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .copied()
            .unwrap_or(peer);
        Ok(ClientAddr(client))
    }
}

/// What the `Authorization` header carries.
#[derive(Debug)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

impl Credentials {
    /// Reads the header. Malformed Basic credentials and unknown schemes are
    /// 400s (a client bug), not 401s (wrong credentials).
    pub fn from_headers(headers: &HeaderMap) -> Result<Credentials, Error> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Credentials::None);
        };
        let value = value
            .to_str()
            .map_err(|_| Error::invalid_request("Authorization header is not ASCII"))?
            .trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            // Padding is optional in practice; some clients omit it.
            const LENIENT: GeneralPurpose = GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                GeneralPurposeConfig::new()
                    .with_decode_padding_mode(DecodePaddingMode::Indifferent),
            );
            let malformed = || Error::invalid_request("malformed Basic credentials");
            let decoded = LENIENT.decode(rest).map_err(|_| malformed())?;
            let text = String::from_utf8(decoded).map_err(|_| malformed())?;
            let (user, password) = text.split_once(':').ok_or_else(malformed)?;
            if user.is_empty() {
                return Err(Error::invalid_request(
                    "Basic credentials with an empty user name",
                ));
            }
            Ok(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            Ok(Credentials::Bearer(rest.to_owned()))
        } else {
            Err(Error::invalid_request(
                "unsupported Authorization scheme (use Basic or Bearer)",
            ))
        }
    }
}

/// Maps a failure to read the body: too large is 413, the rest 400.
pub fn body_error(rejection: &BytesRejection) -> Error {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge("request body is too large".into())
    } else {
        Error::invalid_request(format!(
            "cannot read the request body: {}",
            rejection.body_text()
        ))
    }
}

/// A JSON body, with errors in authd's JSON shape. The content type is not
/// checked: `curl -d` sends a form type for JSON text.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_error(&r))?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| Error::bad_request("invalid_json", format!("invalid JSON body: {e}")))
    }
}

/// URL-encoded parameters (query string or form body), keeping repeats.
/// As an extractor, the parameters of the query string.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, Self::Rejection> {
        Ok(Params::parse(parts.uri.query().unwrap_or("").as_bytes()))
    }
}

impl Params {
    pub fn parse(encoded: &[u8]) -> Params {
        Params(form_urlencoded::parse(encoded).into_owned().collect())
    }

    /// The first non-empty value of `key`.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean flag: `true`/`1`/`yes` (any case) are true.
    pub fn flag(&self, key: &str) -> bool {
        self.first(key).is_some_and(|v| {
            ["true", "1", "yes"]
                .iter()
                .any(|t| v.eq_ignore_ascii_case(t))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn creds(value: &str) -> Result<Credentials, Error> {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        Credentials::from_headers(&h)
    }

    #[test]
    fn basic_credentials() {
        match creds("Basic YWxpY2U6cDpzcw==").unwrap() {
            Credentials::Basic { user, password } => {
                assert_eq!(user, "alice");
                assert_eq!(password, "p:ss");
            }
            other => panic!("{other:?}"),
        }
        // Without padding, lower-case scheme.
        assert!(matches!(
            creds("basic YWxpY2U6cDpzcw"),
            Ok(Credentials::Basic { .. })
        ));
        for bad in [
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=", // "alice": no colon
            "Basic OnBhc3M=", // ":pass": empty user
            "Basic /w==",     // not UTF-8
            "Digest abc",
            "Bearer",
        ] {
            let e = creds(bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(
            matches!(creds("Bearer abc.def.ghi"), Ok(Credentials::Bearer(t)) if t == "abc.def.ghi")
        );
        assert!(matches!(
            Credentials::from_headers(&HeaderMap::new()),
            Ok(Credentials::None)
        ));
    }

    #[test]
    fn params_keep_repeats_and_decode() {
        let p = Params::parse(b"scope=a%20b&scope=c+d&service=&service=reg&offline_token=TRUE");
        assert_eq!(p.all("scope").collect::<Vec<_>>(), ["a b", "c d"]);
        assert_eq!(p.first("service"), Some("reg"));
        assert!(p.flag("offline_token"));
        assert!(!p.flag("missing"));
    }
}
