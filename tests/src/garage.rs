//! A private Garage (S3-compatible object storage) per test: one node,
//! `replication_factor = 1`, SQLite metadata, everything in a temporary
//! directory, the S3 API on an ephemeral port of 127.0.0.1, one bucket and
//! one key allowed on it.
//!
//! Garage is a Rust crate, not a Debian package: [`garage_bin`] finds it on
//! `PATH` or in cargo's bin directory and otherwise installs it once with
//! `cargo install garage --locked` (about 9 minutes on 2 cores; serialised
//! across test processes with `flock`). `scripts/test` installs it before
//! the suite runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::bins::{free_ports, which};
use crate::process::{CommandExt, Daemon, describe_output};

/// How long Garage may take to answer its CLI after starting.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The region Garage's S3 API signs for.
pub const REGION: &str = "garage";

/// The `garage` binary, installed with cargo when missing.
pub fn garage_bin() -> PathBuf {
    let cargo_bin = || {
        std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|d| d.join("bin/garage"))
            .filter(|p| p.is_file())
    };
    if let Some(p) = which("garage").or_else(cargo_bin) {
        return p;
    }
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = which("garage").or_else(cargo_bin) {
        return p;
    }
    eprintln!(
        "e2e: `garage` missing, installing it with `cargo install garage --version 2.5.0 --locked` (~9 min)"
    );
    let script = "command -v garage >/dev/null || [ -x \"${CARGO_HOME:-$HOME/.cargo}/bin/garage\" ] \
                  || cargo install garage --version 2.5.0 --locked";
    let out = Command::new("flock")
        .args(["/tmp/e2e-garage-install.lock", "sh", "-c", script])
        .run_for(Duration::from_secs(3600));
    assert!(
        out.status.success(),
        "installing garage failed:\n{}",
        describe_output(&out)
    );
    which("garage")
        .or_else(cargo_bin)
        .expect("`garage` still missing after `cargo install garage`")
}

/// A running single-node Garage with a bucket and a key.
pub struct Garage {
    daemon: Daemon,
    bin: PathBuf,
    config: PathBuf,
    /// `http://127.0.0.1:PORT` of the S3 API.
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    _dir: tempfile::TempDir,
}

impl Garage {
    /// Starts Garage and creates the bucket `bucket` with a key allowed to
    /// read and write it.
    pub fn start(bucket: &str) -> Garage {
        let bin = garage_bin();
        let dir = crate::temp_dir("garage");
        // Ports are picked free, then bound by Garage: a rare clash is
        // retried with new ones.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&bin, dir.path(), bucket) {
                Ok((daemon, config, endpoint, access_key, secret_key)) => {
                    return Garage {
                        daemon,
                        bin,
                        config,
                        endpoint,
                        bucket: bucket.to_owned(),
                        access_key,
                        secret_key,
                        _dir: dir,
                    };
                }
                Err(e) => last = e,
            }
        }
        panic!("garage did not start: {last}");
    }

    #[allow(clippy::type_complexity)]
    fn try_start(
        bin: &Path,
        dir: &Path,
        bucket: &str,
    ) -> Result<(Daemon, PathBuf, String, String, String), String> {
        let run = dir.join(format!("run-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&run).map_err(|e| e.to_string())?;
        let [rpc, s3] = free_ports();
        let secret = hex::encode(rand::random::<[u8; 32]>());
        let config = run.join("garage.toml");
        crate::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n",
                meta = run.join("meta").display(),
                data = run.join("data").display(),
            ),
        );
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&config).arg("server");
        // GARAGE_LOG sets Garage's own log filter, e.g.
        // `garage_api_common=info` for a line per S3 request in its log.
        cmd.env(
            "RUST_LOG",
            std::env::var("GARAGE_LOG").unwrap_or_else(|_| "garage=warn".into()),
        );
        let mut daemon = Daemon::spawn("garage", &cmd, &run.join("garage.log"));
        let cli = |args: &[&str]| {
            let mut c = Command::new(bin);
            c.arg("-c").arg(&config).args(args);
            c.run_for(Duration::from_secs(60))
        };
        // The node answers its CLI once its RPC listens. (`node id` is no
        // sign of that: it falls back to reading the key file, and the
        // `layout assign` after it then finds nobody listening.)
        let started = Instant::now();
        loop {
            let out = cli(&["status"]);
            if out.status.success() {
                break;
            }
            if !daemon.is_running() {
                return Err(format!("garage exited:\n{}", daemon.log_tail(40)));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "garage did not answer within {START_TIMEOUT:?}:\n{}",
                    describe_output(&out)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = cli(&["node", "id", "-q"]);
        if !out.status.success() {
            return Err(format!("garage node id:\n{}", describe_output(&out)));
        }
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let node = text.split('@').next().unwrap_or_default().to_owned();
        let key_id = format!("GK{}", hex::encode(rand::random::<[u8; 12]>()));
        let key_secret = hex::encode(rand::random::<[u8; 32]>());
        for args in [
            vec!["layout", "assign", "-z", "dc1", "-c", "10G", &node],
            vec!["layout", "apply", "--version", "1"],
            vec!["bucket", "create", bucket],
            vec![
                "key",
                "import",
                "--yes",
                "-n",
                "registry",
                &key_id,
                &key_secret,
            ],
            vec![
                "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "registry",
            ],
        ] {
            let out = cli(&args);
            if !out.status.success() {
                return Err(format!(
                    "garage {}:\n{}",
                    args.join(" "),
                    describe_output(&out)
                ));
            }
        }
        let endpoint = format!("http://127.0.0.1:{s3}");
        wait_http(&endpoint, &mut daemon)?;
        Ok((daemon, config, endpoint, key_id, key_secret))
    }

    /// Runs the `garage` CLI against this node; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut c = Command::new(&self.bin);
        c.arg("-c").arg(&self.config).args(args);
        c.ok()
    }

    /// distribution's `storage.s3` settings that reach this node's bucket
    /// (keys as in the YAML; `REGISTRY_STORAGE_S3_<KEY>` as variables).
    pub fn storage_settings(&self) -> [(&'static str, String); 5] {
        [
            ("bucket", self.bucket.clone()),
            ("region", REGION.to_owned()),
            ("regionendpoint", self.endpoint.clone()),
            ("accesskey", self.access_key.clone()),
            ("secretkey", self.secret_key.clone()),
        ]
    }

    /// The daemon, to stop or kill it.
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

/// Waits until the S3 API answers HTTP at all (any status).
fn wait_http(endpoint: &str, daemon: &mut Daemon) -> Result<(), String> {
    let client = crate::api::http_client();
    let started = Instant::now();
    loop {
        if client.get(endpoint).send().is_ok() {
            return Ok(());
        }
        if !daemon.is_running() || started.elapsed() > START_TIMEOUT {
            return Err(format!(
                "garage's S3 API at {endpoint} did not answer:\n{}",
                daemon.log_tail(40)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
