//! Who is calling and what they may do.
//!
//! [`Caller`] is an axum extractor: it reads the `Authorization` header and
//! turns it into an identity with its access (anyone when auth is off, an
//! htpasswd user, the access of a verified bearer token, or anonymous).
//! [`Caller::authorize`] then checks one [`Requirement`] and returns the
//! [`Granted`] proof that request handlers take as an argument, so a handler
//! cannot be reached for an action that was not checked. A refusal is the
//! 401 challenge the configured method prescribes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::FromRequestParts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;
use sha2::Sha256;
use token::Action;

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

/// Proof that a requirement was checked; only this module makes one.
#[derive(Debug)]
pub struct Granted {
    _private: (),
}

/// The identity behind a request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Auth is off: everyone may do everything.
    Anyone,
    /// A user authenticated against the htpasswd file: full access, as in
    /// distribution.
    User(String),
    /// No (valid) credentials.
    Anonymous,
}

impl Caller {
    /// Checks `req`, answering the method's 401 challenge when refused.
    pub fn authorize(&self, state: &AppState, _req: &Requirement<'_>) -> Result<Granted, Error> {
        match self {
            Caller::Anyone | Caller::User(_) => Ok(Granted { _private: () }),
            Caller::Anonymous => Err(challenge(state)),
        }
    }

    /// Whether the caller may list every repository.
    pub fn may_list_catalog(&self) -> bool {
        matches!(self, Caller::Anyone | Caller::User(_))
    }

    /// Whether the caller may pull from `name` (for cross-repository mounts
    /// and catalog filtering).
    pub fn may_pull(&self, _name: &RepoName) -> bool {
        matches!(self, Caller::Anyone | Caller::User(_))
    }
}

fn challenge(state: &AppState) -> Error {
    let err = Error::new(ErrorCode::Unauthorized, "authentication required");
    match &state.authenticator {
        Authenticator::Htpasswd(h) => err.with_header(
            WWW_AUTHENTICATE,
            &format!("Basic realm=\"{}\"", h.realm.replace('"', "")),
        ),
        Authenticator::None => err,
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, Error> {
        match &state.authenticator {
            Authenticator::None => Ok(Caller::Anyone),
            Authenticator::Htpasswd(h) => {
                let Some((user, password)) = basic_credentials(parts) else {
                    return Ok(Caller::Anonymous);
                };
                if h.check(user.clone(), password).await {
                    Ok(Caller::User(user))
                } else {
                    Ok(Caller::Anonymous)
                }
            }
        }
    }
}

/// `Authorization: Basic base64(user:password)`, if well formed.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = B64.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The configured authentication method.
pub enum Authenticator {
    None,
    Htpasswd(Box<Htpasswd>),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authenticator::None => "Authenticator::None",
            Authenticator::Htpasswd(_) => "Authenticator::Htpasswd",
        })
    }
}

// ----- htpasswd -----

/// How long a successful password check is remembered.
const CHECK_TTL: Duration = Duration::from_secs(60);
/// How often the file's modification time is looked at.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Users of an htpasswd file (bcrypt entries, as distribution supports),
/// reloaded when the file changes, with successful checks cached.
///
/// bcrypt at cost 10–12 takes 50–250 ms; distribution pays it on every
/// request of a push (distribution issue #3017). The cache is keyed by an
/// HMAC of user and password under a per-process random key, so it holds
/// no password and a wrong password never matches.
pub struct Htpasswd {
    pub realm: String,
    path: PathBuf,
    inner: std::sync::Mutex<HtpasswdFile>,
    key: [u8; 32],
    verified: moka::sync::Cache<[u8; 32], ()>,
    /// A hash checked for unknown users, so that answering "no such user"
    /// takes as long as "wrong password".
    dummy_hash: std::sync::OnceLock<String>,
}

#[derive(Default)]
struct HtpasswdFile {
    users: Arc<std::collections::HashMap<String, String>>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

impl Htpasswd {
    pub fn load(realm: String, path: PathBuf) -> anyhow::Result<Htpasswd> {
        let h = Htpasswd {
            realm,
            path,
            inner: std::sync::Mutex::new(HtpasswdFile::default()),
            key: rand::random(),
            verified: moka::sync::Cache::builder()
                .time_to_live(CHECK_TTL)
                .max_capacity(10_000)
                .build(),
            dummy_hash: std::sync::OnceLock::new(),
        };
        h.reload(true)?;
        // Computed now, on the blocking thread `load` runs on, not later
        // inside a request.
        let users = h
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .users
            .clone();
        h.dummy_hash(&users);
        Ok(h)
    }

    /// Re-reads the file when it changed. At start (`strict`) a missing or
    /// unreadable file is an error; later the last good version is kept.
    fn reload(&self, strict: bool) -> anyhow::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !strict && inner.checked.is_some_and(|t| t.elapsed() < RELOAD_INTERVAL) {
            return Ok(());
        }
        inner.checked = Some(Instant::now());
        let modified = std::fs::metadata(&self.path).and_then(|m| m.modified());
        let modified = match modified {
            Ok(m) => m,
            Err(e) if strict => anyhow::bail!("htpasswd file {}: {e}", self.path.display()),
            Err(e) => {
                tracing::warn!(
                    "htpasswd file {}: {e}; keeping the users loaded before",
                    self.path.display()
                );
                return Ok(());
            }
        };
        if inner.modified == Some(modified) {
            return Ok(());
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if strict => anyhow::bail!("htpasswd file {}: {e}", self.path.display()),
            Err(e) => {
                tracing::warn!(
                    "htpasswd file {}: {e}; keeping the users loaded before",
                    self.path.display()
                );
                return Ok(());
            }
        };
        let mut users = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash)) if hash.starts_with("$2") => {
                    users.insert(user.to_owned(), hash.to_owned());
                }
                _ => tracing::warn!(
                    "htpasswd file {} line {}: not a bcrypt entry, ignored (authd imports other formats)",
                    self.path.display(),
                    n + 1
                ),
            }
        }
        tracing::info!("loaded {} users from {}", users.len(), self.path.display());
        inner.users = Arc::new(users);
        inner.modified = Some(modified);
        // Passwords may have changed: forget what was verified.
        self.verified.invalidate_all();
        Ok(())
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn dummy_hash(&self, users: &std::collections::HashMap<String, String>) -> String {
        self.dummy_hash
            .get_or_init(|| {
                // Same cost as the file's entries: `$2y$NN$…`.
                let cost = users
                    .values()
                    .next()
                    .and_then(|h| h.get(4..6))
                    .and_then(|c| c.parse().ok());
                let random: [u8; 16] = rand::random();
                bcrypt::hash(random, cost.unwrap_or(bcrypt::DEFAULT_COST)).unwrap_or_default()
            })
            .clone()
    }

    /// Whether `password` is right for `user`.
    pub async fn check(self: &Htpasswd, user: String, password: String) -> bool {
        if let Err(e) = self.reload(false) {
            tracing::warn!("{e}");
        }
        let key = self.cache_key(&user, &password);
        if self.verified.contains_key(&key) {
            return true;
        }
        let users = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .users
            .clone();
        let known = users.get(&user).cloned();
        let hash = match &known {
            Some(h) => h.clone(),
            None => self.dummy_hash(&users),
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok && known.is_some() {
            self.verified.insert(key, ());
            true
        } else {
            false
        }
    }
}
