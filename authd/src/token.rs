//! Issuing tokens: the signed JWT (claims per PROTOCOL.md §4), the token
//! endpoint's response, and refresh tokens — 32 random bytes handed out
//! once, stored only as their SHA-256, ended by revocation, 90 days without
//! use, a password change or a disable.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Serialize;
use sha2::{Digest, Sha256};
use token::{Claims, ResourceActions};

use crate::db::refresh_tokens;
use crate::db::users::User;
use crate::error::Error;
use crate::state::App;
use crate::util::{now, rfc3339};

/// Refresh tokens longer than this are not even looked up.
const MAX_REFRESH_TOKEN_LEN: usize = 256;

/// The token endpoint's answer (both verbs).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub token: String,
    /// The same JWT: OAuth2 clients read this name, docker's older code the
    /// other.
    pub access_token: String,
    pub expires_in: u64,
    pub issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Signs a token for `subject` ("" for anonymous) carrying `access`.
pub fn issue(
    app: &App,
    subject: &str,
    access: Vec<ResourceActions>,
) -> Result<TokenResponse, Error> {
    let t = now();
    let expires_in = app.config.token.expiration;
    let claims = Claims {
        iss: app.config.issuer.clone(),
        sub: subject.to_owned(),
        aud: app.config.service.clone(),
        exp: t + expires_in as i64,
        nbf: t,
        iat: t,
        jti: uuid::Uuid::new_v4().simple().to_string(),
        access,
    };
    let jwt = app.keys.current().signing.sign_jwt(&claims)?;
    Ok(TokenResponse {
        access_token: jwt.clone(),
        token: jwt,
        expires_in,
        issued_at: rfc3339(t),
        refresh_token: None,
    })
}

fn hash_refresh_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Creates a refresh token for `user` (logged in with the access token
/// `access_token_id`, if any); returns the token, the only time it exists
/// outside the client.
pub async fn create_refresh_token(
    app: &App,
    user: &User,
    client_id: &str,
    access_token_id: Option<&str>,
) -> Result<String, Error> {
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let token = B64URL.encode(raw);
    let id = refresh_tokens::insert(
        &app.db,
        user.id,
        &hash_refresh_token(&token),
        client_id,
        access_token_id,
    )
    .await?;
    tracing::info!(user = %user.name, client_id = %client_id.escape_debug(), token_id = %id, "refresh token issued");
    Ok(token)
}

/// The user a refresh token stands for and the access token its login was
/// made with (if any), or a 401.
pub async fn redeem_refresh_token(app: &App, token: &str) -> Result<(User, Option<String>), Error> {
    let invalid = || Error::unauthorized("invalid or expired refresh token");
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN_LEN {
        return Err(invalid());
    }
    // Looked up by hash: a timing difference could at most reveal a prefix
    // of a SHA-256 value, which is of no use for forging a token.
    let found = refresh_tokens::find(&app.db, &hash_refresh_token(token))
        .await?
        .ok_or_else(invalid)?;
    let max_idle = app.config.token.refresh_ttl_days as i64 * 86_400;
    if now() - found.token_last_used_at > max_idle {
        return Err(invalid());
    }
    if found.user.disabled {
        return Err(Error::unauthorized(format!(
            "account {:?} is disabled",
            found.user.name
        )));
    }
    refresh_tokens::touch(&app.db, &found).await?;
    Ok((found.user, found.access_token_id))
}

/// Revokes a refresh token presented by its holder (sign-out). Unknown
/// tokens are no error: the answer must not tell a guesser anything, and
/// revoking twice is the same as once (RFC 7009 §2.2).
pub async fn revoke_refresh_token(app: &App, token: &str) -> Result<(), Error> {
    if token.is_empty() || token.len() > MAX_REFRESH_TOKEN_LEN {
        return Ok(());
    }
    if let Some(user) = refresh_tokens::delete_by_hash(&app.db, &hash_refresh_token(token)).await? {
        tracing::info!(user = %user, "refresh token revoked by its holder");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AppState;

    #[test]
    fn refresh_token_hash_is_sha256() {
        let h = hash_refresh_token("abc");
        assert_eq!(
            hex::encode(h),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    async fn app(dir: &std::path::Path) -> AppState {
        let mut config = crate::Config {
            data_dir: dir.to_owned(),
            ..crate::Config::default()
        };
        config.password.argon2.memory_kib = 64;
        config.password.argon2.iterations = 1;
        config.admin.password = Some("admin-password".into());
        AppState::init(config).await.unwrap().0
    }

    #[tokio::test]
    async fn refresh_tokens_expire_after_90_days_unused() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        let admin = crate::db::users::get_existing(&app.db, "admin")
            .await
            .unwrap();
        let token = create_refresh_token(&app, &admin, "test", None)
            .await
            .unwrap();
        assert_eq!(
            redeem_refresh_token(&app, &token).await.unwrap().0.name,
            "admin"
        );
        // Used 89 days ago: still good, and the use is recorded.
        refresh_tokens::backdate(&app.db, admin.id, 89 * 86_400)
            .await
            .unwrap();
        redeem_refresh_token(&app, &token).await.unwrap();
        let listed = refresh_tokens::list_for_user(&app.db, admin.id)
            .await
            .unwrap();
        assert!(now() - listed[0].last_used_at < 60, "use not recorded");
        // Unused for more than 90 days: refused.
        refresh_tokens::backdate(&app.db, admin.id, 90 * 86_400 + 10)
            .await
            .unwrap();
        let err = redeem_refresh_token(&app, &token).await.unwrap_err();
        assert_eq!(err.status(), 401);
        let removed = refresh_tokens::delete_unused_since(&app.db, now() - 90 * 86_400)
            .await
            .unwrap();
        assert_eq!(removed, 1);
    }

    #[tokio::test]
    async fn refresh_tokens_are_capped_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path()).await;
        let admin = crate::db::users::get_existing(&app.db, "admin")
            .await
            .unwrap();
        let first = create_refresh_token(&app, &admin, "old", None)
            .await
            .unwrap();
        for _ in 0..refresh_tokens::MAX_PER_USER {
            create_refresh_token(&app, &admin, "new", None)
                .await
                .unwrap();
        }
        let listed = refresh_tokens::list_for_user(&app.db, admin.id)
            .await
            .unwrap();
        assert_eq!(listed.len() as i64, refresh_tokens::MAX_PER_USER);
        assert!(listed.iter().all(|t| t.client_id == "new"));
        assert!(redeem_refresh_token(&app, &first).await.is_err());
        assert!(redeem_refresh_token(&app, "").await.is_err());
        assert!(redeem_refresh_token(&app, &"x".repeat(300)).await.is_err());
    }
}
