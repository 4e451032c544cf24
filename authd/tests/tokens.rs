//! In-process tests of access tokens, robots and groups (issue 14) through
//! `app()`: tokens as passwords on both verbs of `/token`, their limits
//! (scopes ∩ the owner's current grants, expiry, revocation, disabled
//! owners, the admin API), refresh tokens derived from them, robots,
//! self-service with a password only, groups and effective permissions,
//! and the audit entries.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{Value, json};
use support::{TestApp, access, basic};

const CARL_PW: &str = "carl-password";

async fn with_carl() -> TestApp {
    let app = TestApp::new().await;
    app.add_user("carl", CARL_PW).await;
    app.add_grant("carl", "ci/*", &["pull", "push"]).await;
    app.add_grant("carl", "other/*", &["*"]).await;
    app
}

/// carl makes a token for himself with his password; returns the answer.
async fn own_token(app: &TestApp, body: Value) -> Value {
    app.api(
        "POST",
        "/api/v1/tokens",
        Some(body),
        &basic("carl", CARL_PW),
    )
    .await
    .expect(201)
    .json()
}

async fn ci_token(app: &TestApp) -> (String, String) {
    let made = own_token(
        app,
        json!({"name": "ci", "scopes": [{"pattern": "ci/*", "actions": ["pull", "push"]}]}),
    )
    .await;
    (
        made["id"].as_str().unwrap().to_owned(),
        made["token"].as_str().unwrap().to_owned(),
    )
}

const SCOPES: &str =
    "service=registry&scope=repository:ci/app:pull,push&scope=repository:other/app:pull,push";

#[tokio::test]
async fn a_token_is_a_password_for_its_scopes_only() {
    let app = with_carl().await;
    let (_, token) = ci_token(&app).await;
    assert!(token.starts_with("rgt_"));
    // GET with Basic credentials.
    let claims = app.token_claims(SCOPES, Some(&basic("carl", &token))).await;
    assert_eq!(access(&claims), ["repository:ci/app:pull,push"]);
    assert_eq!(claims.sub, "carl");
    // POST password grant (containerd).
    let form = format!("grant_type=password&username=carl&password={token}&client_id=ctr&{SCOPES}");
    let r = app.post_form("/token", &form).await.expect(200);
    let claims = app.verify(r.json()["token"].as_str().unwrap()).await;
    assert_eq!(access(&claims), ["repository:ci/app:pull,push"]);
    // The password itself still gets everything carl holds.
    let claims = app
        .token_claims(SCOPES, Some(&basic("carl", CARL_PW)))
        .await;
    assert_eq!(
        access(&claims),
        [
            "repository:ci/app:pull,push",
            "repository:other/app:pull,push"
        ]
    );
    // Under another user's name, or altered: refused.
    app.add_user("dora", "dora-password").await;
    app.get(&format!("/token?{SCOPES}"), Some(&basic("dora", &token)))
        .await
        .expect(401);
    let mut bad = token.clone();
    bad.pop();
    bad.push(if token.ends_with('A') { 'B' } else { 'A' });
    let r = app
        .get(&format!("/token?{SCOPES}"), Some(&basic("carl", &bad)))
        .await
        .expect(401);
    assert_eq!(r.json()["error"], "invalid_grant", "OAuth error shape");
    // Listed with its last use (time and address), never with the secret.
    let list = app
        .api("GET", "/api/v1/tokens", None, &basic("carl", CARL_PW))
        .await
        .expect(200);
    let text = String::from_utf8_lossy(&list.body).into_owned();
    assert!(!text.contains(&token[4..]), "the secret is never listed");
    let t = &list.json()[0];
    assert_eq!(t["name"], "ci");
    assert_eq!(t["last_used_from"], "127.0.0.1");
    assert!(t["last_used_at"].is_string());
    assert!(t["expires_at"].is_string(), "expires by default");
}

#[tokio::test]
async fn a_token_never_exceeds_its_owner_even_after_the_owner_loses_a_grant() {
    let app = with_carl().await;
    // Wider than carl at creation: refused.
    for scope in [
        json!({"pattern": "*", "actions": ["pull"]}),
        json!({"pattern": "ci/*", "actions": ["delete"]}),
        json!({"pattern": "registry:catalog"}),
    ] {
        app.api(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "wide", "scopes": [scope]})),
            &basic("carl", CARL_PW),
        )
        .await
        .expect(403);
    }
    let made = own_token(
        &app,
        json!({"name": "t", "scopes": [{"pattern": "other/*", "actions": ["*"]}]}),
    )
    .await;
    let token = made["token"].as_str().unwrap();
    let q = "service=registry&scope=repository:other/app:*";
    let claims = app.token_claims(q, Some(&basic("carl", token))).await;
    assert_eq!(access(&claims), ["repository:other/app:*"]);
    // carl keeps only pull on other/*: so does the token, at once.
    let grants = app
        .admin("GET", "/api/v1/grants?subject=carl", None)
        .await
        .json();
    let id = grants
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["pattern"] == "other/*")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    app.add_grant("carl", "other/*", &["pull"]).await;
    let claims = app.token_claims(q, Some(&basic("carl", token))).await;
    assert_eq!(access(&claims), ["repository:other/app:pull"]);
    // carl loses the grant: the token gets nothing.
    app.admin("DELETE", &format!("/api/v1/grants/{id}"), None)
        .await
        .expect(204);
    let claims = app.token_claims(q, Some(&basic("carl", token))).await;
    assert!(access(&claims).is_empty());
}

#[tokio::test]
async fn expired_revoked_and_disabled_owner_tokens_are_refused_at_once() {
    let app = with_carl().await;
    let (id, token) = ci_token(&app).await;
    let get = |t: String| {
        let app = &app;
        async move {
            app.get(&format!("/token?{SCOPES}"), Some(&basic("carl", &t)))
                .await
        }
    };
    get(token.clone()).await.expect(200);

    // A docker login with the token: its refresh token is bound to it.
    let r = app
        .get(
            "/token?service=registry&offline_token=true&client_id=docker",
            Some(&basic("carl", &token)),
        )
        .await
        .expect(200);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    let refresh_form =
        format!("grant_type=refresh_token&refresh_token={refresh}&client_id=docker&{SCOPES}");
    let r = app.post_form("/token", &refresh_form).await.expect(200);
    let claims = app.verify(r.json()["token"].as_str().unwrap()).await;
    assert_eq!(
        access(&claims),
        ["repository:ci/app:pull,push"],
        "a refresh token from a token login is bounded by the token"
    );

    // Disabled owner: refused at once, also through the refresh token.
    app.admin(
        "PATCH",
        "/api/v1/users/carl",
        Some(json!({"disabled": true})),
    )
    .await
    .expect(200);
    get(token.clone()).await.expect(401);
    app.admin(
        "PATCH",
        "/api/v1/users/carl",
        Some(json!({"disabled": false})),
    )
    .await
    .expect(200);
    get(token.clone()).await.expect(200);

    // A new login, then revocation: the token and the login's refresh token die.
    let r = app
        .get(
            "/token?service=registry&offline_token=true&client_id=docker",
            Some(&basic("carl", &token)),
        )
        .await
        .expect(200);
    let refresh = r.json()["refresh_token"].as_str().unwrap().to_owned();
    app.admin(
        "DELETE",
        &format!("/api/v1/users/carl/access-tokens/{id}"),
        None,
    )
    .await
    .expect(204);
    get(token.clone()).await.expect(401);
    let refresh_form = format!("grant_type=refresh_token&refresh_token={refresh}&client_id=docker");
    app.post_form("/token", &refresh_form).await.expect(401);
    app.admin(
        "DELETE",
        &format!("/api/v1/users/carl/access-tokens/{id}"),
        None,
    )
    .await
    .expect(404);

    // Expired.
    let made = own_token(
        &app,
        json!({"name": "short", "expires_in": "1s",
               "scopes": [{"pattern": "ci/*", "actions": ["pull"]}]}),
    )
    .await;
    let short = made["token"].as_str().unwrap().to_owned();
    get(short.clone()).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    get(short).await.expect(401);

    // Deleted owner: gone with its tokens.
    let (_, token) = ci_token(&app).await;
    app.admin("DELETE", "/api/v1/users/carl", None)
        .await
        .expect(204);
    get(token).await.expect(401);
}

#[tokio::test]
async fn expiry_defaults_and_never() {
    let app = with_carl().await;
    let scopes = json!([{"pattern": "ci/*", "actions": ["pull"]}]);
    let made = own_token(&app, json!({"name": "d", "scopes": scopes})).await;
    let expires = made["expires_at"].as_str().unwrap();
    let in_90_days = authd::util::rfc3339(authd::util::now() + 90 * 86_400);
    assert_eq!(&expires[..10], &in_90_days[..10], "90 days by default");
    app.api(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "n", "scopes": scopes, "expires_in": "never"})),
        &basic("carl", CARL_PW),
    )
    .await
    .expect(400);
    for bad in ["soon", "0d", "-1h"] {
        app.api(
            "POST",
            "/api/v1/tokens",
            Some(json!({"name": "n", "scopes": scopes, "expires_in": bad})),
            &basic("carl", CARL_PW),
        )
        .await
        .expect(400);
    }
    let app = TestApp::with(|c| c.access_tokens.allow_never = true).await;
    app.add_user("carl", CARL_PW).await;
    app.add_grant("carl", "ci/*", &["pull"]).await;
    let made = own_token(
        &app,
        json!({"name": "n", "scopes": scopes, "expires_in": "never"}),
    )
    .await;
    assert!(made["expires_at"].is_null());
    // The same name twice: 409.
    app.api(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "n", "scopes": scopes})),
        &basic("carl", CARL_PW),
    )
    .await
    .expect(409);
}

#[tokio::test]
async fn tokens_are_managed_with_a_password_and_never_open_the_admin_api_by_themselves() {
    let app = with_carl().await;
    let (id, token) = ci_token(&app).await;
    // A token cannot make or list tokens.
    app.api("GET", "/api/v1/tokens", None, &basic("carl", &token))
        .await
        .expect(403);
    app.api("GET", "/api/v1/tokens", None, "Bearer x.y.z")
        .await
        .expect(401);
    // carl cannot make an admin token, nor revoke someone else's.
    app.api(
        "POST",
        "/api/v1/tokens",
        Some(json!({"name": "adm", "admin": true,
                    "scopes": [{"pattern": "ci/*", "actions": ["pull"]}]})),
        &basic("carl", CARL_PW),
    )
    .await
    .expect(403);
    app.add_user("dora", "dora-password").await;
    app.api(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        None,
        &basic("dora", "dora-password"),
    )
    .await
    .expect(404);

    // An admin's token without the admin flag: no admin API, no admin scope.
    let made = app
        .admin(
            "POST",
            "/api/v1/users/admin/access-tokens",
            Some(json!({"name": "ci", "scopes": [{"pattern": "*", "actions": ["*"]}]})),
        )
        .await
        .expect(201)
        .json();
    let plain = made["token"].as_str().unwrap();
    app.api("GET", "/api/v1/users", None, &basic("admin", plain))
        .await
        .expect(403);
    let claims = app
        .token_claims(
            "service=registry&scope=authd:admin:*",
            Some(&basic("admin", plain)),
        )
        .await;
    assert!(access(&claims).is_empty());
    // With the flag, made by an admin: it does.
    let made = app
        .admin(
            "POST",
            "/api/v1/users/admin/access-tokens",
            Some(json!({"name": "ops", "admin": true,
                        "scopes": [{"pattern": "*", "actions": ["*"]}]})),
        )
        .await
        .expect(201)
        .json();
    let admin_token = made["token"].as_str().unwrap();
    app.api("GET", "/api/v1/users", None, &basic("admin", admin_token))
        .await
        .expect(200);
    let claims = app
        .token_claims(
            "service=registry&scope=authd:admin:*",
            Some(&basic("admin", admin_token)),
        )
        .await;
    assert_eq!(access(&claims), ["authd:admin:*"]);
    // An admin token for a non-admin: refused.
    app.admin(
        "POST",
        "/api/v1/users/carl/access-tokens",
        Some(json!({"name": "x", "admin": true,
                    "scopes": [{"pattern": "ci/*", "actions": ["pull"]}]})),
    )
    .await
    .expect(400);
    // Admins see every token; the audit log has the creations and the revocation.
    let all = app
        .admin("GET", "/api/v1/access-tokens", None)
        .await
        .expect(200)
        .json();
    assert_eq!(all.as_array().unwrap().len(), 3);
    app.api(
        "DELETE",
        &format!("/api/v1/tokens/{id}"),
        None,
        &basic("carl", CARL_PW),
    )
    .await
    .expect(204);
    let audit = app.admin("GET", "/api/v1/audit", None).await.json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"access_token.create"), "{actions:?}");
    assert!(actions.contains(&"access_token.revoke"), "{actions:?}");
    assert!(
        !audit.to_string().contains(&token[4..]),
        "no secret in the audit log"
    );
}

#[tokio::test]
async fn robots_log_in_with_their_tokens_only() {
    let app = TestApp::new().await;
    let r = app
        .admin(
            "POST",
            "/api/v1/users",
            Some(json!({"name": "ci-bot", "robot": true})),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(r["robot"], true);
    assert_eq!(r["password_format"], "none");
    app.admin(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "x", "robot": true, "password": "p4ssw0rd-long"})),
    )
    .await
    .expect(400);
    app.admin("POST", "/api/v1/users", Some(json!({"name": "y"})))
        .await
        .expect(400);
    app.add_grant("ci-bot", "ci/*", &["pull", "push"]).await;
    let made = app
        .admin(
            "POST",
            "/api/v1/users/ci-bot/access-tokens",
            Some(json!({"name": "pipeline", "scopes": [{"pattern": "ci/*", "actions": ["push", "pull"]}]})),
        )
        .await
        .expect(201)
        .json();
    assert_eq!(made["created_by"], "api:admin");
    let token = made["token"].as_str().unwrap();
    let claims = app
        .token_claims(
            "service=registry&scope=repository:ci/a:push",
            Some(&basic("ci-bot", token)),
        )
        .await;
    assert_eq!(access(&claims), ["repository:ci/a:push"]);
    // No password works, not even one set later by an admin.
    app.get("/token?service=registry", Some(&basic("ci-bot", "!")))
        .await
        .expect(401);
    app.admin(
        "PATCH",
        "/api/v1/users/ci-bot",
        Some(json!({"password": "a-new-password"})),
    )
    .await
    .expect(200);
    app.get(
        "/token?service=registry",
        Some(&basic("ci-bot", "a-new-password")),
    )
    .await
    .expect(401);
    app.api(
        "GET",
        "/api/v1/tokens",
        None,
        &basic("ci-bot", "a-new-password"),
    )
    .await
    .expect(401);
}

#[tokio::test]
async fn groups_union_membership_and_effective_permissions() {
    let app = TestApp::new().await;
    app.add_user("gus", "gus-password").await;
    // A grant to a group that does not exist: 404; bad names: 400.
    let r = app
        .admin(
            "POST",
            "/api/v1/grants",
            Some(json!({"subject": "@devs", "pattern": "dev/*", "actions": ["pull"]})),
        )
        .await;
    r.expect(404);
    app.admin("POST", "/api/v1/groups", Some(json!({"name": "Dev Team"})))
        .await
        .expect(400);
    app.admin(
        "POST",
        "/api/v1/users",
        Some(json!({"name": "@devs", "password": "p4ssw0rd-long"})),
    )
    .await
    .expect(400);
    for g in ["devs", "@ops"] {
        app.admin("POST", "/api/v1/groups", Some(json!({"name": g})))
            .await
            .expect(201);
    }
    app.admin("POST", "/api/v1/groups", Some(json!({"name": "devs"})))
        .await
        .expect(409);
    app.add_grant("@devs", "dev/*", &["pull", "push"]).await;
    app.add_grant("@ops", "ops/*", &["pull"]).await;
    app.add_grant("@ops", "dev/*", &["delete"]).await;
    for g in ["devs", "ops"] {
        app.admin("PUT", &format!("/api/v1/groups/{g}/members/gus"), None)
            .await
            .expect(201);
    }
    app.admin("PUT", "/api/v1/groups/devs/members/gus", None)
        .await
        .expect(204);
    app.admin("PUT", "/api/v1/groups/devs/members/nobody", None)
        .await
        .expect(404);

    let q =
        "service=registry&scope=repository:dev/a:pull,push,delete&scope=repository:ops/a:pull,push";
    let pw = basic("gus", "gus-password");
    let claims = app.token_claims(q, Some(&pw)).await;
    assert_eq!(
        access(&claims),
        ["repository:dev/a:pull,push,delete", "repository:ops/a:pull"],
        "the union of both groups"
    );
    let perms = app
        .admin("GET", "/api/v1/users/gus/permissions", None)
        .await
        .expect(200)
        .json();
    assert_eq!(perms["groups"], json!(["@devs", "@ops"]));
    assert_eq!(perms["grants"].as_array().unwrap().len(), 3);
    let listed = app.admin("GET", "/api/v1/groups", None).await.json();
    assert_eq!(listed[0]["members"], json!(["gus"]));

    // Leaving a group through the API applies at once.
    app.admin("DELETE", "/api/v1/groups/ops/members/gus", None)
        .await
        .expect(204);
    let claims = app.token_claims(q, Some(&pw)).await;
    assert_eq!(access(&claims), ["repository:dev/a:pull,push"]);
    app.admin("DELETE", "/api/v1/groups/ops/members/gus", None)
        .await
        .expect(404);
    // Deleting a group deletes its grants.
    app.admin("DELETE", "/api/v1/groups/devs", None)
        .await
        .expect(204);
    let claims = app.token_claims(q, Some(&pw)).await;
    assert!(access(&claims).is_empty());
    let grants = app
        .admin("GET", "/api/v1/grants?subject=@devs", None)
        .await
        .json();
    assert_eq!(grants, json!([]));
    let audit = app
        .admin("GET", "/api/v1/audit", None)
        .await
        .json()
        .to_string();
    for action in [
        "group.create",
        "group.member.add",
        "group.member.remove",
        "group.delete",
    ] {
        assert!(audit.contains(action), "{action}");
    }
}
