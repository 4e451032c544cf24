//! Who is calling and what they may do.
//!
//! [`Caller`] is an axum extractor: it reads the `Authorization` header and
//! turns it into an identity with its access — anyone when auth is off, an
//! htpasswd user, the access of a verified bearer token, or anonymous.
//! [`Caller::authorize`] then checks one [`Requirement`] and returns the
//! [`Granted`] proof that request handlers take as an argument, so a handler
//! cannot be reached for an action that was not checked. A refusal is the
//! 401 challenge the configured method prescribes (PROTOCOL.md §1).

mod htpasswd;
mod token_auth;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use token::{Action, VerifyError};

pub use self::htpasswd::Htpasswd;
pub use self::token_auth::{REFETCH_INTERVAL, TokenAuth, Verified};
use crate::error::{Error, ErrorCode};
use crate::oci::RepoName;
use crate::state::AppState;

/// What a request needs to be allowed.
#[derive(Debug, Clone)]
pub enum Requirement<'a> {
    /// Any authenticated caller (`GET /v2/`).
    Authenticated,
    /// These actions on this repository.
    Repository(&'a RepoName, &'a [Action]),
    /// Listing the catalog (filtered for callers without full catalog access).
    Catalog,
}

impl Requirement<'_> {
    /// The scope a client must ask the token service for.
    fn scope(&self) -> Option<String> {
        match self {
            Requirement::Authenticated => None,
            Requirement::Repository(name, actions) => {
                let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                Some(format!("repository:{name}:{}", actions.join(",")))
            }
            Requirement::Catalog => {
                Some(format!("{}:{}:*", token::CATALOG_TYPE, token::CATALOG_NAME))
            }
        }
    }
}

/// Proof that a requirement was checked; only this module makes one.
#[derive(Debug)]
pub struct Granted {
    _private: (),
}

const GRANTED: Granted = Granted { _private: () };

/// The identity behind a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: everyone may do everything.
    Anyone,
    /// A user authenticated against the htpasswd file: full access, as in
    /// distribution.
    User(String),
    /// A verified bearer token.
    Token(Arc<Verified>),
    /// No credentials.
    Anonymous,
    /// Credentials that were refused, with the reason.
    Refused(RefusedCredentials),
}

/// Why presented credentials were refused.
#[derive(Debug, Clone)]
pub enum RefusedCredentials {
    Password,
    Token(VerifyError),
}

impl Caller {
    /// Checks `req`, answering the method's 401 challenge when refused.
    pub fn authorize(&self, state: &AppState, req: &Requirement<'_>) -> Result<Granted, Error> {
        let allowed = match self {
            Caller::Anyone | Caller::User(_) => true,
            Caller::Token(v) => match req {
                Requirement::Authenticated => true,
                Requirement::Repository(name, actions) => {
                    v.access.allows_repository(name.as_str(), actions)
                }
                // With `*` (a full listing) or without (a filtered one).
                Requirement::Catalog => v.access.has_catalog_entry(),
            },
            Caller::Anonymous | Caller::Refused(_) => false,
        };
        if allowed {
            Ok(GRANTED)
        } else {
            Err(self.challenge(state, req))
        }
    }

    /// Whether the caller may list every repository.
    pub fn may_list_catalog(&self) -> bool {
        match self {
            Caller::Anyone | Caller::User(_) => true,
            Caller::Token(v) => v.access.allows_catalog(),
            Caller::Anonymous | Caller::Refused(_) => false,
        }
    }

    /// Whether the caller may pull from `name` (cross-repository mounts).
    pub fn may_pull(&self, name: &RepoName) -> bool {
        match self {
            Caller::Anyone | Caller::User(_) => true,
            Caller::Token(v) => v.access.allows_repository(name.as_str(), &[Action::Pull]),
            Caller::Anonymous | Caller::Refused(_) => false,
        }
    }

    /// Whether `name` is shown to this caller in a filtered catalog.
    pub fn lists_in_catalog(&self, name: &RepoName) -> bool {
        match self {
            Caller::Token(v) => v.access.lists_in_catalog(name.as_str()),
            other => other.may_pull(name),
        }
    }

    /// The 401 answer for `req`: a Basic or Bearer challenge.
    fn challenge(&self, state: &AppState, req: &Requirement<'_>) -> Error {
        match &state.authenticator {
            Authenticator::Htpasswd(h) => {
                Error::new(ErrorCode::Unauthorized, "authentication required").with_header(
                    WWW_AUTHENTICATE,
                    &format!("Basic realm=\"{}\"", quote_safe(&h.realm)),
                )
            }
            Authenticator::Token(t) => {
                let scope = req.scope();
                let mut value = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    quote_safe(&t.config.realm),
                    quote_safe(&t.config.service)
                );
                if let Some(scope) = &scope {
                    value = format!("{value},scope=\"{}\"", quote_safe(scope));
                }
                let message = match self {
                    Caller::Token(_) => {
                        value.push_str(",error=\"insufficient_scope\"");
                        "the token does not grant this action".to_owned()
                    }
                    Caller::Refused(RefusedCredentials::Token(e)) => {
                        value.push_str(",error=\"invalid_token\"");
                        format!("invalid token: {e}")
                    }
                    _ => "authentication required".to_owned(),
                };
                let detail = scope.map(|s| serde_json::json!([{ "scope": s }]));
                let mut err = Error::new(ErrorCode::Unauthorized, message)
                    .with_header(WWW_AUTHENTICATE, &value);
                if let Some(d) = detail {
                    err = err.with_detail(d);
                }
                err
            }
            // Auth is off: nothing is ever refused.
            Authenticator::None => Error::new(ErrorCode::Unauthorized, "authentication required"),
        }
    }
}

/// Challenge parameters are quoted strings; configuration never needs `"`
/// or `\`, so they are dropped rather than escaped.
fn quote_safe(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '"' | '\\') && !c.is_control())
        .collect()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Error> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(match (&state.authenticator, header) {
            (Authenticator::None, _) => Caller::Anyone,
            (_, None) => Caller::Anonymous,
            (Authenticator::Htpasswd(h), Some(header)) => match basic_credentials(header) {
                Some((user, password)) => {
                    if h.check(user.clone(), password).await {
                        Caller::User(user)
                    } else {
                        Caller::Refused(RefusedCredentials::Password)
                    }
                }
                None => Caller::Refused(RefusedCredentials::Password),
            },
            (Authenticator::Token(t), Some(header)) => match bearer_token(header) {
                Some(token) => match t.verify(token).await {
                    Ok(v) => Caller::Token(v),
                    Err(e) => Caller::Refused(RefusedCredentials::Token(e)),
                },
                // Basic credentials are for the token service, not for us.
                None => Caller::Anonymous,
            },
        })
    }
}

/// `Authorization: Basic base64(user:password)`, if well formed.
fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// `Authorization: Bearer <token>`.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// The configured authentication method.
pub enum Authenticator {
    None,
    Htpasswd(Box<Htpasswd>),
    Token(Arc<TokenAuth>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authenticator::None => "Authenticator::None",
            Authenticator::Htpasswd(_) => "Authenticator::Htpasswd",
            Authenticator::Token(_) => "Authenticator::Token",
        })
    }
}
