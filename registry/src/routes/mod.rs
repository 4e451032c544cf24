//! The HTTP API: every route of the registry is listed here, and requests
//! under `/v2/` are dispatched to one handler per resource after the
//! caller was authorised for the action.
//!
//! One file per resource: `blobs`, `uploads`, `manifests`, `tags`,
//! `catalog`, `referrers`; `path` parses the URL into an [`Endpoint`].

mod blobs;
mod catalog;
mod manifests;
pub mod path;
mod referrers;
mod tags;
mod uploads;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::auth::{Caller, Requirement};
use crate::error::{Error, ErrorCode, Result};
use crate::state::AppState;
pub use path::Endpoint;
use path::Target;
use service::http::{RouteLabel, Subject};

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static("registry/2.0");

/// The registry's router, with `/metrics` when it is served on the main
/// listener.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    if let crate::config::Metrics::Main { path } = &state.config.metrics {
        router = router.route(path, get(service::metrics::render));
    }
    router
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*rest}", any(dispatch))
        .merge(crate::ui::router())
        .fallback(|| async {
            Error::new(ErrorCode::Unsupported, "no such endpoint")
                .with_status(StatusCode::NOT_FOUND)
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            common_headers,
        ))
        .with_state(state)
}

/// Headers on every response: the API version and the operator's
/// `http.headers`.
async fn common_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(API_VERSION, API_VERSION_VALUE);
    for (name, value) in &state.config.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    resp
}

/// The metrics label of a request no endpoint answered (the `/v2` ones
/// name theirs in the response).
pub fn classify(path: &str) -> &'static str {
    if path == "/v2" || path.starts_with("/v2/") {
        "invalid"
    } else if path == "/" || path == "/ui" || path.starts_with("/ui/") {
        "ui"
    } else {
        "other"
    }
}

/// Entry point of every `/v2` request.
async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let mut label = "invalid";
    let mut subject = None;
    let mut resp = match route(state, req, &mut label, &mut subject).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    resp.extensions_mut().insert(RouteLabel(label));
    if let Some(s) = subject {
        resp.extensions_mut().insert(Subject(s));
    }
    resp
}

/// Requests sending blob data right now.
static UPLOADS_IN_PROGRESS: service::metrics::LazyGauge =
    service::metrics::LazyGauge::new(|| metrics::gauge!("registry_uploads_in_progress"));

async fn route(
    state: AppState,
    req: Request,
    label: &mut &'static str,
    subject: &mut Option<String>,
) -> Result<Response> {
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let after = parts.uri.path().strip_prefix("/v2").unwrap_or_default();
    // Exactly one separating slash: `/v2//etc` must not become `etc`.
    let rest = after.strip_prefix('/').unwrap_or(after).to_owned();
    // CORS preflights carry no credentials; answer them with the
    // configured headers (added by the middleware) and nothing else.
    if method == Method::OPTIONS {
        *label = "options";
        return Ok(StatusCode::OK.into_response());
    }
    let endpoint = path::parse(&rest).map_err(|e| manifests::unparsable_reference(e, &method))?;
    let spec = endpoint.spec();
    *label = spec.name;
    let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts, &state,
    )
    .await?;
    *subject = match &caller {
        Caller::User(name) => Some(name.clone()),
        Caller::Token(v) if !v.subject.is_empty() => Some(v.subject.clone()),
        _ => None,
    };
    let query = parts.uri.query().unwrap_or_default().to_owned();
    // What an event records of the request, when events are sent.
    let event = state.notifier.as_ref().map(|_| {
        (
            crate::notify::RequestInfo::new(
                &method,
                &parts.uri,
                &parts.headers,
                &parts.extensions,
                subject.as_deref(),
                state.config.tls.is_some(),
            ),
            endpoint.clone(),
            method.clone(),
        )
    });
    let headers = parts.headers;
    let is_head = method == Method::HEAD;

    let Some(required) = endpoint.required(&method) else {
        let list: Vec<&str> = spec.methods.iter().map(|(m, _)| m.as_str()).collect();
        return Err(
            Error::unsupported(format!("method {method} is not allowed here"))
                .with_header(ALLOW, &list.join(", ")),
        );
    };
    let requirement = match (spec.target, endpoint.repository()) {
        (Target::Repository, Some(name)) => Requirement::Repository(name, required),
        (Target::Catalog, _) => Requirement::Catalog,
        _ => Requirement::Authenticated,
    };
    let granted = caller.authorize(&state, &requirement)?;
    if state.config.read_only && !matches!(method, Method::GET | Method::HEAD) {
        return Err(Error::new(
            ErrorCode::Denied,
            "the registry is in read-only mode",
        ));
    }

    // Mirrored repositories: fetched from their upstream into storage
    // first (or answered, or refused), then served like any other.
    if let Some(resp) = crate::proxy::serve(&state, &endpoint, &method, &headers).await? {
        return Ok(resp);
    }

    use Endpoint as E;
    let _uploading = matches!(
        (&endpoint, &method),
        (E::UploadStart(_), _) | (E::Upload(..), &Method::PATCH | &Method::PUT)
    )
    .then(|| UPLOADS_IN_PROGRESS.enter());
    let mut result = match (endpoint, method) {
        (E::Base, _) => Ok(json_response(StatusCode::OK, b"{}".to_vec())),
        (E::Catalog, _) => catalog::list(&state, &granted, &caller, &query).await,
        (E::Tags(name), _) => tags::list(&state, &granted, &name, &query).await,
        (E::Referrers(name, subject), _) => {
            referrers::list(&state, &granted, &name, &subject, &query).await
        }
        (E::Manifest(name, reference), Method::PUT) => {
            manifests::put(&state, &granted, &name, &reference, &headers, body).await
        }
        (E::Manifest(name, reference), Method::DELETE) => {
            manifests::delete(&state, &granted, &name, &reference).await
        }
        (E::Manifest(name, reference), _) => {
            manifests::get(&state, &granted, &name, &reference, is_head).await
        }
        (E::Blob(name, digest), Method::DELETE) => {
            blobs::delete(&state, &granted, &name, &digest).await
        }
        (E::Blob(name, digest), _) => {
            blobs::get(&state, &granted, &name, &digest, &headers, is_head).await
        }
        (E::UploadStart(name), _) => {
            let peer = uploads::peer(&parts.extensions);
            uploads::start(
                &state, &granted, &caller, peer, &name, &query, &headers, body,
            )
            .await
        }
        (E::Upload(name, id), Method::GET) => uploads::status(&state, &granted, &name, id).await,
        (E::Upload(name, id), Method::PATCH) => {
            uploads::patch(&state, &granted, &name, id, &headers, body).await
        }
        (E::Upload(name, id), Method::PUT) => {
            uploads::put(&state, &granted, &name, id, &query, &headers, body).await
        }
        (E::Upload(name, id), _) => uploads::cancel(&state, &granted, &name, id).await,
        (E::Repository(name), _) => delete_repository(&state, &granted, &name).await,
    };
    if let (Some(notifier), Some((info, endpoint, method)), Ok(resp)) =
        (&state.notifier, &event, &mut result)
    {
        notifier.record(info, endpoint, method, resp).await;
    }
    result
}

/// `DELETE /v2/<name>/`: the repository's manifests, tags, blob links and
/// uploads go; blob data is left to the garbage collector.
async fn delete_repository(
    state: &AppState,
    _: &crate::auth::Granted,
    name: &crate::oci::RepoName,
) -> Result<Response> {
    deletes_allowed(state)?;
    let n = name.clone();
    if !state.storage.run(move |s| s.delete_repository(&n)).await? {
        return Err(Error::name_unknown(name));
    }
    Ok(empty_response(StatusCode::ACCEPTED, HeaderMap::new()))
}

/// Refuses deletes unless `storage.delete.enabled`, as distribution does.
pub(crate) fn deletes_allowed(state: &AppState) -> Result<()> {
    if state.config.delete_enabled {
        Ok(())
    } else {
        Err(Error::unsupported(
            "deletes are disabled on this registry (storage.delete.enabled)",
        ))
    }
}

/// A JSON response with an exact `Content-Length`.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A response without body (201/202/204) with the given headers.
pub(crate) fn empty_response(status: StatusCode, headers: HeaderMap) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    resp
}

/// Query parameters as `(key, value)` pairs, percent-decoded.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// The first value of query parameter `key`.
pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// `n` and `last` of a paginated list: `n` absent means everything.
pub(crate) fn pagination(query: &str) -> Result<(Option<usize>, Option<String>)> {
    let n = match query_param(query, "n") {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            Error::new(
                ErrorCode::PaginationNumberInvalid,
                format!("invalid number of results requested: {s:?}"),
            )
        })?),
    };
    Ok((n, query_param(query, "last").filter(|l| !l.is_empty())))
}

/// Applies `last`/`n` to a sorted list; returns the page and, when more
/// remain, the `last` value for the next page.
pub(crate) fn paginate<'a>(
    sorted: &'a [String],
    n: Option<usize>,
    last: Option<&str>,
) -> (&'a [String], Option<&'a str>) {
    let start = last.map_or(0, |last| sorted.partition_point(|x| x.as_str() <= last));
    let rest = &sorted[start..];
    match n {
        Some(n) if rest.len() > n => {
            let page = &rest[..n];
            (page, page.last().map(String::as_str))
        }
        _ => (rest, None),
    }
}

/// `Link: <url>; rel="next"` for a paginated list. `last` is encoded as a
/// query value, keeping the unreserved characters of names and tags as they
/// are (`/` becomes `%2F`).
pub(crate) fn link_header(base: &str, n: usize, last: &str) -> String {
    const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let last = percent_encoding::utf8_percent_encode(last, QUERY_VALUE);
    format!("<{base}?n={n}&last={last}>; rel=\"next\"")
}

/// Small helpers to set response headers from values this crate built.
pub(crate) mod headers {
    use http::header::HeaderName;
    use http::{HeaderMap, HeaderValue};

    use crate::oci::Digest;

    pub const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
    pub const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
    pub const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
    pub const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");

    /// Sets a header; values come from validated parts (names, digests,
    /// numbers), so an invalid one is a bug and is skipped.
    pub fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
        match HeaderValue::from_str(value) {
            Ok(v) => {
                headers.insert(name, v);
            }
            Err(_) => debug_assert!(false, "invalid header value {value:?}"),
        }
    }

    pub fn set_digest(headers: &mut HeaderMap, digest: &Digest) {
        set(headers, DOCKER_CONTENT_DIGEST, &digest.to_string());
    }
}
