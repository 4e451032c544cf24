//! `GET /v2/<name>/referrers/<digest>[?artifactType=…]`: the manifests of
//! the repository whose `subject` is the digest, as an OCI image index.

use axum::response::Response;
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};

use crate::auth::Granted;
use crate::error::{Error, Result};
use crate::oci::manifest::OCI_INDEX;
use crate::oci::{Descriptor, Digest, Manifest, RepoName};
use crate::routes::{headers as h, json_response, query_param};
use crate::state::AppState;

pub async fn list(
    state: &AppState,
    _: &Granted,
    name: &RepoName,
    subject: &Digest,
    query: &str,
) -> Result<Response> {
    let filter = query_param(query, "artifactType").filter(|t| !t.is_empty());
    let (n, d) = (name.clone(), subject.clone());
    let found = state
        .storage
        .run(move |s| {
            if s.repo_exists(&n)? {
                s.referrers(&n, &d).map(Some)
            } else {
                Ok(None)
            }
        })
        .await?;
    let found = found.ok_or_else(|| Error::name_unknown(name))?;
    let mut descriptors = Vec::new();
    for m in found {
        // Stored manifests were validated on push; one that no longer
        // parses is left out rather than failing the whole listing.
        let Ok(parsed) = Manifest::parse(Some(m.media_type.as_str()), &m.bytes) else {
            continue;
        };
        let artifact_type = parsed.effective_artifact_type().map(str::to_owned);
        if filter.is_some() && artifact_type != filter {
            continue;
        }
        descriptors.push(Descriptor {
            media_type: m.media_type.as_str().to_owned(),
            digest: m.digest.clone(),
            size: m.bytes.len() as u64,
            urls: Vec::new(),
            annotations: parsed.annotations,
            artifact_type,
            platform: None,
        });
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    let body = serde_json::to_vec(&index).map_err(|e| Error::internal("encoding referrers", e))?;
    let mut resp = json_response(StatusCode::OK, body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(OCI_INDEX));
    if filter.is_some() {
        h::set(resp.headers_mut(), h::OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(resp)
}
