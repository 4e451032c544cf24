//! Token auth through `app()`: challenges, per-action checks, forged
//! tokens (one test each, PROTOCOL.md §4), catalog filtering, mounts, key
//! rotation through the JWKS URL, and uploads outliving their token.
#![allow(clippy::unwrap_used, clippy::needless_pass_by_value)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use registry::oci::Digest;
use serde_json::{Value, json};
use support::*;
use token::PublicKey;

struct Issuer {
    secret: p256::SecretKey,
    public: PublicKey,
}

impl Issuer {
    fn new() -> Issuer {
        let secret = p256::SecretKey::random(&mut rand::thread_rng());
        let public = PublicKey::P256(secret.public_key());
        Issuer { secret, public }
    }

    fn jwks(&self) -> Value {
        json!({ "keys": [self.public.to_jwk(Some(&self.public.libtrust_key_id()))] })
    }

    fn sign_with(&self, header: &Header, claims: &Value) -> String {
        let key = EncodingKey::from_ec_der(self.secret.to_pkcs8_der().unwrap().as_bytes());
        jsonwebtoken::encode(header, claims, &key).unwrap()
    }

    fn header(&self) -> Header {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.public.libtrust_key_id());
        h
    }

    fn token(&self, access: Value) -> String {
        self.sign_with(&self.header(), &claims(access))
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(access: Value) -> Value {
    json!({
        "iss": "authd", "sub": "alice", "aud": "registry", "exp": now() + 300,
        "nbf": now() - 5, "iat": now() - 5, "jti": format!("{}", rand::random::<u64>()),
        "access": access,
    })
}

fn repo(name: &str, actions: &[&str]) -> Value {
    json!({ "type": "repository", "name": name, "actions": actions })
}

async fn app_trusting(issuer: &Issuer) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks().to_string()).unwrap();
    let app = TestApp::with_config(&format!(
        "storage:\n  delete:\n    enabled: true\nauth:\n  token:\n    realm: https://auth.example/token\n    service: registry\n    issuer: authd\n    jwks: {}\n",
        jwks.display()
    ))
    .await;
    std::mem::forget(dir); // the file is read at start; keep the path valid anyway
    app
}

async fn call(
    app: &TestApp,
    method: Method,
    uri: &str,
    token: &str,
    body: impl Into<Body>,
) -> TestResponse {
    app.request(
        method,
        uri,
        &[("authorization", &format!("Bearer {token}"))],
        body,
    )
    .await
}

#[tokio::test]
async fn challenges_name_realm_service_and_scope() {
    let iss = Issuer::new();
    let app = app_trusting(&iss).await;
    let r = app.get("/v2/").await;
    r.assert_error(401, "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"https://auth.example/token\",service=\"registry\"")
    );
    let r = app.get("/v2/team/app/manifests/latest").await;
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            "Bearer realm=\"https://auth.example/token\",service=\"registry\",scope=\"repository:team/app:pull\""
        )
    );
    let r = app
        .request(
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            &[],
            Body::empty(),
        )
        .await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"repository:team/app:pull,push\"")
    );
    let r = app.delete("/v2/team/app/manifests/latest").await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"repository:team/app:delete\"")
    );
    let r = app.get("/v2/_catalog").await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"registry:catalog:*\"")
    );
    // Basic credentials are for the token service: same challenge.
    let r = app
        .request(
            Method::GET,
            "/v2/",
            &[("authorization", "Basic YTpi")],
            Body::empty(),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED");
}

#[tokio::test]
async fn actions_are_checked_per_request() {
    let iss = Issuer::new();
    let app = app_trusting(&iss).await;
    let rw = iss.token(json!([repo("team/app", &["pull", "push"])]));
    let ro = iss.token(json!([repo("team/app", &["pull"])]));
    let digest = Digest::sha256_of(b"layer");
    let r = call(
        &app,
        Method::POST,
        &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
        &rw,
        "layer",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    assert_eq!(
        call(
            &app,
            Method::GET,
            &format!("/v2/team/app/blobs/{digest}"),
            &ro,
            Body::empty()
        )
        .await
        .body,
        b"layer"
    );
    assert_eq!(
        call(&app, Method::GET, "/v2/", &ro, Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    // Push with a pull-only token: 401 insufficient_scope (clients re-ask).
    let r = call(
        &app,
        Method::POST,
        "/v2/team/app/blobs/uploads/",
        &ro,
        Body::empty(),
    )
    .await;
    r.assert_error(401, "UNAUTHORIZED");
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"repository:team/app:pull,push\""),
        "{challenge}"
    );
    // Another repository, and delete, are not covered.
    call(
        &app,
        Method::GET,
        &format!("/v2/team/other/blobs/{digest}"),
        &rw,
        Body::empty(),
    )
    .await
    .assert_error(401, "UNAUTHORIZED");
    call(
        &app,
        Method::DELETE,
        &format!("/v2/team/app/blobs/{digest}"),
        &rw,
        Body::empty(),
    )
    .await
    .assert_error(401, "UNAUTHORIZED");
    let all = iss.token(json!([repo("team/app", &["*"])]));
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            &format!("/v2/team/app/blobs/{digest}"),
            &all,
            Body::empty()
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
}

fn assert_invalid_token(r: &TestResponse) {
    r.assert_error(401, "UNAUTHORIZED");
    let challenge = r.header("www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

async fn try_token(iss: &Issuer, token: &str) -> TestResponse {
    let app = app_trusting(iss).await;
    call(&app, Method::GET, "/v2/", token, Body::empty()).await
}

#[tokio::test]
async fn forged_alg_none() {
    let iss = Issuer::new();
    let payload = B64URL.encode(claims(json!([])).to_string());
    let header = B64URL.encode(
        json!({"alg": "none", "typ": "JWT", "kid": iss.public.libtrust_key_id()}).to_string(),
    );
    assert_invalid_token(&try_token(&iss, &format!("{header}.{payload}.")).await);
}

#[tokio::test]
async fn forged_hs256_with_public_key_as_secret() {
    let iss = Issuer::new();
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(iss.public.libtrust_key_id());
    let token = jsonwebtoken::encode(
        &h,
        &claims(json!([])),
        &EncodingKey::from_secret(&iss.public.spki_der()),
    )
    .unwrap();
    assert_invalid_token(&try_token(&iss, &token).await);
}

#[tokio::test]
async fn forged_expired() {
    let iss = Issuer::new();
    let mut c = claims(json!([]));
    c["exp"] = json!(now() - 120);
    assert_invalid_token(&try_token(&iss, &iss.sign_with(&iss.header(), &c)).await);
}

#[tokio::test]
async fn forged_wrong_audience() {
    let iss = Issuer::new();
    let mut c = claims(json!([]));
    c["aud"] = json!("some-other-registry");
    assert_invalid_token(&try_token(&iss, &iss.sign_with(&iss.header(), &c)).await);
}

#[tokio::test]
async fn forged_wrong_issuer() {
    let iss = Issuer::new();
    let mut c = claims(json!([]));
    c["iss"] = json!("mallory");
    assert_invalid_token(&try_token(&iss, &iss.sign_with(&iss.header(), &c)).await);
}

#[tokio::test]
async fn forged_unknown_kid() {
    let iss = Issuer::new();
    let other = Issuer::new();
    assert_invalid_token(&try_token(&iss, &other.token(json!([])).replace('\n', "")).await);
}

#[tokio::test]
async fn forged_key_embedded_in_header() {
    let iss = Issuer::new();
    let attacker = Issuer::new();
    let mut h = iss.header();
    h.jwk = Some(
        serde_json::from_value(serde_json::to_value(attacker.public.to_jwk(None)).unwrap())
            .unwrap(),
    );
    let token = attacker.sign_with(&h, &claims(json!([repo("x", &["*"])])));
    assert_invalid_token(&try_token(&iss, &token).await);
}

#[tokio::test]
async fn forged_altered_claims() {
    let iss = Issuer::new();
    let good = iss.token(json!([repo("x", &["pull"])]));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = B64URL.encode(claims(json!([repo("x", &["*"])])).to_string());
    assert_invalid_token(&try_token(&iss, &parts.join(".")).await);
}

#[tokio::test]
async fn catalog_full_filtered_or_refused() {
    let iss = Issuer::new();
    let app = app_trusting(&iss).await;
    let admin = iss.token(json!([repo("*", &["*"])]));
    for name in ["alice/app", "bob/app", "team/x", "public"] {
        let t = iss.token(json!([repo(name, &["pull", "push"])]));
        let d = Digest::sha256_of(name.as_bytes());
        call(
            &app,
            Method::POST,
            &format!("/v2/{name}/blobs/uploads/?digest={d}"),
            &t,
            name.to_owned(),
        )
        .await;
        let m = image_manifest(&d, name.len(), &[]);
        let r = app
            .request(
                Method::PUT,
                &format!("/v2/{name}/manifests/v1"),
                &[
                    ("authorization", &format!("Bearer {t}")),
                    ("content-type", OCI_MANIFEST),
                ],
                m,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
    }
    drop(admin);
    let full = iss.token(json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]));
    let r = call(&app, Method::GET, "/v2/_catalog", &full, Body::empty()).await;
    assert_eq!(
        r.json()["repositories"],
        json!(["alice/app", "bob/app", "public", "team/x"])
    );
    let filtered = iss.token(json!([
        {"type": "registry", "name": "catalog", "actions": []},
        {"type": "repository-pattern", "name": "alice/*", "actions": ["pull", "push"]},
        {"type": "repository-pattern", "name": "team/*", "actions": ["push"]},
        repo("public", &["pull"]),
    ]));
    let r = call(&app, Method::GET, "/v2/_catalog", &filtered, Body::empty()).await;
    assert_eq!(r.json()["repositories"], json!(["alice/app", "public"]));
    let none = iss.token(json!([{"type": "registry", "name": "catalog", "actions": []}]));
    let r = call(&app, Method::GET, "/v2/_catalog", &none, Body::empty()).await;
    assert_eq!(r.json()["repositories"], json!([]));
    // A token issued for something else: challenged for the catalog scope.
    let other = iss.token(json!([repo("public", &["pull"])]));
    let r = call(&app, Method::GET, "/v2/_catalog", &other, Body::empty()).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("scope=\"registry:catalog:*\"")
    );
}

#[tokio::test]
async fn mount_needs_pull_on_the_source() {
    let iss = Issuer::new();
    let app = app_trusting(&iss).await;
    let src = iss.token(json!([repo("src", &["pull", "push"])]));
    let d = Digest::sha256_of(b"shared");
    call(
        &app,
        Method::POST,
        &format!("/v2/src/blobs/uploads/?digest={d}"),
        &src,
        "shared",
    )
    .await;
    let uri = format!("/v2/dst/blobs/uploads/?mount={d}&from=src");
    let without = iss.token(json!([repo("dst", &["pull", "push"])]));
    let r = call(&app, Method::POST, &uri, &without, Body::empty()).await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "falls back to an upload, never leaks"
    );
    let with = iss.token(json!([
        repo("dst", &["pull", "push"]),
        repo("src", &["pull"])
    ]));
    let r = call(&app, Method::POST, &uri, &with, Body::empty()).await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn upload_started_with_one_token_completes_with_another() {
    let iss = Issuer::new();
    let app = app_trusting(&iss).await;
    let first = iss.token(json!([repo("big", &["pull", "push"])]));
    let r = call(
        &app,
        Method::POST,
        "/v2/big/blobs/uploads/",
        &first,
        Body::empty(),
    )
    .await;
    let loc = r.header("location").unwrap().to_owned();
    call(&app, Method::PATCH, &loc, &first, "part one ").await;
    // The first token has expired by now; the client presents it once more
    // and is told to re-authenticate, without losing the upload.
    let mut c = claims(json!([repo("big", &["pull", "push"])]));
    c["exp"] = json!(now() - 3600);
    let expired = iss.sign_with(&iss.header(), &c);
    assert_invalid_token(&call(&app, Method::PATCH, &loc, &expired, "lost?").await);
    let second = iss.token(json!([repo("big", &["pull", "push"])]));
    let d = Digest::sha256_of(b"part one part two");
    let r = call(
        &app,
        Method::PUT,
        &format!("{loc}?digest={d}"),
        &second,
        "part two",
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
}

#[tokio::test]
async fn jwks_url_is_refetched_on_unknown_kid_rate_limited() {
    let old = Issuer::new();
    let new = Issuer::new();
    let served = Arc::new(std::sync::Mutex::new(old.jwks()));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (s, f) = (served.clone(), fetches.clone());
    let jwks_app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let (s, f) = (s.clone(), f.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                axum::Json(s.lock().unwrap().clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, jwks_app).await });
    let app = TestApp::with_config(&format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:1/token\n    service: registry\n    issuer: authd\n    jwksurl: http://{addr}/jwks\n"
    ))
    .await;
    // The first fetch happens in the background at start.
    let good = old.token(json!([]));
    let mut ok = false;
    for _ in 0..50 {
        if call(&app, Method::GET, "/v2/", &good, Body::empty())
            .await
            .status
            == StatusCode::OK
        {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "token of the served key accepted");
    let before = fetches.load(Ordering::SeqCst);
    // Key rotation: the issuer now signs with a new key, listed in the JWKS.
    *served.lock().unwrap() =
        json!({"keys": [old.jwks()["keys"][0].clone(), new.jwks()["keys"][0].clone()]});
    tokio::time::sleep(token_rate_limit()).await;
    let rotated = new.token(json!([]));
    assert_eq!(
        call(&app, Method::GET, "/v2/", &rotated, Body::empty())
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(fetches.load(Ordering::SeqCst), before + 1);
    // Tokens of unknown keys do not make us hammer the issuer.
    for _ in 0..5 {
        let stranger = Issuer::new().token(json!([]));
        assert_invalid_token(&call(&app, Method::GET, "/v2/", &stranger, Body::empty()).await);
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        before + 1,
        "refetch is rate-limited"
    );
}

fn token_rate_limit() -> std::time::Duration {
    registry::auth::REFETCH_INTERVAL + std::time::Duration::from_millis(100)
}
