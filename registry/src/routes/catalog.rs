//! `GET /v2/_catalog`, paginated with `n` and `last`, filtered to the
//! repositories the caller may pull when the caller may not list them all.

use axum::response::Response;
use http::StatusCode;
use http::header::LINK;

use crate::auth::{Caller, Granted};
use crate::error::{Error, Result};
use crate::oci::RepoName;
use crate::routes::{headers as h, json_response, link_header, paginate, pagination};
use crate::state::AppState;

pub async fn list(state: &AppState, _: &Granted, caller: &Caller, query: &str) -> Result<Response> {
    let (n, last) = pagination(query)?;
    let mut repos = state
        .storage
        .run(super::super::storage::Storage::list_repositories)
        .await?;
    if !caller.may_list_catalog() {
        repos.retain(|r| RepoName::parse(r).is_ok_and(|name| caller.lists_in_catalog(&name)));
    }
    let (page, next) = paginate(repos, n, last.as_deref());
    let body = serde_json::to_vec(&serde_json::json!({ "repositories": page }))
        .map_err(|e| Error::internal("encoding the catalog", e))?;
    let mut resp = json_response(StatusCode::OK, body);
    if let (Some(next), Some(n)) = (next, n) {
        h::set(
            resp.headers_mut(),
            LINK,
            &link_header("/v2/_catalog", n, &next),
        );
    }
    Ok(resp)
}
