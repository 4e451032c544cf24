//! The web UI (issue 13) in a real browser: headless Chromium over
//! WebDriver against authd and the registry started by the test. Every
//! effect is checked through the registry's API or authd's admin API.
//! Screenshots of the main pages go to `target/ui-screenshots/`.

use e2e::browser::Browser;
use e2e::fixtures::{HtpasswdHash, htpasswd, random_bytes};
use e2e::{Api, Authd, Impl, Registry};
use reqwest::Method;
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// authd and a registry trusting it, with deletes on.
struct Stack {
    authd: Authd,
    reg: Registry,
    _dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let authd = Authd::builder().fast_password_hashing().start();
        let dir = e2e::temp_dir("ui");
        let auth = authd.registry_auth(Impl::Ours, &dir.path().join("authd.pem"));
        let reg = Registry::builder().auth(auth).delete_enabled(true).start();
        Stack {
            authd,
            reg,
            _dir: dir,
        }
    }

    fn ui(&self, path: &str) -> String {
        format!("{}{path}", self.reg.url())
    }

    /// The registry's API as the admin, for `scopes`.
    fn api(&self, scopes: &[&str]) -> Api {
        let (u, p) = self.authd.admin_credentials();
        let token = self.authd.token(Some((&u, &p)), scopes);
        self.reg.api().bearer(&token)
    }

    /// Pushes a one-layer image for `arch`; returns its digest and size.
    fn push_image(&self, repo: &str, tag: &str, arch: &str) -> (String, usize) {
        let api = self.api(&[&format!("repository:{repo}:pull,push")]);
        let layer = random_bytes(2000);
        let layer_digest = api.push_blob(repo, &layer);
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "created": "2026-01-02T03:04:05Z",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": "2026-01-02T03:04:05Z", "created_by": format!("/bin/sh -c #(nop) ADD file:{arch}")}],
        }))
        .expect("config JSON");
        let config_digest = api.push_blob(repo, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .expect("manifest JSON");
        let digest = api.put_manifest(repo, tag, OCI_MANIFEST, &manifest);
        (digest, manifest.len())
    }

    /// Pushes a two-platform index as `repo:tag` and a signature referring
    /// to it; returns the index digest.
    fn push_multi_arch(&self, repo: &str, tag: &str) -> String {
        let (amd, amd_size) = self.push_image(repo, "amd64-build", "amd64");
        let (arm, arm_size) = self.push_image(repo, "arm64-build", "arm64");
        let api = self.api(&[&format!("repository:{repo}:pull,push,delete")]);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": amd, "size": amd_size, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "digest": arm, "size": arm_size, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            ],
        }))
        .expect("index JSON");
        let digest = api.put_manifest(repo, tag, OCI_INDEX, &index);
        // The per-platform builds were only staging tags.
        for t in ["amd64-build", "arm64-build"] {
            let resp = api
                .request(Method::DELETE, &format!("/v2/{repo}/manifests/{t}"))
                .send()
                .expect("DELETE tag");
            assert_eq!(resp.status(), 202, "DELETE tag {t}");
        }
        let empty = b"{}";
        let empty_digest = api.push_blob(repo, empty);
        let signature = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_digest, "size": 2}],
            "subject": {"mediaType": OCI_INDEX, "digest": digest, "size": index.len()},
        }))
        .expect("signature JSON");
        let sig_digest = e2e::digest::sha256(&signature);
        api.put_manifest(repo, &sig_digest, OCI_MANIFEST, &signature);
        digest
    }

    fn tags(&self, repo: &str) -> Vec<String> {
        self.api(&[&format!("repository:{repo}:pull")])
            .tags(repo, 100)
    }

    fn sign_in(&self, b: &Browser, user: &str, password: &str) {
        b.goto(&self.ui("/ui/login"));
        b.fill("#username", user);
        // Enter submits the form.
        b.fill("#password", &format!("{password}\n"));
    }
}

/// The repository names listed on the current page.
fn listed(b: &Browser) -> Vec<String> {
    b.texts("#repositories tbody td:first-child")
}

#[test]
fn sign_in_search_browse_multi_arch_delete_after_preview_and_sign_out() {
    let s = Stack::start();
    let index = s.push_multi_arch("team/app", "1.0");
    // A second tag on the same index, and an image of its own.
    let api = s.api(&["repository:team/app:pull,push,delete"]);
    let (body, ct) = api.manifest("team/app", "1.0");
    api.put_manifest("team/app", "latest", &ct, &body);
    let (old, _) = s.push_image("team/app", "old", "amd64");
    s.push_image("team/tools", "1", "amd64");
    s.push_image("public/hello", "1", "amd64");
    s.authd.grant("anonymous", "public/*", &["pull"]);

    let b = Browser::start();
    // Signed out: only what anonymous may pull.
    b.goto(&s.ui("/"));
    b.wait_for("h1");
    assert_eq!(listed(&b), ["public/hello"]);
    b.screenshot("01-repositories-anonymous");

    let (admin, password) = s.authd.admin_credentials();
    s.sign_in(&b, &admin, &password);
    b.wait_for("#signed-in-user");
    assert_eq!(b.text("#signed-in-user"), admin);
    assert_eq!(listed(&b), ["public/hello", "team/app", "team/tools"]);
    assert_eq!(
        s.authd.refresh_token_ids(&admin).len(),
        1,
        "the sign-in made one refresh token"
    );
    b.screenshot("02-repositories-admin");

    // Server-side search.
    b.fill("#q", "app\n");
    b.wait_for("#repositories");
    assert!(b.url().contains("q=app"), "{}", b.url());
    assert_eq!(listed(&b), ["team/app"]);
    b.screenshot("03-search");

    // Tags, with one row per platform of the index.
    b.click_link("team/app");
    b.wait_for("#tags");
    let tags: Vec<String> = b.texts("#tags tr.tag th");
    assert_eq!(tags, ["1.0", "latest", "old"]);
    let platforms = b.texts("#tags tr.platform td:first-child");
    assert_eq!(
        platforms,
        [
            "linux/amd64",
            "linux/arm64/v8",
            "linux/amd64",
            "linux/arm64/v8"
        ]
    );
    let page = b.source();
    assert!(
        page.contains(&format!("docker pull {}/team/app:1.0", s.reg.host())),
        "pull command with the tag"
    );
    assert!(page.contains(&index), "the index digest is shown");
    b.screenshot("04-tags");

    // The index: platforms and its signature with raw JSON.
    b.click_link("1.0");
    b.wait_for("#platforms");
    assert_eq!(
        b.texts("#platforms tbody td:first-child"),
        ["linux/amd64", "linux/arm64/v8"]
    );
    assert!(
        b.text("#referrers")
            .contains("application/vnd.dev.cosign.simplesigning.v1+json")
    );
    assert!(
        b.source().contains(&format!("team/app@{index}")),
        "repo@digest to copy"
    );
    b.screenshot("05-index");
    // One platform: layers, config and history.
    b.click_link("linux/arm64/v8");
    b.wait_for("#layers");
    assert_eq!(b.texts("#layers tbody tr").len(), 1);
    assert!(b.text("#history").contains("ADD file:arm64"));
    b.screenshot("06-platform");

    // Deleting `latest` (one of two tags of the index): only the tag goes.
    b.goto(&s.ui("/ui/delete?name=team/app&ref=latest"));
    b.wait_for("#plan");
    assert_eq!(b.texts("#plan li"), ["Tag latest"]);
    assert!(b.text("#other-tags").contains("1.0"));
    b.screenshot("07-delete-preview-shared-digest");
    b.click("#confirm-delete");
    b.wait_for("#tags");
    assert_eq!(s.tags("team/app"), ["1.0", "old"]);
    assert_eq!(
        s.api(&["repository:team/app:pull"])
            .manifest_digest("team/app", "1.0"),
        Some(index.clone())
    );

    // Deleting `old`, the last tag of its image: the manifest goes, and the
    // preview says what GC frees.
    b.goto(&s.ui("/ui/delete?name=team/app&ref=old"));
    b.wait_for("#plan");
    let plan = b.texts("#plan li");
    assert_eq!(plan, ["Tag old".to_owned(), format!("Manifest {old}")]);
    let freed = b.text("#freed");
    assert!(
        freed.contains("(2 blobs") || freed.contains("(3 blobs"),
        "layer, config (and manifest) are freed: {freed}"
    );
    b.screenshot("08-delete-preview-last-tag");
    b.click("#confirm-delete");
    b.wait_for("#tags");
    assert_eq!(s.tags("team/app"), ["1.0"]);
    assert_eq!(
        s.api(&["repository:team/app:pull"])
            .manifest_digest("team/app", &old),
        None
    );

    // Deleting the only manifest of team/tools empties it: it leaves the list.
    b.goto(&s.ui("/ui/delete?name=team/tools&ref=1"));
    b.wait_for("#confirm-delete");
    b.click("#confirm-delete");
    b.wait_for("#repositories");
    assert_eq!(listed(&b), ["public/hello", "team/app"]);
    assert_eq!(
        s.api(&["registry:catalog:*"]).catalog(100),
        ["public/hello", "team/app"]
    );

    // Sign out revokes the session's refresh token at authd.
    b.click(".who button");
    b.wait_for("a.button[href='/ui/login']");
    assert!(
        s.authd.refresh_token_ids(&admin).is_empty(),
        "sign-out revoked the refresh token"
    );
    assert_eq!(listed(&b), ["public/hello"]);
}

#[test]
fn admin_pages_add_user_grant_import_and_revoke_tokens() {
    let s = Stack::start();
    let b = Browser::start();
    let (admin, password) = s.authd.admin_credentials();
    s.sign_in(&b, &admin, &password);
    b.wait_for("#signed-in-user");

    // Add a user.
    b.goto(&s.ui("/ui/admin/users"));
    b.fill("#new-name", "bob");
    b.fill("#new-password", "Bob-password-1");
    b.click("#add-user");
    b.wait_for("#done");
    let (status, user) = s.authd.admin_call(Method::GET, "/users/bob", None);
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["admin"], false);
    b.screenshot("10-users");

    // A grant for bob, seen through the admin API and as effective
    // permissions on a repository.
    b.click_link("bob");
    b.wait_for("#grant-pattern");
    b.fill("#grant-pattern", "bob/*");
    b.toggle("#user-grant-push");
    b.click("#add-grant");
    b.wait_for("#done");
    let (_, grants) = s.authd.admin_call(Method::GET, "/grants?subject=bob", None);
    let g = &grants[0];
    assert_eq!(
        (g["pattern"].as_str(), g["actions"].clone()),
        (Some("bob/*"), json!(["pull", "push"])),
        "{grants}"
    );
    b.goto(&s.ui("/ui/admin/grants?repo=bob/app"));
    b.wait_for("#effective");
    assert!(
        b.text("#effective").contains("bob pull, push"),
        "{}",
        b.text("#effective")
    );
    b.screenshot("11-grants");

    // An htpasswd import with its report.
    let dir = e2e::temp_dir("ui-import");
    let file = dir.path().join("htpasswd");
    htpasswd(&file, "carol", "Carol-password-1", HtpasswdHash::Bcrypt);
    htpasswd(&file, "dave", "Dave-password-1", HtpasswdHash::Apr1);
    let content = String::from_utf8(e2e::read(&file)).expect("htpasswd is text");
    b.goto(&s.ui("/ui/admin/import"));
    b.fill("#htpasswd", &content);
    b.click("#import");
    b.wait_for("#import-report");
    assert_eq!(b.text("#imported"), "2");
    b.screenshot("12-import");
    for u in ["carol", "dave"] {
        assert_eq!(
            s.authd
                .admin_call(Method::GET, &format!("/users/{u}"), None)
                .0,
            200,
            "{u} imported"
        );
    }

    // bob's tokens: a login (refresh token) and an access token, revoked.
    let token = s.authd.token(Some(("bob", "Bob-password-1")), &[]);
    assert!(!token.is_empty());
    let resp = Api::new(s.authd.url())
        .request(Method::POST, "/token")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=password&username=bob&password=Bob-password-1&client_id=laptop&access_type=offline")
        .send()
        .expect("POST /token");
    assert_eq!(resp.status(), 200);
    let (access_id, _) = s
        .authd
        .access_token("bob", "ci", &[("bob/*", "pull")], None);
    assert_eq!(s.authd.refresh_token_ids("bob").len(), 1);
    b.goto(&s.ui("/ui/admin/user?name=bob"));
    b.wait_for("#refresh-tokens");
    assert!(b.text("#refresh-tokens").contains("laptop"));
    assert!(b.text("#access-tokens").contains("ci"));
    b.screenshot("13-user");
    b.click("#refresh-tokens button");
    b.wait_for("#done");
    assert!(
        s.authd.refresh_token_ids("bob").is_empty(),
        "refresh token revoked"
    );
    b.click("#access-tokens button");
    b.wait_for("#done");
    let (_, list) = s
        .authd
        .admin_call(Method::GET, "/users/bob/access-tokens", None);
    assert!(
        !list
            .as_array()
            .expect("a list")
            .iter()
            .any(|t| t["id"] == Value::String(access_id.clone())),
        "access token revoked: {list}"
    );

    // Disable bob.
    b.toggle("#flag-disabled");
    b.click("#save-flags");
    b.wait_for("#done");
    assert_eq!(
        s.authd.admin_call(Method::GET, "/users/bob", None).1["disabled"],
        true
    );

    // The audit trail shows it all.
    b.goto(&s.ui("/ui/admin/audit"));
    b.wait_for("#audit");
    let audit = b.text("#audit");
    for action in [
        "user.create",
        "grant.create",
        "htpasswd.import",
        "token.revoke",
    ] {
        assert!(audit.contains(action), "{action} in the audit page");
    }
    b.screenshot("14-audit");

    // Garbage collection, and its last run.
    b.goto(&s.ui("/ui/gc"));
    b.fill("#grace", "0s");
    b.toggle("#dry");
    b.click("form[action='/ui/gc'] button");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !b.text("#gc-last").contains("scanned") {
        assert!(
            std::time::Instant::now() < deadline,
            "GC did not finish: {}",
            b.text("#gc-last")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        b.goto(&s.ui("/ui/gc"));
    }
    b.screenshot("15-gc");
}

#[test]
fn non_admins_see_no_admin_pages_and_a_wrong_password_only_an_error() {
    let s = Stack::start();
    s.authd.add_user("alice", "Alice-password-1");
    s.authd.grant("alice", "alice/*", &["pull", "push"]);
    s.push_image("alice/app", "1", "amd64");
    s.push_image("secret/app", "1", "amd64");
    let b = Browser::start();

    // A wrong password: an error, no session, nothing listed.
    s.sign_in(&b, "alice", "wrong-password");
    b.wait_for("#login-error");
    assert_eq!(b.text("#login-error"), "wrong user name or password");
    assert!(!b.exists("#signed-in-user") && !b.exists("#repositories"));
    assert!(s.authd.refresh_token_ids("alice").is_empty());
    b.screenshot("20-wrong-password");

    s.sign_in(&b, "alice", "Alice-password-1");
    b.wait_for("#signed-in-user");
    assert_eq!(listed(&b), ["alice/app"]);
    assert!(
        !b.exists("a[href='/ui/admin/users']"),
        "no admin links for a non-admin"
    );
    b.goto(&s.ui("/ui/admin/users"));
    b.wait_for("p.error");
    assert!(!b.exists("#users"));
    assert!(b.source().contains("for authd's admins"));
    b.screenshot("21-non-admin");
    // authd refuses alice's own credentials on the admin API too.
    let resp = Api::new(s.authd.url())
        .basic("alice", "Alice-password-1")
        .get("/api/v1/users");
    assert_eq!(resp.status(), 403);
    // And a repository she may not pull is not there for her.
    b.goto(&s.ui("/ui/repo?name=secret/app"));
    b.wait_for("p.error");
    assert!(!b.exists("#tags"));
    // No delete button without `delete`.
    b.goto(&s.ui("/ui/repo?name=alice/app"));
    b.wait_for("#tags");
    assert!(!b.exists("a.button.danger"));
}
