//! `GET /v2/_catalog`, paginated with `n` and `last`, filtered to the
//! repositories the caller may pull when the caller may not list them all.

use axum::response::Response;
use http::StatusCode;
use http::header::LINK;

use crate::auth::{Caller, Granted};
use crate::error::{Error, Result};
use crate::oci::RepoName;
use crate::routes::{headers as h, json_response, link_header, pagination};
use crate::state::AppState;

pub async fn list(state: &AppState, _: &Granted, caller: &Caller, query: &str) -> Result<Response> {
    let (n, last) = pagination(query)?;
    let filter = caller.clone();
    let all = caller.may_list_catalog();
    let last_owned = last.clone();
    let (page, more) = state
        .storage
        .run(move |s| {
            let keep = |name: &str| {
                all || RepoName::parse(name).is_ok_and(|r| filter.lists_in_catalog(&r))
            };
            s.catalog_page(last_owned.as_deref(), n, &keep)
        })
        .await?;
    #[derive(serde::Serialize)]
    struct Catalog<'a> {
        repositories: &'a [String],
    }
    let body = serde_json::to_vec(&Catalog {
        repositories: &page,
    })
    .map_err(|e| Error::internal("encoding the catalog", e))?;
    let mut resp = json_response(StatusCode::OK, body);
    if let (true, Some(n), Some(next)) = (more, n, page.last()) {
        h::set(
            resp.headers_mut(),
            LINK,
            &link_header("/v2/_catalog", n, next),
        );
    }
    Ok(resp)
}
