//! Our `authd` binary as a process on port 0 with a temporary data directory,
//! and its CLI (`authd user add …`, `authd keys export-cert …`) run against
//! the same data directory and environment.
//!
//! Kept deliberately thin: the server takes everything through `AUTHD_*`
//! environment variables, and the CLI through [`Authd::cli`] plus whatever
//! arguments the test passes, so the harness follows authd as it grows.
//! A few helpers cover what the token-flow tests do again and again: users
//! and grants through the admin API (they apply at once, where CLI changes
//! reach a running server within 2 s), htpasswd import and certificate export
//! through the CLI, refresh tokens (list, revoke), access tokens (`rgt_…`,
//! made through the admin API), JWTs from `GET /token`, and the registry
//! `auth` sections that trust this authd.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::api::Api;
use crate::bins::workspace_bin;
use crate::process::{CommandExt, Daemon, describe_output};
use crate::registry::{Auth, Impl};

/// authd's default service name (the `aud` of its tokens).
pub const SERVICE: &str = "registry";
/// authd's default issuer name (the `iss` of its tokens).
pub const ISSUER: &str = "authd";

/// Admin user name the harness gives authd unless told otherwise.
pub const ADMIN_USER: &str = "admin";
/// Admin password the harness gives authd unless told otherwise.
pub const ADMIN_PASSWORD: &str = "e2e-admin-password";

/// How to start authd.
#[derive(Debug, Clone)]
pub struct AuthdBuilder {
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
    data_dir: Option<PathBuf>,
}

impl Default for AuthdBuilder {
    fn default() -> Self {
        AuthdBuilder {
            env: vec![
                ("AUTHD_ADMIN_USER".to_owned(), ADMIN_USER.to_owned()),
                ("AUTHD_ADMIN_PASSWORD".to_owned(), ADMIN_PASSWORD.to_owned()),
            ],
            bin: None,
            data_dir: None,
        }
    }
}

impl AuthdBuilder {
    /// An environment variable for the server and the CLI (`AUTHD_*`);
    /// a later value for the same key wins.
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Keep the data (SQLite, keys) in `dir`, e.g. to restart over it.
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Cheap argon2id parameters for new password hashes (1 MiB, one pass),
    /// so that tests creating users and logging in do not wait on the OWASP
    /// defaults. For tests only; authd's defaults stay as they are.
    #[must_use]
    pub fn fast_password_hashing(self) -> Self {
        self.env("AUTHD_PASSWORD_ARGON2_MEMORY_KIB", "1024")
            .env("AUTHD_PASSWORD_ARGON2_ITERATIONS", "1")
            .env("AUTHD_PASSWORD_ARGON2_PARALLELISM", "1")
    }

    /// Use this `authd` binary instead of the workspace's.
    #[must_use]
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// Starts `authd serve` on 127.0.0.1 port 0 and waits for its
    /// `listening on` line.
    pub fn start(self) -> Authd {
        let bin = self.bin.clone().unwrap_or_else(|| workspace_bin("authd"));
        let dir = crate::temp_dir("authd");
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir).expect("create authd's data dir");
        let mut authd = Authd {
            daemon: None,
            url: String::new(),
            bin,
            data_dir,
            env: self.env,
            dir,
        };
        let mut cmd = authd.cli();
        cmd.arg("serve").env("AUTHD_ADDR", "127.0.0.1:0");
        let mut daemon = Daemon::spawn("authd", &cmd, &authd.dir.path().join("authd.log"));
        authd.url = daemon.wait_listening(Duration::from_secs(30));
        authd.daemon = Some(daemon);
        authd
    }
}

/// A running authd.
pub struct Authd {
    daemon: Option<Daemon>,
    url: String,
    bin: PathBuf,
    data_dir: PathBuf,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Authd {
    /// A builder with the harness's admin credentials.
    pub fn builder() -> AuthdBuilder {
        AuthdBuilder::default()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token endpoint (the registry's `auth.token.realm`).
    pub fn realm(&self) -> String {
        format!("{}/token", self.url)
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `authd` with the same data directory and environment as the server;
    /// add the subcommand, e.g. `.args(["user", "add", "alice"])`.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AUTHD_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("AUTHD_DATA_DIR", &self.data_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// The server process (log, pid, kill).
    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("authd is started")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    /// The value of one of the environment variables authd was given.
    fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The admin's name and password (the harness's, or what the builder
    /// set through `AUTHD_ADMIN_USER` / `AUTHD_ADMIN_PASSWORD`).
    pub fn admin_credentials(&self) -> (String, String) {
        (
            self.env_value("AUTHD_ADMIN_USER")
                .unwrap_or(ADMIN_USER)
                .to_owned(),
            self.env_value("AUTHD_ADMIN_PASSWORD")
                .expect("the admin password is set through AUTHD_ADMIN_PASSWORD")
                .to_owned(),
        )
    }

    /// An API client for this authd with the admin's Basic credentials.
    pub fn admin_api(&self) -> Api {
        let (user, password) = self.admin_credentials();
        Api::new(&self.url).basic(&user, &password)
    }

    /// `POST /api/v1{path}` with a JSON body as the admin; panics unless
    /// the status is 2xx. Returns the JSON answer (or `null`).
    fn admin_post(&self, path: &str, body: &Value) -> Value {
        let resp = self
            .admin_api()
            .request(Method::POST, &format!("/api/v1{path}"))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("POST /api/v1{path}: {e}"));
        let status = resp.status();
        let text = resp.text().unwrap_or_default();
        assert!(
            status.is_success(),
            "POST /api/v1{path} {body}: {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// An admin API request (`/api/v1{path}`) with an optional JSON body;
    /// returns the status and the JSON answer (or `null`).
    pub fn admin_call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let what = format!("{method} /api/v1{path}");
        let mut req = self.admin_api().request(method, &format!("/api/v1{path}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Makes an access token of `owner` through the admin API: `scopes` are
    /// (pattern, actions) pairs such as `("ci/*", "pull,push")`;
    /// `expires_in` e.g. `"2s"` (default: the server's). Returns its id and
    /// the token, the password to use.
    pub fn access_token(
        &self,
        owner: &str,
        name: &str,
        scopes: &[(&str, &str)],
        expires_in: Option<&str>,
    ) -> (String, String) {
        let scopes: Vec<Value> = scopes
            .iter()
            .map(|(p, a)| json!({ "pattern": p, "actions": a.split(',').collect::<Vec<_>>() }))
            .collect();
        let mut body = json!({ "name": name, "scopes": scopes });
        if let Some(e) = expires_in {
            body["expires_in"] = json!(e);
        }
        let made = self.admin_post(&format!("/users/{owner}/access-tokens"), &body);
        let field = |k: &str| {
            made[k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k} in {made}"))
                .to_owned()
        };
        (field("id"), field("token"))
    }

    /// Creates a user through the admin API (applies at once).
    pub fn add_user(&self, name: &str, password: &str) {
        self.admin_post("/users", &json!({ "name": name, "password": password }));
    }

    /// Adds a grant through the admin API (applies at once): `subject` is a
    /// user name, `anonymous` or `*`; `pattern` a repository glob (may hold
    /// `${user}`) or `registry:catalog`; `actions` e.g. `["pull", "push"]`
    /// or `["*"]`.
    pub fn grant(&self, subject: &str, pattern: &str, actions: &[&str]) {
        self.admin_post(
            "/grants",
            &json!({ "subject": subject, "pattern": pattern, "actions": actions }),
        );
    }

    /// `authd import-htpasswd FILE` (the CLI, on the server's database);
    /// returns its output. Panics if it fails.
    pub fn import_htpasswd(&self, file: &Path) -> String {
        let out = self.cli().arg("import-htpasswd").arg(file).run();
        assert!(
            out.status.success(),
            "authd import-htpasswd failed:\n{}",
            describe_output(&out)
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `authd keys export-cert --out FILE`: self-signed certificates of the
    /// published keys, for distribution's `auth.token.rootcertbundle`.
    pub fn export_cert(&self, out: &Path) {
        self.cli()
            .args(["keys", "export-cert", "--out"])
            .arg(out)
            .ok();
        let pem = String::from_utf8_lossy(&crate::read(out)).into_owned();
        assert!(
            pem.contains("-----BEGIN CERTIFICATE-----"),
            "export-cert wrote no certificate to {}: {pem}",
            out.display()
        );
    }

    /// The ids of `user`'s refresh tokens (`GET /api/v1/users/{user}/tokens`).
    pub fn refresh_token_ids(&self, user: &str) -> Vec<String> {
        let path = format!("/api/v1/users/{user}/tokens");
        let resp = self.admin_api().get(&path);
        assert_eq!(resp.status(), 200, "GET {path}");
        let tokens: Value = resp.json().expect("refresh token list is JSON");
        tokens
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: not a list: {tokens}"))
            .iter()
            .map(|t| {
                t["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("refresh token without an id: {t}"))
                    .to_owned()
            })
            .collect()
    }

    /// Revokes one refresh token of `user` through the admin API.
    pub fn revoke_refresh_token(&self, user: &str, id: &str) {
        let path = format!("/api/v1/users/{user}/tokens/{id}");
        let resp = self
            .admin_api()
            .request(Method::DELETE, &path)
            .send()
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        assert_eq!(resp.status(), 204, "DELETE {path}");
    }

    /// An access token from `GET /token` for `scopes` (e.g.
    /// `repository:a/b:pull`, `registry:catalog:*`), with Basic credentials
    /// or anonymously. Panics unless authd answers 200 with a token.
    pub fn token(&self, credentials: Option<(&str, &str)>, scopes: &[&str]) -> String {
        let mut api = Api::new(&self.url);
        if let Some((user, password)) = credentials {
            api = api.basic(user, password);
        }
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("service", SERVICE);
        for scope in scopes {
            query.append_pair("scope", scope);
        }
        let resp = api
            .request(Method::GET, &format!("/token?{}", query.finish()))
            .send()
            .unwrap_or_else(|e| panic!("GET /token: {e}"));
        let status = resp.status();
        let body: Value = resp.json().expect("token response is JSON");
        assert_eq!(status, 200, "GET /token {scopes:?}: {body}");
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_owned()
    }

    /// The `auth.token` section with which `kind` trusts this authd: realm,
    /// service and issuer of authd, and its keys from the JWKS URL (ours) or
    /// from the certificates of `authd keys export-cert` written to
    /// `cert_path` (distribution 2.8's `rootcertbundle`).
    pub fn registry_auth(&self, kind: Impl, cert_path: &Path) -> Auth {
        let (rootcertbundle, jwksurl) = match kind {
            Impl::Ours => (None, Some(self.jwks_url())),
            Impl::Distribution => {
                self.export_cert(cert_path);
                (Some(cert_path.to_owned()), None)
            }
        };
        Auth::Token {
            realm: self.realm(),
            service: SERVICE.to_owned(),
            issuer: ISSUER.to_owned(),
            rootcertbundle,
            jwks: None,
            jwksurl,
        }
    }
}
