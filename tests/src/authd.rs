//! Our `authd` binary as a process on port 0 with a temporary data directory,
//! and its CLI (`authd user add …`, `authd keys export-cert …`) run against
//! the same data directory and environment.
//!
//! Kept deliberately thin: the server takes everything through `AUTHD_*`
//! environment variables, and the CLI through [`Authd::cli`] plus whatever
//! arguments the test passes, so the harness follows authd as it grows.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::workspace_bin;
use crate::process::Daemon;

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
}
