//! The web UI in-process (`auth: none`, deletes on): pages render from
//! storage, search works server-side, and every state-changing form is
//! refused unless it comes from our origin with the session's CSRF token —
//! with nothing deleted when refused. (Sign-in, per-user filtering and the
//! admin pages need authd: see the browser tests in `tests/tests/e2e/ui.rs`.)

mod support;

use http::{Method, StatusCode};
use support::*;

const YAML: &str = "storage:\n  delete:\n    enabled: true\n";

/// The value of `name="field"`'s `value` attribute in a page.
fn field(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').expect("closing quote")].to_owned()
}

/// The `registry_csrf=…` pair a page set.
fn presession(resp: &TestResponse) -> String {
    resp.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("registry_csrf="))
        .and_then(|c| c.split(';').next())
        .expect("a pre-session cookie")
        .to_owned()
}

fn text(resp: &TestResponse) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

#[tokio::test]
async fn pages_list_search_and_show_tags() {
    let app = TestApp::with_config(YAML).await;
    app.push_image("team/app", "1.0", "a").await;
    app.push_image("team/tools", "2", "b").await;

    let r = app.get("/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(r.header("location"), Some("/ui/"));

    let r = app.get("/ui/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'"))
    );
    let page = text(&r);
    assert!(
        page.contains(">team/app<") && page.contains(">team/tools<"),
        "{page}"
    );

    let page = text(&app.get("/ui/?q=tool").await);
    assert!(page.contains(">team/tools<") && !page.contains(">team/app<"));
    let page = text(&app.get("/ui/?q=tool&sort=pushed").await);
    assert!(page.contains(">team/tools<") && !page.contains(">team/app<"));

    let r = app.get("/ui/repo?name=team/app").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains("data-tag=\"1.0\""));
    // Names the registry would refuse are a 404 page, not a storage lookup.
    let r = app.get("/ui/repo?name=../etc").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get("/ui/manifest?name=team/app&ref=nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deletes_need_our_origin_and_the_csrf_token() {
    let app = TestApp::with_config(YAML).await;
    app.push_image("team/app", "1.0", "a").await;
    let preview = app.get("/ui/delete?name=team/app&ref=1.0").await;
    assert_eq!(preview.status, StatusCode::OK);
    let page = text(&preview);
    let cookie = presession(&preview);
    let csrf = field(&page, "csrf");
    let plan = field(&page, "plan");
    let form = |csrf: &str, plan: &str| {
        format!(
            "csrf={}&name=team%2Fapp&ref=1.0&manifest=1&plan={plan}",
            csrf.replace('=', "%3D")
        )
    };
    let post = |headers: Vec<(&'static str, String)>, body: String| {
        let app = &app;
        async move {
            let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            h.push(("content-type", "application/x-www-form-urlencoded"));
            h.push(("host", "reg.test"));
            app.request(Method::POST, "/ui/delete", &h, body).await
        }
    };
    let still_there = || async {
        app.get("/v2/team/app/tags/list").await.json()["tags"] == serde_json::json!(["1.0"])
    };

    // From another site.
    let r = post(
        vec![
            ("cookie", cookie.clone()),
            ("origin", "http://evil.test".into()),
        ],
        form(&csrf, &plan),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(still_there().await);
    // Without any origin information.
    let r = post(vec![("cookie", cookie.clone())], form(&csrf, &plan)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Our origin, but a token of another browser (another pre-session).
    let r = post(
        vec![
            ("cookie", "registry_csrf=someone-else".into()),
            ("origin", "http://reg.test".into()),
        ],
        form(&csrf, &plan),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(still_there().await);
    // A plan that is not the current one is shown again, nothing deleted.
    let r = post(
        vec![
            ("cookie", cookie.clone()),
            ("origin", "http://reg.test".into()),
        ],
        form(&csrf, "0000"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(text(&r).contains("changed since the preview"));
    assert!(still_there().await);
    // Same origin (Sec-Fetch-Site), the right token and plan: deleted, and
    // the emptied repository leaves the list.
    let r = post(
        vec![
            ("cookie", cookie.clone()),
            ("sec-fetch-site", "same-origin".into()),
        ],
        form(&csrf, &plan),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    assert_eq!(r.header("location"), Some("/ui/?deleted=team%2Fapp"));
    assert_eq!(
        app.get("/v2/team/app/tags/list").await.json()["tags"],
        serde_json::json!([])
    );
    assert_eq!(
        app.get("/v2/_catalog").await.json()["repositories"],
        serde_json::json!([])
    );
    assert!(!text(&app.get("/ui/").await).contains(">team/app<"));
}

#[tokio::test]
async fn a_tag_shared_with_another_goes_alone() {
    let app = TestApp::with_config(YAML).await;
    let (digest, manifest) = app.push_image("team/app", "1.0", "a").await;
    let r = app
        .put_manifest("team/app", "latest", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let page = text(&app.get("/ui/delete?name=team/app&ref=latest").await);
    assert!(page.contains("still tagged 1.0"), "{page}");
    assert!(
        page.contains("<strong>0 B</strong>"),
        "nothing is freed: {page}"
    );
    let page = text(
        &app.get(&format!("/ui/delete?name=team/app&ref={digest}"))
            .await,
    );
    // Deleting the manifest takes both tags.
    assert!(
        page.contains("Tag <code>1.0</code>") && page.contains("Tag <code>latest</code>"),
        "{page}"
    );
}

/// An index of two platforms, one of them also tagged on its own, and a
/// signature of the index: deleting the index takes the untagged platform
/// and the signature, keeps the tagged platform, and counts what only the
/// removed manifests used.
#[tokio::test]
async fn deleting_an_index_previews_platforms_and_referrers() {
    let app = TestApp::with_config(YAML).await;
    let (amd, amd_body) = app.push_image("team/app", "amd", "amd").await;
    let (arm, arm_body) = app.push_image("team/app", "arm", "arm").await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{amd}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{arm}","size":{},"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
        amd_body.len(),
        arm_body.len()
    );
    let r = app.put_manifest("team/app", "1.0", OCI_INDEX, &index).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let index_digest = registry::oci::Digest::sha256_of(index.as_bytes());
    // `arm` was a staging tag; `amd` stays tagged.
    assert_eq!(
        app.delete("/v2/team/app/manifests/arm").await.status,
        StatusCode::ACCEPTED
    );
    let empty = app.push_blob("team/app", b"{}").await;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/example.sig",
            "config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}}],
            "subject":{{"mediaType":"{OCI_INDEX}","digest":"{index_digest}","size":{}}}}}"#,
        index.len()
    );
    let sig_digest = registry::oci::Digest::sha256_of(sig.as_bytes());
    let r = app
        .put_manifest("team/app", &sig_digest.to_string(), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");

    let page = text(&app.get("/ui/delete?name=team/app&ref=1.0").await);
    assert!(
        page.contains(&format!("Manifest <code>{index_digest}</code>")),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "Platform linux/arm64: manifest <code>{arm}</code>"
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "Referrer (application/example.sig): manifest <code>{sig_digest}</code>"
        )),
        "{page}"
    );
    assert!(
        !page.contains(&format!("manifest <code>{amd}</code>")),
        "the tagged platform stays: {page}"
    );
    // Freed: index, arm manifest, arm config, arm layer, signature and the
    // empty blob (used by the signature alone).
    assert!(page.contains("(6 blobs"), "{page}");

    let csrf_cookie = presession(&app.get("/ui/").await);
    let preview = app
        .request(
            Method::GET,
            "/ui/delete?name=team/app&ref=1.0",
            &[("cookie", csrf_cookie.as_str())],
            axum::body::Body::empty(),
        )
        .await;
    let page = text(&preview);
    let body = format!(
        "csrf={}&name=team%2Fapp&ref=1.0&manifest=1&plan={}",
        field(&page, "csrf").replace('=', "%3D"),
        field(&page, "plan")
    );
    let r = app
        .request(
            Method::POST,
            "/ui/delete",
            &[
                ("cookie", csrf_cookie.as_str()),
                ("sec-fetch-site", "same-origin"),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body,
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", text(&r));
    for (d, present) in [
        (&index_digest, false),
        (&arm, false),
        (&sig_digest, false),
        (&amd, true),
    ] {
        let status = app
            .head(&format!("/v2/team/app/manifests/{d}"))
            .await
            .status;
        assert_eq!(status == StatusCode::OK, present, "{d}");
    }
    assert_eq!(
        app.get("/v2/team/app/tags/list").await.json()["tags"],
        serde_json::json!(["amd"])
    );
}
