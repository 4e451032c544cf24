//! Making access tokens: the checks a new token must pass against its owner
//! and its maker (scopes no wider than the owner's grants, admin tokens
//! only from an admin for an admin), then storage. The API and the CLI
//! both come through here.

use crate::access_tokens::{self, AccessToken, Expiry, TokenScope, scopes_json};
use crate::db::Db;
use crate::db::access_tokens::{self as token_db, NewToken};
use crate::db::users::User;
use crate::error::Error;
use crate::grant_cache;
use crate::policy::{self, Principal};

/// What is asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub name: String,
    pub scopes: Vec<TokenScope>,
    pub expiry: Expiry,
    pub admin: bool,
}

/// Makes a token for `owner`. `by_admin`: the maker is an admin (admin API
/// or CLI). Returns the token text, shown once, and what was stored.
pub async fn create(
    db: &Db,
    owner: &User,
    request: &Request,
    by_admin: bool,
    actor: &str,
) -> Result<(String, AccessToken), Error> {
    access_tokens::check_name(&request.name)?;
    if request.admin && !by_admin {
        return Err(Error::forbidden(
            "only an admin can make a token that opens the admin API",
        ));
    }
    if request.admin && !owner.is_admin {
        return Err(Error::bad_request(
            "invalid_token",
            format!(
                "{:?} is not an admin: its tokens cannot open the admin API",
                owner.name
            ),
        ));
    }
    let entitlements = grant_cache::load(db, Some(&owner.name)).await?;
    policy::check_within(
        Principal::user(&owner.name, owner.is_admin, &entitlements),
        &entitlements.grants,
        &request.scopes,
    )?;
    let minted = access_tokens::mint();
    let stored = token_db::insert(
        db,
        owner,
        &NewToken {
            id: &minted.id,
            secret_hash: &minted.secret_hash,
            name: &request.name,
            scopes_json: &scopes_json(&request.scopes),
            admin: request.admin,
            expires_at: request.expiry.at(crate::util::now()),
        },
        actor,
    )
    .await?;
    tracing::info!(owner = %owner.name, token_id = %stored.id, actor, "access token created");
    Ok((minted.token, stored))
}
