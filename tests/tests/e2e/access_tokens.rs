//! Access tokens and groups end to end (issue 14): authd and our registry,
//! with real clients using an access token (`rgt_…`) as the password.
//!
//! - docker: `docker login -u NAME --password-stdin` with a CI token that
//!   holds push on `ci/*`; pushes there, is refused elsewhere; revoking the
//!   token ends the login's refresh token at once.
//! - skopeo (`--dest-creds` / `--src-creds`, GET flow): the same scope
//!   limits; an expired token, a revoked token and a disabled owner's token
//!   are refused at once; a token never gets more than its owner holds, also
//!   after the owner loses a grant.
//! - containerd (`ctr --user NAME:TOKEN`, the OAuth2 password grant): pull
//!   and push within the scopes, refused outside them.
//! - groups: a user in two groups gets the union of their grants; leaving a
//!   group through the CLI (another process) applies to new tokens within
//!   2 s.
//!
//! `docker_*` tests join the `dockerd` test group of tests/nextest.toml.

use std::time::{Duration, Instant};

use e2e::fixtures::{OciImage, random_name, read_oci_layout};
use e2e::{CommandExt, Containerd, Dockerd, Skopeo};
use reqwest::Method;
use serde_json::json;

use crate::token_flow::{Stack, assert_refused};

const CARL: &str = "carl";
const CARL_PASSWORD: &str = "carl-password-1";

/// A stack with carl, who may push to `ci/*` and `other/*`.
fn stack_with_carl() -> Stack {
    let stack = Stack::start();
    stack.authd.add_user(CARL, CARL_PASSWORD);
    stack.authd.grant(CARL, "ci/*", &["pull", "push"]);
    stack.authd.grant(CARL, "other/*", &["pull", "push"]);
    stack
}

/// carl makes his own token through `/api/v1/tokens` with his password.
fn own_ci_token(stack: &Stack) -> (String, String) {
    let resp = e2e::Api::new(stack.authd.url())
        .basic(CARL, CARL_PASSWORD)
        .request(Method::POST, "/api/v1/tokens")
        .json(&json!({
            "name": "ci",
            "scopes": [{ "pattern": "ci/*", "actions": ["pull", "push"] }],
        }))
        .send()
        .expect("POST /api/v1/tokens");
    assert_eq!(resp.status(), 201, "carl makes his own token");
    let made: serde_json::Value = resp.json().expect("token JSON");
    let token = made["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("rgt_"), "{token}");
    (made["id"].as_str().expect("id").to_owned(), token)
}

/// docker with a CI token: pushes to `ci/*`, is refused on `other/*`
/// (which carl himself may push to), and revoking the token ends the
/// login (its refresh token) at once.
#[test]
fn docker_login_with_ci_token_pushes_to_ci_only_until_revoked() {
    let stack = stack_with_carl();
    let (authd, reg) = (&stack.authd, &stack.reg);
    let (id, token) = own_ci_token(&stack);

    let docker = Dockerd::start();
    let ci = stack.image("ci/app:1");
    let other = stack.image("other/app:1");
    docker.import_busybox(&ci, &random_name(16));
    docker.docker().args(["tag", &ci, &other]).ok();

    let out = docker.login(reg.host(), CARL, &token);
    assert!(
        out.status.success(),
        "docker login with an access token:\n{}",
        e2e::process::describe_output(&out)
    );
    let raw =
        String::from_utf8_lossy(&e2e::read(&docker.config_dir().join("config.json"))).into_owned();
    assert!(!raw.contains(&token), "config.json holds the access token");
    let pushed = docker.push(&ci);
    assert_eq!(stack.digest("ci/app", "1"), Some(pushed));
    let out = docker.docker().args(["push", &other]).run();
    assert_refused(&out, "docker push outside the token's scopes");
    assert_eq!(stack.digest("other/app", "1"), None, "nothing written");

    let (status, _) = authd.admin_call(
        Method::DELETE,
        &format!("/users/{CARL}/access-tokens/{id}"),
        None,
    );
    assert_eq!(status, 204, "revoke");
    assert!(
        authd.refresh_token_ids(CARL).is_empty(),
        "the login's refresh token went with the access token"
    );
    let ci2 = stack.image("ci/app:2");
    docker.docker().args(["tag", &ci, &ci2]).ok();
    let out = docker.docker().args(["push", &ci2]).run();
    assert_refused(&out, "docker push after the token was revoked");
    let out = docker.login(reg.host(), CARL, &token);
    assert!(!out.status.success(), "docker login with a revoked token");
}

/// skopeo with access tokens as `--dest-creds` / `--src-creds`: scope
/// limits, expiry, revocation, a disabled owner, and an owner who loses a
/// grant — each refused at once.
#[test]
fn skopeo_tokens_are_bounded_by_scopes_expiry_revocation_and_owner() {
    let stack = stack_with_carl();
    let authd = &stack.authd;
    let skopeo = Skopeo::new();
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[20_000]);
    let dest = |name: &str| format!("docker://{}", stack.image(name));
    let creds = |token: &str| format!("{CARL}:{token}");

    let (_, token) = own_ci_token(&stack);
    skopeo.copy(
        &image.reference(),
        &dest("ci/tool:v1"),
        &["--dest-creds", &creds(&token)],
    );
    assert_eq!(
        stack.digest("ci/tool", "v1"),
        Some(image.manifest_digest.clone())
    );
    let pulled = skopeo.scratch("pulled");
    skopeo.copy(
        &dest("ci/tool:v1"),
        &format!("oci:{}:v1", pulled.display()),
        &["--src-creds", &creds(&token)],
    );
    assert_eq!(
        read_oci_layout(&pulled, Some("v1")).manifest_digest,
        image.manifest_digest
    );
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &dest("other/tool:v1"),
            &["--dest-creds", &creds(&token)],
        )
        .run();
    assert_refused(&out, "skopeo push outside the token's scopes");
    // Another user's name with carl's token: refused.
    authd.add_user("dora", "dora-password-1");
    authd.grant("dora", "ci/*", &["pull", "push"]);
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &dest("ci/tool:v2"),
            &["--dest-creds", &format!("dora:{token}")],
        )
        .run();
    assert_refused(&out, "a token under another user's name");

    // Expired: a token for 2 s works, then is refused.
    let (_, short) = authd.access_token(CARL, "short", &[("ci/*", "pull,push")], Some("2s"));
    skopeo.copy(
        &image.reference(),
        &dest("ci/tool:v3"),
        &["--dest-creds", &creds(&short)],
    );
    std::thread::sleep(Duration::from_millis(2_100));
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &dest("ci/tool:v4"),
            &["--dest-creds", &creds(&short)],
        )
        .run();
    assert_refused(&out, "an expired token");

    // Revoked: refused at once.
    let (id, revoked) = authd.access_token(CARL, "revoked", &[("ci/*", "pull,push")], None);
    let (status, _) = authd.admin_call(
        Method::DELETE,
        &format!("/users/{CARL}/access-tokens/{id}"),
        None,
    );
    assert_eq!(status, 204);
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &dest("ci/tool:v5"),
            &["--dest-creds", &creds(&revoked)],
        )
        .run();
    assert_refused(&out, "a revoked token");

    // Disabled owner: refused at once, back when enabled again.
    let disable = |on: bool| {
        let (status, body) = authd.admin_call(
            Method::PATCH,
            &format!("/users/{CARL}"),
            Some(&json!({ "disabled": on })),
        );
        assert_eq!(status, 200, "{body}");
    };
    disable(true);
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &dest("ci/tool:v6"),
            &["--dest-creds", &creds(&token)],
        )
        .run();
    assert_refused(&out, "the token of a disabled user");
    disable(false);
    skopeo.copy(
        &image.reference(),
        &dest("ci/tool:v6"),
        &["--dest-creds", &creds(&token)],
    );

    // The owner loses push on ci/*: the token loses it too, at once, and
    // keeps what carl still holds (pull through a new grant).
    let (_, grants) = authd.admin_call(Method::GET, &format!("/grants?subject={CARL}"), None);
    let ci_grant = grants
        .as_array()
        .expect("grant list")
        .iter()
        .find(|g| g["pattern"] == "ci/*")
        .expect("carl's ci/* grant")["id"]
        .as_i64()
        .expect("id");
    authd.grant(CARL, "ci/tool", &["pull"]);
    let (status, _) = authd.admin_call(Method::DELETE, &format!("/grants/{ci_grant}"), None);
    assert_eq!(status, 204);
    let out = skopeo
        .copy_cmd(
            &image.reference(),
            &dest("ci/tool:v7"),
            &["--dest-creds", &creds(&token)],
        )
        .run();
    assert_refused(&out, "a push the owner no longer holds");
    assert_eq!(stack.digest("ci/tool", "v7"), None);
    let again = skopeo.scratch("again");
    skopeo.copy(
        &dest("ci/tool:v1"),
        &format!("oci:{}:v1", again.display()),
        &["--src-creds", &creds(&token)],
    );

    // A token wider than its owner cannot even be made.
    let (status, body) = authd.admin_call(
        Method::POST,
        &format!("/users/{CARL}/access-tokens"),
        Some(&json!({ "name": "wide", "scopes": [{ "pattern": "*", "actions": ["pull"] }] })),
    );
    assert_eq!(status, 403, "{body}");
}

/// containerd (`ctr --user NAME:TOKEN`, POST /token with
/// grant_type=password): pulls and pushes within the token's scopes, is
/// refused outside them.
#[test]
fn containerd_ctr_with_access_token() {
    let stack = stack_with_carl();
    let skopeo = Skopeo::new();
    let image = OciImage::generate(&skopeo.scratch("src"), "v1", &[20_000]);
    skopeo.copy(
        &image.reference(),
        &format!("docker://{}", stack.image("ci/base:v1")),
        &["--dest-creds", &format!("{CARL}:{CARL_PASSWORD}")],
    );
    let (_, token) = own_ci_token(&stack);
    let user = format!("{CARL}:{token}");
    let ctrd = Containerd::start();
    let base = stack.image("ci/base:v1");
    ctrd.ctr()
        .args([
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            "--user",
            &user,
            &base,
        ])
        .ok();
    let copy = stack.image("ci/copy:v1");
    ctrd.ctr().args(["images", "tag", &base, &copy]).ok();
    ctrd.ctr()
        .args(["images", "push", "--plain-http", "--user", &user, &copy])
        .ok();
    assert_eq!(
        stack.digest("ci/copy", "v1"),
        Some(image.manifest_digest.clone())
    );

    let other = stack.image("other/copy:v1");
    ctrd.ctr().args(["images", "tag", &base, &other]).ok();
    let out = ctrd
        .ctr()
        .args(["images", "push", "--plain-http", "--user", &user, &other])
        .run();
    assert!(
        !out.status.success(),
        "ctr push outside the token's scopes succeeded"
    );
    assert_eq!(stack.digest("other/copy", "v1"), None);
    let out = ctrd
        .ctr()
        .args([
            "images",
            "push",
            "--plain-http",
            "--user",
            &format!("{CARL}:rgt_wrong"),
            &copy,
        ])
        .run();
    assert!(
        !out.status.success(),
        "ctr push with a wrong token succeeded"
    );
}

/// Groups: a user in two groups gets the union of their grants; leaving
/// one through the CLI (another process, so no cache clearing) applies to
/// new tokens within 2 s.
#[test]
fn groups_union_and_leaving_applies_within_two_seconds() {
    let stack = Stack::start();
    let authd = &stack.authd;
    authd.add_user("gus", "gus-password-1");
    for (group, pattern) in [("devs", "dev/*"), ("ops", "ops/*")] {
        authd.cli().args(["group", "add", group]).ok();
        authd
            .cli()
            .args(["group", "member", "add", group, "gus"])
            .ok();
        authd.grant(&format!("@{group}"), pattern, &["pull", "push"]);
    }
    let (_, token) = authd.access_token(
        "gus",
        "ci",
        &[("dev/*", "pull,push"), ("ops/*", "pull,push")],
        None,
    );
    let access = |password: &str| -> Vec<String> {
        let jwt = authd.token(
            Some(("gus", password)),
            &[
                "repository:dev/app:push",
                "repository:ops/app:push",
                "repository:qa/app:pull",
            ],
        );
        crate::token_flow::jwt_claims(&jwt)["access"]
            .as_array()
            .expect("access")
            .iter()
            .map(|a| a["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(
        access("gus-password-1"),
        ["dev/app", "ops/app"],
        "union of both groups"
    );
    assert_eq!(
        access(&token),
        ["dev/app", "ops/app"],
        "the token gets the union too"
    );
    let shown = authd.cli().args(["user", "show", "gus", "--json"]).ok();
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("user show JSON");
    assert_eq!(shown["groups"], json!(["@devs", "@ops"]), "{shown}");

    authd
        .cli()
        .args(["group", "member", "del", "ops", "gus"])
        .ok();
    let left = Instant::now();
    while access(&token) != ["dev/app"] {
        assert!(
            left.elapsed() < Duration::from_millis(2_500),
            "leaving a group did not apply within 2 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("e2e: leaving the group applied after {:?}", left.elapsed());
    assert_eq!(access("gus-password-1"), ["dev/app"]);
}
