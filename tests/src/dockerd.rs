//! A private docker daemon per test: no iptables, no bridge, vfs storage, its
//! own data root, exec root, pidfile, socket and `daemon.json`, and a private
//! `DOCKER_CONFIG` for the client so that `docker login` never leaks between
//! tests. Registries on 127.0.0.1 count as insecure (plain HTTP) for docker.
//!
//! Stopping it (drop) sends SIGTERM to dockerd, which stops its containerd,
//! then SIGKILL to whatever is left of its process group.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bins::require_tool;
use crate::process::{CommandExt, Daemon};

/// How long dockerd may take to answer `docker version`.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running private dockerd and a client configured for it.
pub struct Dockerd {
    daemon: Daemon,
    docker: PathBuf,
    sock: PathBuf,
    config_dir: PathBuf,
    dir: tempfile::TempDir,
}

impl Dockerd {
    /// Starts a daemon (installing docker.io if missing) and waits until it
    /// answers.
    pub fn start() -> Dockerd {
        Dockerd::start_with(&serde_json::json!({}))
    }

    /// Starts a daemon with `daemon_json` as its `daemon.json` (e.g.
    /// `registry-mirrors`).
    pub fn start_with(daemon_json: &Value) -> Dockerd {
        let dockerd = require_tool("dockerd", "docker.io");
        let docker = require_tool("docker", "docker.io");
        let dir = crate::temp_dir("dockerd");
        let d = dir.path();
        let sock = d.join("docker.sock");
        let config_dir = d.join("client");
        std::fs::create_dir_all(&config_dir).expect("create the docker client config dir");
        // Our own daemon.json: a system /etc/docker/daemon.json must not
        // change what the test sees.
        crate::write(&d.join("daemon.json"), daemon_json.to_string());
        let mut cmd = Command::new(dockerd);
        cmd.args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--log-level=info",
        ])
        .arg("--config-file")
        .arg(d.join("daemon.json"))
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("exec"))
        .arg("--pidfile")
        .arg(d.join("docker.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()));
        let mut daemon = Daemon::spawn("dockerd", &cmd, &d.join("dockerd.log"));
        daemon.set_grace(Duration::from_secs(20));
        let mut this = Dockerd {
            daemon,
            docker,
            sock,
            config_dir,
            dir,
        };
        this.wait_ready();
        this
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.sock.exists() {
                let out = self
                    .docker()
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .output();
                if out.is_ok_and(|o| o.status.success()) {
                    return;
                }
            }
            if !self.daemon.is_running() {
                self.daemon.fail("exited during startup");
            }
            if Instant::now() > deadline {
                self.daemon.fail(&format!(
                    "did not answer `docker version` within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker` talking to this daemon (`DOCKER_HOST`) with this test's own
    /// client config (`DOCKER_CONFIG`); add the subcommand.
    pub fn docker(&self) -> Command {
        let mut cmd = Command::new(&self.docker);
        cmd.env("DOCKER_HOST", format!("unix://{}", self.sock.display()))
            .env("DOCKER_CONFIG", &self.config_dir)
            .env("HOME", self.dir.path())
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    /// The client's `config.json` (what `docker login` stored), or `null`.
    pub fn config_json(&self) -> Value {
        let path = self.config_dir.join("config.json");
        if !path.exists() {
            return Value::Null;
        }
        serde_json::from_slice(&crate::read(&path)).expect("docker config.json is JSON")
    }

    /// The client config directory (`DOCKER_CONFIG`).
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// `docker login --password-stdin`; returns the output whatever the
    /// outcome.
    pub fn login(&self, host: &str, user: &str, password: &str) -> std::process::Output {
        self.docker()
            .args(["login", "-u", user, "--password-stdin", host])
            .run_with_stdin(password.as_bytes())
    }

    /// `docker logout HOST` (must succeed).
    pub fn logout(&self, host: &str) {
        self.docker().args(["logout", host]).ok();
    }

    /// `docker push REF` that must succeed; returns the manifest digest it
    /// printed.
    pub fn push(&self, reference: &str) -> String {
        pushed_digest(&self.docker().args(["push", reference]).ok())
    }

    /// `docker import` of a busybox rootfs (see
    /// [`crate::fixtures::busybox_rootfs_tar`]) whose `/etc/e2e-marker` holds
    /// `marker`, tagged `reference`.
    pub fn import_busybox(&self, reference: &str, marker: &str) {
        let tar = crate::fixtures::busybox_rootfs_tar(&self.dir.path().join("rootfs.tar"), marker);
        self.docker().arg("import").arg(&tar).arg(reference).ok();
    }

    /// Runs `reference` (an image made by [`Dockerd::import_busybox`])
    /// without network and returns the marker it holds.
    pub fn run_marker(&self, reference: &str) -> String {
        self.docker()
            .args(["run", "--rm", "--network", "none", reference])
            .args(["cat", "/etc/e2e-marker"])
            .ok()
    }

    /// The repo digest docker recorded for `reference` after a push or pull
    /// (`sha256:…`), from `docker image inspect`'s RepoDigests, for the entry
    /// of repository `repo` (`HOST/NAME`).
    pub fn repo_digest(&self, reference: &str, repo: &str) -> String {
        let out = self
            .docker()
            .args([
                "image",
                "inspect",
                "--format",
                "{{json .RepoDigests}}",
                reference,
            ])
            .ok();
        let digests: Vec<String> = serde_json::from_str(out.trim()).expect("RepoDigests JSON");
        digests
            .iter()
            .find_map(|d| d.strip_prefix(&format!("{repo}@")))
            .unwrap_or_else(|| panic!("no RepoDigest for {repo} in {digests:?}"))
            .to_owned()
    }

    /// Makes the daemon trust `ca` for the registry `host` (`HOST[:PORT]`)
    /// by writing `/etc/docker/certs.d/HOST/ca.crt`: dockerd reads that
    /// directory, not one of ours, and reads it again for each registry
    /// request. Removed when the returned guard drops.
    pub fn trust_ca(&self, host: &str, ca: &Path) -> TrustedCa {
        let dir = Path::new(CERTS_D).join(host);
        crate::write(&dir.join("ca.crt"), crate::read(ca));
        TrustedCa { dir }
    }

    /// The dockerd process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The daemon process (log, pid).
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// Where dockerd looks for the CA certificates of registries.
const CERTS_D: &str = "/etc/docker/certs.d";

/// A registry's CA in dockerd's `certs.d`; removed on drop.
pub struct TrustedCa {
    dir: PathBuf,
}

impl Drop for TrustedCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `digest: sha256:…` that `docker push` prints.
pub fn pushed_digest(push_output: &str) -> String {
    push_output
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{push_output}"))
        .to_owned()
}
