//! The admin API under `/api/v1`: users (and robots), grants, htpasswd
//! import, refresh tokens and the audit log (access tokens and groups are
//! in `tokens` and `groups`). Every handler takes [`Admin`], so a handler
//! that compiles has already checked that the caller is an admin — by Basic
//! credentials of an admin or by a bearer token from this authd carrying
//! `authd:admin:*`.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiJson, ClientAddr, Credentials, Params};
use crate::db::users::{self, Changes, UserView};
use crate::db::{audit, grants as grant_db, refresh_tokens};
use crate::error::Error;
use crate::grants::{GrantView, parse_grant};
use crate::htpasswd;
use crate::names::check_user_name;
use crate::state::AppState;

/// An authenticated admin; `actor` is what the audit log records.
#[derive(Debug)]
pub struct Admin {
    pub actor: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, Error> {
        let Ok(ClientAddr(client)) = ClientAddr::from_request_parts(parts, state).await;
        let name = match Credentials::from_headers(&parts.headers)? {
            Credentials::None => {
                return Err(Error::unauthorized(
                    "the admin API needs Basic credentials of an admin, or a bearer token with \
                     authd:admin:* access",
                ));
            }
            Credentials::Basic { user, password } => {
                let caller = crate::credentials::check(state, &user, &password, client).await?;
                if caller.token.as_ref().is_some_and(|t| !t.admin) {
                    return Err(Error::forbidden(
                        "this access token was not made for the admin API",
                    ));
                }
                let user = caller.user;
                if !user.is_admin {
                    return Err(Error::forbidden(format!(
                        "user {:?} is not an admin",
                        user.name
                    )));
                }
                user.name
            }
            Credentials::Bearer(jwt) => {
                let opts = token::VerifyOptions::new(&state.config.issuer, &state.config.service);
                let claims = token::verify::verify(&jwt, &state.keys.current().trusted, &opts)
                    .map_err(|e| Error::unauthorized(format!("bearer token refused: {e}")))?;
                let access = token::Access(claims.access);
                if !access.allows(token::ADMIN_TYPE, token::ADMIN_NAME, token::Action::All) {
                    return Err(Error::forbidden(format!(
                        "bearer token does not carry {}:{}:*",
                        token::ADMIN_TYPE,
                        token::ADMIN_NAME
                    )));
                }
                // The token may outlive the user's admin rights.
                match users::get(&state.db, &claims.sub).await? {
                    Some(u) if u.is_admin && !u.disabled => u.name,
                    _ => {
                        return Err(Error::forbidden(format!(
                            "user {:?} is no longer an enabled admin",
                            claims.sub
                        )));
                    }
                }
            }
        };
        Ok(Admin {
            actor: format!("api:{name}"),
        })
    }
}

fn user_json(u: &users::User) -> Value {
    json!(UserView::from(u))
}

pub async fn list_users(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, Error> {
    let users = users::list(&state.db).await?;
    Ok(Json(json!(
        users.iter().map(UserView::from).collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    /// Required, except for robots, which have none.
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    robot: bool,
}

pub async fn create_user(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<Response, Error> {
    check_user_name(&body.name)?;
    let password = match (&body.password, body.robot) {
        (Some(p), false) => p,
        (None, true) => {
            let robot =
                users::create_robot(&state.db, &body.name, body.admin, &admin.actor).await?;
            return Ok((StatusCode::CREATED, Json(user_json(&robot))).into_response());
        }
        (None, false) => {
            return Err(Error::bad_request(
                "invalid_json",
                "invalid JSON body: missing field `password`",
            ));
        }
        (Some(_), true) => {
            return Err(Error::invalid_request(
                "robots have no password: they log in with access tokens",
            ));
        }
    };
    let hash = state.auth.hash_new(password).await?;
    let user = users::create(
        &state.db,
        &body.name,
        &hash,
        body.admin,
        body.disabled,
        &admin.actor,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

pub async fn get_user(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(user_json(
        &users::get_existing(&state.db, &name).await?,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    password: Option<String>,
    admin: Option<bool>,
    disabled: Option<bool>,
}

pub async fn update_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Json<Value>, Error> {
    // 404 before spending argon2 on a password for nobody.
    users::get_existing(&state.db, &name).await?;
    let password_hash = match &body.password {
        Some(p) => Some(state.auth.hash_new(p).await?),
        None => None,
    };
    let changes = Changes {
        password_hash,
        admin: body.admin,
        disabled: body.disabled,
    };
    let user = users::update(&state.db, &name, &changes, &admin.actor).await?;
    Ok(Json(user_json(&user)))
}

pub async fn delete_user(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    users::delete(&state.db, &name, &admin.actor).await?;
    state.grants.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_tokens(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, Error> {
    let user = users::get_existing(&state.db, &name).await?;
    let tokens = refresh_tokens::list_for_user(&state.db, user.id).await?;
    Ok(Json(json!(
        tokens
            .iter()
            .map(refresh_tokens::RefreshTokenView::from)
            .collect::<Vec<_>>()
    )))
}

pub async fn revoke_token(
    admin: Admin,
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let user = users::get_existing(&state.db, &name).await?;
    refresh_tokens::delete(&state.db, &user, &id, &admin.actor).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_grants(
    _: Admin,
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, Error> {
    let grants = grant_db::list(&state.db, params.first("subject")).await?;
    Ok(Json(json!(
        grants.iter().map(GrantView::from).collect::<Vec<_>>()
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGrant {
    subject: String,
    pattern: String,
    #[serde(default)]
    actions: Vec<String>,
    #[serde(rename = "type")]
    resource_type: Option<String>,
}

pub async fn create_grant(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewGrant>,
) -> Result<Response, Error> {
    let (target, actions) = parse_grant(
        &body.subject,
        body.resource_type.as_deref(),
        &body.pattern,
        &body.actions,
    )?;
    let (grant, created) =
        grant_db::upsert(&state.db, &body.subject, &target, actions, &admin.actor).await?;
    state.grants.invalidate();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(GrantView::from(&grant)))).into_response())
}

pub async fn delete_grant(
    admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Error> {
    let id: i64 = id.parse().map_err(|_| {
        Error::bad_request("invalid_id", format!("grant id {id:?} is not a number"))
    })?;
    grant_db::delete(&state.db, id, &admin.actor).await?;
    state.grants.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HtpasswdImport {
    /// The file's text.
    htpasswd: String,
    #[serde(default)]
    skip_invalid: bool,
    #[serde(default)]
    overwrite: bool,
}

/// `{"htpasswd": "<the file>", "skip_invalid"?, "overwrite"?}`.
pub async fn import_htpasswd(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<HtpasswdImport>,
) -> Result<Json<htpasswd::Report>, Error> {
    let options = htpasswd::Options {
        skip_invalid: body.skip_invalid,
        overwrite: body.overwrite,
    };
    let report = htpasswd::import(&state.db, &body.htpasswd, options, &admin.actor).await?;
    Ok(Json(report))
}

/// Reads the audit filter of a query string: `user`, `action`, `since` and
/// `until` (RFC 3339), `limit` (1 to 1000, default 100) and `before` (an
/// entry id: the page after it).
pub fn audit_filter(params: &Params) -> Result<audit::Filter, Error> {
    let time = |key: &str| -> Result<Option<i64>, Error> {
        params
            .first(key)
            .map(|v| {
                crate::util::parse_rfc3339(v).ok_or_else(|| {
                    Error::invalid_request(format!(
                        "{key} must be an RFC 3339 time such as 2026-01-02T03:04:05Z"
                    ))
                })
            })
            .transpose()
    };
    let number = |key: &str, range: std::ops::RangeInclusive<i64>| -> Result<Option<i64>, Error> {
        params
            .first(key)
            .map(|v| {
                v.parse::<i64>()
                    .ok()
                    .filter(|n| range.contains(n))
                    .ok_or_else(|| {
                        Error::invalid_request(format!(
                            "{key} must be a number from {} to {}",
                            range.start(),
                            range.end()
                        ))
                    })
            })
            .transpose()
    };
    Ok(audit::Filter {
        user: params.first("user").map(str::to_owned),
        action: params.first("action").map(str::to_owned),
        since: time("since")?,
        until: time("until")?,
        before: number("before", 1..=i64::MAX)?,
        limit: number("limit", 1..=audit::MAX_LIMIT)?.unwrap_or(100),
    })
}

/// Newest first; the next page is `before=<the last id>`.
pub async fn audit(
    _: Admin,
    State(state): State<AppState>,
    params: Params,
) -> Result<Json<Value>, Error> {
    let filter = audit_filter(&params)?;
    // Read your writes: logins queued before this request are included.
    state.auth.audit(&state.db).flush().await;
    Ok(Json(json!(audit::query(&state.db, &filter).await?)))
}
