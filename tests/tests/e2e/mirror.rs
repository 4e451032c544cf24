//! The pull-through cache (issue 15) against real upstreams on 127.0.0.1:
//! CNCF distribution 2.8 with htpasswd, and our registry in token mode
//! behind authd.
//!
//! - skopeo pulls through two prefixes of one mirror that also hosts a
//!   private repository; pushes into a mirrored prefix are refused; a tag
//!   changed upstream shows after its ttl; with both upstreams killed,
//!   what was cached is still served (also past the ttl).
//! - A real dockerd with `registry-mirrors` pulls `busybox` through a
//!   mirror configured with distribution's `REGISTRY_PROXY_REMOTEURL`.
//! - 20 concurrent pulls of an uncached 256 MiB layer: one upstream fetch,
//!   counted in the upstream's access log.

use std::time::Duration;

use e2e::fixtures::{HtpasswdHash, OciImage, htpasswd, random_bytes, read_oci_layout};
use e2e::{Api, Authd, CommandExt, Dockerd, Registry, Skopeo};
use serde_json::{Value, json};

/// A distribution 2.8 upstream requiring `user`/`pass` (htpasswd).
fn distribution_upstream(dir: &std::path::Path) -> Registry {
    let file = dir.join("htpasswd");
    htpasswd(&file, "user", "pass", HtpasswdHash::Bcrypt);
    Registry::builder().htpasswd(&file).start_distribution()
}

/// One upstream entry of `proxy.upstreams`.
fn upstream_entry(prefix: &str, url: &str, creds: Option<(&str, &str)>, ttl: &str) -> Value {
    let mut u = json!({ "prefix": prefix, "remoteurl": url, "ttl": ttl });
    if let Some((user, password)) = creds {
        u["username"] = json!(user);
        u["password"] = json!(password);
    }
    u
}

#[test]
fn skopeo_pulls_through_prefixes_and_cached_content_outlives_the_upstreams() {
    let dir = e2e::temp_dir("mirror");
    let skopeo = Skopeo::new();

    // Upstream 1: distribution with htpasswd.
    let mut dist = distribution_upstream(dir.path());
    let v1 = OciImage::generate(&skopeo.scratch("v1"), "v1", &[200_000, 30_000]);
    let dest = format!("docker://{}/team/app:v1", dist.host());
    skopeo.copy(&v1.reference(), &dest, &["--dest-creds", "user:pass"]);

    // Upstream 2: ours in token mode; the mirror logs in as a robot user
    // with a pull grant (the Bearer challenge, then authd's token).
    let authd = Authd::builder().fast_password_hashing().start();
    let auth = authd.registry_auth(e2e::Impl::Ours, &dir.path().join("authd.pem"));
    let mut ours = Registry::builder().auth(auth).start();
    authd.add_user("pusher", "pusher-pw");
    authd.grant("pusher", "*", &["pull", "push"]);
    authd.add_user("mirror", "mirror-pw");
    authd.grant("mirror", "*", &["pull"]);
    let other = OciImage::generate(&skopeo.scratch("other"), "1.0", &[100_000]);
    let dest = format!("docker://{}/org/tool:1.0", ours.host());
    skopeo.copy(
        &other.reference(),
        &dest,
        &["--dest-creds", "pusher:pusher-pw"],
    );

    let mirror = Registry::builder()
        .yaml(
            "proxy.upstreams",
            json!([
                upstream_entry("dist", dist.url(), Some(("user", "pass")), "1s"),
                upstream_entry("ours", ours.url(), Some(("mirror", "mirror-pw")), "1h"),
            ]),
        )
        .start();
    let m = mirror.host();

    let pull = |reference: &str, out: &str| {
        let dir = skopeo.scratch(out);
        skopeo.copy(reference, &format!("oci:{}:x", dir.display()), &[]);
        read_oci_layout(&dir, Some("x"))
    };
    let got = pull(&format!("docker://{m}/dist/team/app:v1"), "p1");
    assert_eq!(got.manifest_digest, v1.manifest_digest);
    assert_eq!(got.blob_digests, v1.blob_digests());
    let got = pull(&format!("docker://{m}/ours/org/tool:1.0"), "p2");
    assert_eq!(got.manifest_digest, other.manifest_digest);
    assert_eq!(got.blob_digests, other.blob_digests());
    // By digest too.
    let got = pull(
        &format!("docker://{m}/dist/team/app@{}", v1.manifest_digest),
        "p3",
    );
    assert_eq!(got.blob_digests, v1.blob_digests());

    // A private repository next to the mirrored prefixes takes pushes;
    // a mirrored one refuses them with UNSUPPORTED (405).
    skopeo.copy(
        &v1.reference(),
        &format!("docker://{m}/private/app:v1"),
        &[],
    );
    let out = skopeo
        .copy_cmd(
            &v1.reference(),
            &format!("docker://{m}/dist/team/mine:v1"),
            &[],
        )
        .output()
        .expect("run skopeo");
    assert!(
        !out.status.success(),
        "a push into a mirrored prefix must fail"
    );
    let resp = mirror
        .api()
        .request(reqwest::Method::POST, "/v2/dist/team/mine/blobs/uploads/")
        .send()
        .expect("POST");
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().expect("OCI error JSON");
    assert_eq!(e2e::api::error_codes(&body), ["UNSUPPORTED"]);
    // Unknown upstream content is the client's 404.
    assert_eq!(
        mirror.api().manifest_digest("dist/team/nothing", "v1"),
        None
    );

    // The tag moves upstream; past the ttl (1 s) the mirror follows it.
    let v2 = OciImage::generate(&skopeo.scratch("v2"), "v1", &[50_000]);
    let dest = format!("docker://{}/team/app:v1", dist.host());
    skopeo.copy(&v2.reference(), &dest, &["--dest-creds", "user:pass"]);
    std::thread::sleep(Duration::from_millis(1100));
    let got = pull(&format!("docker://{m}/dist/team/app:v1"), "p4");
    assert_eq!(got.manifest_digest, v2.manifest_digest);

    // Both upstreams gone: cached content is still served, within the ttl
    // (`ours`) and past it (`dist`: the revalidation fails, the cached tag
    // stands).
    dist.kill_hard();
    ours.kill_hard();
    std::thread::sleep(Duration::from_millis(1100));
    let got = pull(&format!("docker://{m}/dist/team/app:v1"), "p5");
    assert_eq!(got.manifest_digest, v2.manifest_digest);
    let got = pull(&format!("docker://{m}/ours/org/tool:1.0"), "p6");
    assert_eq!(got.blob_digests, other.blob_digests());
    // What was never cached: 503 UNAVAILABLE, not a hang or a 500.
    let resp = mirror.api().get("/v2/dist/team/app/manifests/other");
    assert_eq!(resp.status(), 503);
}

#[test]
fn docker_pulls_busybox_through_registry_mirrors() {
    let upstream = Registry::builder().start_distribution();
    let mirror = Registry::builder()
        .env("REGISTRY_PROXY_REMOTEURL", upstream.url())
        .start();
    let docker = Dockerd::start_with(&json!({ "registry-mirrors": [mirror.url()] }));

    // The upstream stands in for Docker Hub: busybox as `library/busybox`.
    let pushed = format!("{}/library/busybox:latest", upstream.host());
    docker.import_busybox(&pushed, "through-the-mirror");
    docker.push(&pushed);
    docker.docker().args(["rmi", &pushed]).ok();

    // `busybox` is `docker.io/library/busybox`: docker asks the mirror.
    docker.docker().args(["pull", "busybox"]).ok();
    assert_eq!(docker.run_marker("busybox").trim(), "through-the-mirror");
    assert!(
        mirror
            .api()
            .tags("library/busybox", 10)
            .contains(&"latest".to_owned()),
        "the mirror cached library/busybox"
    );
}

#[test]
fn concurrent_pulls_of_an_uncached_layer_fetch_it_once() {
    const SIZE: usize = 256 << 20;
    const CLIENTS: usize = 20;
    let upstream = Registry::builder()
        .yaml("log.formatter", json!("json"))
        .start();
    let layer = random_bytes(SIZE);
    let digest = upstream.api().push_blob("big/layer", &layer);
    let expected = e2e::digest::sha256(&layer);
    drop(layer);
    let mirror = Registry::builder()
        .yaml(
            "proxy.upstreams",
            json!([upstream_entry("up", upstream.url(), None, "1h")]),
        )
        .start();

    let path = format!("/v2/up/big/layer/blobs/{digest}");
    let results: Vec<(u16, String, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let api = Api::new(mirror.url());
                let path = &path;
                s.spawn(move || {
                    let resp = api.get(path);
                    let status = resp.status().as_u16();
                    let (digest, len) = e2e::digest::sha256_reader(resp, path);
                    (status, digest, len)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (status, digest, len) in &results {
        assert_eq!((*status, digest, *len), (200, &expected, SIZE as u64));
    }
    let fetches = upstream
        .log()
        .lines()
        .filter(|l| l.contains(&format!("/v2/big/layer/blobs/{digest}")) && l.contains("\"GET\""))
        .count();
    assert_eq!(fetches, 1, "upstream GETs of the layer");
}
