//! `/.well-known/jwks.json`: every published signing key, with the `kid`
//! tokens carry, `alg` and `use: sig`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

pub async fn jwks(State(state): State<AppState>) -> Response {
    let body = state.keys.current().jwks.clone();
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            // Short: a rotated-in key must be found soon.
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=30"),
            ),
        ],
        body,
    )
        .into_response()
}
