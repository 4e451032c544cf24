//! Registry servers: our `registry` binary and CNCF distribution 2.8
//! (`docker-registry`), started from one builder with the very same YAML
//! config (distribution's key names), each in a temporary directory.
//!
//! `E2E_REGISTRY_IMPL=distribution` makes [`RegistryBuilder::start`] run
//! distribution instead of ours: a way to check that a test itself is right
//! against the reference implementation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::bins::{free_port, require_tool, workspace_bin};
use crate::process::Daemon;

/// How long a registry may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Which implementation serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// Our `registry` binary.
    Ours,
    /// CNCF distribution 2.8 (`docker-registry`).
    Distribution,
}

/// The `auth` section of the config.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    /// No authentication.
    #[default]
    None,
    /// `auth.htpasswd`: Basic auth against an htpasswd file.
    Htpasswd {
        /// `auth.htpasswd.realm`.
        realm: String,
        /// `auth.htpasswd.path`.
        path: PathBuf,
    },
    /// `auth.token`: bearer tokens from an authorization service.
    Token {
        /// `auth.token.realm`: absolute URL of the token endpoint.
        realm: String,
        /// `auth.token.service`.
        service: String,
        /// `auth.token.issuer`.
        issuer: String,
        /// `auth.token.rootcertbundle`: PEM certificates (distribution 2.8).
        rootcertbundle: Option<PathBuf>,
        /// `auth.token.jwks`: a JWKS file (ours, distribution 3).
        jwks: Option<PathBuf>,
        /// `auth.token.jwksurl`: a JWKS URL (ours; distribution ignores it).
        jwksurl: Option<String>,
    },
}

/// Configuration of a registry server; [`RegistryBuilder::start`] runs ours,
/// [`RegistryBuilder::start_distribution`] runs distribution with the same
/// YAML.
#[derive(Debug, Clone)]
pub struct RegistryBuilder {
    root: Option<PathBuf>,
    auth: Auth,
    delete: bool,
    readonly: bool,
    log_level: String,
    access_log: bool,
    env: Vec<(String, String)>,
    bin: Option<PathBuf>,
    extra_yaml: Vec<(String, Value)>,
    /// `storage.s3` instead of `storage.filesystem`.
    s3: Option<Value>,
    /// Run inside a network namespace, listening on its address.
    inside: Option<crate::proxy::Inside>,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            root: None,
            auth: Auth::None,
            delete: false,
            readonly: false,
            log_level: "info".to_owned(),
            access_log: true,
            env: Vec::new(),
            bin: None,
            extra_yaml: Vec::new(),
            s3: None,
            inside: None,
        }
    }
}

impl RegistryBuilder {
    /// `storage.filesystem.rootdirectory`; default: `data/` in the server's
    /// temporary directory (removed with the handle). A caller-provided root
    /// outlives the server, e.g. to hand a data dir from one server to another.
    #[must_use]
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The `auth` section.
    #[must_use]
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// `auth.htpasswd` with realm `e2e` and the given file.
    #[must_use]
    pub fn htpasswd(self, path: impl Into<PathBuf>) -> Self {
        self.auth(Auth::Htpasswd {
            realm: "e2e".to_owned(),
            path: path.into(),
        })
    }

    /// Store in the bucket of `garage` under `rootdirectory` (distribution's
    /// `storage.s3` keys, understood by both servers) instead of a directory.
    #[must_use]
    pub fn s3(mut self, garage: &crate::garage::Garage, rootdirectory: &str) -> Self {
        let mut s3: serde_json::Map<String, Value> = garage
            .storage_settings()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        s3.insert("rootdirectory".into(), json!(rootdirectory));
        s3.insert("secure".into(), json!(false));
        self.s3 = Some(Value::Object(s3));
        self
    }

    /// `storage.delete.enabled`.
    #[must_use]
    pub fn delete_enabled(mut self, enabled: bool) -> Self {
        self.delete = enabled;
        self
    }

    /// `storage.maintenance.readonly.enabled`.
    #[must_use]
    pub fn readonly(mut self, enabled: bool) -> Self {
        self.readonly = enabled;
        self
    }

    /// `log.level` (default `info`).
    #[must_use]
    pub fn log_level(mut self, level: &str) -> Self {
        level.clone_into(&mut self.log_level);
        self
    }

    /// `log.accesslog.disabled` is the negation (default: access log on).
    #[must_use]
    pub fn access_log(mut self, enabled: bool) -> Self {
        self.access_log = enabled;
        self
    }

    /// An environment variable for the server process (e.g. a `REGISTRY_*`
    /// override).
    #[must_use]
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Any other config key, as a dotted path (`http.headers`, …).
    #[must_use]
    pub fn yaml(mut self, dotted_key: &str, value: Value) -> Self {
        self.extra_yaml.push((dotted_key.to_owned(), value));
        self
    }

    /// Use this `registry` binary instead of the workspace's.
    #[must_use]
    pub fn bin(mut self, path: impl Into<PathBuf>) -> Self {
        self.bin = Some(path.into());
        self
    }

    /// Run the server inside `net`'s namespace, listening on its address
    /// there: it is reached across the namespace's link (which
    /// [`PrivateNet::limit_rate`](crate::proxy::PrivateNet::limit_rate) may
    /// slow down), like a registry on another host.
    #[must_use]
    pub fn inside(mut self, net: &crate::proxy::PrivateNet) -> Self {
        self.inside = Some(net.inside());
        self
    }

    /// The address the server listens on: 127.0.0.1, or the namespace's.
    fn listen_ip(&self) -> std::net::Ipv4Addr {
        self.inside
            .as_ref()
            .map_or(std::net::Ipv4Addr::LOCALHOST, crate::proxy::Inside::addr)
    }

    /// `cmd`, inside the namespace when the server runs there.
    fn placed(&self, cmd: Command) -> Command {
        match &self.inside {
            Some(inside) => inside.wrap(&cmd),
            None => cmd,
        }
    }

    /// The YAML config for a server listening on `addr` storing in `root`.
    pub fn config_yaml(&self, addr: &str, root: &Path) -> String {
        let mut log = json!({ "level": self.log_level });
        if !self.access_log {
            log["accesslog"] = json!({ "disabled": true });
        }
        let mut storage = json!({
            "filesystem": { "rootdirectory": root },
            "delete": { "enabled": self.delete },
        });
        if let Some(s3) = &self.s3 {
            storage = json!({ "s3": s3, "delete": { "enabled": self.delete } });
        }
        if self.readonly {
            storage["maintenance"] = json!({ "readonly": { "enabled": true } });
        }
        let mut config = json!({
            "version": "0.1",
            "log": log,
            "storage": storage,
            "http": { "addr": addr },
        });
        match &self.auth {
            Auth::None => {}
            Auth::Htpasswd { realm, path } => {
                config["auth"] = json!({ "htpasswd": { "realm": realm, "path": path } });
            }
            Auth::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
                jwks,
                jwksurl,
            } => {
                let mut token = json!({ "realm": realm, "service": service, "issuer": issuer });
                if let Some(p) = rootcertbundle {
                    token["rootcertbundle"] = json!(p);
                }
                if let Some(p) = jwks {
                    token["jwks"] = json!(p);
                }
                if let Some(u) = jwksurl {
                    token["jwksurl"] = json!(u);
                }
                config["auth"] = json!({ "token": token });
            }
        }
        for (key, value) in &self.extra_yaml {
            set_dotted(&mut config, key, value.clone());
        }
        serde_yaml_ng::to_string(&config).expect("serialise the registry config")
    }

    /// Starts our registry (or distribution when `E2E_REGISTRY_IMPL` says
    /// so) on 127.0.0.1 (or inside its namespace) port 0 and waits for its
    /// `listening on` line.
    pub fn start(self) -> Registry {
        if requested_impl() == Impl::Distribution {
            return self.start_distribution();
        }
        let bin = self
            .bin
            .clone()
            .unwrap_or_else(|| workspace_bin("registry"));
        let dir = crate::temp_dir("registry");
        let root = self.root.clone().unwrap_or_else(|| dir.path().join("data"));
        let config_path = dir.path().join("config.yml");
        let addr = format!("{}:0", self.listen_ip());
        crate::write(&config_path, self.config_yaml(&addr, &root));
        let mut cmd = Command::new(&bin);
        cmd.arg("serve").arg("--config").arg(&config_path);
        clear_registry_env(&mut cmd);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let cmd = self.placed(cmd);
        let mut daemon = Daemon::spawn("registry", &cmd, &dir.path().join("registry.log"));
        let url = daemon.wait_listening(START_TIMEOUT);
        Registry {
            daemon,
            url,
            root,
            kind: Impl::Ours,
            builder: self,
            bin,
            config: config_path,
            _dir: dir,
        }
    }

    /// Starts CNCF distribution 2.8 with the same config on a free port, and
    /// waits until `GET /v2/` answers (distribution does not print its port).
    pub fn start_distribution(self) -> Registry {
        let bin = require_tool("docker-registry", "docker-registry");
        let dir = crate::temp_dir("distribution");
        let root = self.root.clone().unwrap_or_else(|| dir.path().join("data"));
        let config_path = dir.path().join("config.yml");
        let log = dir.path().join("distribution.log");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("{}:{port}", self.listen_ip());
            crate::write(&config_path, self.config_yaml(&addr, &root));
            let mut cmd = Command::new(&bin);
            cmd.arg("serve").arg(&config_path);
            clear_registry_env(&mut cmd);
            // distribution 2.8's AWS SDK cannot apply a custom CA bundle to
            // its transport and panics at start of the s3 driver when one is
            // set (some machines export one for every tool); the test S3
            // server speaks plain HTTP anyway.
            cmd.env_remove("AWS_CA_BUNDLE");
            cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
            let cmd = self.placed(cmd);
            let mut daemon = Daemon::spawn("distribution", &cmd, &log);
            let url = format!("http://{addr}");
            match wait_http(&mut daemon, &format!("{url}/v2/"), START_TIMEOUT) {
                Ok(()) => {
                    return Registry {
                        daemon,
                        url,
                        root,
                        kind: Impl::Distribution,
                        builder: self,
                        bin,
                        config: config_path,
                        _dir: dir,
                    };
                }
                Err(e) => {
                    last_error = format!("{e}\n{}", daemon.log_tail(20));
                    drop(daemon);
                }
            }
        }
        panic!("distribution did not start after 5 attempts: {last_error}");
    }
}

/// Which implementation [`RegistryBuilder::start`] runs: distribution when
/// `E2E_REGISTRY_IMPL=distribution`, ours otherwise.
pub fn requested_impl() -> Impl {
    if std::env::var("E2E_REGISTRY_IMPL").is_ok_and(|v| v == "distribution") {
        Impl::Distribution
    } else {
        Impl::Ours
    }
}

/// The config file is the one source of truth: an inherited `REGISTRY_*`
/// variable would silently override it.
fn clear_registry_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REGISTRY_") {
            cmd.env_remove(key);
        }
    }
}

/// Polls `url` until it gives any HTTP response while `daemon` stays alive.
fn wait_http(daemon: &mut Daemon, url: &str, timeout: Duration) -> Result<(), String> {
    let client = crate::api::http_client();
    let deadline = Instant::now() + timeout;
    loop {
        if !daemon.is_running() {
            return Err("exited (port conflict?)".to_owned());
        }
        if client.get(url).send().is_ok() {
            // A failed bind exits at once: make sure it was our process that
            // answered.
            std::thread::sleep(Duration::from_millis(100));
            if daemon.is_running() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{url} did not answer within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sets `value` at a dotted path in a JSON object, creating objects on the way.
fn set_dotted(config: &mut Value, dotted: &str, value: Value) {
    let mut node = config;
    let parts: Vec<&str> = dotted.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !node.get(part).is_some_and(Value::is_object) {
            node[*part] = json!({});
        }
        node = &mut node[*part];
    }
    node[parts[parts.len() - 1]] = value;
}

/// A running registry server (ours or distribution). Dropping it stops the
/// process and removes its temporary directory (and the storage root, unless
/// the caller provided it).
pub struct Registry {
    daemon: Daemon,
    url: String,
    root: PathBuf,
    kind: Impl,
    builder: RegistryBuilder,
    bin: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// A builder with defaults: no auth, delete disabled, temporary root.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Our registry with defaults.
    pub fn start() -> Registry {
        Self::builder().start()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> &str {
        self.url
            .split_once("://")
            .map_or(self.url.as_str(), |(_, h)| h)
    }

    /// The storage root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Which implementation this is.
    pub fn kind(&self) -> Impl {
        self.kind
    }

    /// The builder it was started from (with its root), to start it again
    /// over the same data after [`Registry::kill_hard`] or a drop.
    pub fn builder_again(&self) -> RegistryBuilder {
        self.builder.clone().root(self.root.clone())
    }

    /// The config file the server was started with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The server's binary with the server's environment, for its other
    /// subcommands; add the arguments, e.g.
    /// `reg.cli().args(["gc", "--config"]).arg(reg.config_path())`.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        clear_registry_env(&mut cmd);
        cmd.envs(self.builder.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// The server process.
    pub fn daemon(&mut self) -> &mut Daemon {
        &mut self.daemon
    }

    /// The process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// SIGKILL, as a crash would.
    pub fn kill_hard(&mut self) {
        self.daemon.kill_hard();
    }

    /// Graceful stop (SIGTERM); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.daemon.stop()
    }

    /// A blocking API client for this server.
    pub fn api(&self) -> crate::Api {
        crate::Api::new(&self.url)
    }
}
