//! `GET /v2/<name>/tags/list`, paginated with `n` and `last`.

use axum::response::Response;
use http::StatusCode;
use http::header::LINK;

use crate::auth::Granted;
use crate::error::{Error, Result};
use crate::oci::RepoName;
use crate::routes::{headers as h, json_response, link_header, paginate, pagination};
use crate::state::AppState;

pub async fn list(state: &AppState, _: &Granted, name: &RepoName, query: &str) -> Result<Response> {
    let (n, last) = pagination(query)?;
    let repo = name.clone();
    let tags = state.storage.run(move |s| s.list_tags(&repo)).await?;
    let tags = tags.ok_or_else(|| Error::name_unknown(name))?;
    let (page, next) = paginate(&tags, n, last.as_deref());
    // Serialized straight from the (cached) list: no per-tag copies.
    #[derive(serde::Serialize)]
    struct TagList<'a> {
        name: &'a str,
        tags: &'a [String],
    }
    let body = serde_json::to_vec(&TagList {
        name: name.as_str(),
        tags: page,
    })
    .map_err(|e| Error::internal("encoding tags", e))?;
    let mut resp = json_response(StatusCode::OK, body);
    if let (Some(next), Some(n)) = (next, n) {
        h::set(
            resp.headers_mut(),
            LINK,
            &link_header(&format!("/v2/{name}/tags/list"), n, next),
        );
    }
    Ok(resp)
}
