//! Access tokens over HTTP. `/api/v1/tokens`: signed-in users list, make
//! and revoke their own tokens, with their password (never with a token,
//! so that a leaked token cannot mint longer-lived ones). Admins do the
//! same for any user, robots included, under `/api/v1/users/{name}/access-tokens`
//! and see every token at `/api/v1/access-tokens`.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::admin::Admin;
use super::{ApiJson, ClientAddr, Credentials};
use crate::access_tokens::{self, AccessToken, AccessTokenView, Expiry, ScopeSpec};
use crate::credentials;
use crate::db::access_tokens as token_db;
use crate::db::users::{self, User};
use crate::error::Error;
use crate::minting;
use crate::state::AppState;

/// A user signed in with their password.
#[derive(Debug)]
pub struct SignedIn {
    pub user: User,
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedIn, Error> {
        let Ok(ClientAddr(client)) = ClientAddr::from_request_parts(parts, state).await;
        match Credentials::from_headers(&parts.headers)? {
            Credentials::Basic { user, password } => {
                if access_tokens::is_access_token(&password) {
                    return Err(Error::forbidden(
                        "access tokens are managed with your password, not with a token",
                    ));
                }
                let caller = credentials::check(state, &user, &password, client).await?;
                Ok(SignedIn { user: caller.user })
            }
            _ => Err(Error::unauthorized(
                "managing your access tokens needs your Basic credentials",
            )),
        }
    }
}

/// The body of a token creation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    scopes: Vec<ScopeSpec>,
    /// `90d`, `12h`, … or `never`; the configured default when absent.
    expires_in: Option<String>,
    #[serde(default)]
    admin: bool,
}

impl NewToken {
    fn parse(&self, state: &AppState) -> Result<minting::Request, Error> {
        let config = &state.config.access_tokens;
        let expiry = match &self.expires_in {
            Some(text) => Expiry::parse(text, config.allow_never)?,
            None => Expiry::After(config.default_ttl_days as i64 * 86_400),
        };
        Ok(minting::Request {
            name: self.name.clone(),
            scopes: access_tokens::parse_scopes(&self.scopes)?,
            expiry,
            admin: self.admin,
        })
    }
}

/// The answer to a creation: the only time the token is shown.
#[derive(Debug, Serialize)]
struct Created {
    token: String,
    #[serde(flatten)]
    view: AccessTokenView,
}

fn created(token: String, stored: &AccessToken) -> Response {
    let body = Created {
        token,
        view: AccessTokenView::from(stored),
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

fn views(tokens: &[AccessToken]) -> Json<Vec<AccessTokenView>> {
    Json(tokens.iter().map(AccessTokenView::from).collect())
}

pub async fn list_own(
    me: SignedIn,
    State(state): State<AppState>,
) -> Result<Json<Vec<AccessTokenView>>, Error> {
    Ok(views(
        &token_db::list(&state.db, Some(&me.user.name)).await?,
    ))
}

pub async fn create_own(
    me: SignedIn,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, Error> {
    let request = body.parse(&state)?;
    let actor = format!("api:{}", me.user.name);
    let (token, stored) = minting::create(&state.db, &me.user, &request, false, &actor).await?;
    Ok(created(token, &stored))
}

pub async fn revoke_own(
    me: SignedIn,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let actor = format!("api:{}", me.user.name);
    token_db::delete(&state.db, &id, Some(&me.user.name), &actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_all(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<AccessTokenView>>, Error> {
    Ok(views(&token_db::list(&state.db, None).await?))
}

pub async fn list_for(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<AccessTokenView>>, Error> {
    users::get_existing(&state.db, &name).await?;
    Ok(views(&token_db::list(&state.db, Some(&name)).await?))
}

pub async fn create_for(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<Response, Error> {
    let owner = users::get_existing(&state.db, &name).await?;
    let request = body.parse(&state)?;
    let (token, stored) = minting::create(&state.db, &owner, &request, true, &admin.actor).await?;
    Ok(created(token, &stored))
}

pub async fn revoke_for(
    admin: Admin,
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    users::get_existing(&state.db, &name).await?;
    token_db::delete(&state.db, &id, Some(&name), &admin.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}
