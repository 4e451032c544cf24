//! skopeo and podman, each with isolated state: its own auth file
//! (`--authfile`, `REGISTRY_AUTH_FILE`), `HOME` and `XDG_*` directories, and
//! for podman its own storage (`--root`, `--runroot`, `--tmpdir`, vfs), so
//! that logins and images never leak between tests.
//!
//! TLS verification is off for registries (plain HTTP on 127.0.0.1).
//! `podman run` does not work on these machines (rlimits): run pulled images
//! with [`crate::Dockerd`] instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::bins::require_tool;
use crate::process::CommandExt;

/// What each client owns: its binary, a temporary directory holding its home
/// and XDG directories, and its auth file.
struct ClientEnv {
    bin: PathBuf,
    dir: tempfile::TempDir,
    auth_file: PathBuf,
}

impl ClientEnv {
    /// Finds `tool` (installing the Debian package of the same name if
    /// missing) and creates its directories and an empty auth file (podman
    /// and skopeo refuse an `--authfile` that does not exist).
    fn new(tool: &str) -> ClientEnv {
        let bin = require_tool(tool, tool);
        let dir = crate::temp_dir(tool);
        for sub in ["home", "run", "config", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create client directories");
        }
        let auth_file = dir.path().join("auth.json");
        crate::write(&auth_file, r#"{"auths":{}}"#);
        ClientEnv {
            bin,
            dir,
            auth_file,
        }
    }

    /// The tool with its home and XDG directories and its auth file.
    fn cmd(&self) -> Command {
        let dir = self.dir.path();
        let mut cmd = Command::new(&self.bin);
        cmd.env("HOME", dir.join("home"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("REGISTRY_AUTH_FILE", &self.auth_file)
            .env_remove("DOCKER_CONFIG")
            .env_remove("CONTAINERS_CONF")
            .env_remove("CONTAINERS_STORAGE_CONF");
        cmd
    }

    /// `cmd login --tls-verify=false -u USER --password-stdin HOST` with
    /// the auth file; returns the output whatever the outcome.
    fn login(&self, mut cmd: Command, host: &str, user: &str, password: &str) -> Output {
        cmd.args(["login", "--tls-verify=false", "--authfile"])
            .arg(&self.auth_file)
            .args(["-u", user, "--password-stdin", host]);
        cmd.run_with_stdin(password.as_bytes())
    }
}

/// skopeo with its own auth file; no signature policy (`--insecure-policy`).
pub struct Skopeo {
    env: ClientEnv,
}

impl Skopeo {
    /// A skopeo with empty credentials (installs the package if missing).
    pub fn new() -> Skopeo {
        Skopeo {
            env: ClientEnv::new("skopeo"),
        }
    }

    /// `skopeo --insecure-policy` with the isolated environment; add the
    /// subcommand and its arguments.
    pub fn cmd(&self) -> Command {
        let mut cmd = self.env.cmd();
        cmd.arg("--insecure-policy");
        cmd
    }

    /// The auth file (`skopeo login` writes it).
    pub fn auth_file(&self) -> &Path {
        &self.env.auth_file
    }

    /// A scratch directory that lives as long as this client.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.env.dir.path().join(name)
    }

    /// `skopeo copy` without TLS verification; extra flags (e.g.
    /// `--dest-creds u:p`) go before the references. Panics on failure.
    pub fn copy(&self, src: &str, dst: &str, extra: &[&str]) {
        self.copy_cmd(src, dst, extra).ok();
    }

    /// `skopeo copy` as a command, to check a failure.
    pub fn copy_cmd(&self, src: &str, dst: &str, extra: &[&str]) -> Command {
        let mut cmd = self.cmd();
        cmd.args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false"])
            .arg("--authfile")
            .arg(&self.env.auth_file)
            .args(extra)
            .args([src, dst]);
        cmd
    }

    /// `skopeo login --tls-verify=false -u USER --password-stdin HOST`.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.env.login(self.cmd(), host, user, password)
    }

    /// The raw manifest of `image` (`docker://…`), as served.
    pub fn inspect_raw(&self, image: &str, extra: &[&str]) -> Vec<u8> {
        let mut cmd = self.cmd();
        cmd.args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
            .arg(&self.env.auth_file)
            .args(extra)
            .arg(image);
        cmd.ok().into_bytes()
    }
}

impl Default for Skopeo {
    fn default() -> Self {
        Skopeo::new()
    }
}

/// Rootful podman with private storage (vfs) under a temporary directory.
pub struct Podman {
    env: ClientEnv,
}

impl Podman {
    /// A podman with empty storage and credentials (installs it if missing).
    pub fn new() -> Podman {
        Podman {
            env: ClientEnv::new("podman"),
        }
    }

    /// `podman` with private storage and environment; add the subcommand.
    pub fn cmd(&self) -> Command {
        let d = self.env.dir.path();
        let mut cmd = self.env.cmd();
        cmd.arg("--root")
            .arg(d.join("storage"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ]);
        cmd
    }

    /// The auth file (`podman login` writes it).
    pub fn auth_file(&self) -> &Path {
        &self.env.auth_file
    }

    /// A scratch directory that lives as long as this client.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.env.dir.path().join(name)
    }

    /// `podman login --tls-verify=false -u USER --password-stdin HOST`;
    /// returns the output whatever the outcome.
    pub fn login(&self, host: &str, user: &str, password: &str) -> Output {
        self.env.login(self.cmd(), host, user, password)
    }

    /// `podman logout HOST`.
    pub fn logout(&self, host: &str) {
        let mut cmd = self.cmd();
        cmd.args(["logout", "--authfile"])
            .arg(&self.env.auth_file)
            .arg(host)
            .ok();
    }

    /// `podman import TAR REF`: an image from a rootfs tarball.
    pub fn import(&self, tar: &Path, reference: &str) {
        self.cmd().arg("import").arg(tar).arg(reference).ok();
    }

    /// `podman push` as a command (`--tls-verify=false`, the auth file,
    /// `--digestfile FILE`), for the caller to run and check.
    pub fn push_cmd(&self, local: &str, dest: &str, digest_file: &Path) -> Command {
        let mut cmd = self.cmd();
        cmd.args(["push", "--tls-verify=false", "--authfile"])
            .arg(&self.env.auth_file)
            .arg("--digestfile")
            .arg(digest_file)
            .args([local, dest]);
        cmd
    }

    /// `podman push` that must succeed; returns the pushed manifest digest.
    pub fn push(&self, local: &str, dest: &str) -> String {
        let digest_file = self.env.dir.path().join("digest");
        self.push_cmd(local, dest, &digest_file).ok();
        String::from_utf8_lossy(&crate::read(&digest_file))
            .trim()
            .to_owned()
    }

    /// `podman pull --tls-verify=false REF` as a command.
    pub fn pull_cmd(&self, reference: &str) -> Command {
        let mut cmd = self.cmd();
        cmd.args(["pull", "--tls-verify=false", "--authfile"])
            .arg(&self.env.auth_file)
            .arg(reference);
        cmd
    }

    /// The manifest digest podman recorded for a pulled or pushed image.
    pub fn image_digest(&self, reference: &str) -> String {
        self.inspect(reference, "{{.Digest}}")
    }

    /// The image ID (the digest of its config) of a local image.
    pub fn image_id(&self, reference: &str) -> String {
        self.inspect(reference, "{{.Id}}")
    }

    fn inspect(&self, reference: &str, format: &str) -> String {
        self.cmd()
            .args(["image", "inspect", "--format", format, reference])
            .ok()
            .trim()
            .to_owned()
    }

    /// `podman rmi REF`.
    pub fn rmi(&self, reference: &str) {
        self.cmd().args(["rmi", reference]).ok();
    }
}

impl Default for Podman {
    fn default() -> Self {
        Podman::new()
    }
}
