//! Who is calling: a user name with a password, or with one of the user's
//! access tokens in the password's place, or a refresh token. The answer
//! is a [`Caller`]: the user, and the access token when one was used, which
//! bounds everything the call may obtain.

use std::net::IpAddr;

use subtle::ConstantTimeEq;

use crate::access_tokens::{self, AccessToken};
use crate::db::users::User;
use crate::db::{self, Db};
use crate::error::Error;
use crate::state::App;
use crate::util::now;

/// An access token's `last_used_at` is written at most this often (unless
/// the address changes), so that using a token is a read, not a write.
pub const TOUCH_INTERVAL_SECS: i64 = 60;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The access token used instead of the password, if any.
    pub token: Option<AccessToken>,
}

/// Checks `password` for `name`: as an access token when it looks like one
/// (`rgt_…`), else as the password. Both are throttled per (account,
/// client address) alike. Robots have no password: only their tokens.
pub async fn check(app: &App, name: &str, password: &str, client: IpAddr) -> Result<Caller, Error> {
    if !access_tokens::is_access_token(password) {
        let user = app.auth.login(&app.db, name, password, client).await?;
        if user.is_robot {
            return Err(Error::unauthorized(format!(
                "{:?} is a robot: it logs in with its access tokens only",
                user.name
            )));
        }
        return Ok(Caller { user, token: None });
    }
    // Reserved before the check, like a password check, so that concurrent
    // guesses cannot exceed the free failures; the shared counts are read
    // only when this process knows of failures (the check is a hash).
    let reservation = app
        .auth
        .throttle()
        .reserve_cheap(name, client)
        .await
        .map_err(|retry_after| Error::TooManyRequests { retry_after })?;
    match check_token(&app.db, name, password, client).await {
        Ok((user, token)) => {
            reservation.success().await;
            Ok(Caller {
                user,
                token: Some(token),
            })
        }
        Err(e @ Error::Unauthorized(_)) => {
            tracing::warn!(account = %name.escape_debug(), client = %client, "failed access token login");
            match reservation.failure().await {
                Some(retry_after) => Err(Error::TooManyRequests { retry_after }),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The caller a refresh token stands for: its user, and the access token
/// the login that got it was made with — which must still exist (revoking
/// it deleted the refresh token too) and not be expired.
pub async fn redeem_refresh_token(app: &App, token: &str) -> Result<Caller, Error> {
    let (user, access_token_id) = crate::token::redeem_refresh_token(app, token).await?;
    let Some(id) = access_token_id else {
        return Ok(Caller { user, token: None });
    };
    let token = crate::db::access_tokens::get(&app.db, &id)
        .await?
        .filter(|t| !t.is_expired(now()))
        .ok_or_else(|| {
            Error::unauthorized("the access token of this login expired or was revoked")
        })?;
    Ok(Caller {
        user,
        token: Some(token),
    })
}

/// Why a token is refused; all of them are 401s with the same message to
/// the client, so that a guesser learns nothing.
fn refused() -> Error {
    Error::unauthorized("invalid, expired or revoked access token")
}

/// Checks `token` offered as the password of `name`: it must exist, belong
/// to `name`, carry the right secret, not be expired, and its owner must be
/// enabled. Records the use (time and address).
async fn check_token(
    db: &Db,
    name: &str,
    token: &str,
    client: IpAddr,
) -> Result<(User, AccessToken), Error> {
    let (id, secret) = access_tokens::split(token).ok_or_else(refused)?;
    let (user, stored, secret_hash) = db::access_tokens::find(db, id).await?.ok_or_else(refused)?;
    let secret_ok: bool = access_tokens::hash_secret(secret)[..]
        .ct_eq(secret_hash.as_slice())
        .into();
    if !secret_ok || user.name != name {
        return Err(refused());
    }
    let t = now();
    if stored.is_expired(t) {
        return Err(refused());
    }
    if user.disabled {
        return Err(Error::unauthorized(format!(
            "account {:?} is disabled",
            user.name
        )));
    }
    let from = client.to_string();
    let stale = stored
        .last_used_at
        .is_none_or(|at| t - at >= TOUCH_INTERVAL_SECS);
    if stale || stored.last_used_from.as_deref() != Some(from.as_str()) {
        db::access_tokens::touch(db, id, t, &from).await?;
    }
    Ok((user, stored))
}
