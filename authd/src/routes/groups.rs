//! Groups over HTTP (admin only): `/api/v1/groups`, their members, and a
//! user's effective permissions (`/api/v1/users/{name}/permissions`: own
//! grants ∪ groups' grants ∪ `*` ∪ `anonymous`). Every change applies to
//! new tokens at once in this process (the grants cache is cleared).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::ApiJson;
use super::admin::Admin;
use crate::db::groups::{self, GroupView};
use crate::error::Error;
use crate::grant_cache::PermissionsView;
use crate::names::parse_group_name;
use crate::state::AppState;

pub async fn list(_: Admin, State(state): State<AppState>) -> Result<Json<Vec<GroupView>>, Error> {
    Ok(Json(groups::list(&state.db).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    name: String,
}

pub async fn create(
    admin: Admin,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewGroup>,
) -> Result<StatusCode, Error> {
    let name = parse_group_name(&body.name)?;
    groups::create(&state.db, name, &admin.actor).await?;
    Ok(StatusCode::CREATED)
}

pub async fn delete(
    admin: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
    groups::delete(&state.db, parse_group_name(&name)?, &admin.actor).await?;
    state.grants.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn add_member(
    admin: Admin,
    State(state): State<AppState>,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    let added =
        groups::add_member(&state.db, parse_group_name(&name)?, &user, &admin.actor).await?;
    state.grants.invalidate();
    Ok(if added {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    })
}

pub async fn remove_member(
    admin: Admin,
    State(state): State<AppState>,
    Path((name, user)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    groups::remove_member(&state.db, parse_group_name(&name)?, &user, &admin.actor).await?;
    state.grants.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

pub async fn permissions(
    _: Admin,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PermissionsView>, Error> {
    Ok(Json(PermissionsView::load(&state.db, &name).await?))
}
