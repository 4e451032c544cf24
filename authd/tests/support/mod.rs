//! `TestApp`: an authd state on a temporary data directory, driven through
//! `app()` with `tower::ServiceExt::oneshot` — no socket.
//!
//! The database is SQLite in that directory, or, when `AUTHD_TEST_DB` is
//! `postgres`, a fresh database of a real PostgreSQL the tests start
//! (`e2e::postgres`): `scripts/test` runs the suite both ways.

#![allow(dead_code, clippy::unwrap_used)]

use std::net::SocketAddr;

use authd::{AppState, Config};
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const ADMIN_PASSWORD: &str = "admin-password-1";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub state: AppState,
}

#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: body is not JSON: {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(
            self.status.as_u16(),
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// A config for tests: temporary data dir, cheap argon2 (never the
/// defaults' cost, which only the config test checks), known admin password.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    c.password.argon2.memory_kib = 256;
    c.password.argon2.iterations = 1;
    c.admin.password = Some(ADMIN_PASSWORD.to_owned());
    if on_postgres() {
        c.database = Some(authd::config::DatabaseConfig::Url {
            url: e2e::postgres::database(),
        });
    }
    c
}

/// Whether this run is against PostgreSQL (`AUTHD_TEST_DB=postgres`).
pub fn on_postgres() -> bool {
    match std::env::var("AUTHD_TEST_DB").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("AUTHD_TEST_DB={other:?}: sqlite or postgres"),
    }
}

/// Sends `req` to an app on `state` (for tasks that cannot borrow a
/// `TestApp`), from 127.0.0.1 unless it already has a client address.
pub async fn send(state: &AppState, mut req: Request<Body>) -> Resp {
    if req.extensions().get::<ConnectInfo<SocketAddr>>().is_none() {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    }
    let response = authd::app(state.clone()).oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Resp {
        status,
        headers,
        body,
    }
}

/// `GET /token` with `Authorization: auth`, as if from the address `ip`.
pub fn token_request_from(ip: [u8; 4], auth: &str) -> Request<Body> {
    let mut req = Request::get("/token")
        .header(header::AUTHORIZATION, auth)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 5555))));
    req
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl TestApp {
    pub async fn new() -> TestApp {
        TestApp::with(|_| {}).await
    }

    pub async fn with(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        let (state, generated) = AppState::init(config).await.unwrap();
        assert!(generated.is_none());
        TestApp { dir, state }
    }

    /// Sends `req` from 127.0.0.1 unless it already has a client address.
    pub async fn call(&self, req: Request<Body>) -> Resp {
        send(&self.state, req).await
    }

    pub async fn get(&self, uri: &str, auth: Option<&str>) -> Resp {
        let mut b = Request::get(uri);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        self.call(b.body(Body::empty()).unwrap()).await
    }

    pub async fn post_form(&self, uri: &str, form: &str) -> Resp {
        self.call(
            Request::post(uri)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(form.to_owned()))
                .unwrap(),
        )
        .await
    }

    /// An admin API call with the admin's Basic credentials.
    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        self.api(method, uri, body, &basic("admin", ADMIN_PASSWORD))
            .await
    }

    pub async fn api(&self, method: &str, uri: &str, body: Option<Value>, auth: &str) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, auth)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .unwrap();
        self.call(req).await
    }

    pub async fn add_user(&self, name: &str, password: &str) {
        self.admin(
            "POST",
            "/api/v1/users",
            Some(serde_json::json!({"name": name, "password": password})),
        )
        .await
        .expect(201);
    }

    pub async fn add_grant(&self, subject: &str, pattern: &str, actions: &[&str]) -> i64 {
        let r = self
            .admin(
                "POST",
                "/api/v1/grants",
                Some(
                    serde_json::json!({"subject": subject, "pattern": pattern, "actions": actions}),
                ),
            )
            .await;
        assert!(
            r.status.is_success(),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()["id"].as_i64().unwrap()
    }

    /// Verifies a JWT with the keys this app publishes at its JWKS URL.
    pub async fn verify(&self, jwt: &str) -> token::Claims {
        let jwks = self.get(token::JWKS_PATH, None).await.expect(200);
        let keys = token::TrustedKeys::from_jwks(&jwks.body).unwrap();
        let cfg = &self.state.config;
        token::verify::verify(
            jwt,
            &keys,
            &token::VerifyOptions::new(&cfg.issuer, &cfg.service),
        )
        .unwrap()
    }

    /// GETs a token and returns its verified claims.
    pub async fn token_claims(&self, query: &str, auth: Option<&str>) -> token::Claims {
        let r = self.get(&format!("/token?{query}"), auth).await.expect(200);
        let v = r.json();
        self.verify(v["token"].as_str().unwrap()).await
    }
}

/// The access claim as `type:name:actions` strings.
pub fn access(claims: &token::Claims) -> Vec<String> {
    claims
        .access
        .iter()
        .map(|ra| format!("{}:{}:{}", ra.resource_type, ra.name, ra.actions.join(",")))
        .collect()
}
