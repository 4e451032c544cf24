//! Configuration: built-in defaults, then the YAML file, then `AUTHD_*`
//! environment variables, in that order of precedence (last wins).
//!
//! Every key is documented in `authd/config.example.yml`; unknown keys are
//! reported as warnings, never fatal, so a config written for a newer
//! version still starts.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Shortest token lifetime handed out: clients assume 60 s when
/// `expires_in` is missing, so less would only cause surprises.
pub const MIN_TOKEN_EXPIRATION: u64 = 60;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// `IP:PORT` to listen on; `:PORT` means every IPv4 address.
    pub addr: String,
    pub data_dir: PathBuf,
    /// The database; defaults to the SQLite file `<data_dir>/authd.db`.
    pub database: Option<DatabaseConfig>,
    /// `aud` of issued tokens; must match the registry's `service`.
    pub service: String,
    /// `iss` of issued tokens.
    pub issuer: String,
    pub token: TokenConfig,
    pub access_tokens: AccessTokensConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    pub password: PasswordConfig,
    pub throttle: ThrottleConfig,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    pub debug: DebugConfig,
}

/// `database:` — a SQLite file path (the older form), or
/// `{url: …}`: a SQLite path or a `postgres://` URL.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum DatabaseConfig {
    Path(PathBuf),
    Url { url: String },
}

/// Never shows the password of a URL.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseConfig::Path(p) => f.debug_tuple("Path").field(p).finish(),
            DatabaseConfig::Url { url } => f
                .debug_struct("Url")
                .field("url", &crate::db::Location::parse(url))
                .finish(),
        }
    }
}

/// Connection limits and shutdown (see `service::listen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Seconds for a request's headers (and TLS handshake), from their
    /// first byte.
    pub header_read_timeout: u64,
    /// Seconds a connection may wait for its next request.
    pub idle_timeout: u64,
    /// Open connections at most; 0: half the open-file limit (16..4096).
    pub max_connections: usize,
    /// Seconds in-flight requests get to finish on SIGTERM.
    pub drain_timeout: u64,
}

/// Where `/metrics` is served (the registry's `http.debug` keys).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DebugConfig {
    /// `IP:PORT` of a separate metrics listener; empty: the main one.
    pub addr: String,
    pub prometheus: PrometheusConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PrometheusConfig {
    pub enabled: bool,
    pub path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TokenConfig {
    /// Lifetime of access tokens, seconds.
    pub expiration: u64,
    pub algorithm: SigningAlgorithm,
    pub kid_format: KidFormat,
    /// Refresh tokens unused for this many days stop working.
    pub refresh_ttl_days: u64,
}

/// Access tokens (`rgt_…`) for CI jobs and robots.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AccessTokensConfig {
    /// Lifetime of a new token made without an expiry, days.
    pub default_ttl_days: u64,
    /// Whether tokens may be made that never expire (`expires_in: never`).
    pub allow_never: bool,
}

impl Default for AccessTokensConfig {
    fn default() -> AccessTokensConfig {
        AccessTokensConfig {
            default_ttl_days: 90,
            allow_never: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlgorithm {
    ES256,
    RS256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KidFormat {
    /// distribution 2.x's libtrust key ID (matches `rootcertbundle`).
    Libtrust,
    /// RFC 7638 JWK thumbprint.
    Thumbprint,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub certificate: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// A level (`info`) or `tracing` filter directives (`authd=debug,info`).
    pub level: String,
    /// `text` or `json`, as the registry's `log.formatter`.
    #[serde(deserialize_with = "log_format")]
    pub formatter: service::LogFormat,
    /// One access line per request.
    pub access: bool,
}

fn log_format<'de, D: serde::Deserializer<'de>>(d: D) -> Result<service::LogFormat, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PasswordConfig {
    pub argon2: Argon2Config,
    /// Seconds a successful password check is remembered (0 disables).
    pub cache_ttl: u64,
    /// Shortest password accepted for new passwords set through the API or
    /// CLI (imported hashes are taken as they are).
    pub min_length: usize,
}

/// argon2id cost parameters for new hashes. The defaults are OWASP's.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ThrottleConfig {
    /// Failed logins per (account, client address) before 429s start.
    pub free_failures: u32,
    /// Longest `Retry-After`, seconds.
    pub max_delay: u64,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct AdminConfig {
    /// Name of the admin created when the users table is empty.
    pub user: String,
    /// Its password; only from `AUTHD_ADMIN_PASSWORD`. When absent, a random
    /// one is generated and printed once.
    #[serde(skip)]
    pub password: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: "0.0.0.0:5001".into(),
            data_dir: PathBuf::from("./data"),
            database: None,
            service: token::DEFAULT_SERVICE.into(),
            issuer: token::DEFAULT_ISSUER.into(),
            token: TokenConfig::default(),
            access_tokens: AccessTokensConfig::default(),
            tls: TlsConfig::default(),
            log: LogConfig::default(),
            password: PasswordConfig::default(),
            throttle: ThrottleConfig::default(),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            debug: DebugConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            header_read_timeout: service::listen::DEFAULT_HEADER_READ.as_secs(),
            idle_timeout: service::listen::DEFAULT_IDLE.as_secs(),
            max_connections: 0,
            drain_timeout: 10,
        }
    }
}

impl Default for PrometheusConfig {
    fn default() -> PrometheusConfig {
        PrometheusConfig {
            enabled: true,
            path: "/metrics".into(),
        }
    }
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            expiration: 300,
            algorithm: SigningAlgorithm::ES256,
            kid_format: KidFormat::Libtrust,
            refresh_ttl_days: 90,
        }
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "info".into(),
            formatter: service::LogFormat::Text,
            access: true,
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> PasswordConfig {
        PasswordConfig {
            argon2: Argon2Config::default(),
            cache_ttl: 60,
            min_length: 8,
        }
    }
}

impl Default for Argon2Config {
    fn default() -> Argon2Config {
        Argon2Config {
            memory_kib: argon2::Params::DEFAULT_M_COST,
            iterations: argon2::Params::DEFAULT_T_COST,
            parallelism: argon2::Params::DEFAULT_P_COST,
        }
    }
}

impl Default for ThrottleConfig {
    fn default() -> ThrottleConfig {
        ThrottleConfig {
            free_failures: 5,
            max_delay: 300,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            user: "admin".into(),
            password: None,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{var}: {message}")]
    Env { var: &'static str, message: String },
    #[error("{0}")]
    Invalid(String),
}

type Setter = fn(&mut Config, &str) -> Result<(), String>;

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a valid number"))
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{v:?} is not true or false")),
    }
}

fn yaml_enum<T: serde::de::DeserializeOwned>(v: &str) -> Result<T, String> {
    serde_yaml_ng::from_value(serde_yaml_ng::Value::String(v.trim().to_owned()))
        .map_err(|e| e.to_string())
}

/// Every environment override: the variable and how it sets the config.
/// The names follow the YAML keys (`token.expiration` →
/// `AUTHD_TOKEN_EXPIRATION`).
pub const ENV_VARS: &[(&str, Setter)] = &[
    ("AUTHD_ADDR", |c, v| {
        v.clone_into(&mut c.addr);
        Ok(())
    }),
    ("AUTHD_DATA_DIR", |c, v| {
        c.data_dir = v.into();
        Ok(())
    }),
    ("AUTHD_DATABASE", |c, v| {
        c.database = Some(DatabaseConfig::Path(v.into()));
        Ok(())
    }),
    ("AUTHD_DATABASE_URL", |c, v| {
        c.database = Some(DatabaseConfig::Url { url: v.to_owned() });
        Ok(())
    }),
    ("AUTHD_SERVICE", |c, v| {
        v.clone_into(&mut c.service);
        Ok(())
    }),
    ("AUTHD_ISSUER", |c, v| {
        v.clone_into(&mut c.issuer);
        Ok(())
    }),
    ("AUTHD_TOKEN_EXPIRATION", |c, v| {
        c.token.expiration = number(v)?;
        Ok(())
    }),
    ("AUTHD_TOKEN_ALGORITHM", |c, v| {
        c.token.algorithm = yaml_enum(v)?;
        Ok(())
    }),
    ("AUTHD_TOKEN_KID_FORMAT", |c, v| {
        c.token.kid_format = yaml_enum(v)?;
        Ok(())
    }),
    ("AUTHD_TOKEN_REFRESH_TTL_DAYS", |c, v| {
        c.token.refresh_ttl_days = number(v)?;
        Ok(())
    }),
    ("AUTHD_ACCESS_TOKENS_DEFAULT_TTL_DAYS", |c, v| {
        c.access_tokens.default_ttl_days = number(v)?;
        Ok(())
    }),
    ("AUTHD_ACCESS_TOKENS_ALLOW_NEVER", |c, v| {
        c.access_tokens.allow_never = match v.trim() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(format!("{v:?} is not true or false")),
        };
        Ok(())
    }),
    ("AUTHD_TLS_CERTIFICATE", |c, v| {
        c.tls.certificate = Some(v.into());
        Ok(())
    }),
    ("AUTHD_TLS_KEY", |c, v| {
        c.tls.key = Some(v.into());
        Ok(())
    }),
    ("AUTHD_LOG_LEVEL", |c, v| {
        v.clone_into(&mut c.log.level);
        Ok(())
    }),
    ("AUTHD_LOG_FORMATTER", |c, v| {
        c.log.formatter = v.parse()?;
        Ok(())
    }),
    ("AUTHD_LOG_ACCESS", |c, v| {
        c.log.access = boolean(v)?;
        Ok(())
    }),
    ("AUTHD_HTTP_HEADER_READ_TIMEOUT", |c, v| {
        c.http.header_read_timeout = number(v)?;
        Ok(())
    }),
    ("AUTHD_HTTP_IDLE_TIMEOUT", |c, v| {
        c.http.idle_timeout = number(v)?;
        Ok(())
    }),
    ("AUTHD_HTTP_MAX_CONNECTIONS", |c, v| {
        c.http.max_connections = number(v)?;
        Ok(())
    }),
    ("AUTHD_HTTP_DRAIN_TIMEOUT", |c, v| {
        c.http.drain_timeout = number(v)?;
        Ok(())
    }),
    ("AUTHD_DEBUG_ADDR", |c, v| {
        v.clone_into(&mut c.debug.addr);
        Ok(())
    }),
    ("AUTHD_DEBUG_PROMETHEUS_ENABLED", |c, v| {
        c.debug.prometheus.enabled = boolean(v)?;
        Ok(())
    }),
    ("AUTHD_DEBUG_PROMETHEUS_PATH", |c, v| {
        v.clone_into(&mut c.debug.prometheus.path);
        Ok(())
    }),
    ("AUTHD_PASSWORD_ARGON2_MEMORY_KIB", |c, v| {
        c.password.argon2.memory_kib = number(v)?;
        Ok(())
    }),
    ("AUTHD_PASSWORD_ARGON2_ITERATIONS", |c, v| {
        c.password.argon2.iterations = number(v)?;
        Ok(())
    }),
    ("AUTHD_PASSWORD_ARGON2_PARALLELISM", |c, v| {
        c.password.argon2.parallelism = number(v)?;
        Ok(())
    }),
    ("AUTHD_PASSWORD_CACHE_TTL", |c, v| {
        c.password.cache_ttl = number(v)?;
        Ok(())
    }),
    ("AUTHD_PASSWORD_MIN_LENGTH", |c, v| {
        c.password.min_length = number(v)?;
        Ok(())
    }),
    ("AUTHD_THROTTLE_FREE_FAILURES", |c, v| {
        c.throttle.free_failures = number(v)?;
        Ok(())
    }),
    ("AUTHD_THROTTLE_MAX_DELAY", |c, v| {
        c.throttle.max_delay = number(v)?;
        Ok(())
    }),
    ("AUTHD_THROTTLE_TRUSTED_PROXIES", |c, v| {
        c.throttle.trusted_proxies = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| format!("{s:?} is not an IP address")))
            .collect::<Result<_, _>>()?;
        Ok(())
    }),
    ("AUTHD_ADMIN_USER", |c, v| {
        v.clone_into(&mut c.admin.user);
        Ok(())
    }),
    ("AUTHD_ADMIN_PASSWORD", |c, v| {
        c.admin.password = Some(v.to_owned());
        Ok(())
    }),
];

impl Config {
    /// Loads the configuration from the process environment and, when
    /// given, a YAML file. Returns the config and the warnings to log once
    /// logging is set up (unknown keys, adjusted values).
    pub fn load(path: Option<&Path>) -> Result<(Config, Vec<String>), ConfigError> {
        Config::load_with(path, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with the environment given as a function.
    pub fn load_with(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let (config, unknown) =
                    Config::from_yaml(&text).map_err(|message| ConfigError::Parse {
                        path: path.to_owned(),
                        message,
                    })?;
                warnings.extend(
                    unknown
                        .into_iter()
                        .map(|k| format!("{}: unknown key {k:?} ignored", path.display())),
                );
                config
            }
            None => Config::default(),
        };
        for (var, set) in ENV_VARS {
            if let Some(value) = env(var) {
                set(&mut config, &value).map_err(|message| ConfigError::Env { var, message })?;
            }
        }
        config.validate(&mut warnings)?;
        Ok((config, warnings))
    }

    /// Parses YAML text; returns the config and the unknown keys' paths.
    pub fn from_yaml(text: &str) -> Result<(Config, Vec<String>), String> {
        let mut unknown = Vec::new();
        // An empty file is a valid, empty configuration.
        if text.trim().is_empty() {
            return Ok((Config::default(), unknown));
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
            .map_err(|e: serde_yaml_ng::Error| e.to_string())?;
        Ok((config, unknown))
    }

    fn validate(&mut self, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.token.expiration < MIN_TOKEN_EXPIRATION {
            warnings.push(format!(
                "token.expiration {} s is below the minimum; using {MIN_TOKEN_EXPIRATION} s",
                self.token.expiration
            ));
            self.token.expiration = MIN_TOKEN_EXPIRATION;
        }
        if self.token.refresh_ttl_days == 0 {
            return Err(ConfigError::Invalid(
                "token.refresh_ttl_days must be at least 1".into(),
            ));
        }
        if !(1..=36_500).contains(&self.access_tokens.default_ttl_days) {
            return Err(ConfigError::Invalid(
                "access_tokens.default_ttl_days must be 1 to 36500".into(),
            ));
        }
        if self.tls.certificate.is_some() != self.tls.key.is_some() {
            return Err(ConfigError::Invalid(
                "tls.certificate and tls.key must be given together".into(),
            ));
        }
        if self.service.is_empty() || self.issuer.is_empty() {
            return Err(ConfigError::Invalid(
                "service and issuer must not be empty".into(),
            ));
        }
        if !crate::names::is_valid_user_name(&self.admin.user) {
            return Err(ConfigError::Invalid(format!(
                "admin.user {:?} is not a valid user name",
                self.admin.user
            )));
        }
        crate::password::Hasher::new(self.password.argon2)
            .map_err(|e| ConfigError::Invalid(format!("password.argon2: {e}")))?;
        if self.http.header_read_timeout == 0 || self.http.idle_timeout == 0 {
            return Err(ConfigError::Invalid(
                "http.header_read_timeout and http.idle_timeout must be at least 1".into(),
            ));
        }
        self.metrics_addr()?;
        if !self.debug.prometheus.path.starts_with('/') {
            return Err(ConfigError::Invalid(format!(
                "debug.prometheus.path {:?} must start with /",
                self.debug.prometheus.path
            )));
        }
        Ok(())
    }

    /// The connection limits to serve with.
    pub fn limits(&self) -> service::Limits {
        service::Limits {
            header_read: std::time::Duration::from_secs(self.http.header_read_timeout),
            idle: std::time::Duration::from_secs(self.http.idle_timeout),
            max_connections: match self.http.max_connections {
                0 => service::listen::default_max_connections(),
                n => n,
            },
        }
    }

    /// The separate metrics listener's address, when one is configured.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.debug.addr.is_empty() || !self.debug.prometheus.enabled {
            return Ok(None);
        }
        parse_listen(&self.debug.addr).map(Some).map_err(|()| {
            ConfigError::Invalid(format!("debug.addr {:?} is not IP:PORT", self.debug.addr))
        })
    }

    /// The socket address to bind. `:5001` means `0.0.0.0:5001`.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_listen(&self.addr)
            .map_err(|()| ConfigError::Invalid(format!("addr {:?} is not IP:PORT", self.addr)))
    }

    /// Where the database is.
    pub fn database_location(&self) -> crate::db::Location {
        match &self.database {
            None => crate::db::Location::Sqlite(self.data_dir.join("authd.db")),
            Some(DatabaseConfig::Path(p)) => crate::db::Location::Sqlite(p.clone()),
            Some(DatabaseConfig::Url { url }) => crate::db::Location::parse(url),
        }
    }

    /// The directory holding the signing keys.
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.certificate.is_some()
    }
}

/// `IP:PORT`, or `:PORT` for every IPv4 address.
fn parse_listen(addr: &str) -> Result<SocketAddr, ()> {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}").parse().map_err(|_| ()),
        None => addr.parse().map_err(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let (c, warnings) = Config::load_with(None, env(&[])).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.listen_addr().unwrap(), "0.0.0.0:5001".parse().unwrap());
        assert_eq!(
            c.database_location(),
            crate::db::Location::Sqlite("./data/authd.db".into())
        );
        assert_eq!(c.service, "registry");
        assert_eq!(c.issuer, "authd");
        assert_eq!(c.token.expiration, 300);
        assert_eq!(c.token.algorithm, SigningAlgorithm::ES256);
        assert_eq!(c.token.kid_format, KidFormat::Libtrust);
        assert_eq!(c.admin.user, "admin");
        assert!(c.admin.password.is_none());
        assert!(!c.tls_enabled());
    }

    #[test]
    fn database_as_path_or_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, "database: /srv/a.db\n").unwrap();
        let (c, _) = Config::load_with(Some(&path), env(&[])).unwrap();
        assert_eq!(
            c.database_location(),
            crate::db::Location::Sqlite("/srv/a.db".into())
        );
        std::fs::write(&path, "database:\n  url: postgres://a:pw1@db/authd\n").unwrap();
        let (c, warnings) = Config::load_with(Some(&path), env(&[])).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            c.database_location(),
            crate::db::Location::Postgres("postgres://a:pw1@db/authd".into())
        );
        assert!(!format!("{c:?}").contains("pw1"), "password leaks in Debug");
        let (c, _) = Config::load_with(
            Some(&path),
            env(&[("AUTHD_DATABASE_URL", "postgresql://b@h/x")]),
        )
        .unwrap();
        assert_eq!(
            c.database_location(),
            crate::db::Location::Postgres("postgresql://b@h/x".into())
        );
    }

    #[test]
    fn yaml_then_env_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(
            &path,
            "addr: 127.0.0.1:0\nservice: reg\ntoken:\n  expiration: 900\n  algorithm: RS256\n  \
             kid_format: thumbprint\n  colour: blue\nbogus: 1\n",
        )
        .unwrap();
        let (c, warnings) = Config::load_with(
            Some(&path),
            env(&[
                ("AUTHD_SERVICE", "other"),
                ("AUTHD_DATA_DIR", "/tmp/x"),
                ("AUTHD_ADMIN_PASSWORD", "s3cret-pass"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen_addr().unwrap().port(), 0);
        assert_eq!(c.service, "other");
        assert_eq!(c.token.expiration, 900);
        assert_eq!(c.token.algorithm, SigningAlgorithm::RS256);
        assert_eq!(c.token.kid_format, KidFormat::Thumbprint);
        assert_eq!(
            c.database_location(),
            crate::db::Location::Sqlite("/tmp/x/authd.db".into())
        );
        assert_eq!(c.admin.password.as_deref(), Some("s3cret-pass"));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "password leaks in Debug"
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("token.colour")));
        assert!(warnings.iter().any(|w| w.contains("bogus")));
    }

    #[test]
    fn env_values_are_checked() {
        let (c, _) = Config::load_with(
            None,
            env(&[
                ("AUTHD_TOKEN_EXPIRATION", "120"),
                ("AUTHD_TOKEN_ALGORITHM", "RS256"),
                ("AUTHD_TOKEN_KID_FORMAT", "thumbprint"),
                ("AUTHD_ADDR", ":6000"),
                ("AUTHD_THROTTLE_TRUSTED_PROXIES", "127.0.0.1, ::1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.token.expiration, 120);
        assert_eq!(c.token.algorithm, SigningAlgorithm::RS256);
        assert_eq!(c.listen_addr().unwrap(), "0.0.0.0:6000".parse().unwrap());
        assert_eq!(c.throttle.trusted_proxies.len(), 2);
        for (var, value) in [
            ("AUTHD_TOKEN_EXPIRATION", "soon"),
            ("AUTHD_TOKEN_ALGORITHM", "HS256"),
            ("AUTHD_TOKEN_KID_FORMAT", "uuid"),
            ("AUTHD_ADDR", "localhost"),
            ("AUTHD_THROTTLE_TRUSTED_PROXIES", "proxy"),
            ("AUTHD_PASSWORD_ARGON2_MEMORY_KIB", "1"),
            ("AUTHD_ADMIN_USER", "bad name"),
        ] {
            assert!(
                Config::load_with(None, env(&[(var, value)])).is_err(),
                "{var}={value} accepted"
            );
        }
    }

    #[test]
    fn log_http_and_metrics_keys() {
        let (c, _) = Config::load_with(None, env(&[])).unwrap();
        assert_eq!(c.log.formatter, service::LogFormat::Text);
        assert!(c.log.access && c.debug.prometheus.enabled);
        assert_eq!(c.metrics_addr().unwrap(), None);
        assert_eq!(c.limits().header_read, std::time::Duration::from_secs(10));
        let (c, _) = Config::load_with(
            None,
            env(&[
                ("AUTHD_LOG_FORMATTER", "json"),
                ("AUTHD_LOG_ACCESS", "false"),
                ("AUTHD_HTTP_HEADER_READ_TIMEOUT", "3"),
                ("AUTHD_HTTP_MAX_CONNECTIONS", "7"),
                ("AUTHD_DEBUG_ADDR", "127.0.0.1:0"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log.formatter, service::LogFormat::Json);
        assert!(!c.log.access);
        assert_eq!(c.limits().max_connections, 7);
        assert_eq!(c.limits().header_read, std::time::Duration::from_secs(3));
        assert_eq!(
            c.metrics_addr().unwrap(),
            Some("127.0.0.1:0".parse().unwrap())
        );
        let (c, _) = Config::from_yaml("log:\n  formatter: json\n").unwrap();
        assert_eq!(c.log.formatter, service::LogFormat::Json);
        assert!(Config::from_yaml("log:\n  formatter: xml\n").is_err());
        for (var, value) in [
            ("AUTHD_LOG_FORMATTER", "xml"),
            ("AUTHD_HTTP_IDLE_TIMEOUT", "0"),
            ("AUTHD_DEBUG_ADDR", "nowhere"),
            ("AUTHD_DEBUG_PROMETHEUS_PATH", "metrics"),
            ("AUTHD_LOG_ACCESS", "maybe"),
        ] {
            assert!(
                Config::load_with(None, env(&[(var, value)])).is_err(),
                "{var}={value} accepted"
            );
        }
    }

    #[test]
    fn expiration_never_below_a_minute() {
        let (c, warnings) =
            Config::load_with(None, env(&[("AUTHD_TOKEN_EXPIRATION", "5")])).unwrap();
        assert_eq!(c.token.expiration, 60);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn tls_needs_both_files() {
        assert!(Config::load_with(None, env(&[("AUTHD_TLS_CERTIFICATE", "/c.pem")])).is_err());
        let (c, _) = Config::load_with(
            None,
            env(&[("AUTHD_TLS_CERTIFICATE", "/c"), ("AUTHD_TLS_KEY", "/k")]),
        )
        .unwrap();
        assert!(c.tls_enabled());
    }

    #[test]
    fn example_config_has_only_known_keys() {
        let text = include_str!("../config.example.yml");
        let (c, unknown) = Config::from_yaml(text).unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.token.expiration, 300);
        // Every environment variable is documented in the example.
        for (var, _) in ENV_VARS {
            assert!(text.contains(var), "{var} is not documented");
        }
    }

    #[test]
    fn empty_and_malformed_files() {
        assert!(Config::from_yaml("").is_ok());
        assert!(Config::from_yaml("token: [1, 2").is_err());
        assert!(Config::from_yaml("token:\n  expiration: -1\n").is_err());
    }
}
