//! End-to-end tests: the real `authd` binary on `127.0.0.1:0` with a
//! temporary data directory, htpasswd files made by Apache's `htpasswd`,
//! tokens fetched with `curl` (GET and POST) and verified with the keys
//! published at `/.well-known/jwks.json` through `token::verify`.
//!
//! Missing tools are installed (as root, with apt-get) or fail the test with
//! the Debian package to install; nothing is skipped silently.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::bins::require_tool;
use e2e::fixtures::{HtpasswdHash, htpasswd, self_signed_cert};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_authd");

/// An `authd` command on `dir`, isolated from the caller's AUTHD_* variables,
/// with cheap argon2 so the suite stays fast.
fn authd(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTHD_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AUTHD_DATA_DIR", dir.join("data"))
        .env("AUTHD_ADDR", "127.0.0.1:0")
        .env("AUTHD_PASSWORD_ARGON2_MEMORY_KIB", "256")
        .env("AUTHD_PASSWORD_ARGON2_ITERATIONS", "1")
        .env("AUTHD_LOG_LEVEL", "info");
    cmd
}

/// Runs a CLI command, feeding `stdin`.
fn cli(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = authd(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn authd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[track_caller]
fn cli_ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = cli(dir, args, stdin);
    assert!(
        out.status.success(),
        "authd {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `authd serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    /// stdout lines before `listening on`.
    banner: Vec<String>,
    stderr: PathBuf,
}

impl Server {
    fn start(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Server {
        let stderr_path = dir.join(format!("stderr-{}.log", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = authd(dir);
        cmd.args(args).arg("serve");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn authd serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            url: String::new(),
            banner: Vec::new(),
            stderr: stderr_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        url.clone_into(&mut server.url);
                        break;
                    }
                    server.banner.push(line);
                }
                Err(e) => panic!(
                    "authd did not print `listening on` ({e}); stderr:\n{}",
                    std::fs::read_to_string(&server.stderr).unwrap_or_default()
                ),
            }
        }
        server
    }

    /// The admin password printed on first start.
    fn printed_password(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.split_once("with password: ").map(|(_, p)| p.to_owned()))
            .unwrap_or_else(|| panic!("no admin password in {:?}", self.banner))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl; returns (HTTP status, body).
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {body}"))
}

/// Verifies a JWT against the JWKS the server publishes.
fn verify(server: &Server, jwt: &str) -> token::Claims {
    let (status, jwks) = curl(&[&format!("{}{}", server.url, token::JWKS_PATH)]);
    assert_eq!(status, 200);
    let keys = token::TrustedKeys::from_jwks(jwks.as_bytes()).unwrap();
    token::verify::verify(jwt, &keys, &token::VerifyOptions::new("authd", "registry"))
        .unwrap_or_else(|e| panic!("token does not verify: {e}"))
}

fn access(claims: &token::Claims) -> Vec<String> {
    claims
        .access
        .iter()
        .map(|ra| format!("{}:{}:{}", ra.resource_type, ra.name, ra.actions.join(",")))
        .collect()
}

fn kid(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

#[test]
fn htpasswd_import_then_tokens_with_curl_get_and_post() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &[], &[]);
    let admin_pw = server.printed_password();
    assert_eq!(admin_pw.len(), 24);

    // One file per format flag, made by the real tool, imported by the CLI.
    let file = d.join("htpasswd");
    let f = file.to_str().unwrap();
    htpasswd(&file, "bcrypt-user", "bcrypt pass", HtpasswdHash::Bcrypt);
    htpasswd(&file, "apr1-user", "apr1-pass", HtpasswdHash::Apr1);
    htpasswd(&file, "sha-user", "sha-pass", HtpasswdHash::Sha1);
    let out = cli_ok(d, &["import-htpasswd", f], "");
    assert!(
        out.contains("imported 3, updated 0, unchanged 0, rejected 0"),
        "{out}"
    );
    let out = cli_ok(d, &["import-htpasswd", f], "");
    assert!(out.contains("imported 0, updated 0, unchanged 3"), "{out}");

    // A second file through the API.
    let file2 = d.join("htpasswd2");
    htpasswd(&file2, "api-user", "api-pass", HtpasswdHash::Bcrypt);
    let request = d.join("import.json");
    let text = std::fs::read_to_string(&file2).unwrap();
    std::fs::write(
        &request,
        serde_json::json!({ "htpasswd": text }).to_string(),
    )
    .unwrap();
    let (status, body) = curl(&[
        "-u",
        &format!("admin:{admin_pw}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", request.display()),
        &format!("{}/api/v1/htpasswd", server.url),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["imported"], 1);

    cli_ok(d, &["grant", "add", "*", "${user}/*", "pull,push"], "");
    cli_ok(d, &["grant", "add", "bcrypt-user", "team/*", "pull"], "");

    let users = [
        ("bcrypt-user", "bcrypt pass"),
        ("apr1-user", "apr1-pass"),
        ("sha-user", "sha-pass"),
        ("api-user", "api-pass"),
    ];
    for (user, password) in users {
        // GET with Basic, repeated scopes.
        let (status, body) = curl(&[
            "-u",
            &format!("{user}:{password}"),
            &format!(
                "{}/token?service=registry&scope=repository:{user}/app:pull,push&scope=repository:team/x:pull",
                server.url
            ),
        ]);
        assert_eq!(status, 200, "{user}: {body}");
        let v = json(&body);
        assert_eq!(v["expires_in"], 300);
        let claims = verify(&server, v["token"].as_str().unwrap());
        assert_eq!(claims.sub, user);
        let mut expected = vec![format!("repository:{user}/app:pull,push")];
        if user == "bcrypt-user" {
            expected.push("repository:team/x:pull".into());
        }
        assert_eq!(access(&claims), expected);

        // POST password grant with a refresh token, then the refresh grant.
        let (status, body) = curl(&[
            "--data-urlencode",
            "grant_type=password",
            "--data-urlencode",
            &format!("username={user}"),
            "--data-urlencode",
            &format!("password={password}"),
            "--data-urlencode",
            "client_id=e2e",
            "--data-urlencode",
            "access_type=offline",
            "--data-urlencode",
            &format!("scope=repository:{user}/app:pull"),
            &format!("{}/token", server.url),
        ]);
        assert_eq!(status, 200, "{user}: {body}");
        let v = json(&body);
        let refresh = v["refresh_token"].as_str().unwrap().to_owned();
        assert_eq!(
            access(&verify(&server, v["access_token"].as_str().unwrap())),
            [format!("repository:{user}/app:pull")]
        );
        let (status, body) = curl(&[
            "-d",
            &format!(
                "grant_type=refresh_token&client_id=e2e&service=registry&scope=repository:{user}/app:push&refresh_token={refresh}"
            ),
            &format!("{}/token", server.url),
        ]);
        assert_eq!(status, 200, "{body}");
        let claims = verify(&server, json(&body)["access_token"].as_str().unwrap());
        assert_eq!(claims.sub, user);
        assert_eq!(access(&claims), [format!("repository:{user}/app:push")]);

        // A wrong password is a 401 with a JSON error.
        let (status, body) = curl(&[
            "-u",
            &format!("{user}:nope"),
            &format!("{}/token", server.url),
        ]);
        assert_eq!(status, 401);
        assert_eq!(json(&body)["errors"][0]["code"], "UNAUTHORIZED");
    }

    // Every legacy hash was upgraded on login (and is gone); re-importing
    // changes nothing: the users exist.
    let list = json(&cli_ok(d, &["user", "list", "--json"], ""));
    for u in list.as_array().unwrap() {
        assert_eq!(u["password_format"], "argon2id", "{u}");
    }
    let out = cli(d, &["import-htpasswd", f], "");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("imported 0, updated 0, unchanged 0, rejected 0, skipped 3"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"sha-user\" skipped: exists"), "{stderr}");

    // A file with a bad line: every bad line reported, nothing imported.
    let bad = d.join("bad");
    std::fs::write(
        &bad,
        "new-user:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\nplain:hunter2\nx y:abc\n",
    )
    .unwrap();
    let out = cli(d, &["import-htpasswd", bad.to_str().unwrap()], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":2:") && err.contains(":3:"), "{err}");
    assert!(!err.contains("hunter2"));
    let (status, _) = curl(&["-u", "new-user:secret", &format!("{}/token", server.url)]);
    assert_eq!(status, 401);
    let out = cli_ok(
        d,
        &["import-htpasswd", "--skip-invalid", bad.to_str().unwrap()],
        "",
    );
    assert!(
        out.contains("imported 1") && out.contains("rejected 2"),
        "{out}"
    );
    let (status, _) = curl(&["-u", "new-user:secret", &format!("{}/token", server.url)]);
    assert_eq!(status, 200);
}

#[test]
fn first_start_defaults_persist_across_restarts() {
    require_tool("curl", "curl");
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &[], &[]);
    assert!(server.url.starts_with("http://127.0.0.1:"));
    let password = server.printed_password();
    let (status, body) = curl(&[
        "-u",
        &format!("admin:{password}"),
        &format!("{}/token", server.url),
    ]);
    assert_eq!(status, 200);
    let first_kid = kid(json(&body)["token"].as_str().unwrap());
    for path in ["/healthz", "/readyz"] {
        assert_eq!(curl(&[&format!("{}{path}", server.url)]).0, 200);
    }
    let data = d.join("data");
    assert!(data.join("authd.db").is_file());
    let keys: Vec<_> = std::fs::read_dir(data.join("keys")).unwrap().collect();
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_ref().unwrap().path();
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!server.stderr().contains(&password), "password logged");
    drop(server);

    // Restart: no new admin, no password printed, same key.
    let server = Server::start(d, &[], &[]);
    assert!(server.banner.is_empty(), "{:?}", server.banner);
    let (status, body) = curl(&[
        "-u",
        &format!("admin:{password}"),
        &format!("{}/token", server.url),
    ]);
    assert_eq!(status, 200);
    assert_eq!(kid(json(&body)["token"].as_str().unwrap()), first_kid);
}

#[test]
fn admin_from_environment_and_graceful_sigterm() {
    require_tool("curl", "curl");
    require_tool("kill", "procps");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut server = Server::start(
        d,
        &[
            ("AUTHD_ADMIN_USER", "root"),
            ("AUTHD_ADMIN_PASSWORD", "root-password"),
        ],
        &[],
    );
    assert!(
        server.banner.is_empty(),
        "password printed: {:?}",
        server.banner
    );
    let (status, body) = curl(&[
        "-u",
        "root:root-password",
        &format!("{}/api/v1/users", server.url),
    ]);
    assert_eq!(status, 200);
    assert_eq!(json(&body)[0]["name"], "root");
    assert_eq!(json(&body)[0]["admin"], true);

    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "authd ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(server.stderr().contains("shutting down"));
}

#[test]
fn cli_import_never_overwrites_by_default_refuses_hostile_hashes_and_shows_audit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    cli_ok(
        d,
        &["user", "add", "root", "--admin", "--password-stdin"],
        "root-password\n",
    );
    let file = d.join("htpasswd");
    let f = file.to_str().unwrap();
    htpasswd(&file, "bob", "bob-pass", HtpasswdHash::Bcrypt);
    htpasswd(&file, "root", "evil-pass", HtpasswdHash::Bcrypt);
    let import = |args: &[&str]| {
        let out = cli(d, &[&["import-htpasswd"], args].concat(), "");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stdout, stderr) = import(&[f]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 1, updated 0, unchanged 0, rejected 0, skipped 1"),
        "{stdout}"
    );
    assert!(stderr.contains("\"root\" skipped: an admin"), "{stderr}");
    cli_ok(
        d,
        &["user", "passwd", "bob", "--password-stdin"],
        "bob-new-password\n",
    );
    let (_, stdout, stderr) = import(&[f]);
    assert!(
        stdout.contains("updated 0") && stdout.contains("skipped 2"),
        "{stdout}"
    );
    assert!(stderr.contains("\"bob\" skipped: exists"), "{stderr}");
    let (_, stdout, _) = import(&["--overwrite", f]);
    assert!(
        stdout.contains("updated 1") && stdout.contains("skipped 1"),
        "{stdout}"
    );

    // A hash that would abort authd at login is refused with its line.
    let hostile = d.join("hostile");
    std::fs::write(
        &hostile,
        format!(
            "boom:$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ${}\n",
            "A".repeat(43)
        ),
    )
    .unwrap();
    let (ok, _, stderr) = import(&[hostile.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains(":1:") && stderr.contains("cost"),
        "{stderr}"
    );

    let imports = json(&cli_ok(d, &["audit", "--action", "htpasswd", "--json"], ""));
    let imports = imports.as_array().unwrap();
    assert_eq!(imports.len(), 3, "{imports:?}");
    assert!(imports[0]["detail"].as_str().unwrap().contains("overwrite"));
    let out = cli_ok(d, &["audit", "--user", "bob", "--limit", "1"], "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].contains("user.update") && lines[1].contains("cli"),
        "{out}"
    );
    let out = cli(d, &["audit", "--since", "yesterday"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
}

#[test]
fn cli_users_grants_and_passwords() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &[("AUTHD_ADMIN_PASSWORD", "admin-password")], &[]);
    let out = cli_ok(
        d,
        &["user", "add", "carol", "--password-stdin"],
        "carol-password\n",
    );
    assert!(out.contains("created user"), "{out}");
    let dup = cli(
        d,
        &["user", "add", "carol", "--password-stdin"],
        "other-password\n",
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    // No password from a non-terminal without --password-stdin.
    let out = cli(d, &["user", "add", "dave"], "");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    let out = cli(
        d,
        &["user", "add", "x';--", "--password-stdin"],
        "password-1\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid user name"));

    let out = cli_ok(d, &["grant", "add", "carol", "shared/*", "pull,push"], "");
    assert!(out.starts_with("created grant"), "{out}");
    cli_ok(d, &["grant", "add", "carol", "registry:catalog"], "");
    let grants = json(&cli_ok(
        d,
        &["grant", "list", "--subject", "carol", "--json"],
        "",
    ));
    assert_eq!(grants.as_array().unwrap().len(), 2);
    let bad = cli(d, &["grant", "add", "carol", "shared/*"], "");
    assert!(
        !bad.status.success(),
        "actions are required for repositories"
    );

    let token_for = |password: &str| {
        curl(&[
            "-u",
            &format!("carol:{password}"),
            &format!(
                "{}/token?scope=repository:shared/a:push&scope=registry:catalog:*",
                server.url
            ),
        ])
    };
    let (status, body) = token_for("carol-password");
    assert_eq!(status, 200, "{body}");
    let claims = verify(&server, json(&body)["token"].as_str().unwrap());
    assert_eq!(
        access(&claims),
        ["repository:shared/a:push", "registry:catalog:*"]
    );

    // The CLI changes the password under the running server: the old one
    // stops at once (the server's verification cache does not outlive it).
    cli_ok(
        d,
        &["user", "passwd", "carol", "--password-stdin"],
        "carol-new-password\n",
    );
    assert_eq!(token_for("carol-password").0, 401);
    assert_eq!(token_for("carol-new-password").0, 200);
    cli_ok(d, &["user", "set", "carol", "--disabled", "true"], "");
    assert_eq!(token_for("carol-new-password").0, 401);

    let id = grants[0]["id"].as_i64().unwrap().to_string();
    cli_ok(d, &["grant", "del", &id], "");
    assert!(!cli(d, &["grant", "del", &id], "").status.success());
    let last = cli(d, &["user", "del", "admin"], "");
    assert!(!last.status.success());
    assert!(String::from_utf8_lossy(&last.stderr).contains("last enabled admin"));
    cli_ok(d, &["user", "del", "carol"], "");
    let list = cli_ok(d, &["user", "list"], "");
    assert!(list.contains("admin") && !list.contains("carol"), "{list}");
}

#[test]
fn keys_rotate_and_export_cert() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let server = Server::start(d, &[("AUTHD_ADMIN_PASSWORD", "admin-password")], &[]);
    let get_token = || {
        let (status, body) = curl(&[
            "-u",
            "admin:admin-password",
            &format!("{}/token", server.url),
        ]);
        assert_eq!(status, 200);
        json(&body)["token"].as_str().unwrap().to_owned()
    };
    let old = get_token();
    let out = cli_ok(d, &["keys", "rotate"], "");
    assert!(out.contains("new signing key"), "{out}");
    // The running server picks the new key up by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let t = get_token();
        if kid(&t) != kid(&old) {
            break t;
        }
        assert!(Instant::now() < deadline, "server kept the old key");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (_, jwks) = curl(&[&format!("{}{}", server.url, token::JWKS_PATH)]);
    let jwks = json(&jwks);
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [kid(&new), kid(&old)]);
    // Tokens of the old key still verify until they expire.
    assert_eq!(verify(&server, &old).sub, "admin");
    assert_eq!(verify(&server, &new).sub, "admin");

    let pem_path = d.join("bundle.pem");
    cli_ok(
        d,
        &["keys", "export-cert", "--out", pem_path.to_str().unwrap()],
        "",
    );
    let pem = std::fs::read(&pem_path).unwrap();
    let certs = token::PublicKey::from_pem_bundle(&pem).unwrap();
    let cert_kids: Vec<String> = certs
        .iter()
        .map(token::PublicKey::libtrust_key_id)
        .collect();
    assert_eq!(cert_kids, [kid(&new), kid(&old)]);
    // The bundle alone (as distribution's rootcertbundle) verifies tokens.
    let mut trusted = token::TrustedKeys::new();
    for k in certs {
        trusted.insert(k, None);
    }
    let opts = token::VerifyOptions::new("authd", "registry");
    assert!(token::verify::verify(&new, &trusted, &opts).is_ok());
    let stdout = cli_ok(d, &["keys", "export-cert"], "");
    assert!(stdout.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn config_file_env_overrides_and_tls() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (cert, key) = self_signed_cert(d);
    let config = d.join("authd.yml");
    std::fs::write(
        &config,
        format!(
            "service: my-registry\ntoken:\n  expiration: 120\n  flavour: vanilla\ntls:\n  certificate: {}\n  key: {}\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let server = Server::start(
        d,
        &[
            ("AUTHD_ADMIN_PASSWORD", "admin-password"),
            ("AUTHD_ISSUER", "authd"),
        ],
        &["--config", config.to_str().unwrap()],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    assert!(
        server.stderr().contains("token.flavour"),
        "unknown key not warned"
    );
    let (status, body) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "-u",
        "admin:admin-password",
        &format!("{}/token?service=my-registry", server.url),
    ]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["expires_in"], 120);
    let (status, _) = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("{}/token?service=registry", server.url),
    ]);
    assert_eq!(status, 400);

    // A config error is fatal, with a message.
    std::fs::write(&config, "token:\n  algorithm: HS256\n").unwrap();
    let out = cli(d, &["--config", config.to_str().unwrap(), "serve"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("HS256"));
}

#[test]
fn a_taken_port_fails_before_creating_the_admin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = authd(d)
        .args(["serve"])
        .env("AUTHD_ADDR", &addr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("binding"));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // No admin whose password nobody saw: the next start creates it.
    drop(taken);
    let server = Server::start(d, &[], &[]);
    assert_eq!(server.printed_password().len(), 24);
}
