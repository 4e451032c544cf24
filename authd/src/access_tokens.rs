//! Access tokens: long-lived secrets for CI jobs and robot accounts, used as
//! the password of their owner. This module owns their form and their
//! rules; the table is `db::access_tokens`.
//!
//! A token reads `rgt_<id>_<secret>`: the prefix makes it recognisable (to
//! people and to secret scanners), the id finds the row, and the secret —
//! 32 random bytes — is stored as its SHA-256 only. A high-entropy secret
//! needs no slow hash, so a check costs one indexed read and one SHA-256,
//! compared in constant time.
//!
//! A token carries scopes, (target, actions) pairs like grants. What it
//! obtains is evaluated at every use (`policy::restrict`): its scopes ∩ its
//! owner's current grants. A token never opens the admin API unless an
//! admin made it for that (`admin`), and its owner is still an admin. The
//! check of a token offered as a password is in `credentials`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::actions::ActionSet;
use crate::error::Error;
use crate::grants::parse_target_actions;
use crate::target::Target;
use crate::util::rfc3339;

/// What every access token starts with.
pub const PREFIX: &str = "rgt_";
/// Longest token name.
pub const MAX_NAME_LEN: usize = 64;
/// Most scopes on one token.
pub const MAX_SCOPES: usize = 32;
/// Length of the hex id.
const ID_LEN: usize = 32;
/// Length of the base64url secret (32 bytes).
const SECRET_LEN: usize = 43;

/// A freshly made token: the text handed out once, and what is stored.
#[derive(Debug)]
pub struct Minted {
    pub id: String,
    pub token: String,
    pub secret_hash: [u8; 32],
}

/// Makes a new token from the operating system's random source.
pub fn mint() -> Minted {
    let mut id = [0u8; ID_LEN / 2];
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut id);
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let id = hex::encode(id);
    let secret = B64URL.encode(secret);
    Minted {
        token: format!("{PREFIX}{id}_{secret}"),
        secret_hash: hash_secret(&secret),
        id,
    }
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a password is meant as an access token (and so is never
/// checked as a password).
pub fn is_access_token(password: &str) -> bool {
    password.starts_with(PREFIX)
}

/// Splits a token into (id, secret); `None` when it is not well formed.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_at_checked(ID_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some((id, secret))
}

/// One scope of a token: like a grant without a subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenScope {
    pub target: Target,
    pub actions: ActionSet,
}

/// The API and stored (JSON) form of a scope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    pub pattern: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

impl TokenScope {
    pub fn parse(spec: &ScopeSpec) -> Result<TokenScope, Error> {
        let (target, actions) =
            parse_target_actions(spec.resource_type.as_deref(), &spec.pattern, &spec.actions)?;
        Ok(TokenScope { target, actions })
    }

    /// Reads the CLI form: `PATTERN=ACTIONS`, or `registry:catalog`.
    pub fn parse_cli(text: &str) -> Result<TokenScope, Error> {
        let (pattern, actions) = match text.rsplit_once('=') {
            Some((p, a)) => (p, vec![a.to_owned()]),
            None => (text, Vec::new()),
        };
        TokenScope::parse(&ScopeSpec {
            resource_type: None,
            pattern: pattern.to_owned(),
            actions,
        })
    }

    pub fn spec(&self) -> ScopeSpec {
        let (t, p) = self.target.parts();
        ScopeSpec {
            resource_type: Some(t.to_owned()),
            pattern: p.to_owned(),
            actions: self
                .actions
                .names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// Reads a list of scopes: at least one, at most [`MAX_SCOPES`].
pub fn parse_scopes(specs: &[ScopeSpec]) -> Result<Vec<TokenScope>, Error> {
    if specs.is_empty() || specs.len() > MAX_SCOPES {
        return Err(Error::bad_request(
            "invalid_scope",
            format!("a token needs 1 to {MAX_SCOPES} scopes"),
        ));
    }
    specs.iter().map(TokenScope::parse).collect()
}

/// The stored JSON of scopes.
pub fn scopes_json(scopes: &[TokenScope]) -> String {
    serde_json::to_string(&scopes.iter().map(TokenScope::spec).collect::<Vec<_>>())
        .unwrap_or_else(|_| "[]".to_owned())
}

/// Scopes from their stored JSON; an unreadable entry grants nothing.
pub fn scopes_from_json(text: &str) -> Vec<TokenScope> {
    serde_json::from_str::<Vec<ScopeSpec>>(text)
        .unwrap_or_default()
        .iter()
        .filter_map(|s| TokenScope::parse(s).ok())
        .collect()
}

/// Token names: 1–64 printable ASCII characters.
pub fn check_name(name: &str) -> Result<(), Error> {
    if !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
    {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_name",
            format!(
                "invalid token name {name:?}: use 1 to {MAX_NAME_LEN} printable ASCII characters"
            ),
        ))
    }
}

/// When a token stops working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Seconds from now.
    After(i64),
}

impl Expiry {
    /// Reads `never`, or a duration: a number with `s`, `m`, `h` or `d`
    /// (`90d`, `12h`). `allow_never` is the server's `access_tokens.allow_never`.
    pub fn parse(text: &str, allow_never: bool) -> Result<Expiry, Error> {
        let bad = |m: String| Error::bad_request("invalid_expiry", m);
        let text = text.trim();
        if text == "never" {
            return if allow_never {
                Ok(Expiry::Never)
            } else {
                Err(bad(
                    "tokens that never expire are not allowed here (access_tokens.allow_never)"
                        .into(),
                ))
            };
        }
        let unit = match text.chars().last() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => 0,
        };
        let n = text[..text.len().saturating_sub(1)].parse::<i64>().ok();
        match n {
            Some(n) if unit > 0 && (1..=100 * 365 * 86_400 / unit).contains(&n) => {
                Ok(Expiry::After(n * unit))
            }
            _ => Err(bad(format!(
                "invalid expiry {:?}: use never or a duration such as 90d, 12h, 30m",
                text.chars().take(40).collect::<String>()
            ))),
        }
    }

    /// The `expires_at` to store.
    pub fn at(self, from: i64) -> Option<i64> {
        match self {
            Expiry::Never => None,
            Expiry::After(secs) => Some(from + secs),
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub scopes: Vec<TokenScope>,
    pub admin: bool,
    pub created_by: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub last_used_from: Option<String>,
}

impl AccessToken {
    pub fn is_expired(&self, at: i64) -> bool {
        self.expires_at.is_some_and(|e| at >= e)
    }
}

/// The API form of a token (never the secret).
#[derive(Debug, Serialize)]
pub struct AccessTokenView {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub scopes: Vec<ScopeSpec>,
    pub admin: bool,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub last_used_from: Option<String>,
}

impl From<&AccessToken> for AccessTokenView {
    fn from(t: &AccessToken) -> AccessTokenView {
        AccessTokenView {
            id: t.id.clone(),
            owner: t.owner.clone(),
            name: t.name.clone(),
            scopes: t.scopes.iter().map(TokenScope::spec).collect(),
            admin: t.admin,
            created_by: t.created_by.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
            last_used_from: t.last_used_from.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_split_and_hash() {
        let m = mint();
        assert!(m.token.starts_with("rgt_"));
        let (id, secret) = split(&m.token).unwrap();
        assert_eq!(id, m.id);
        assert_eq!(hash_secret(secret), m.secret_hash);
        assert_ne!(mint().token, m.token);
        for bad in [
            "",
            "rgt_",
            "rgt_abc_def",
            &m.token[..m.token.len() - 1],
            &format!("{}x", m.token),
            &m.token.replace("rgt_", "rgx_"),
            &m.token.to_uppercase(),
        ] {
            assert!(split(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn expiry() {
        assert_eq!(
            Expiry::parse("90d", false).unwrap(),
            Expiry::After(90 * 86_400)
        );
        assert_eq!(Expiry::parse("2s", false).unwrap(), Expiry::After(2));
        assert_eq!(
            Expiry::parse("12h", false).unwrap(),
            Expiry::After(12 * 3600)
        );
        assert_eq!(Expiry::parse("never", true).unwrap(), Expiry::Never);
        assert!(Expiry::parse("never", false).is_err());
        for bad in ["", "d", "0d", "-1d", "5", "5w", "99999999999d", "1.5h"] {
            assert!(Expiry::parse(bad, true).is_err(), "{bad}");
        }
        assert_eq!(Expiry::After(10).at(5), Some(15));
        assert_eq!(Expiry::Never.at(5), None);
    }

    #[test]
    fn scopes_round_trip() {
        let scopes = vec![
            TokenScope::parse_cli("ci/*=pull,push").unwrap(),
            TokenScope::parse_cli("registry:catalog").unwrap(),
        ];
        assert_eq!(scopes_from_json(&scopes_json(&scopes)), scopes);
        assert!(
            TokenScope::parse_cli("ci/*").is_err(),
            "actions are required"
        );
        assert!(TokenScope::parse_cli("CI/*=pull").is_err());
        assert!(parse_scopes(&[]).is_err());
        assert!(check_name("ci deploy").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
    }
}
