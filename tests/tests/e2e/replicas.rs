//! Issue 12's acceptance: two authd replicas on one PostgreSQL and two
//! registries on one bucket (Garage) behind one nginx on 127.0.0.1 (one
//! port for the registries, one for authd; two upstream servers each,
//! round robin, `proxy_next_upstream error timeout`).
//!
//! - docker login, push and pull work whichever replica answers (nginx's
//!   log shows both replicas of each service answering);
//! - a refresh token revoked on one authd is refused by the other at once;
//! - a pair throttled on one authd is throttled on the other at once;
//! - a key rotated on one authd is used by both and trusted by both
//!   registries;
//! - killing one replica of each (SIGKILL) during a push loop loses no
//!   acknowledged image: the client retries failed requests, as real
//!   clients do, and every acknowledged image pulls intact afterwards.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use e2e::authd::{ISSUER, SERVICE};
use e2e::bins::free_ports;
use e2e::fixtures::{random_bytes, random_name};
use e2e::garage::Garage;
use e2e::process::describe_output;
use e2e::proxy::Nginx;
use e2e::registry::Auth;
use e2e::{Authd, CommandExt, Dockerd, Registry};
use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};

const USER: &str = "ann";
const PASSWORD: &str = "ann-password-1";

/// The whole stack; fields drop in order (nginx first).
struct Stack {
    _nginx: Nginx,
    /// `127.0.0.1:PORT` of the registries' front.
    registry_front: String,
    /// `http://127.0.0.1:PORT` of authd's front.
    authd_front: String,
    /// nginx's log of which upstream answered what.
    upstream_log: PathBuf,
    registries: Vec<Registry>,
    authds: Vec<Authd>,
    _garage: Garage,
    _dir: tempfile::TempDir,
}

fn nginx_config(
    log: &Path,
    registry_port: u16,
    registries: &[&str],
    authd_port: u16,
    authds: &[&str],
) -> String {
    let servers = |addrs: &[&str]| -> String {
        addrs.iter().fold(String::new(), |mut out, a| {
            let _ = writeln!(out, "    server {a} max_fails=1 fail_timeout=10s;");
            out
        })
    };
    let common = "\
        client_max_body_size 0;\n\
        proxy_request_buffering off;\n\
        proxy_buffering off;\n\
        proxy_http_version 1.1;\n\
        proxy_set_header Connection \"\";\n\
        proxy_set_header Host $http_host;\n\
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
        proxy_next_upstream error timeout;\n\
        proxy_connect_timeout 2s;\n";
    format!(
        "log_format upstreams '$server_port $request_method $uri $status $upstream_addr';\n\
         upstream registries {{\n{registries}    keepalive 16;\n}}\n\
         upstream authds {{\n{authds}    keepalive 8;\n}}\n\
         server {{\n\
           listen 127.0.0.1:{registry_port};\n\
           access_log {log} upstreams;\n\
           {common}\
           location / {{ proxy_pass http://registries; }}\n\
         }}\n\
         server {{\n\
           listen 127.0.0.1:{authd_port};\n\
           access_log {log} upstreams;\n\
           {common}\
           location / {{ proxy_pass http://authds; }}\n\
         }}\n",
        log = log.display(),
        registries = servers(registries),
        authds = servers(authds),
    )
}

impl Stack {
    fn start() -> Stack {
        let dir = e2e::temp_dir("replicas");
        let database = e2e::postgres::database();
        let garage = Garage::start("images");
        // One data directory for both: the signing keys are shared files.
        let shared = dir.path().join("authd-data");
        let authd = || {
            Authd::builder()
                .fast_password_hashing()
                .data_dir(&shared)
                .env("AUTHD_DATABASE_URL", &database)
                .env("AUTHD_THROTTLE_TRUSTED_PROXIES", "127.0.0.1")
                .start()
        };
        // One after the other: the first creates the admin and the key.
        let authds = vec![authd(), authd()];

        let upstream_log = dir.path().join("upstreams.log");
        let authd_addrs: Vec<String> = authds
            .iter()
            .map(|a| a.url().trim_start_matches("http://").to_owned())
            .collect();
        // nginx's ports are picked before the registries start (their
        // config names authd's front) and bound by nginx after: a program
        // that takes one meanwhile makes nginx exit, and the ports are
        // picked again.
        let mut attempts = 0;
        let (registry_port, authd_front, registries, nginx) = loop {
            attempts += 1;
            let [registry_port, authd_port] = free_ports();
            let authd_front = format!("http://127.0.0.1:{authd_port}");
            let auth = Auth::Token {
                realm: format!("{authd_front}/token"),
                service: SERVICE.to_owned(),
                issuer: ISSUER.to_owned(),
                rootcertbundle: None,
                jwks: None,
                // Through nginx: keys are fetched from whichever authd is up.
                jwksurl: Some(format!("{authd_front}/.well-known/jwks.json")),
            };
            let registry = || {
                Registry::builder()
                    .s3(&garage, "/registry")
                    .auth(auth.clone())
                    .start()
            };
            let registries = vec![registry(), registry()];
            let config = nginx_config(
                &upstream_log,
                registry_port,
                &[registries[0].host(), registries[1].host()],
                authd_port,
                &[authd_addrs[0].as_str(), authd_addrs[1].as_str()],
            );
            match Nginx::try_start(&config, SocketAddr::from(([127, 0, 0, 1], registry_port))) {
                Ok(nginx) => break (registry_port, authd_front, registries, nginx),
                Err(e) if attempts < 5 => eprintln!("{e}\npicking other ports"),
                Err(e) => panic!("{e}"),
            }
        };
        wait_for("authd's front", Duration::from_secs(30), || {
            std::net::TcpStream::connect(authd_front.trim_start_matches("http://")).is_ok()
        });

        let stack = Stack {
            _nginx: nginx,
            registry_front: format!("127.0.0.1:{registry_port}"),
            authd_front,
            upstream_log,
            registries,
            authds,
            _garage: garage,
            _dir: dir,
        };
        stack.authds[0].add_user(USER, PASSWORD);
        stack.authds[0].grant(USER, "ann/*", &["pull", "push"]);
        stack
    }

    fn authd_addr(&self, i: usize) -> &str {
        self.authds[i].url().trim_start_matches("http://")
    }

    /// The upstream addresses that answered requests of `port` with a
    /// status below 500, per nginx's log.
    fn answered(&self, port: &str) -> Vec<String> {
        let log = std::fs::read_to_string(&self.upstream_log).unwrap_or_default();
        let mut found: Vec<String> = log
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let status: u16 = f.get(3)?.parse().ok()?;
                // `-`: nginx answered itself (docker's first try is TLS).
                let upstream = f.get(4).filter(|u| **u != "-")?;
                (f[0] == port && status < 500).then(|| (*upstream).to_owned())
            })
            .collect();
        found.sort();
        found.dedup();
        found
    }
}

/// Polls `cond` until it holds; panics after `timeout`.
fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn client() -> Client {
    e2e::init_crypto();
    Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        // Blob GETs answer 307 to Garage (reachable on 127.0.0.1).
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .expect("an HTTP client")
}

/// `GET /token` at `authd` (a base URL) with Basic credentials.
fn token_status(http: &Client, authd: &str, user: &str, password: &str) -> (u16, Value) {
    let resp = http
        .get(format!(
            "{authd}/token?service={SERVICE}&scope=repository:ann/busybox:pull,push"
        ))
        .basic_auth(user, Some(password))
        .send()
        .expect("GET /token");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// The `kid` of a JWT's header.
fn kid(jwt: &str) -> String {
    let header = jwt.split('.').next().expect("a JWT");
    let header: Value =
        serde_json::from_slice(&B64URL.decode(header).expect("base64url header")).expect("JSON");
    header["kid"].as_str().expect("a kid").to_owned()
}

fn refresh(http: &Client, authd: &str, refresh_token: &str) -> u16 {
    http.post(format!("{authd}/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", "docker"),
            ("service", SERVICE),
            ("scope", "repository:ann/busybox:pull"),
        ])
        .send()
        .expect("POST /token")
        .status()
        .as_u16()
}

#[test]
fn docker_revocation_throttling_and_key_rotation_across_replicas() {
    let stack = Stack::start();
    let http = client();
    let (a, b) = (stack.authds[0].url(), stack.authds[1].url());
    let host = stack.registry_front.clone();
    let port = host.rsplit(':').next().expect("a port").to_owned();
    let authd_port = stack
        .authd_front
        .rsplit(':')
        .next()
        .expect("a port")
        .to_owned();

    // docker login, push, pull and run through nginx.
    let docker = Dockerd::start();
    let out = docker.login(&host, USER, PASSWORD);
    assert!(
        out.status.success(),
        "docker login:\n{}",
        describe_output(&out)
    );
    let marker = random_name(16);
    let remote = format!("{host}/ann/busybox:1");
    docker.import_busybox(&remote, &marker);
    let pushed = docker.push(&remote);
    docker.docker().args(["rmi", &remote]).ok();
    docker.docker().args(["pull", &remote]).ok();
    assert_eq!(
        docker.repo_digest(&remote, &format!("{host}/ann/busybox")),
        pushed
    );
    assert_eq!(docker.run_marker(&remote), marker);
    // Each replica of each service answered some of it.
    let mut registries: Vec<String> = stack
        .registries
        .iter()
        .map(|r| r.host().to_owned())
        .collect();
    registries.sort();
    assert_eq!(stack.answered(&port), registries, "registry upstreams");
    let mut authds = vec![
        stack.authd_addr(0).to_owned(),
        stack.authd_addr(1).to_owned(),
    ];
    authds.sort();
    assert_eq!(stack.answered(&authd_port), authds, "authd upstreams");

    // The refresh token docker keeps works on both replicas; revoked
    // through A, B refuses it at once, and so does docker's next push.
    let config = docker.config_json();
    let identity = config["auths"][&host]["identitytoken"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| panic!("no identitytoken in {config}"))
        .to_owned();
    assert_eq!(refresh(&http, a, &identity), 200);
    assert_eq!(refresh(&http, b, &identity), 200);
    for id in stack.authds[0].refresh_token_ids(USER) {
        stack.authds[0].revoke_refresh_token(USER, &id);
    }
    assert_eq!(refresh(&http, b, &identity), 401);
    assert_eq!(refresh(&http, a, &identity), 401);
    let out = docker.docker().args(["push", &remote]).run();
    assert!(!out.status.success(), "push after the revocation succeeded");

    // Throttling: five free failures on A, the sixth blocks; B refuses the
    // pair at once, right password included, and so does the front.
    stack.authds[0].add_user("vic", "vic-password-1");
    assert_eq!(token_status(&http, b, "vic", "vic-password-1").0, 200);
    for _ in 0..5 {
        assert_eq!(token_status(&http, a, "vic", "guess").0, 401);
    }
    let (status, body) = token_status(&http, a, "vic", "guess");
    assert_eq!(status, 429, "{body}");
    assert_eq!(token_status(&http, b, "vic", "guess").0, 429);
    assert_eq!(token_status(&http, b, "vic", "vic-password-1").0, 429);
    for _ in 0..2 {
        let front = &stack.authd_front;
        assert_eq!(token_status(&http, front, "vic", "vic-password-1").0, 429);
    }
    // Another user from the same address is not affected.
    assert_eq!(token_status(&http, b, USER, PASSWORD).0, 200);

    // Key rotation by the CLI next to A: both replicas sign with the new
    // key within their 2 s poll, and both registries accept tokens of
    // either (fetching the new key through the front).
    let (_, body) = token_status(&http, a, USER, PASSWORD);
    let old_kid = kid(body["token"].as_str().expect("a token"));
    let out = stack.authds[0].cli().args(["keys", "rotate"]).ok();
    let new_kid = out
        .lines()
        .find_map(|l| l.strip_prefix("new signing key "))
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no new key in {out:?}"))
        .to_owned();
    assert_ne!(new_kid, old_kid);
    let mut tokens = Vec::new();
    for authd in [a, b] {
        wait_for("the new key signs", Duration::from_secs(15), || {
            let (_, body) = token_status(&http, authd, USER, PASSWORD);
            let token = body["token"].as_str().expect("a token").to_owned();
            let signed = kid(&token) == new_kid;
            if signed {
                tokens.push(token);
            }
            signed
        });
    }
    for reg in &stack.registries {
        for token in &tokens {
            wait_for(
                "the registry trusts the new key",
                Duration::from_secs(20),
                || {
                    http.get(format!("{}/v2/ann/busybox/manifests/1", reg.url()))
                        .bearer_auth(token)
                        .header("accept", e2e::api::MANIFEST_ACCEPT)
                        .send()
                        .is_ok_and(|r| r.status() == StatusCode::OK)
                },
            );
        }
    }
    // docker logs in again and pulls with tokens of the new key.
    let out = docker.login(&host, USER, PASSWORD);
    assert!(
        out.status.success(),
        "docker login:\n{}",
        describe_output(&out)
    );
    docker.docker().args(["rmi", &remote]).ok();
    docker.docker().args(["pull", &remote]).ok();
    assert_eq!(docker.run_marker(&remote), marker);
}

/// One image pushed by [`push_one`]: its tag, manifest digest, and blobs.
struct Pushed {
    tag: String,
    manifest: Vec<u8>,
    blobs: Vec<(String, Vec<u8>)>,
}

fn sha256(data: &[u8]) -> String {
    e2e::digest::sha256(data)
}

/// Why an attempt failed: worth retrying (a connection error, a 5xx, a
/// token that a restarted path no longer takes), or not.
enum Failure {
    Retry(String),
    Fatal(String),
}

fn classify(
    what: &str,
    r: reqwest::Result<reqwest::blocking::Response>,
    ok: StatusCode,
) -> Result<reqwest::blocking::Response, Failure> {
    match r {
        Err(e) => Err(Failure::Retry(format!("{what}: {e}"))),
        Ok(resp) if resp.status() == ok => Ok(resp),
        Ok(resp)
            if resp.status().is_server_error() || resp.status() == StatusCode::UNAUTHORIZED =>
        {
            Err(Failure::Retry(format!("{what}: {}", resp.status())))
        }
        Ok(resp) => {
            let status = resp.status();
            Err(Failure::Fatal(format!(
                "{what}: {status} {}",
                resp.text().unwrap_or_default()
            )))
        }
    }
}

/// Runs `attempt` until it succeeds, retrying what a client retries, for
/// at most a minute; counts the retries.
fn with_retries<T>(
    what: &str,
    retries: &AtomicUsize,
    mut attempt: impl FnMut() -> Result<T, Failure>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(Failure::Fatal(e)) => panic!("{what}: {e}"),
            Err(Failure::Retry(e)) => {
                assert!(Instant::now() < deadline, "{what}: still failing: {e}");
                retries.fetch_add(1, Ordering::SeqCst);
                // Back off a little, as clients do.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A pull-push token for `repo` from authd's front.
fn fetch_token(http: &Client, front: &str, repo: &str) -> Result<String, Failure> {
    let resp = classify(
        "GET /token",
        http.get(format!(
            "{front}/token?service={SERVICE}&scope=repository:{repo}:pull,push"
        ))
        .basic_auth(USER, Some(PASSWORD))
        .send(),
        StatusCode::OK,
    )?;
    let v: Value = resp.json().map_err(|e| Failure::Retry(e.to_string()))?;
    Ok(v["token"].as_str().unwrap_or_default().to_owned())
}

/// Pushes one blob (POST, then PUT with the digest), from the start.
fn push_blob(
    http: &Client,
    base: &str,
    token: &str,
    repo: &str,
    data: &[u8],
) -> Result<(), Failure> {
    let resp = classify(
        "POST upload",
        http.post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .bearer_auth(token)
            .send(),
        StatusCode::ACCEPTED,
    )?;
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Failure::Fatal("no Location".into()))?
        .to_owned();
    let url = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    classify(
        "PUT blob",
        http.put(format!("{url}{sep}digest={}", sha256(data)))
            .bearer_auth(token)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send(),
        StatusCode::CREATED,
    )?;
    Ok(())
}

/// Pushes image `i` (a config and a 256 KiB to 1 MiB layer) as
/// `loop/app:<i>` through the fronts, retrying each step; returns it once
/// the manifest PUT is acknowledged.
fn push_one(http: &Client, stack: &Fronts, i: usize, retries: &AtomicUsize) -> Pushed {
    let repo = "ann/loop";
    let layer = random_bytes(256 * 1024 + (i % 4) * 256 * 1024);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        "config": {"Labels": {"i": i.to_string()}},
    }))
    .expect("config JSON");
    let blobs = vec![(sha256(&config), config), (sha256(&layer), layer)];
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": blobs[0].0, "size": blobs[0].1.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": blobs[1].0, "size": blobs[1].1.len()}],
    }))
    .expect("manifest JSON");
    let tag = format!("{i}");
    // A new token per image: authd is exercised all along.
    let token = with_retries("token", retries, || fetch_token(http, &stack.authd, repo));
    for (_, data) in &blobs {
        with_retries("blob", retries, || {
            push_blob(http, &stack.registry, &token, repo, data)
        });
    }
    with_retries("manifest", retries, || {
        classify(
            "PUT manifest",
            http.put(format!("{}/v2/{repo}/manifests/{tag}", stack.registry))
                .bearer_auth(&token)
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.clone())
                .send(),
            StatusCode::CREATED,
        )
        .map(|_| ())
    });
    Pushed {
        tag,
        manifest,
        blobs,
    }
}

/// The base URLs of the two fronts.
#[derive(Clone)]
struct Fronts {
    registry: String,
    authd: String,
}

#[test]
fn killing_a_replica_of_each_during_a_push_loop_loses_no_acknowledged_image() {
    const IMAGES: usize = 40;
    const KILL_AFTER: usize = 8;
    let mut stack = Stack::start();
    let fronts = Fronts {
        registry: format!("http://{}", stack.registry_front),
        authd: stack.authd_front.clone(),
    };
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let pusher = std::thread::spawn({
        let (fronts, acknowledged, retries) =
            (fronts.clone(), acknowledged.clone(), retries.clone());
        move || {
            let http = client();
            (0..IMAGES)
                .map(|i| {
                    let p = push_one(&http, &fronts, i, &retries);
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    p
                })
                .collect::<Vec<Pushed>>()
        }
    });
    wait_for("the first pushes", Duration::from_secs(120), || {
        acknowledged.load(Ordering::SeqCst) >= KILL_AFTER || pusher.is_finished()
    });
    // SIGKILL, while the loop is pushing: authd B and registry B.
    let killed_at = acknowledged.load(Ordering::SeqCst);
    stack.authds[1].daemon().kill_hard();
    stack.registries[1].kill_hard();
    let pushed = pusher.join().expect("the push loop");
    assert!(
        killed_at < IMAGES,
        "the loop ended before the kill: make it longer"
    );
    eprintln!(
        "{} images acknowledged, {killed_at} before the kill, {} retried requests",
        pushed.len(),
        retries.load(Ordering::SeqCst)
    );

    // Every acknowledged image pulls intact from the survivors: through
    // the front, and from the surviving registry directly.
    let http = client();
    let token = fetch_token(&http, &fronts.authd, "ann/loop")
        .unwrap_or_else(|_| panic!("a token from the surviving authd"));
    for base in [
        fronts.registry.clone(),
        stack.registries[0].url().to_owned(),
    ] {
        for p in &pushed {
            let resp = http
                .get(format!("{base}/v2/ann/loop/manifests/{}", p.tag))
                .bearer_auth(&token)
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .expect("GET manifest");
            assert_eq!(resp.status(), StatusCode::OK, "{base} manifest {}", p.tag);
            assert_eq!(
                resp.bytes().expect("manifest body").as_ref(),
                &p.manifest[..]
            );
            for (digest, data) in &p.blobs {
                let resp = http
                    .get(format!("{base}/v2/ann/loop/blobs/{digest}"))
                    .bearer_auth(&token)
                    .send()
                    .expect("GET blob");
                assert_eq!(resp.status(), StatusCode::OK, "{base} blob {digest}");
                assert_eq!(sha256(&resp.bytes().expect("blob body")), sha256(data));
            }
        }
    }
    // The surviving authd still issues tokens through the front, and
    // refuses nothing it should accept.
    let (status, _) = token_status(&http, &fronts.authd, USER, PASSWORD);
    assert_eq!(status, 200);
}

/// Login throttling between two authd processes on one SQLite file (the
/// default engine; e.g. a new server started before the old one stops):
/// failures on one count on the other, and the block holds on both.
#[test]
fn two_authd_processes_on_one_sqlite_file_throttle_together() {
    let dir = e2e::temp_dir("sqlite-pair");
    let data = dir.path().join("data");
    let authd = || {
        Authd::builder()
            .fast_password_hashing()
            .data_dir(&data)
            .start()
    };
    let (one, two) = (authd(), authd());
    one.add_user("vic", "vic-password-1");
    let http = client();
    assert_eq!(
        token_status(&http, two.url(), "vic", "vic-password-1").0,
        200
    );
    for i in 0..5 {
        let authd = if i % 2 == 0 { &one } else { &two };
        assert_eq!(token_status(&http, authd.url(), "vic", "guess").0, 401);
    }
    assert_eq!(token_status(&http, one.url(), "vic", "guess").0, 429);
    assert_eq!(token_status(&http, two.url(), "vic", "guess").0, 429);
    assert_eq!(
        token_status(&http, two.url(), "vic", "vic-password-1").0,
        429
    );
}
