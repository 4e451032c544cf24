//! Configuration: distribution's YAML file format and `REGISTRY_*`
//! environment overrides, with the same key names, so that an existing
//! `config.yml` and `docker run -e REGISTRY_…` setup keep working.
//!
//! Loading is two steps: the YAML document (or an empty one) is overlaid
//! with the environment, then read into [`RawConfig`], which mirrors
//! distribution's keys; unknown keys are collected and warned about. The
//! raw form is then resolved into [`Config`], the typed settings the
//! registry runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

/// The storage driver and its settings; `storage::open` builds the
/// backend from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageDriver {
    /// Files under a root directory, in distribution's layout.
    Filesystem { root: PathBuf },
    /// distribution's `inmemory`: gone with the process (tests, demos).
    InMemory,
    /// An S3-compatible bucket, in distribution's key layout.
    S3(crate::storage::backend::s3::S3Config),
}

/// Settings the registry runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub log_level: String,
    pub log_format: service::LogFormat,
    pub access_log: bool,
    /// Where the data lives (`storage.filesystem`, `storage.inmemory`).
    pub storage: StorageDriver,
    pub delete_enabled: bool,
    /// Blob GETs answer `307` to a URL of the storage itself where the
    /// driver makes them (S3: presigned); distribution's default, off with
    /// `storage.redirect.disable`.
    pub redirect: bool,
    pub read_only: bool,
    /// Periodic purge of abandoned uploads (distribution's uploadpurging).
    pub upload_purging: Option<UploadPurging>,
    /// Periodic garbage collection inside `serve` (`storage.maintenance.gc`).
    pub gc_schedule: Option<GcSchedule>,
    /// Caps on open upload sessions (`storage.maintenance.uploadlimits`).
    pub upload_limits: UploadLimits,
    /// Where to listen; `None` host means every interface.
    pub addr: ListenAddr,
    pub tls: Option<TlsConfig>,
    /// Extra headers set on every response (`http.headers`).
    pub headers: Vec<(String, String)>,
    pub drain_timeout: Duration,
    /// Header and idle deadlines, connection cap (`http.timeouts`,
    /// `http.maxconnections`).
    pub limits: service::Limits,
    /// Where `/metrics` is served, if anywhere.
    pub metrics: Metrics,
    pub auth: AuthConfig,
    /// Upstreams mirrored as a pull-through cache (`proxy`), most specific
    /// prefix first; empty when the registry mirrors nothing.
    pub proxy: Vec<ProxyUpstream>,
    /// Webhooks (`notifications`); off without endpoints.
    pub notifications: crate::notify::config::Notifications,
    /// Keys of the file or environment that were not understood.
    pub warnings: Vec<String>,
}

/// One mirrored upstream: repositories under `prefix` are pulled through
/// from the upstream's repository of the same name without the prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUpstream {
    /// Repository prefix without trailing slash (`hub`); empty for
    /// distribution's `proxy.remoteurl`, which mirrors every repository.
    pub prefix: String,
    /// Base URL of the upstream registry, without trailing slash.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long a tag is served without asking the upstream again, and how
    /// long a tag nobody pulled stays before garbage collection drops it.
    pub ttl: Duration,
}

impl std::fmt::Debug for ProxyUpstream {
    // The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUpstream")
            .field("prefix", &self.prefix)
            .field("url", &self.url)
            .field("username", &self.username)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The mirrored prefixes and their ttls, for garbage collection.
    pub fn proxy_ttls(&self) -> Vec<(String, Duration)> {
        self.proxy
            .iter()
            .map(|u| (u.prefix.clone(), u.ttl))
            .collect()
    }
}

/// distribution's `proxy.ttl` default (its scheduler's 7 days).
pub const DEFAULT_PROXY_TTL: Duration = Duration::from_secs(168 * 3600);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPurging {
    pub age: Duration,
    pub interval: Duration,
    pub dry_run: bool,
}

/// How many upload sessions may be open at once, and how long one that never
/// received data is kept (ours: `storage.maintenance.uploadlimits`). A cap
/// of 0 means no cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// Per repository.
    pub per_repository: usize,
    /// Per owner: the authenticated user (token subject or htpasswd user),
    /// else the client's address (IPv6: its /64).
    pub per_client: usize,
    /// A session without data this old is purged (by the purging job, and
    /// at once when a cap is reached).
    pub empty_age: Duration,
}

impl Default for UploadLimits {
    /// Generous for CI: 20 images of 10 layers pushed in parallel hold at
    /// most 200 sessions (docker and podman upload a handful of layers per
    /// image at a time); 500 per client leaves room for retries and
    /// abandoned pushes.
    fn default() -> UploadLimits {
        UploadLimits {
            per_repository: 1000,
            per_client: 500,
            empty_age: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcSchedule {
    pub interval: Duration,
    pub grace: Duration,
    pub delete_untagged: bool,
    pub dry_run: bool,
}

/// The Prometheus endpoint (distribution's `http.debug.prometheus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metrics {
    /// `http.debug.prometheus.enabled: false`.
    Off,
    /// On the main listener (the default, without `http.debug.addr`).
    Main { path: String },
    /// On its own listener at `http.debug.addr`.
    Debug { addr: ListenAddr, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:PORT`: every interface, IPv6 and IPv4.
    AnyHost(u16),
    Socket(SocketAddr),
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthConfig {
    None,
    Htpasswd { realm: String, path: PathBuf },
    Token(TokenAuthConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenAuthConfig {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// PEM certificates (or public keys) of trusted issuers.
    pub rootcertbundle: Option<PathBuf>,
    /// A JWKS file of trusted keys.
    pub jwks: Option<PathBuf>,
    /// A JWKS URL fetched at start and again on an unknown `kid`.
    pub jwks_url: Option<String>,
    /// authd's base URL as the registry reaches it, for the web UI's
    /// sign-in and admin pages (ours: `auth.token.authdurl`; default: the
    /// realm without `/token`).
    pub authd_url: String,
}

/// Default storage root when nothing is configured.
pub const DEFAULT_ROOT: &str = "./data/registry";
/// Default port when nothing is configured.
pub const DEFAULT_PORT: u16 = 5000;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("configuration is not valid YAML: {0}")]
    Yaml(String),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// `storage.s3`, with distribution's keys and defaults. Values may come as
/// YAML strings, numbers or booleans (environment variables are typed by
/// their look: an all-digit access key is a number).
fn parse_s3(
    node: &Value,
    warnings: &mut Vec<String>,
) -> Result<crate::storage::backend::s3::S3Config, ConfigError> {
    use crate::storage::backend::s3::{
        DEFAULT_CHUNK_SIZE, DEFAULT_COPY_CONCURRENCY, DEFAULT_COPY_PART, DEFAULT_COPY_THRESHOLD,
        S3Config,
    };
    /// distribution's keys that change nothing here.
    const IGNORED: &[&str] = &[
        "encrypt",
        "keyid",
        "skipverify",
        "v4auth",
        "storageclass",
        "useragent",
        "usedualstack",
        "accelerate",
        "objectacl",
        "loglevel",
    ];
    let mut c = S3Config {
        secure: true,
        chunksize: DEFAULT_CHUNK_SIZE,
        multipartcopythresholdsize: DEFAULT_COPY_THRESHOLD,
        multipartcopychunksize: DEFAULT_COPY_PART,
        multipartcopymaxconcurrency: DEFAULT_COPY_CONCURRENCY,
        ..S3Config::default()
    };
    let Some(map) = node.as_mapping() else {
        return Err(invalid("storage.s3 must be a mapping"));
    };
    let mut pathstyle = None;
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default().to_ascii_lowercase();
        let text = || -> Result<String, ConfigError> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                Value::Null => Ok(String::new()),
                _ => Err(invalid(format!("storage.s3.{key} must be a single value"))),
            }
        };
        let flag = || -> Result<bool, ConfigError> {
            match text()?.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                other => Err(invalid(format!(
                    "storage.s3.{key} {other:?} is not true or false"
                ))),
            }
        };
        let size = || -> Result<u64, ConfigError> {
            let t = text()?;
            t.parse()
                .map_err(|_| invalid(format!("storage.s3.{key} {t:?} is not a size in bytes")))
        };
        match key.as_str() {
            "bucket" => c.bucket = text()?,
            "region" => c.region = text()?,
            "regionendpoint" => c.regionendpoint = text()?,
            "accesskey" => c.accesskey = text()?,
            "secretkey" => c.secretkey = text()?,
            "rootdirectory" => c.rootdirectory = text()?,
            "secure" => c.secure = flag()?,
            "forcepathstyle" => pathstyle = Some(flag()?),
            "chunksize" => c.chunksize = size()?,
            "multipartcopythresholdsize" => c.multipartcopythresholdsize = size()?,
            "multipartcopychunksize" => c.multipartcopychunksize = size()?,
            "multipartcopymaxconcurrency" => {
                c.multipartcopymaxconcurrency = usize::try_from(size()?)
                    .map_err(|_| invalid(format!("storage.s3.{key} is too large")))?;
            }
            k if IGNORED.contains(&k) => {
                warnings.push(format!("storage.s3.{k} is accepted and ignored"));
            }
            k => warnings.push(format!(
                "unknown configuration key storage.s3.{k} is ignored"
            )),
        }
    }
    // distribution 2.8 addresses a `regionendpoint` path-style.
    c.forcepathstyle = pathstyle.unwrap_or(!c.regionendpoint.is_empty());
    if c.bucket.is_empty() {
        return Err(invalid("storage.s3.bucket is required"));
    }
    if c.region.is_empty() && c.regionendpoint.is_empty() {
        return Err(invalid(
            "storage.s3 needs a region (Amazon S3) or a regionendpoint (another S3 server)",
        ));
    }
    if c.chunksize < crate::storage::backend::s3::MIN_CHUNK_SIZE {
        return Err(invalid(format!(
            "storage.s3.chunksize {} is below S3's minimum part size of 5 MiB",
            c.chunksize
        )));
    }
    Ok(c)
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

// ----- the raw form: distribution's keys -----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub version: Option<Value>,
    pub log: RawLog,
    pub storage: Option<RawStorage>,
    pub http: RawHttp,
    pub auth: Option<BTreeMap<String, Value>>,
    pub proxy: Option<RawProxy>,
    /// Read by `notify::config`, which reports its own unknown keys.
    pub notifications: Option<Value>,
    // Accepted as distribution's stock config.yml carries them; nothing for
    // us to do with them.
    pub health: Option<Value>,
}

/// `proxy`: distribution's one upstream (`remoteurl`, `username`,
/// `password`, `ttl`) and our list of prefixed ones (`upstreams`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawProxy {
    pub remoteurl: Option<String>,
    pub username: Option<Value>,
    pub password: Option<Value>,
    pub ttl: Option<String>,
    pub upstreams: Vec<RawUpstream>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUpstream {
    pub prefix: Option<String>,
    pub remoteurl: Option<String>,
    pub username: Option<Value>,
    pub password: Option<Value>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLog {
    pub level: Option<String>,
    pub formatter: Option<String>,
    pub accesslog: RawAccessLog,
    pub fields: Option<Value>,
    pub hooks: Option<Value>,
}

/// `storage.redirect`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRedirect {
    pub disable: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAccessLog {
    pub disabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawStorage {
    pub filesystem: Option<RawFilesystem>,
    pub delete: RawEnabled,
    pub maintenance: RawMaintenance,
    pub cache: Option<Value>,
    pub redirect: RawRedirect,
    // Other drivers are recognised so that the error names them.
    pub s3: Option<Value>,
    pub azure: Option<Value>,
    pub gcs: Option<Value>,
    pub inmemory: Option<Value>,
    pub swift: Option<Value>,
    pub oss: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFilesystem {
    pub rootdirectory: Option<PathBuf>,
    pub maxthreads: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawEnabled {
    pub enabled: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawMaintenance {
    pub uploadpurging: Option<RawUploadPurging>,
    pub readonly: RawEnabled,
    /// Our extension: scheduled garbage collection inside `serve`.
    pub gc: Option<RawGc>,
    /// Our extension: caps on open upload sessions.
    pub uploadlimits: RawUploadLimits,
}

/// `storage.maintenance.uploadlimits`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawUploadLimits {
    pub perrepository: Option<usize>,
    pub perclient: Option<usize>,
    pub emptyage: Option<String>,
}

/// distribution's `storage.maintenance.uploadpurging`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RawUploadPurging {
    pub enabled: bool,
    pub age: Option<String>,
    pub interval: Option<String>,
    pub dryrun: bool,
}

impl Default for RawUploadPurging {
    fn default() -> RawUploadPurging {
        RawUploadPurging {
            enabled: true,
            age: None,
            interval: None,
            dryrun: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGc {
    pub enabled: bool,
    pub interval: Option<String>,
    pub grace: Option<String>,
    pub deleteuntagged: bool,
    pub dryrun: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHttp {
    pub addr: Option<String>,
    pub net: Option<String>,
    pub prefix: Option<String>,
    pub host: Option<String>,
    pub secret: Option<String>,
    pub relativeurls: Option<bool>,
    pub draintimeout: Option<String>,
    pub tls: Option<RawTls>,
    pub headers: Option<BTreeMap<String, Value>>,
    pub debug: RawDebug,
    pub http2: Option<Value>,
    /// Ours: `readheader`, `idle`.
    pub timeouts: RawTimeouts,
    /// Ours: the connection cap.
    pub maxconnections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawDebug {
    pub addr: Option<String>,
    pub prometheus: RawPrometheus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPrometheus {
    pub enabled: Option<bool>,
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTimeouts {
    pub readheader: Option<String>,
    pub idle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawTls {
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub clientcas: Option<Value>,
    pub minimumtls: Option<String>,
    pub letsencrypt: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawHtpasswd {
    realm: Option<String>,
    path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawToken {
    realm: Option<String>,
    service: Option<String>,
    issuer: Option<String>,
    rootcertbundle: Option<PathBuf>,
    jwks: Option<PathBuf>,
    jwksurl: Option<String>,
    authdurl: Option<String>,
    autoredirect: Option<bool>,
    signingalgorithms: Option<Value>,
}

// ----- loading -----

impl Config {
    /// Loads `file` (or nothing) overlaid with `env` (`REGISTRY_*` pairs).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match file {
            Some(p) => {
                std::fs::read_to_string(p).map_err(|e| ConfigError::Read(p.to_owned(), e))?
            }
            None => String::new(),
        };
        Config::from_yaml(&text, env)
    }

    /// Parses YAML `text` overlaid with `env`.
    pub fn from_yaml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut doc: Value = if text.trim().is_empty() {
            Value::Mapping(Mapping::new())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))?
        };
        if !doc.is_mapping() {
            return Err(ConfigError::Yaml("the document must be a mapping".into()));
        }
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        // Shorter keys first, so `REGISTRY_AUTH=htpasswd` is applied before
        // `REGISTRY_AUTH_HTPASSWD_PATH` refines it.
        env.sort_by_key(|(k, _)| k.len());
        for (key, value) in env {
            if let Some(path) = key.strip_prefix("REGISTRY_") {
                if path == "CONFIGURATION_PATH" {
                    continue;
                }
                overlay(&mut doc, path, &value);
            }
        }
        let mut warnings = Vec::new();
        let raw: RawConfig = serde_ignored::deserialize(doc, |path| {
            warnings.push(format!("unknown configuration key {path} is ignored"));
        })
        .map_err(|e| ConfigError::Yaml(e.to_string()))?;
        resolve(raw, warnings)
    }
}

/// Sets the key named by an environment variable (`HTTP_TLS_KEY` →
/// `http.tls.key`), matching existing keys case-insensitively. A scalar met
/// on the way (`auth: htpasswd` from `REGISTRY_AUTH=htpasswd`) becomes a
/// mapping with that one key, the way distribution reads it.
fn overlay(doc: &mut Value, env_path: &str, value: &str) {
    let segments: Vec<String> = env_path.split('_').map(str::to_ascii_lowercase).collect();
    let mut node = doc;
    for (i, seg) in segments.iter().enumerate() {
        if let Value::String(s) = node {
            let mut m = Mapping::new();
            m.insert(
                Value::String(s.to_ascii_lowercase()),
                Value::Mapping(Mapping::new()),
            );
            *node = Value::Mapping(m);
        }
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            unreachable!("made a mapping above")
        };
        let key = map
            .keys()
            .find(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(seg)))
            .cloned()
            .unwrap_or_else(|| Value::String(seg.clone()));
        let last = i == segments.len() - 1;
        if last {
            let mut parsed = parse_env_value(value);
            // Sections keyed by a type name: `REGISTRY_AUTH=token` means
            // `auth: {token: {}}`, as in distribution.
            if let (1, "auth" | "storage", Value::String(kind)) =
                (segments.len(), seg.as_str(), &parsed)
            {
                let mut m = Mapping::new();
                m.insert(
                    Value::String(kind.to_ascii_lowercase()),
                    Value::Mapping(Mapping::new()),
                );
                parsed = Value::Mapping(m);
            }
            // `REGISTRY_AUTH=htpasswd` names the auth type: keep any settings
            // of that type already given by the file.
            let keep_existing = match (map.get(&key), &parsed) {
                (Some(Value::Mapping(old)), Value::Mapping(new)) => {
                    new.len() == 1 && old.len() == 1 && new.keys().all(|k| old.contains_key(k))
                }
                _ => false,
            };
            if !keep_existing {
                map.insert(key, parsed);
            }
            return;
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
}

/// An environment value read as a YAML scalar or flow sequence, so `true`,
/// `5` and `[a, b]` get their types; anything else stays a string.
fn parse_env_value(value: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(value) {
        Ok(v @ (Value::Bool(_) | Value::Number(_) | Value::Sequence(_))) => v,
        _ => Value::String(value.to_owned()),
    }
}

fn resolve(raw: RawConfig, mut warnings: Vec<String>) -> Result<Config, ConfigError> {
    if let Some(v) = &raw.version {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        if v != "0.1" {
            warnings.push(format!(
                "configuration version {v:?} is not 0.1; reading it as 0.1"
            ));
        }
    }
    let log_level = raw
        .log
        .level
        .clone()
        .unwrap_or_else(|| "info".into())
        .to_ascii_lowercase();
    if !matches!(
        log_level.as_str(),
        "error" | "warn" | "info" | "debug" | "trace"
    ) {
        return Err(invalid(format!(
            "log.level {log_level:?} is not one of error, warn, info, debug"
        )));
    }
    let log_format: service::LogFormat = raw
        .log
        .formatter
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e| invalid(format!("log.formatter: {e}")))?;

    let storage = raw.storage.unwrap_or_default();
    for (driver, present) in [
        ("azure", storage.azure.is_some()),
        ("gcs", storage.gcs.is_some()),
        ("swift", storage.swift.is_some()),
        ("oss", storage.oss.is_some()),
    ] {
        if present {
            return Err(invalid(format!(
                "storage driver {driver} is not supported; use storage.filesystem, s3 or inmemory"
            )));
        }
    }
    let drivers = [
        ("filesystem", storage.filesystem.is_some()),
        ("inmemory", storage.inmemory.is_some()),
        ("s3", storage.s3.is_some()),
    ];
    let named: Vec<&str> = drivers.iter().filter(|d| d.1).map(|d| d.0).collect();
    if named.len() > 1 {
        return Err(invalid(format!(
            "storage: configure one driver, not {}",
            named.join(" and ")
        )));
    }
    let duration = |key: &str, v: Option<&str>, default: Duration| match v {
        None | Some("") => Ok(default),
        Some(s) => {
            parse_duration(s).ok_or_else(|| invalid(format!("{key} {s:?} is not a duration")))
        }
    };
    // distribution purges uploads by default: a week old, once a day.
    let purging = storage.maintenance.uploadpurging.unwrap_or_default();
    let upload_purging = if purging.enabled {
        Some(UploadPurging {
            age: duration(
                "storage.maintenance.uploadpurging.age",
                purging.age.as_deref(),
                Duration::from_secs(168 * 3600),
            )?,
            interval: duration(
                "storage.maintenance.uploadpurging.interval",
                purging.interval.as_deref(),
                Duration::from_secs(24 * 3600),
            )?,
            dry_run: purging.dryrun,
        })
    } else {
        None
    };
    let limits = &storage.maintenance.uploadlimits;
    let defaults = UploadLimits::default();
    let upload_limits = UploadLimits {
        per_repository: limits.perrepository.unwrap_or(defaults.per_repository),
        per_client: limits.perclient.unwrap_or(defaults.per_client),
        empty_age: duration(
            "storage.maintenance.uploadlimits.emptyage",
            limits.emptyage.as_deref(),
            defaults.empty_age,
        )?,
    };
    let gc_schedule = match storage.maintenance.gc {
        Some(gc) if gc.enabled => Some(GcSchedule {
            interval: duration(
                "storage.maintenance.gc.interval",
                gc.interval.as_deref(),
                Duration::from_secs(24 * 3600),
            )?,
            grace: duration(
                "storage.maintenance.gc.grace",
                gc.grace.as_deref(),
                Duration::from_secs(3600),
            )?,
            delete_untagged: gc.deleteuntagged,
            dry_run: gc.dryrun,
        }),
        _ => None,
    };
    let driver = if let Some(s3) = &storage.s3 {
        StorageDriver::S3(parse_s3(s3, &mut warnings)?)
    } else if storage.inmemory.is_some() {
        StorageDriver::InMemory
    } else {
        StorageDriver::Filesystem {
            root: storage
                .filesystem
                .and_then(|f| f.rootdirectory)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        }
    };

    let http = raw.http;
    let notifications = crate::notify::config::resolve(
        raw.notifications,
        &driver,
        http.host.as_deref(),
        &mut warnings,
    )?;
    if let Some(net) = http.net.as_deref()
        && net != "tcp"
    {
        return Err(invalid(format!(
            "http.net {net:?} is not supported; use tcp"
        )));
    }
    if let Some(prefix) = http.prefix.as_deref()
        && !prefix.trim_matches('/').is_empty()
    {
        return Err(invalid(
            "http.prefix is not supported; serve the registry at / (a proxy can map a prefix)",
        ));
    }
    let addr = parse_addr(http.addr.as_deref().unwrap_or(""))?;
    let tls = match http.tls {
        Some(RawTls {
            certificate: Some(certificate),
            key: Some(key),
            ..
        }) => Some(TlsConfig { certificate, key }),
        Some(RawTls {
            certificate: None,
            key: None,
            letsencrypt: None,
            ..
        })
        | None => None,
        Some(RawTls {
            letsencrypt: Some(_),
            ..
        }) => {
            return Err(invalid(
                "http.tls.letsencrypt is not supported; give certificate and key",
            ));
        }
        Some(_) => return Err(invalid("http.tls needs both certificate and key")),
    };
    let mut headers = Vec::new();
    for (name, value) in http.headers.unwrap_or_default() {
        let values: Vec<String> = match value {
            Value::Sequence(seq) => seq.iter().filter_map(scalar_string).collect(),
            other => scalar_string(&other).into_iter().collect(),
        };
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(format!(
                "http.headers: {name:?} is not a valid header name"
            )));
        }
        for v in values {
            if http::HeaderValue::from_str(&v).is_err() {
                return Err(invalid(format!(
                    "http.headers.{name}: {v:?} is not a valid header value"
                )));
            }
            headers.push((name.clone(), v));
        }
    }
    let drain_timeout = duration(
        "http.draintimeout",
        http.draintimeout.as_deref(),
        Duration::from_secs(60),
    )?;

    let limits = service::Limits {
        header_read: duration(
            "http.timeouts.readheader",
            http.timeouts.readheader.as_deref(),
            service::listen::DEFAULT_HEADER_READ,
        )?,
        idle: duration(
            "http.timeouts.idle",
            http.timeouts.idle.as_deref(),
            service::listen::DEFAULT_IDLE,
        )?,
        max_connections: match http.maxconnections {
            None => service::listen::default_max_connections(),
            Some(0) => return Err(invalid("http.maxconnections must be at least 1")),
            Some(n) => n,
        },
    };
    if limits.header_read.is_zero() || limits.idle.is_zero() {
        return Err(invalid("http.timeouts must be longer than zero"));
    }
    let metrics_path = http
        .debug
        .prometheus
        .path
        .unwrap_or_else(|| "/metrics".into());
    if !metrics_path.starts_with('/') || metrics_path.starts_with("/v2") {
        return Err(invalid(format!(
            "http.debug.prometheus.path {metrics_path:?} must start with / and not be under /v2"
        )));
    }
    let metrics = match (http.debug.prometheus.enabled, http.debug.addr.as_deref()) {
        (Some(false), _) => Metrics::Off,
        (_, None | Some("")) => Metrics::Main { path: metrics_path },
        (_, Some(addr)) => Metrics::Debug {
            addr: parse_addr(addr).map_err(|_| {
                invalid(format!(
                    "http.debug.addr {addr:?} is not HOST:PORT or :PORT"
                ))
            })?,
            path: metrics_path,
        },
    };

    let auth = resolve_auth(raw.auth, &mut warnings)?;
    let proxy = resolve_proxy(raw.proxy.unwrap_or_default())?;
    Ok(Config {
        log_level,
        log_format,
        access_log: !raw.log.accesslog.disabled,
        storage: driver,
        delete_enabled: storage.delete.enabled,
        redirect: !storage.redirect.disable,
        read_only: storage.maintenance.readonly.enabled,
        upload_purging,
        gc_schedule,
        upload_limits,
        addr,
        tls,
        headers,
        drain_timeout,
        limits,
        metrics,
        auth,
        proxy,
        notifications,
        warnings,
    })
}

/// `proxy.remoteurl` becomes the upstream of every repository no prefixed
/// upstream claims; prefixes are sorted longest first, so the most
/// specific one wins.
fn resolve_proxy(raw: RawProxy) -> Result<Vec<ProxyUpstream>, ConfigError> {
    fn one(
        key: &str,
        prefix: &str,
        url: Option<String>,
        username: Option<&Value>,
        password: Option<&Value>,
        ttl: Option<&str>,
    ) -> Result<ProxyUpstream, ConfigError> {
        let url = url.unwrap_or_default();
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || reqwest::Url::parse(url).is_err()
        {
            return Err(invalid(format!(
                "{key}.remoteurl {url:?} is not an http:// or https:// URL"
            )));
        }
        let ttl = match ttl {
            None | Some("") => DEFAULT_PROXY_TTL,
            Some(s) => parse_duration(s)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid(format!("{key}.ttl {s:?} is not a duration")))?,
        };
        let username = username.and_then(scalar_string).filter(|u| !u.is_empty());
        let password = password.and_then(scalar_string);
        if username.is_some() != password.is_some() {
            return Err(invalid(format!("{key}: username and password go together")));
        }
        Ok(ProxyUpstream {
            prefix: prefix.to_owned(),
            url: url.to_owned(),
            username,
            password,
            ttl,
        })
    }
    let mut out = Vec::new();
    for (i, u) in raw.upstreams.iter().enumerate() {
        let key = format!("proxy.upstreams[{i}]");
        let prefix = u.prefix.as_deref().unwrap_or_default().trim_matches('/');
        if prefix.is_empty() || !token::name::is_valid_repository(prefix) {
            return Err(invalid(format!(
                "{key}.prefix {prefix:?} must be a repository name (`hub`, `mirrors/ghcr`)"
            )));
        }
        if out.iter().any(|o: &ProxyUpstream| o.prefix == prefix) {
            return Err(invalid(format!("{key}.prefix {prefix:?} is listed twice")));
        }
        out.push(one(
            &key,
            prefix,
            u.remoteurl.clone(),
            u.username.as_ref(),
            u.password.as_ref(),
            u.ttl.as_deref(),
        )?);
    }
    if raw.remoteurl.as_deref().is_some_and(|u| !u.is_empty()) {
        out.push(one(
            "proxy",
            "",
            raw.remoteurl,
            raw.username.as_ref(),
            raw.password.as_ref(),
            raw.ttl.as_deref(),
        )?);
    }
    out.sort_by_key(|u| std::cmp::Reverse(u.prefix.len()));
    Ok(out)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn resolve_auth(
    auth: Option<BTreeMap<String, Value>>,
    warnings: &mut Vec<String>,
) -> Result<AuthConfig, ConfigError> {
    let Some(auth) = auth else {
        return Ok(AuthConfig::None);
    };
    let mut kinds = auth.into_iter();
    let Some((kind, settings)) = kinds.next() else {
        return Ok(AuthConfig::None);
    };
    if let Some((other, _)) = kinds.next() {
        return Err(invalid(format!(
            "auth: only one method may be configured, found {kind} and {other}"
        )));
    }
    let settings = if settings.is_null() {
        Value::Mapping(Mapping::new())
    } else {
        settings
    };
    fn read<T: serde::de::DeserializeOwned>(
        section: &str,
        v: Value,
        warnings: &mut Vec<String>,
    ) -> Result<T, ConfigError> {
        serde_ignored::deserialize(v, |p| {
            warnings.push(format!(
                "unknown configuration key auth.{section}.{p} is ignored"
            ));
        })
        .map_err(|e: serde_yaml_ng::Error| invalid(format!("auth.{section}: {e}")))
    }
    match kind.as_str() {
        "htpasswd" => {
            let h: RawHtpasswd = read("htpasswd", settings, warnings)?;
            let path = h
                .path
                .ok_or_else(|| invalid("auth.htpasswd.path is required"))?;
            Ok(AuthConfig::Htpasswd {
                realm: h.realm.unwrap_or_else(|| "Registry Realm".into()),
                path,
            })
        }
        "token" => {
            let t: RawToken = read("token", settings, warnings)?;
            if t.autoredirect.is_some() || t.signingalgorithms.is_some() {
                warnings.push("auth.token.autoredirect and signingalgorithms are ignored".into());
            }
            let authd = token::DEFAULT_AUTHD_URL;
            let jwks_url = match (&t.jwksurl, &t.rootcertbundle, &t.jwks) {
                (Some(u), _, _) => Some(u.clone()),
                // Keys from a file only, as configured.
                (None, Some(_), _) | (None, _, Some(_)) => None,
                (None, None, None) => Some(format!("{authd}{}", token::JWKS_PATH)),
            };
            let realm = t
                .realm
                .unwrap_or_else(|| format!("{authd}{}", token::TOKEN_PATH));
            let authd_url = t.authdurl.unwrap_or_else(|| {
                realm
                    .strip_suffix(token::TOKEN_PATH)
                    .unwrap_or(authd)
                    .to_owned()
            });
            Ok(AuthConfig::Token(TokenAuthConfig {
                realm,
                authd_url,
                service: t.service.unwrap_or_else(|| token::DEFAULT_SERVICE.into()),
                issuer: t.issuer.unwrap_or_else(|| token::DEFAULT_ISSUER.into()),
                rootcertbundle: t.rootcertbundle,
                jwks: t.jwks,
                jwks_url,
            }))
        }
        "none" | "" => Ok(AuthConfig::None),
        "silly" => Err(invalid(
            "auth.silly is a development mode of distribution and is not supported",
        )),
        other => Err(invalid(format!(
            "auth method {other:?} is not supported (htpasswd, token)"
        ))),
    }
}

/// `:5000`, `0.0.0.0:5000`, `[::1]:5000`, `localhost:5000`.
fn parse_addr(s: &str) -> Result<ListenAddr, ConfigError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(ListenAddr::AnyHost(DEFAULT_PORT));
    }
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse()
            .map(ListenAddr::AnyHost)
            .map_err(|_| invalid(format!("http.addr {s:?}: bad port")));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(ListenAddr::Socket(sa));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port = port
            .parse()
            .map_err(|_| invalid(format!("http.addr {s:?}: bad port")))?;
        return Ok(ListenAddr::Socket(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    Err(invalid(format!(
        "http.addr {s:?} is not HOST:PORT or :PORT"
    )))
}

/// Go-style durations as distribution writes them: `60s`, `5m`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => n / 1e9,
            "us" | "µs" => n / 1e6,
            "ms" => n / 1e3,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(secs);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Environment variables for [`Config::from_yaml`] in tests.
#[cfg(test)]
pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_anything() {
        let c = Config::from_yaml("", env(&[])).unwrap();
        assert_eq!(c.addr, ListenAddr::AnyHost(5000));
        assert_eq!(
            c.storage,
            StorageDriver::Filesystem {
                root: PathBuf::from("./data/registry")
            }
        );
        assert_eq!(c.auth, AuthConfig::None);
        assert!(!c.delete_enabled && !c.read_only && c.access_log);
        assert!(c.warnings.is_empty());
        let purging = c.upload_purging.expect("on by default, as in distribution");
        assert_eq!(purging.age, Duration::from_secs(168 * 3600));
        assert_eq!(c.gc_schedule, None);
    }

    #[test]
    fn stock_registry2_config_loads_cleanly() {
        let yaml = "version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
";
        let c = Config::from_yaml(yaml, env(&[])).unwrap();
        assert_eq!(
            c.storage,
            StorageDriver::Filesystem {
                root: PathBuf::from("/var/lib/registry")
            }
        );
        assert_eq!(
            c.headers,
            vec![("X-Content-Type-Options".to_owned(), "nosniff".to_owned())]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn env_overrides_like_distribution() {
        let c = Config::from_yaml(
            "storage:\n  filesystem:\n    rootdirectory: /x\n",
            env(&[
                ("REGISTRY_AUTH", "htpasswd"),
                ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
                ("REGISTRY_AUTH_HTPASSWD_PATH", "/auth/htpasswd"),
                ("REGISTRY_HTTP_ADDR", "127.0.0.1:0"),
                ("REGISTRY_STORAGE_DELETE_ENABLED", "true"),
                (
                    "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                    "/var/lib/registry",
                ),
                ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true"),
                ("REGISTRY_LOG_ACCESSLOG_DISABLED", "true"),
                (
                    "REGISTRY_CONFIGURATION_PATH",
                    "/etc/docker/registry/config.yml",
                ),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::Htpasswd {
                realm: "Registry Realm".into(),
                path: "/auth/htpasswd".into()
            }
        );
        assert_eq!(c.addr, ListenAddr::Socket("127.0.0.1:0".parse().unwrap()));
        assert!(c.delete_enabled && c.read_only && !c.access_log);
        assert_eq!(
            c.storage,
            StorageDriver::Filesystem {
                root: PathBuf::from("/var/lib/registry")
            }
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn env_auth_type_keeps_file_settings() {
        let c = Config::from_yaml(
            "auth:\n  htpasswd:\n    realm: r\n    path: /p\n",
            env(&[("REGISTRY_AUTH", "htpasswd")]),
        )
        .unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::Htpasswd {
                realm: "r".into(),
                path: "/p".into()
            }
        );
    }

    #[test]
    fn the_ui_finds_authd_from_the_realm_or_its_own_key() {
        let authd_url = |vars: &[(&str, &str)]| {
            let mut all = vec![("REGISTRY_AUTH", "token")];
            all.extend_from_slice(vars);
            match Config::from_yaml("", env(&all)).unwrap().auth {
                AuthConfig::Token(t) => t.authd_url,
                other => panic!("token auth expected, got {other:?}"),
            }
        };
        assert_eq!(
            authd_url(&[("REGISTRY_AUTH_TOKEN_REALM", "http://10.0.0.2:7000/token")]),
            "http://10.0.0.2:7000"
        );
        assert_eq!(
            authd_url(&[
                ("REGISTRY_AUTH_TOKEN_REALM", "https://auth.example/token"),
                ("REGISTRY_AUTH_TOKEN_AUTHDURL", "http://authd:5001"),
            ]),
            "http://authd:5001"
        );
    }

    #[test]
    fn token_defaults_line_up_with_authd() {
        let c = Config::from_yaml("", env(&[("REGISTRY_AUTH", "token")])).unwrap();
        let AuthConfig::Token(t) = c.auth else {
            panic!("token auth expected")
        };
        assert_eq!(t.realm, "http://127.0.0.1:5001/token");
        assert_eq!(t.authd_url, "http://127.0.0.1:5001");
        assert_eq!(t.service, token::DEFAULT_SERVICE);
        assert_eq!(t.issuer, token::DEFAULT_ISSUER);
        assert_eq!(
            t.jwks_url.as_deref(),
            Some("http://127.0.0.1:5001/.well-known/jwks.json")
        );
        let c =
            Config::from_yaml("auth:\n  token:\n    rootcertbundle: /c.pem\n", env(&[])).unwrap();
        let AuthConfig::Token(t) = c.auth else {
            panic!("token auth expected")
        };
        assert_eq!(t.jwks_url, None);
    }

    #[test]
    fn s3_like_distribution() {
        let yaml = "storage:\n  s3:\n    bucket: images\n    region: garage\n    \
                    regionendpoint: http://127.0.0.1:3900\n    rootdirectory: /registry\n    \
                    forcepathstyle: true\n    secure: false\n    v4auth: true\n    \
                    multipartcopymaxconcurrency: 8\n";
        let c = Config::from_yaml(
            yaml,
            env(&[
                ("REGISTRY_STORAGE_S3_ACCESSKEY", "123456"),
                ("REGISTRY_STORAGE_S3_SECRETKEY", "s3cr3t"),
                ("REGISTRY_STORAGE_S3_CHUNKSIZE", "8388608"),
                ("REGISTRY_STORAGE_S3_MULTIPARTCOPYCHUNKSIZE", "67108864"),
            ]),
        )
        .unwrap();
        let StorageDriver::S3(s3) = &c.storage else {
            panic!("{:?}", c.storage)
        };
        assert_eq!(
            (
                s3.bucket.as_str(),
                s3.region.as_str(),
                s3.rootdirectory.as_str()
            ),
            ("images", "garage", "/registry")
        );
        assert_eq!(s3.regionendpoint, "http://127.0.0.1:3900");
        assert_eq!(
            (s3.accesskey.as_str(), s3.secretkey.as_str()),
            ("123456", "s3cr3t")
        );
        assert!(s3.forcepathstyle && !s3.secure);
        assert_eq!(s3.chunksize, 8 << 20);
        assert_eq!(
            (
                s3.multipartcopythresholdsize,
                s3.multipartcopychunksize,
                s3.multipartcopymaxconcurrency
            ),
            (5 << 30, 64 << 20, 8),
            "the copy settings are read, not ignored"
        );
        assert!(
            c.warnings.iter().any(|w| w.contains("v4auth")),
            "{:?}",
            c.warnings
        );
        assert!(
            !format!("{:?}", c.storage).contains("s3cr3t"),
            "secret in Debug"
        );
        for (bad, says) in [
            ("storage:\n  s3:\n    region: x\n", "bucket"),
            ("storage:\n  s3:\n    bucket: b\n", "region"),
            (
                "storage:\n  s3:\n    bucket: b\n    region: r\n    chunksize: 1024\n",
                "5 MiB",
            ),
            (
                "storage:\n  s3:\n    bucket: b\n    region: r\n    secure: maybe\n",
                "true or false",
            ),
            (
                "storage:\n  s3:\n    bucket: b\n    region: r\n  filesystem: {}\n",
                "one driver",
            ),
        ] {
            let err = Config::from_yaml(bad, env(&[])).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn storage_drivers() {
        let c = Config::from_yaml("storage:\n  inmemory: {}\n", env(&[])).unwrap();
        assert_eq!(c.storage, StorageDriver::InMemory);
        let c = Config::from_yaml("", env(&[("REGISTRY_STORAGE", "inmemory")])).unwrap();
        assert_eq!(c.storage, StorageDriver::InMemory);
        let both = "storage:\n  inmemory: {}\n  filesystem:\n    rootdirectory: /x\n";
        let err = Config::from_yaml(both, env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("one driver, not filesystem and inmemory"),
            "{err}"
        );
        let err = Config::from_yaml("storage:\n  azure: {}\n", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("storage driver azure is not supported"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_warn_and_bad_values_fail() {
        let c = Config::from_yaml(
            "frobnicate: 1\nhttp:\n  addr: :5001\n  bogus: x\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings.iter().any(|w| w.contains("frobnicate")));
        assert!(c.warnings.iter().any(|w| w.contains("http.bogus")));
        for bad in [
            "storage:\n  s3:\n    bucket: x\n",
            "http:\n  addr: nonsense\n",
            "auth:\n  htpasswd:\n    realm: x\n",
            "auth:\n  htpasswd: {path: /a}\n  token: {}\n",
            "log:\n  level: loud\n",
            "http:\n  tls:\n    certificate: /c\n",
            "- a list\n",
            "key: [unclosed\n",
        ] {
            assert!(Config::from_yaml(bad, env(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn maintenance_schedules() {
        let c = Config::from_yaml(
            "storage:\n  maintenance:\n    uploadpurging:\n      enabled: false\n    gc:\n      enabled: true\n      interval: 6h\n      grace: 30m\n      deleteuntagged: true\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.upload_purging, None);
        assert_eq!(
            c.gc_schedule,
            Some(GcSchedule {
                interval: Duration::from_secs(6 * 3600),
                grace: Duration::from_secs(1800),
                delete_untagged: true,
                dry_run: false
            })
        );
        assert!(
            Config::from_yaml(
                "storage:\n  maintenance:\n    gc:\n      enabled: true\n      grace: soon\n",
                env(&[])
            )
            .is_err()
        );
    }

    #[test]
    fn upload_limits() {
        let c = Config::from_yaml("", env(&[])).unwrap();
        assert_eq!(c.upload_limits, UploadLimits::default());
        let c = Config::from_yaml(
            "storage:\n  maintenance:\n    uploadlimits:\n      perrepository: 10\n      emptyage: 5m\n",
            env(&[("REGISTRY_STORAGE_MAINTENANCE_UPLOADLIMITS_PERCLIENT", "0")]),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            c.upload_limits,
            UploadLimits {
                per_repository: 10,
                per_client: 0,
                empty_age: Duration::from_secs(300),
            }
        );
    }

    #[test]
    fn timeouts_connection_cap_and_metrics_endpoint() {
        let c = Config::from_yaml("", env(&[])).unwrap();
        assert_eq!(c.limits.header_read, Duration::from_secs(10));
        assert_eq!(c.limits.idle, Duration::from_secs(60));
        assert!(c.limits.max_connections >= 16);
        assert_eq!(c.log_format, service::LogFormat::Text);
        assert_eq!(
            c.metrics,
            Metrics::Main {
                path: "/metrics".into()
            }
        );
        let c = Config::from_yaml(
            "http:\n  timeouts:\n    readheader: 5s\n    idle: 2m\n  maxconnections: 100\n  debug:\n    addr: 127.0.0.1:5001\n    prometheus:\n      enabled: true\n      path: /m\nlog:\n  formatter: json\n",
            env(&[]),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.limits.header_read, Duration::from_secs(5));
        assert_eq!(c.limits.idle, Duration::from_secs(120));
        assert_eq!(c.limits.max_connections, 100);
        assert_eq!(c.log_format, service::LogFormat::Json);
        assert_eq!(
            c.metrics,
            Metrics::Debug {
                addr: ListenAddr::Socket("127.0.0.1:5001".parse().unwrap()),
                path: "/m".into()
            }
        );
        let c = Config::from_yaml(
            "",
            env(&[
                ("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "false"),
                ("REGISTRY_HTTP_TIMEOUTS_READHEADER", "1s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.metrics, Metrics::Off);
        assert_eq!(c.limits.header_read, Duration::from_secs(1));
        for bad in [
            "http:\n  timeouts:\n    readheader: soon\n",
            "http:\n  timeouts:\n    idle: 0s\n",
            "http:\n  maxconnections: 0\n",
            "http:\n  debug:\n    addr: nowhere\n",
            "http:\n  debug:\n    prometheus:\n      path: /v2/metrics\n",
            "log:\n  formatter: xml\n",
        ] {
            assert!(Config::from_yaml(bad, env(&[])).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
    }
}
