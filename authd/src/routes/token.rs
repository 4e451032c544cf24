//! `GET /token` (docker before login, podman, skopeo, crane) and
//! `POST /token` (OAuth2 form: docker after login, containerd), as
//! PROTOCOL.md §3 describes. Errors use the OAuth2 + registry shape.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use token::Scope;

use super::{ClientAddr, Credentials, Params, body_error};
use crate::credentials::{self, Caller};
use crate::error::Error;
use crate::policy::{self, Principal};
use crate::state::AppState;
use crate::token::{self as issuing, TokenResponse};

/// Longest `client_id` stored with a refresh token.
const MAX_CLIENT_ID_LEN: usize = 256;

pub async fn get(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    params: Params,
    headers: HeaderMap,
) -> Response {
    respond(handle_get(&state, client, &params, &headers).await)
}

pub async fn post(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(handle_post(&state, client, &headers, body).await)
}

/// `POST /token/revoke` (RFC 7009): the holder of a refresh token revokes
/// it (the web UI's sign-out). The token is the credential, so no other is
/// needed; the answer is 200 whether the token existed or not.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body.map_err(|r| body_error(&r))?;
        if !headers.get(header::CONTENT_TYPE).is_some_and(is_form) {
            return Err(Error::invalid_request(
                "POST /token/revoke takes an application/x-www-form-urlencoded body",
            ));
        }
        let params = Params::parse(&body);
        let token = params
            .first("token")
            .ok_or_else(|| Error::invalid_request("token is required"))?;
        issuing::revoke_refresh_token(&state, token).await
    }
    .await;
    match result {
        Ok(()) => {
            let mut response = axum::http::StatusCode::OK.into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => e.into_oauth_response(),
    }
}

/// Tokens handed out, and requests refused by why (bad credentials and
/// throttling are the login failures and throttles an operator watches).
static ISSUED: service::metrics::LazyCounter =
    service::metrics::LazyCounter::new(|| metrics::counter!("authd_tokens_issued_total"));
static REFRESH_ISSUED: service::metrics::LazyCounter =
    service::metrics::LazyCounter::new(|| metrics::counter!("authd_refresh_tokens_issued_total"));
static REFUSED: [service::metrics::LazyCounter; 4] = [
    service::metrics::LazyCounter::new(
        || metrics::counter!("authd_token_requests_refused_total", "reason" => "login_failed"),
    ),
    service::metrics::LazyCounter::new(
        || metrics::counter!("authd_token_requests_refused_total", "reason" => "throttled"),
    ),
    service::metrics::LazyCounter::new(
        || metrics::counter!("authd_token_requests_refused_total", "reason" => "bad_request"),
    ),
    service::metrics::LazyCounter::new(
        || metrics::counter!("authd_token_requests_refused_total", "reason" => "error"),
    ),
];

fn count(result: &Result<TokenResponse, Error>) {
    match result {
        Ok(body) => {
            ISSUED.increment(1);
            if body.refresh_token.is_some() {
                REFRESH_ISSUED.increment(1);
            }
        }
        Err(Error::Unauthorized(_)) => REFUSED[0].increment(1),
        Err(Error::TooManyRequests { .. }) => REFUSED[1].increment(1),
        Err(Error::BadRequest { .. }) => REFUSED[2].increment(1),
        Err(_) => REFUSED[3].increment(1),
    }
}

fn respond(result: Result<TokenResponse, Error>) -> Response {
    count(&result);
    match result {
        Ok(body) => {
            let mut response = Json(body).into_response();
            let h = response.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(e) => e.into_oauth_response(),
    }
}

/// Refuses a request naming another service than ours.
fn check_service(state: &AppState, params: &Params) -> Result<(), Error> {
    match params.first("service") {
        Some(s) if s != state.config.service => Err(Error::invalid_request(format!(
            "unknown service {:?}: this server issues tokens for {:?}",
            s.chars().take(100).collect::<String>(),
            state.config.service
        ))),
        _ => Ok(()),
    }
}

fn scopes(params: &Params) -> Result<Vec<Scope>, Error> {
    Scope::parse_all(params.all("scope"))
        .map_err(|e| Error::bad_request("invalid_scope", e.to_string()))
}

async fn handle_get(
    state: &AppState,
    client: std::net::IpAddr,
    params: &Params,
    headers: &HeaderMap,
) -> Result<TokenResponse, Error> {
    check_service(state, params)?;
    let scopes = scopes(params)?;
    match Credentials::from_headers(headers)? {
        Credentials::None => issue(state, None, &scopes, None).await,
        Credentials::Basic { user, password } => {
            let user = credentials::check(state, &user, &password, client).await?;
            let offline = params.flag("offline_token");
            let client_id = params.first("client_id").unwrap_or("unknown");
            issue(state, Some(&user), &scopes, offline.then_some(client_id)).await
        }
        Credentials::Bearer(_) => Err(Error::invalid_request(
            "GET /token takes Basic credentials or none",
        )),
    }
}

async fn handle_post(
    state: &AppState,
    client: std::net::IpAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<TokenResponse, Error> {
    let body = body.map_err(|r| body_error(&r))?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !is_form(ct)
    {
        return Err(Error::invalid_request(
            "POST /token takes an application/x-www-form-urlencoded body",
        ));
    }
    let params = Params::parse(&body);
    check_service(state, &params)?;
    let grant_type = params
        .first("grant_type")
        .ok_or_else(|| Error::invalid_request("grant_type is required"))?;
    if !matches!(grant_type, "password" | "refresh_token") {
        return Err(Error::bad_request(
            "unsupported_grant_type",
            format!(
                "unsupported grant_type {:?} (use password or refresh_token)",
                grant_type.chars().take(100).collect::<String>()
            ),
        ));
    }
    let client_id = params
        .first("client_id")
        .ok_or_else(|| Error::invalid_request("client_id is required"))?;
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(Error::invalid_request(format!(
            "client_id is longer than {MAX_CLIENT_ID_LEN} bytes"
        )));
    }
    let scopes = scopes(&params)?;
    if grant_type == "password" {
        let (Some(name), Some(password)) = (params.first("username"), params.first("password"))
        else {
            return Err(Error::invalid_request(
                "grant_type=password needs username and password",
            ));
        };
        let user = credentials::check(state, name, password, client).await?;
        let offline = params.first("access_type") == Some("offline");
        issue(state, Some(&user), &scopes, offline.then_some(client_id)).await
    } else {
        let token = params.first("refresh_token").ok_or_else(|| {
            Error::invalid_request("grant_type=refresh_token needs refresh_token")
        })?;
        let user = credentials::redeem_refresh_token(state, token).await?;
        issue(state, Some(&user), &scopes, None).await
    }
}

/// Records what a token request asked for and got (batched: no write on
/// the request's path).
fn audit_grant(
    state: &AppState,
    subject: &str,
    asked: &[Scope],
    access: &[token::ResourceActions],
) {
    let granted: Vec<String> = access
        .iter()
        .map(|ra| format!("{}:{}:{}", ra.resource_type, ra.name, ra.actions.join(",")))
        .collect();
    let refused: Vec<String> = asked
        .iter()
        .filter(|s| {
            !access
                .iter()
                .any(|ra| ra.resource_type == s.resource_type && ra.name == s.name)
        })
        .map(|s| format!("{}:{}", s.resource_type, s.name))
        .collect();
    let action = if granted.is_empty() {
        "token.refuse"
    } else {
        "token.issue"
    };
    let mut detail = format!("granted: {}", granted.join(" "));
    if !refused.is_empty() {
        detail.push_str("; refused: ");
        detail.push_str(&refused.join(" "));
    }
    state
        .auth
        .audit(&state.db)
        .record("token", action, subject, &detail);
}

/// Signs a token for `caller` (anonymous when `None`) with the requested
/// scopes it holds — within its access token's scopes when it used one —
/// and a refresh token when `refresh_for` names a client.
async fn issue(
    state: &AppState,
    caller: Option<&Caller>,
    scopes: &[Scope],
    refresh_for: Option<&str>,
) -> Result<TokenResponse, Error> {
    let user = caller.map(|c| &c.user);
    let name = user.map(|u| u.name.as_str());
    // A login (no scope) needs no grants, and admins hold everything.
    let mut access = if scopes.is_empty() {
        Vec::new()
    } else {
        let entitlements = if user.is_some_and(|u| u.is_admin) {
            std::sync::Arc::default()
        } else {
            state.grants.for_principal(&state.db, name).await?
        };
        let principal = match user {
            Some(u) => Principal::user(&u.name, u.is_admin, &entitlements),
            None => Principal::Anonymous,
        };
        policy::authorize(principal, &entitlements.grants, scopes)?
    };
    let token = caller.and_then(|c| c.token.as_ref());
    if let Some(t) = token {
        access = policy::restrict(access, &t.owner, &t.scopes, t.admin);
    }
    if !scopes.is_empty() {
        audit_grant(
            state,
            name.unwrap_or(crate::names::ANONYMOUS),
            scopes,
            &access,
        );
    }
    let mut response = issuing::issue(state, name.unwrap_or(""), access)?;
    if let (Some(client_id), Some(user)) = (refresh_for, user) {
        let from = token.map(|t| t.id.as_str());
        response.refresh_token =
            Some(issuing::create_refresh_token(state, user, client_id, from).await?);
    }
    Ok(response)
}

/// Whether a `Content-Type` names a form body
/// (`application/x-www-form-urlencoded`, parameters ignored).
fn is_form(content_type: &HeaderValue) -> bool {
    content_type
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
