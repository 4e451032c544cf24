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
        )
        // No Basic challenge from the admin API: a browser would remember
        // the credentials and send them with cross-site requests.
        .layer(axum::middleware::map_response(no_basic_challenge));
    Router::new()
        .route(::token::TOKEN_PATH, get(token::get).post(token::post))
        .route("/token/revoke", post(token::revoke))
        .route(::token::JWKS_PATH, get(jwks::jwks))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .nest("/api/v1", api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn no_basic_challenge(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().remove(header::WWW_AUTHENTICATE);
    response
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
/// proxy — the nearest untrusted address in `X-Forwarded-For`, read from
/// the right. An entry may carry a port (`1.2.3.4:5678`, `[::1]:80`); an
/// entry that is no address at all ends the chain the proxies vouch for,
/// and the last address read (a trusted proxy, or the peer) is the client:
/// whatever precedes it was written by the client.
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
        let entries = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().ok())
            .collect::<Vec<_>>();
        Ok(ClientAddr(forwarded_client(peer, &entries, trusted)))
    }
}

/// The client behind trusted proxies: `headers` are the values of the
/// `X-Forwarded-For` lines in order (`None`: not text).
fn forwarded_client(peer: IpAddr, headers: &[Option<&str>], trusted: &[IpAddr]) -> IpAddr {
    let mut client = peer;
    for header in headers.iter().rev() {
        let Some(header) = header else {
            return client;
        };
        for entry in header.rsplit(',') {
            let Some(ip) = parse_forwarded(entry.trim()) else {
                return client;
            };
            client = ip;
            if !trusted.contains(&ip) {
                return client;
            }
        }
    }
    client
}

/// An address of `X-Forwarded-For`, with or without a port.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
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

/// Whether `headers` declare a JSON body: `application/json`, with any
/// parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// A JSON body, with errors in authd's JSON shape. The content type must be
/// `application/json` (else 415): a browser sends no such cross-site request
/// without a CORS preflight, which authd never answers, so a page cannot
/// drive the admin API with credentials the browser holds.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        if !is_json(req.headers()) {
            return Err(Error::UnsupportedMediaType(
                "the admin API takes Content-Type: application/json".into(),
            ));
        }
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
    fn forwarded_for_from_the_right_until_an_untrusted_or_unparsable_entry() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let proxy = ip("10.9.9.9");
        let trusted = [proxy, ip("10.8.8.8")];
        let client = |headers: &[Option<&str>]| forwarded_client(proxy, headers, &trusted);
        assert_eq!(client(&[]), proxy);
        assert_eq!(client(&[Some("1.1.1.1")]), ip("1.1.1.1"));
        assert_eq!(client(&[Some("6.6.6.6, 1.1.1.1")]), ip("1.1.1.1"));
        assert_eq!(client(&[Some("6.6.6.6, 1.1.1.1, 10.8.8.8")]), ip("1.1.1.1"));
        assert_eq!(client(&[Some("6.6.6.6"), Some("1.1.1.1")]), ip("1.1.1.1"));
        assert_eq!(client(&[Some("6.6.6.6, 1.1.1.1:4444")]), ip("1.1.1.1"));
        assert_eq!(client(&[Some("[2001:db8::1]:80")]), ip("2001:db8::1"));
        assert_eq!(client(&[Some("::ffff:1.1.1.1")]), ip("1.1.1.1"));
        assert_eq!(client(&[Some("6.6.6.6, bogus")]), proxy);
        assert_eq!(client(&[Some("6.6.6.6, bogus, 10.8.8.8")]), ip("10.8.8.8"));
        assert_eq!(client(&[Some("6.6.6.6,")]), proxy);
        assert_eq!(client(&[Some("6.6.6.6"), None]), proxy);
        assert_eq!(client(&[Some("10.8.8.8")]), ip("10.8.8.8"));
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
