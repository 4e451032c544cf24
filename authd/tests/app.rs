//! In-process tests of the HTTP API through `app()`: the token endpoint in
//! both verbs, refresh tokens, the admin API, htpasswd import, throttling
//! and bad input.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use serde_json::json;
use support::{ADMIN_PASSWORD, TestApp, access, basic, token_request_from};

const ALICE_PW: &str = "alice-password";

async fn with_alice() -> TestApp {
    let app = TestApp::new().await;
    app.add_user("alice", ALICE_PW).await;
    app
}

// --- GET /token -------------------------------------------------------------

#[tokio::test]
async fn anonymous_gets_only_anonymous_grants_and_never_a_401() {
    let app = TestApp::new().await;
    app.add_grant("anonymous", "public/*", &["pull"]).await;
    app.add_grant("*", "team/*", &["pull"]).await;
    let r = app
        .get(
            "/token?service=registry&scope=repository:public/img:pull,push&scope=repository:team/x:pull",
            None,
        )
        .await
        .expect(200);
    let v = r.json();
    let claims = app.verify(v["token"].as_str().unwrap()).await;
    assert_eq!(claims.sub, "");
    assert_eq!(access(&claims), ["repository:public/img:pull"]);
    assert!(v.get("refresh_token").is_none());
    // Login without scope: a token with an empty access list.
    let claims = app.token_claims("service=registry", None).await;
    assert!(claims.access.is_empty());
    // offline_token without credentials gives no refresh token.
    let r = app.get("/token?offline_token=true", None).await.expect(200);
    assert!(r.json().get("refresh_token").is_none());
}

#[tokio::test]
async fn basic_get_token_shape_and_claims() {
    let app = with_alice().await;
    app.add_grant("alice", "team/*", &["pull", "push"]).await;
    let r = app
        .get(
            "/token?service=registry&account=alice&client_id=docker\
             &scope=repository:team/app:pull,push,delete%20repository:other/x:pull\
             &scope=repository:team/lib:pull",
            Some(&basic("alice", ALICE_PW)),
        )
        .await
        .expect(200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = r.json();
    assert_eq!(v["token"], v["access_token"]);
    assert_eq!(v["expires_in"], 300);
    assert!(v["expires_in"].is_u64());
    let issued = v["issued_at"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(issued, &time::format_description::well_known::Rfc3339).is_ok()
    );
    assert!(issued.ends_with('Z'));
    let jwt = v["token"].as_str().unwrap();
    let claims = app.verify(jwt).await;
    assert_eq!(claims.iss, "authd");
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.aud, "registry");
    assert_eq!(claims.exp - claims.iat, 300);
    assert!(claims.nbf <= claims.iat);
    assert_eq!(claims.jti.len(), 32);
    assert_eq!(
        access(&claims),
        ["repository:team/app:pull,push", "repository:team/lib:pull"]
    );
    // `aud` is a plain string in the payload and the kid is the libtrust ID
    // of the key published in the JWKS.
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let payload: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            jwt.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(payload["aud"].is_string());
    let jwks = app
        .get("/.well-known/jwks.json", None)
        .await
        .expect(200)
        .json();
    let key = token::PublicKey::from_jwk(&serde_json::from_value(jwks["keys"][0].clone()).unwrap())
        .unwrap();
    assert_eq!(header.kid.as_deref(), Some(key.libtrust_key_id().as_str()));
    assert_eq!(jwks["keys"][0]["kid"], key.libtrust_key_id());
}

#[tokio::test]
async fn grant_semantics_user_namespace_everyone_catalog_admin() {
    let app = with_alice().await;
    app.add_user("bob", "bob-password").await;
    app.add_grant("*", "${user}/*", &["*"]).await;
    app.add_grant("bob", "registry:catalog", &[]).await;
    let a = basic("alice", ALICE_PW);
    let claims = app
        .token_claims(
            "scope=repository:alice/app:*&scope=repository:bob/app:pull\
             &scope=registry:catalog:*&scope=authd:admin:*",
            Some(&a),
        )
        .await;
    // No catalog grant: the filtered catalog form, listing her namespace.
    assert_eq!(
        access(&claims),
        [
            "repository:alice/app:*",
            "registry:catalog:",
            "repository-pattern:alice/*:pull"
        ]
    );
    let claims = app
        .token_claims(
            "scope=registry:catalog:*&scope=repository:bob/x:pull,push",
            Some(&basic("bob", "bob-password")),
        )
        .await;
    assert_eq!(
        access(&claims),
        ["registry:catalog:*", "repository:bob/x:pull,push"]
    );
    // Admins hold everything, including the admin API.
    let claims = app
        .token_claims(
            "scope=repository:any/repo:pull,push,delete&scope=registry:catalog:*&scope=authd:admin:*",
            Some(&basic("admin", ADMIN_PASSWORD)),
        )
        .await;
    assert_eq!(
        access(&claims),
        [
            "repository:any/repo:pull,push,delete",
            "registry:catalog:*",
            "authd:admin:*"
        ]
    );
}

#[tokio::test]
async fn bad_credentials_are_401_with_every_error_field() {
    let app = with_alice().await;
    for auth in [
        basic("alice", "wrong"),
        basic("nobody", "x"),
        basic("x' OR '1'='1", "x"),
    ] {
        let r = app
            .get("/token?scope=repository:a:pull", Some(&auth))
            .await
            .expect(401);
        assert!(r.header("www-authenticate").is_some());
        let v = r.json();
        assert_eq!(v["error"], "invalid_grant");
        assert_eq!(v["details"], v["error_description"]);
        assert_eq!(v["errors"][0]["code"], "UNAUTHORIZED");
        assert!(
            v["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("password")
        );
    }
}

#[tokio::test]
async fn malformed_requests_are_400() {
    let app = with_alice().await;
    for auth in [
        "Basic !!!",
        "Basic YWxpY2U=",
        "Basic OnBhc3M=",
        "Negotiate abc",
        "Bearer abc.def.ghi",
    ] {
        let r = app.get("/token", Some(auth)).await.expect(400);
        let v = r.json();
        assert_eq!(v["error"], "invalid_request", "{auth}");
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
    }
    let r = app.get("/token?service=elsewhere", None).await.expect(400);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("elsewhere")
    );
}

#[tokio::test]
async fn odd_scopes() {
    let app = with_alice().await;
    app.add_grant("alice", "*", &["pull"]).await;
    let a = basic("alice", ALICE_PW);
    let long = format!("repository:{}:pull", "a".repeat(300));
    let huge = format!("repository:{}:pull", "a".repeat(2000));
    for bad in [
        "repository:localhost:5000/app:pull",
        "repository:h%C3%A9llo/w%C3%B6rld:pull",
        long.as_str(),
        huge.as_str(),
        "nonsense",
        "repository::pull",
    ] {
        let r = app
            .get(&format!("/token?scope={bad}"), Some(&a))
            .await
            .expect(400);
        assert_eq!(r.json()["error"], "invalid_scope", "{bad}");
    }
    // Unknown types and actions are ignored, plugin classes accepted.
    let claims = app
        .token_claims(
            "scope=widget:x:pull&scope=repository:a/b:frob&scope=repository(plugin):p/q:pull",
            Some(&a),
        )
        .await;
    assert_eq!(access(&claims), ["repository:p/q:pull"]);
    // SQL metacharacters are just text.
    let r = app
        .get(
            "/token?scope=repository:a';DROP%20TABLE%20users;--:pull",
            Some(&a),
        )
        .await;
    assert_eq!(r.status, 400);
    app.get("/api/v1/users/alice", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .expect(200);
}

#[tokio::test]
async fn configured_expiration_service_and_kid() {
    let app = TestApp::with(|c| {
        c.token.expiration = 600;
        c.service = "my-registry".into();
        c.issuer = "my-authd".into();
        c.token.kid_format = authd::config::KidFormat::Thumbprint;
    })
    .await;
    let r = app
        .get(
            "/token?service=my-registry",
            Some(&basic("admin", ADMIN_PASSWORD)),
        )
        .await
        .expect(200);
    let v = r.json();
    assert_eq!(v["expires_in"], 600);
    let jwt = v["token"].as_str().unwrap();
    let claims = app.verify(jwt).await;
    assert_eq!(claims.aud, "my-registry");
    assert_eq!(claims.iss, "my-authd");
    assert_eq!(claims.exp - claims.iat, 600);
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap();
    let signing = app.state.keys.current().signing.clone();
    assert_eq!(kid, signing.public.jwk_thumbprint());
    app.get("/token?service=registry", None).await.expect(400);
}

#[tokio::test]
async fn rs256_tokens_verify() {
    let app = TestApp::with(|c| c.token.algorithm = authd::config::SigningAlgorithm::RS256).await;
    let r = app
        .get("/token", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .expect(200);
    let jwt = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        jsonwebtoken::decode_header(&jwt).unwrap().alg,
        jsonwebtoken::Algorithm::RS256
    );
    assert_eq!(app.verify(&jwt).await.sub, "admin");
}

// --- POST /token ------------------------------------------------------------

#[tokio::test]
async fn post_password_grant_and_its_errors() {
    let app = with_alice().await;
    app.add_grant("alice", "team/*", &["pull"]).await;
    let r = app
        .post_form(
            "/token",
            &format!(
                "grant_type=password&username=alice&password={ALICE_PW}&client_id=containerd\
                 &service=registry&scope=repository%3Ateam%2Fa%3Apull%2Cpush+repository%3Ateam%2Fb%3Apull"
            ),
        )
        .await
        .expect(200);
    let v = r.json();
    assert!(v.get("refresh_token").is_none());
    let claims = app.verify(v["access_token"].as_str().unwrap()).await;
    assert_eq!(
        access(&claims),
        ["repository:team/a:pull", "repository:team/b:pull"]
    );

    let cases: &[(&str, u16, &str)] = &[
        (
            "grant_type=password&username=alice&password=x&client_id=c",
            401,
            "invalid_grant",
        ),
        (
            "grant_type=password&username=alice&password=alice-password",
            400,
            "invalid_request",
        ),
        (
            "grant_type=password&password=alice-password&client_id=c",
            400,
            "invalid_request",
        ),
        (
            "username=alice&password=alice-password&client_id=c",
            400,
            "invalid_request",
        ),
        (
            "grant_type=client_credentials&client_id=c",
            400,
            "unsupported_grant_type",
        ),
        (
            "grant_type=authorization_code&client_id=c&code=x",
            400,
            "unsupported_grant_type",
        ),
        (
            "grant_type=refresh_token&client_id=c",
            400,
            "invalid_request",
        ),
        (
            "grant_type=refresh_token&client_id=c&refresh_token=nope",
            401,
            "invalid_grant",
        ),
        (
            "grant_type=password&username=alice&password=alice-password&client_id=c&scope=bad",
            400,
            "invalid_scope",
        ),
    ];
    for (form, status, error) in cases {
        let r = app.post_form("/token", form).await.expect(*status);
        assert_eq!(r.json()["error"], *error, "{form}");
    }
    let long_client = format!(
        "grant_type=password&username=alice&password={ALICE_PW}&client_id={}",
        "c".repeat(300)
    );
    app.post_form("/token", &long_client).await.expect(400);
    // Only form bodies.
    let r = app
        .call(
            Request::post("/token")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(r#"{"grant_type":"password"}"#))
                .unwrap(),
        )
        .await
        .expect(400);
    assert_eq!(r.json()["error"], "invalid_request");
}

#[tokio::test]
async fn huge_bodies_are_refused() {
    let app = with_alice().await;
    let big = format!(
        "grant_type=password&client_id=c&username=alice&password={}",
        "x".repeat(200_000)
    );
    let r = app.post_form("/token", &big).await.expect(413);
    assert_eq!(r.json()["error"], "invalid_request");
    let r = app
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "big", "password": "x".repeat(100_000)})),
        )
        .await
        .expect(413);
    assert_eq!(r.json()["error"], "payload_too_large");
    // The htpasswd endpoint takes large files, up to its own limit.
    let line = "u:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n";
    let r = app
        .admin(
            "POST",
            "/api/v1/htpasswd",
            Some(json!({"htpasswd": line.repeat(20_000)})),
        )
        .await
        .expect(400);
    assert_eq!(r.json()["error"], "invalid_htpasswd");
    let r = app
        .admin(
            "POST",
            "/api/v1/htpasswd",
            Some(json!({"htpasswd": "#".repeat(17 * 1024 * 1024)})),
        )
        .await
        .expect(413);
    assert_eq!(r.json()["error"], "payload_too_large");
}

// --- refresh tokens ---------------------------------------------------------

async fn refresh_token_for(app: &TestApp, user: &str, password: &str) -> String {
    let r = app
        .post_form(
            "/token",
            &format!("grant_type=password&username={user}&password={password}&client_id=docker&access_type=offline"),
        )
        .await
        .expect(200);
    let v = r.json();
    let t = v["refresh_token"].as_str().unwrap().to_owned();
    assert!(t.len() >= 43, "refresh tokens carry 32 random bytes");
    t
}

async fn use_refresh(app: &TestApp, token: &str) -> support::Resp {
    app.post_form(
        "/token",
        &format!(
            "grant_type=refresh_token&client_id=docker&service=registry\
             &scope=repository:team/a:pull&refresh_token={token}"
        ),
    )
    .await
}

#[tokio::test]
async fn the_holder_of_a_refresh_token_revokes_it() {
    let app = with_alice().await;
    app.add_grant("alice", "team/*", &["pull"]).await;
    let t = refresh_token_for(&app, "alice", ALICE_PW).await;
    let other = refresh_token_for(&app, "alice", ALICE_PW).await;
    use_refresh(&app, &t).await.expect(200);
    // The token is the credential: no other is needed to give it up.
    let r = app
        .post_form("/token/revoke", &format!("token={t}&client_id=docker"))
        .await
        .expect(200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    use_refresh(&app, &t).await.expect(401);
    // The user's other logins go on.
    use_refresh(&app, &other).await.expect(200);
    // Revoking again, or a token that never existed, tells nothing.
    app.post_form("/token/revoke", &format!("token={t}"))
        .await
        .expect(200);
    app.post_form("/token/revoke", "token=nonsense")
        .await
        .expect(200);
    let r = app
        .post_form("/token/revoke", "client_id=docker")
        .await
        .expect(400);
    assert_eq!(r.json()["error"], "invalid_request");
    let audit = app
        .admin("GET", "/api/v1/audit?action=token.revoke", None)
        .await
        .expect(200);
    let entries = audit.json();
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
    assert_eq!(entries[0]["target"], "alice");
    assert_eq!(entries[0]["actor"], "api:alice");
}

#[tokio::test]
async fn refresh_token_issue_use_list_revoke() {
    let app = with_alice().await;
    app.add_grant("alice", "team/*", &["pull"]).await;
    let t = refresh_token_for(&app, "alice", ALICE_PW).await;
    let r = use_refresh(&app, &t).await.expect(200);
    let v = r.json();
    assert!(v.get("refresh_token").is_none());
    let claims = app.verify(v["access_token"].as_str().unwrap()).await;
    assert_eq!(claims.sub, "alice");
    assert_eq!(access(&claims), ["repository:team/a:pull"]);
    // GET with offline_token=true issues one too.
    let r = app
        .get(
            "/token?offline_token=true&client_id=podman",
            Some(&basic("alice", ALICE_PW)),
        )
        .await
        .expect(200);
    assert!(r.json()["refresh_token"].is_string());

    let list = app
        .admin("GET", "/api/v1/users/alice/tokens", None)
        .await
        .expect(200)
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(list.iter().any(|t| t["client_id"] == "podman"));
    // Only hashes are stored: the token itself is nowhere in the listing.
    assert!(!serde_json::to_string(&list).unwrap().contains(&t));
    let docker_id = list.iter().find(|t| t["client_id"] == "docker").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.admin(
        "DELETE",
        &format!("/api/v1/users/alice/tokens/{docker_id}"),
        None,
    )
    .await
    .expect(204);
    app.admin(
        "DELETE",
        &format!("/api/v1/users/alice/tokens/{docker_id}"),
        None,
    )
    .await
    .expect(404);
    let r = use_refresh(&app, &t).await.expect(401);
    assert_eq!(r.json()["error"], "invalid_grant");
    app.admin("GET", "/api/v1/users/nobody/tokens", None)
        .await
        .expect(404);
}

#[tokio::test]
async fn refresh_tokens_end_on_password_change_and_disable() {
    let app = with_alice().await;
    let t = refresh_token_for(&app, "alice", ALICE_PW).await;
    use_refresh(&app, &t).await.expect(200);
    app.admin(
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"password": "new-password-1"})),
    )
    .await
    .expect(200);
    use_refresh(&app, &t).await.expect(401);
    // The old password stops at once despite the verification cache.
    app.get("/token", Some(&basic("alice", ALICE_PW)))
        .await
        .expect(401);
    app.get("/token", Some(&basic("alice", "new-password-1")))
        .await
        .expect(200);

    let t = refresh_token_for(&app, "alice", "new-password-1").await;
    app.admin(
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"disabled": true})),
    )
    .await
    .expect(200);
    use_refresh(&app, &t).await.expect(401);
    let r = app
        .get("/token", Some(&basic("alice", "new-password-1")))
        .await
        .expect(401);
    assert!(
        r.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    // Re-enabling does not bring the old refresh token back.
    app.admin(
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"disabled": false})),
    )
    .await
    .expect(200);
    use_refresh(&app, &t).await.expect(401);
    app.get("/token", Some(&basic("alice", "new-password-1")))
        .await
        .expect(200);
}

#[tokio::test]
async fn refresh_tokens_end_when_the_user_is_deleted() {
    let app = with_alice().await;
    let t = refresh_token_for(&app, "alice", ALICE_PW).await;
    app.admin("DELETE", "/api/v1/users/alice", None)
        .await
        .expect(204);
    use_refresh(&app, &t).await.expect(401);
}

// --- admin API --------------------------------------------------------------

#[tokio::test]
async fn admin_user_crud_and_errors() {
    let app = TestApp::new().await;
    let r = app
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "carol", "password": "carol-pass", "admin": true})),
        )
        .await
        .expect(201);
    let v = r.json();
    assert_eq!(v["name"], "carol");
    assert_eq!(v["admin"], true);
    assert_eq!(v["password_format"], "argon2id");
    assert!(v.get("password_hash").is_none());
    let r = app
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "carol", "password": "other-pass"})),
        )
        .await
        .expect(409);
    assert_eq!(r.json()["error"], "user_exists");
    for (body, code) in [
        (
            json!({"name": "x'; DROP TABLE users;--", "password": "password1"}),
            "invalid_name",
        ),
        (
            json!({"name": "anonymous", "password": "password1"}),
            "invalid_name",
        ),
        (json!({"name": "", "password": "password1"}), "invalid_name"),
        (
            json!({"name": "dave", "password": "short"}),
            "invalid_password",
        ),
        (json!({"name": "dave"}), "invalid_json"),
        (
            json!({"name": "dave", "password": "password1", "role": "x"}),
            "invalid_json",
        ),
    ] {
        let r = app
            .admin("POST", "/api/v1/users", Some(body.clone()))
            .await
            .expect(400);
        assert_eq!(r.json()["error"], code, "{body}");
        assert!(r.json()["message"].is_string());
    }
    let r = app
        .call(
            Request::post("/api/v1/users")
                .header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await
        .expect(400);
    assert_eq!(r.json()["error"], "invalid_json");

    let list = app
        .admin("GET", "/api/v1/users", None)
        .await
        .expect(200)
        .json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "carol"]);
    app.admin("GET", "/api/v1/users/carol", None)
        .await
        .expect(200);
    app.admin("GET", "/api/v1/users/nobody", None)
        .await
        .expect(404);
    let v = app
        .admin(
            "PATCH",
            "/api/v1/users/carol",
            Some(json!({"admin": false, "disabled": true})),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(
        (v["admin"].as_bool(), v["disabled"].as_bool()),
        (Some(false), Some(true))
    );
    app.admin(
        "PATCH",
        "/api/v1/users/carol",
        Some(json!({"colour": "red"})),
    )
    .await
    .expect(400);
    app.admin(
        "PATCH",
        "/api/v1/users/carol",
        Some(json!({"password": "tiny"})),
    )
    .await
    .expect(400);
    app.admin(
        "PATCH",
        "/api/v1/users/nobody",
        Some(json!({"admin": true})),
    )
    .await
    .expect(404);
    app.admin("DELETE", "/api/v1/users/carol", None)
        .await
        .expect(204);
    app.admin("DELETE", "/api/v1/users/carol", None)
        .await
        .expect(404);
    let v = app
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "erin", "password": "erin-password", "disabled": true})),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(v["disabled"], true);
    app.get("/token", Some(&basic("erin", "erin-password")))
        .await
        .expect(401);
    app.admin("GET", "/api/v1/users/carol", None)
        .await
        .expect(404);

    let audit = app
        .admin("GET", "/api/v1/audit?limit=50&action=user", None)
        .await
        .expect(200)
        .json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"user.delete"));
    assert!(audit[0]["actor"] == "api:admin");
    app.admin("GET", "/api/v1/audit?limit=0", None)
        .await
        .expect(400);
}

#[tokio::test]
async fn last_admin_cannot_be_removed() {
    let app = TestApp::new().await;
    for (method, body) in [
        ("DELETE", None),
        ("PATCH", Some(json!({"admin": false}))),
        ("PATCH", Some(json!({"disabled": true}))),
    ] {
        let r = app
            .admin(method, "/api/v1/users/admin", body)
            .await
            .expect(409);
        assert_eq!(r.json()["error"], "last_admin");
    }
    app.get("/token", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .expect(200);
    // With a second admin the first one may go.
    app.admin(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "root2", "password": "root2-pass", "admin": true})),
    )
    .await
    .expect(201);
    app.admin("DELETE", "/api/v1/users/admin", None)
        .await
        .expect(204);
    let r = app
        .api(
            "DELETE",
            "/api/v1/users/root2",
            None,
            &basic("root2", "root2-pass"),
        )
        .await
        .expect(409);
    assert_eq!(r.json()["error"], "last_admin");
}

#[tokio::test]
async fn admin_api_authentication() {
    let app = with_alice().await;
    let r = app.get("/api/v1/users", None).await.expect(401);
    assert_eq!(r.header("www-authenticate"), None);
    assert_eq!(r.json()["error"], "unauthorized");
    app.api("GET", "/api/v1/users", None, &basic("admin", "wrong"))
        .await
        .expect(401);
    let r = app
        .api("GET", "/api/v1/users", None, &basic("alice", ALICE_PW))
        .await
        .expect(403);
    assert_eq!(r.json()["error"], "forbidden");
    app.api("GET", "/api/v1/users", None, "Basic ***")
        .await
        .expect(400);

    // A bearer token from this authd with authd:admin:* works.
    let admin_token = app
        .get(
            "/token?scope=authd:admin:*",
            Some(&basic("admin", ADMIN_PASSWORD)),
        )
        .await
        .expect(200)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.api(
        "GET",
        "/api/v1/users",
        None,
        &format!("Bearer {admin_token}"),
    )
    .await
    .expect(200);
    // Without that access, or asked for by a non-admin: refused.
    let plain = app
        .get("/token", Some(&basic("admin", ADMIN_PASSWORD)))
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.api("GET", "/api/v1/users", None, &format!("Bearer {plain}"))
        .await
        .expect(403);
    let alice_token = app
        .get(
            "/token?scope=authd:admin:*",
            Some(&basic("alice", ALICE_PW)),
        )
        .await
        .json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.api(
        "GET",
        "/api/v1/users",
        None,
        &format!("Bearer {alice_token}"),
    )
    .await
    .expect(403);
    let r = app
        .api("GET", "/api/v1/users", None, "Bearer not.a.jwt")
        .await
        .expect(401);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("bearer token")
    );
    // A forged token (payload changed) is refused.
    let mut parts: Vec<&str> = plain.split('.').collect();
    let admin_payload = admin_token.split('.').nth(1).unwrap();
    parts[1] = admin_payload;
    app.api(
        "GET",
        "/api/v1/users",
        None,
        &format!("Bearer {}", parts.join(".")),
    )
    .await
    .expect(401);
    // A token whose subject lost admin rights stops working.
    app.admin(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "root2", "password": "root2-pass", "admin": true})),
    )
    .await
    .expect(201);
    app.admin(
        "PATCH",
        "/api/v1/users/admin",
        Some(json!({"admin": false})),
    )
    .await
    .expect(200);
    app.api(
        "GET",
        "/api/v1/users",
        None,
        &format!("Bearer {admin_token}"),
    )
    .await
    .expect(403);
}

#[tokio::test]
async fn admin_grants_crud_and_errors() {
    let app = with_alice().await;
    let r = app
        .admin(
            "POST",
            "/api/v1/grants",
            Some(json!({"subject": "alice", "pattern": "team/*", "actions": ["pull"]})),
        )
        .await
        .expect(201);
    let g = r.json();
    assert_eq!(g["type"], "repository");
    assert_eq!(g["actions"], json!(["pull"]));
    let id = g["id"].as_i64().unwrap();
    // The same subject and pattern again replaces the actions.
    let r = app
        .admin(
            "POST",
            "/api/v1/grants",
            Some(json!({"subject": "alice", "pattern": "team/*", "actions": ["pull", "push"]})),
        )
        .await
        .expect(200);
    assert_eq!(r.json()["id"], id);
    assert_eq!(r.json()["actions"], json!(["pull", "push"]));
    let r = app
        .admin(
            "POST",
            "/api/v1/grants",
            Some(json!({"subject": "*", "type": "registry", "pattern": "catalog"})),
        )
        .await
        .expect(201);
    assert_eq!(r.json()["actions"], json!(["*"]));
    app.add_grant("anonymous", "public/*", &["pull"]).await;

    let all = app
        .admin("GET", "/api/v1/grants", None)
        .await
        .expect(200)
        .json();
    assert_eq!(all.as_array().unwrap().len(), 3);
    let mine = app
        .admin("GET", "/api/v1/grants?subject=alice", None)
        .await
        .expect(200)
        .json();
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let none = app
        .admin(
            "GET",
            "/api/v1/grants?subject=x%27%20OR%20%271%27%3D%271",
            None,
        )
        .await
        .expect(200)
        .json();
    assert_eq!(none, json!([]));

    for (body, code) in [
        (
            json!({"subject": "a b", "pattern": "x", "actions": ["pull"]}),
            "invalid_subject",
        ),
        (
            json!({"subject": "alice", "pattern": "Team/*", "actions": ["pull"]}),
            "invalid_pattern",
        ),
        (
            json!({"subject": "alice", "pattern": "x';--", "actions": ["pull"]}),
            "invalid_pattern",
        ),
        (
            json!({"subject": "alice", "pattern": "x", "actions": ["fly"]}),
            "invalid_actions",
        ),
        (
            json!({"subject": "alice", "pattern": "x", "actions": []}),
            "invalid_actions",
        ),
        (
            json!({"subject": "alice", "type": "registry", "pattern": "catalog", "actions": ["pull"]}),
            "invalid_actions",
        ),
        (
            json!({"subject": "anonymous", "pattern": "${user}/*", "actions": ["pull"]}),
            "invalid_pattern",
        ),
        (
            json!({"subject": "alice", "type": "plugin", "pattern": "x", "actions": ["pull"]}),
            "invalid_pattern",
        ),
    ] {
        let r = app
            .admin("POST", "/api/v1/grants", Some(body.clone()))
            .await
            .expect(400);
        assert_eq!(r.json()["error"], code, "{body}");
    }
    app.admin("DELETE", &format!("/api/v1/grants/{id}"), None)
        .await
        .expect(204);
    app.admin("DELETE", &format!("/api/v1/grants/{id}"), None)
        .await
        .expect(404);
    app.admin("DELETE", "/api/v1/grants/abc", None)
        .await
        .expect(400);
    let claims = app
        .token_claims(
            "scope=repository:team/a:pull",
            Some(&basic("alice", ALICE_PW)),
        )
        .await;
    assert!(claims.access.is_empty());
    // Deleting a user deletes its grants.
    app.add_grant("alice", "x/*", &["pull"]).await;
    app.admin("DELETE", "/api/v1/users/alice", None)
        .await
        .expect(204);
    let mine = app
        .admin("GET", "/api/v1/grants?subject=alice", None)
        .await
        .expect(200)
        .json();
    assert_eq!(mine, json!([]));
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let app = TestApp::new().await;
    assert_eq!(
        app.get("/healthz", None).await.expect(200).json()["status"],
        "ok"
    );
    assert_eq!(
        app.get("/readyz", None).await.expect(200).json()["status"],
        "ok"
    );
    let r = app.get("/nope", None).await.expect(404);
    assert_eq!(r.json()["error"], "not_found");
    let r = app
        .call(Request::delete("/token").body(Body::empty()).unwrap())
        .await
        .expect(405);
    assert_eq!(r.json()["error"], "method_not_allowed");
    app.state.db.close().await;
    app.get("/readyz", None).await.expect(503);
}

// --- htpasswd ---------------------------------------------------------------

// Made with Apache's htpasswd (-B, -m, -s, -d).
const HTPASSWD: &str = "\
bcrypt:$2y$05$dWA3c6e4nZuRLDxbbtoZteW1rXyGqt.DqMYKeEje.MLT6Tgw8VX0W
apr1:$apr1$nVMz3fmk$XKJOzvjBhn1Eui1LnJobG1
sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=
crypt:StGr/F2re28kk
";
const PASSWORDS: [(&str, &str); 4] = [
    ("bcrypt", "correct horse"),
    ("apr1", "pässword"),
    ("sha", "secret"),
    ("crypt", "crypt01"),
];

/// Imports `text` through the admin API; `options` are merged into the
/// request (`skip_invalid`, `overwrite`).
async fn import(app: &TestApp, text: &str, options: serde_json::Value) -> support::Resp {
    let mut body = json!({"htpasswd": text});
    if let (Some(b), Some(o)) = (body.as_object_mut(), options.as_object()) {
        b.extend(o.clone());
    }
    app.admin("POST", "/api/v1/htpasswd", Some(body)).await
}

#[tokio::test]
async fn htpasswd_import_login_upgrade_and_reimport() {
    let app = TestApp::new().await;
    let v = import(&app, HTPASSWD, json!({})).await.expect(200).json();
    assert_eq!(
        (
            &v["imported"],
            &v["updated"],
            &v["unchanged"],
            &v["rejected"]
        ),
        (&json!(4), &json!(0), &json!(0), &json!(0))
    );
    for (user, password) in PASSWORDS {
        let before = app
            .admin("GET", &format!("/api/v1/users/{user}"), None)
            .await
            .json();
        assert_ne!(before["password_format"], "argon2id");
        app.get("/token", Some(&basic(user, "wrong")))
            .await
            .expect(401);
        let claims = app.token_claims("", Some(&basic(user, password))).await;
        assert_eq!(claims.sub, user);
        let after = app
            .admin("GET", &format!("/api/v1/users/{user}"), None)
            .await
            .json();
        assert_eq!(after["password_format"], "argon2id", "{user} not re-hashed");
        // Still the same password after the upgrade (not via the cache: a
        // different client address would not share it anyway).
        app.get("/token", Some(&basic(user, password)))
            .await
            .expect(200);
    }
    // Re-importing the same file changes nothing: the users exist (and
    // their legacy hashes are gone, so the lines are not recognised).
    let v = import(&app, HTPASSWD, json!({})).await.expect(200).json();
    assert_eq!((&v["imported"], &v["unchanged"]), (&json!(0), &json!(0)));
    assert_eq!(v["skipped"].as_array().unwrap().len(), 4);
    app.get("/token", Some(&basic("sha", "secret")))
        .await
        .expect(200);
    // A changed hash replaces the password when asked to.
    let changed = HTPASSWD.replace(
        "sha:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=",
        "sha:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", // "password"
    );
    let v = import(&app, &changed, json!({"overwrite": true}))
        .await
        .expect(200)
        .json();
    assert_eq!((&v["updated"], &v["unchanged"]), (&json!(4), &json!(0)));
    app.get("/token", Some(&basic("sha", "secret")))
        .await
        .expect(401);
    app.get("/token", Some(&basic("sha", "password")))
        .await
        .expect(200);
}

#[tokio::test]
async fn htpasswd_with_bad_lines_imports_nothing_unless_told() {
    let app = TestApp::new().await;
    let bad = format!(
        "{HTPASSWD}plain:hunter2\nbad name:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\nbcrypt:{{SHA}}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"
    );
    let r = import(&app, &bad, json!({})).await.expect(400);
    let v = r.json();
    assert_eq!(v["error"], "invalid_htpasswd");
    let lines: Vec<i64> = v["details"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_i64().unwrap())
        .collect();
    assert_eq!(lines, [5, 6, 7]);
    assert!(
        !r.body.windows(7).any(|w| w == b"hunter2"),
        "hash echoed back"
    );
    let users = app.admin("GET", "/api/v1/users", None).await.json();
    assert_eq!(users.as_array().unwrap().len(), 1, "something was imported");

    let v = import(&app, &bad, json!({"skip_invalid": true}))
        .await
        .expect(200)
        .json();
    assert_eq!((&v["imported"], &v["rejected"]), (&json!(4), &json!(3)));
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);
    let r = app
        .call(
            Request::post("/api/v1/htpasswd")
                .header(header::AUTHORIZATION, basic("admin", ADMIN_PASSWORD))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(vec![b'"', 0xff, 0xfe, b'"']))
                .unwrap(),
        )
        .await
        .expect(400);
    assert_eq!(r.json()["error"], "invalid_json");
}

// --- throttling -------------------------------------------------------------

#[tokio::test]
async fn brute_force_is_throttled_per_account_and_address() {
    let app = with_alice().await;
    let wrong = basic("alice", "guess");
    let right = basic("alice", ALICE_PW);
    let attacker = [10, 0, 0, 66];
    for _ in 0..5 {
        app.call(token_request_from(attacker, &wrong))
            .await
            .expect(401);
    }
    let r = app
        .call(token_request_from(attacker, &wrong))
        .await
        .expect(429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let v = r.json();
    assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
    // Blocked: even the right password is not tried from there.
    app.call(token_request_from(attacker, &right))
        .await
        .expect(429);
    // Another address is not affected.
    app.call(token_request_from([10, 0, 0, 7], &right))
        .await
        .expect(200);
    // Another account from the attacker's address neither.
    app.add_user("bob", "bob-password").await;
    app.call(token_request_from(attacker, &basic("bob", "bob-password")))
        .await
        .expect(200);
    // The delay grows.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = app
        .call(token_request_from(attacker, &wrong))
        .await
        .expect(429);
    assert_eq!(r.header("retry-after"), Some("2"));
    // POST is throttled the same way, and so is the admin API.
    let mut req = Request::post("/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "grant_type=password&client_id=c&username=alice&password={ALICE_PW}"
        )))
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((attacker, 1))));
    app.call(req).await.expect(429);
    // After the delay, the right password clears the record.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    app.call(token_request_from(attacker, &right))
        .await
        .expect(200);
    app.call(token_request_from(attacker, &wrong))
        .await
        .expect(401);
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let app = TestApp::with(|c| {
        c.throttle.free_failures = 0;
        c.throttle.trusted_proxies = vec!["10.9.9.9".parse().unwrap()];
    })
    .await;
    app.add_user("ci", "ci-password").await;
    let req = |peer: [u8; 4], xff: &str, password: &str| {
        let mut r = Request::get("/token")
            .header(header::AUTHORIZATION, basic("ci", password))
            .header("x-forwarded-for", xff)
            .body(Body::empty())
            .unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((peer, 1))));
        r
    };
    // Through the proxy, client 1.1.1.1 is blocked; client 2.2.2.2 is not.
    app.call(req([10, 9, 9, 9], "1.1.1.1", "bad"))
        .await
        .expect(429);
    app.call(req([10, 9, 9, 9], "1.1.1.1", "ci-password"))
        .await
        .expect(429);
    app.call(req([10, 9, 9, 9], "2.2.2.2", "ci-password"))
        .await
        .expect(200);
    // An untrusted peer cannot pick its address with the header.
    app.call(req([3, 3, 3, 3], "2.2.2.2", "bad"))
        .await
        .expect(429);
    app.call(req([10, 9, 9, 9], "2.2.2.2", "ci-password"))
        .await
        .expect(200);
}
