//! A private containerd per test: its own root, state, socket and config
//! (the CRI plugin off, so it needs no CNI), and `ctr` talking to it in the
//! namespace `e2e`. containerd's resolver asks authd for tokens with the
//! OAuth2 password grant (`POST /token grant_type=password`) when `ctr` is
//! given `--user NAME:PASSWORD`.
//!
//! Stopping it (drop) sends SIGTERM to containerd, then SIGKILL to whatever
//! is left of its process group.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bins::require_tool;
use crate::process::Daemon;

/// How long containerd may take to answer `ctr version`.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running private containerd.
pub struct Containerd {
    daemon: Daemon,
    ctr: PathBuf,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Containerd {
    /// Starts a daemon (installing the containerd package if missing) and
    /// waits until it answers.
    pub fn start() -> Containerd {
        let containerd = require_tool("containerd", "containerd");
        let ctr = require_tool("ctr", "containerd");
        let dir = crate::temp_dir("ctrd");
        let d = dir.path();
        let sock = d.join("c.sock");
        let config = d.join("config.toml");
        crate::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{}\"\n",
                d.join("root").display(),
                d.join("state").display(),
                sock.display()
            ),
        );
        let mut cmd = Command::new(containerd);
        cmd.arg("--config").arg(&config);
        let mut daemon = Daemon::spawn("containerd", &cmd, &d.join("containerd.log"));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let answered = sock.exists()
                && Command::new(&ctr)
                    .arg("--address")
                    .arg(&sock)
                    .arg("version")
                    .output()
                    .is_ok_and(|o| o.status.success());
            if answered {
                break;
            }
            if !daemon.is_running() {
                daemon.fail("exited during startup");
            }
            if Instant::now() > deadline {
                daemon.fail(&format!(
                    "did not answer `ctr version` within {START_TIMEOUT:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Containerd {
            daemon,
            ctr,
            sock,
            _dir: dir,
        }
    }

    /// `ctr` talking to this daemon in the namespace `e2e`; add the
    /// subcommand.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(&self.ctr);
        cmd.arg("--address")
            .arg(&self.sock)
            .args(["--namespace", "e2e"]);
        cmd
    }

    /// The server process (log, pid, kill).
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}
