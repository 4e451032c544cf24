//! The `notifications` section: distribution's keys (`events`,
//! `endpoints[]` with `name`, `disabled`, `url`, `headers`, `timeout`,
//! `threshold`, `backoff`, `ignoredmediatypes`, `ignore`) and ours
//! (`queue`, `endpoints[].maxevents`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::config::{ConfigError, StorageDriver, parse_duration};

/// Settings of the notification system; no endpoints means it is off.
#[derive(Debug, Clone, Default)]
pub struct Notifications {
    /// Every configured endpoint, disabled ones included.
    pub endpoints: Vec<EndpointConfig>,
    /// `events.includereferences`: manifest events list what the manifest
    /// references.
    pub include_references: bool,
    pub queue: QueueConfig,
    /// `http.host`: the base of the events' `target.url` instead of the
    /// request's scheme and `Host`.
    pub base_url: Option<String>,
}

impl Notifications {
    /// The endpoints that receive events.
    pub fn enabled(&self) -> impl Iterator<Item = &EndpointConfig> {
        self.endpoints.iter().filter(|e| !e.disabled)
    }
}

/// Where and how events wait for delivery (ours: `notifications.queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub directory: PathBuf,
    /// Cap on the queue's files; past it the oldest events are dropped.
    pub max_bytes: u64,
    /// Requests wait for the event to be fsynced, not only written.
    pub fsync: bool,
}

/// Default cap on the queue (`notifications.queue.maxsize`): 1 GiB, about
/// two million events.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

impl Default for QueueConfig {
    fn default() -> QueueConfig {
        QueueConfig {
            directory: PathBuf::from("./data/notifications"),
            max_bytes: DEFAULT_MAX_BYTES,
            fsync: false,
        }
    }
}

/// One receiver of events.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    pub name: String,
    pub disabled: bool,
    pub url: String,
    /// Sent with every request (distribution's `http.Header`: a name may
    /// have several values).
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    /// Failures in a row retried at once before each retry waits `backoff`.
    pub threshold: u32,
    pub backoff: Duration,
    /// Events whose `target.mediaType` is one of these are not sent
    /// (`ignoredmediatypes` and `ignore.mediatypes`).
    pub ignored_media_types: Vec<String>,
    /// Events with one of these actions are not sent (`ignore.actions`).
    pub ignored_actions: Vec<String>,
    /// Ours: at most this many events per request (distribution sends one).
    pub max_events: usize,
}

impl EndpointConfig {
    /// Whether this endpoint takes an event of `action` about `media_type`.
    pub fn wants(&self, action: &str, media_type: &str) -> bool {
        !self.ignored_actions.iter().any(|a| a == action)
            && (media_type.is_empty() || !self.ignored_media_types.iter().any(|m| m == media_type))
    }
}

impl std::fmt::Debug for EndpointConfig {
    // Header values (an `Authorization` token) never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("disabled", &self.disabled)
            .field("url", &self.url)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("threshold", &self.threshold)
            .field("backoff", &self.backoff)
            .field("ignored_media_types", &self.ignored_media_types)
            .field("ignored_actions", &self.ignored_actions)
            .field("max_events", &self.max_events)
            .finish()
    }
}

// ----- the raw form -----

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawNotifications {
    events: RawEvents,
    endpoints: Option<Vec<RawEndpoint>>,
    queue: RawQueue,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawEvents {
    includereferences: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawQueue {
    directory: Option<PathBuf>,
    maxsize: Option<Value>,
    fsync: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawEndpoint {
    name: Option<String>,
    disabled: bool,
    url: Option<String>,
    headers: Option<BTreeMap<String, Value>>,
    timeout: Option<Value>,
    threshold: Option<Value>,
    backoff: Option<Value>,
    ignoredmediatypes: Vec<String>,
    ignore: RawIgnore,
    maxevents: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawIgnore {
    mediatypes: Vec<String>,
    actions: Vec<String>,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// Reads the `notifications` section (`None`: absent). `http_host` is
/// `http.host`; the storage decides the queue's default directory.
pub fn resolve(
    node: Option<Value>,
    storage: &StorageDriver,
    http_host: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Notifications, ConfigError> {
    let base_url = http_host
        .map(|h| h.trim().trim_end_matches('/').to_owned())
        .filter(|h| !h.is_empty());
    let Some(node) = node.filter(|n| !n.is_null()) else {
        return Ok(Notifications {
            base_url,
            ..Notifications::default()
        });
    };
    let raw: RawNotifications = serde_ignored::deserialize(node, |p| {
        warnings.push(format!(
            "unknown configuration key notifications.{p} is ignored"
        ));
    })
    .map_err(|e: serde_yaml_ng::Error| invalid(format!("notifications: {e}")))?;

    let mut endpoints: Vec<EndpointConfig> = Vec::new();
    for (i, e) in raw.endpoints.unwrap_or_default().into_iter().enumerate() {
        let ep = endpoint(i, e)?;
        if endpoints.iter().any(|o| o.name == ep.name) {
            return Err(invalid(format!(
                "notifications.endpoints[{i}].name {:?} is used twice",
                ep.name
            )));
        }
        endpoints.push(ep);
    }

    let default_dir = match storage {
        StorageDriver::Filesystem { root } => root.join("notifications"),
        StorageDriver::InMemory | StorageDriver::S3(_) => PathBuf::from("./data/notifications"),
    };
    let max_bytes = match raw.queue.maxsize {
        None | Some(Value::Null) => DEFAULT_MAX_BYTES,
        Some(v) => parse_size(&v).ok_or_else(|| {
            invalid(format!(
                "notifications.queue.maxsize {} is not a size such as 512MiB or 1GiB",
                value_text(&v)
            ))
        })?,
    };
    if max_bytes < 1 << 20 {
        return Err(invalid("notifications.queue.maxsize must be at least 1MiB"));
    }
    let directory = raw.queue.directory.unwrap_or(default_dir);
    if directory.as_os_str().is_empty() {
        return Err(invalid("notifications.queue.directory is empty"));
    }
    Ok(Notifications {
        endpoints,
        include_references: raw.events.includereferences,
        queue: QueueConfig {
            directory,
            max_bytes,
            fsync: raw.queue.fsync.unwrap_or(false),
        },
        base_url,
    })
}

fn endpoint(i: usize, e: RawEndpoint) -> Result<EndpointConfig, ConfigError> {
    let key = format!("notifications.endpoints[{i}]");
    let name = e.name.unwrap_or_default().trim().to_owned();
    if name.is_empty() {
        return Err(invalid(format!("{key}.name is required")));
    }
    let key = format!("notifications.endpoints[{i}] ({name})");
    let url = e.url.unwrap_or_default().trim().to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://"))
        || reqwest::Url::parse(&url).is_err()
    {
        return Err(invalid(format!(
            "{key}.url {url:?} is not an http:// or https:// URL"
        )));
    }
    let mut headers = Vec::new();
    for (h, value) in e.headers.unwrap_or_default() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            return Err(invalid(format!(
                "{key}.headers: {h:?} is not a valid header name"
            )));
        }
        let values: Vec<String> = match value {
            Value::Sequence(seq) => seq.iter().filter_map(scalar).collect(),
            other => scalar(&other).into_iter().collect(),
        };
        for v in values {
            if http::HeaderValue::from_str(&v).is_err() {
                // The value itself may be a secret: not repeated.
                return Err(invalid(format!(
                    "{key}.headers.{h} has a value that is not a valid header value"
                )));
            }
            headers.push((h.clone(), v));
        }
    }
    let duration = |field: &str, v: Option<Value>, default: Duration| match v {
        None | Some(Value::Null) => Ok(default),
        Some(v) => go_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
            invalid(format!(
                "{key}.{field} {} is not a duration such as 500ms or 1s",
                value_text(&v)
            ))
        }),
    };
    // distribution's defaults for a zero or missing value.
    let timeout = duration("timeout", e.timeout, Duration::from_secs(1))?;
    let backoff = duration("backoff", e.backoff, Duration::from_secs(1))?;
    let threshold = match e.threshold {
        None | Some(Value::Null) => 10,
        Some(v) => match scalar(&v).and_then(|s| s.parse::<i64>().ok()) {
            Some(n) if n <= 0 => 10,
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
            None => {
                return Err(invalid(format!(
                    "{key}.threshold {} is not a number",
                    value_text(&v)
                )));
            }
        },
    };
    let max_events = match e.maxevents {
        None => 1,
        Some(n @ 1..=1000) => n,
        Some(n) => {
            return Err(invalid(format!(
                "{key}.maxevents {n} must be between 1 and 1000"
            )));
        }
    };
    let mut ignored_media_types = e.ignoredmediatypes;
    ignored_media_types.extend(e.ignore.mediatypes);
    let mut ignored_actions = Vec::new();
    for a in e.ignore.actions {
        let a = a.trim().to_ascii_lowercase();
        if !matches!(a.as_str(), "push" | "pull" | "mount" | "delete") {
            return Err(invalid(format!(
                "{key}.ignore.actions: {a:?} is not push, pull, mount or delete"
            )));
        }
        ignored_actions.push(a);
    }
    Ok(EndpointConfig {
        name,
        disabled: e.disabled,
        url,
        headers,
        timeout,
        threshold,
        backoff,
        ignored_media_types,
        ignored_actions,
        max_events,
    })
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn value_text(v: &Value) -> String {
    scalar(v).map_or_else(|| format!("{v:?}"), |s| format!("{s:?}"))
}

/// A Go `time.Duration` as distribution's config reads it: `500ms`, `1s`,
/// `1m30s`, or a bare number of nanoseconds.
fn go_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        Value::String(s) => {
            let s = s.trim();
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse().ok().map(Duration::from_nanos)
            } else {
                parse_duration(s)
            }
        }
        _ => None,
    }
}

/// Bytes: a number, or a number with `k`/`KB`/`KiB`, `M…`, `G…` (all
/// powers of 1024).
fn parse_size(v: &Value) -> Option<u64> {
    let s = scalar(v)?;
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().ok()?;
    let unit = s[split..].trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, env};

    /// The `notifications` example of distribution's configuration
    /// reference, and the one of its notifications page, as they are.
    #[test]
    fn distributions_examples_parse() {
        let yaml = "version: 0.1
storage:
  filesystem:
    rootdirectory: /var/lib/registry
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.com/event
      headers: {}
      timeout: 1s
      threshold: 10
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes:
           - application/octet-stream
        actions:
           - pull
";
        let c = Config::from_yaml(yaml, env(&[])).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let n = &c.notifications;
        assert!(n.include_references);
        assert_eq!(n.endpoints.len(), 1);
        let e = &n.endpoints[0];
        assert_eq!(e.name, "alistener");
        assert_eq!(e.url, "https://my.listener.com/event");
        assert!(!e.disabled);
        assert_eq!(e.timeout, Duration::from_secs(1));
        assert_eq!((e.threshold, e.backoff), (10, Duration::from_secs(1)));
        assert_eq!(
            e.ignored_media_types,
            ["application/octet-stream", "application/octet-stream"]
        );
        assert_eq!(e.ignored_actions, ["pull"]);
        assert_eq!(e.max_events, 1);
        assert!(!e.wants("pull", "application/vnd.oci.image.manifest.v1+json"));
        assert!(!e.wants("push", "application/octet-stream"));
        assert!(e.wants("push", "application/vnd.oci.image.manifest.v1+json"));
        assert!(e.wants("delete", ""));
        assert_eq!(
            n.queue.directory,
            PathBuf::from("/var/lib/registry/notifications")
        );
        assert_eq!(n.queue.max_bytes, DEFAULT_MAX_BYTES);

        let yaml = "notifications:
  endpoints:
    - name: alistener
      url: https://mylistener.example.com/event
      headers:
        Authorization: [Bearer <your token, if needed>]
      timeout: 500ms
      threshold: 5
      backoff: 1s
";
        let c = Config::from_yaml(yaml, env(&[])).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let e = &c.notifications.endpoints[0];
        // A YAML flow sequence splits at the comma: two values, sent as
        // two header lines, as distribution (an `http.Header`) sends them.
        assert_eq!(
            e.headers,
            [
                ("Authorization".to_owned(), "Bearer <your token".to_owned()),
                ("Authorization".to_owned(), "if needed>".to_owned())
            ]
        );
        assert_eq!(e.timeout, Duration::from_millis(500));
        assert_eq!(e.threshold, 5);
        let debug = format!("{e:?}");
        assert!(!debug.contains("your token"), "{debug}");

        // The old reference's bare numbers are nanoseconds (Go durations).
        let yaml = "notifications:\n  endpoints:\n    - name: a\n      url: http://h/e\n      \
                    timeout: 500000000\n      threshold: 5\n      backoff: 1000\n";
        let e = Config::from_yaml(yaml, env(&[]))
            .unwrap()
            .notifications
            .endpoints[0]
            .clone();
        assert_eq!(e.timeout, Duration::from_millis(500));
        assert_eq!(e.backoff, Duration::from_micros(1));
    }

    #[test]
    fn defaults_and_our_keys() {
        let c = Config::from_yaml("", env(&[])).unwrap();
        assert!(c.notifications.endpoints.is_empty());
        let yaml = "storage:\n  s3:\n    bucket: b\n    region: r\nnotifications:\n  endpoints:\n    - name: x\n      url: http://127.0.0.1:9/e\n      maxevents: 50\n      disabled: true\n  queue:\n    directory: /q\n    maxsize: 64MiB\n    fsync: true\nhttp:\n  host: https://registry.example.com/\n";
        let c = Config::from_yaml(yaml, env(&[])).unwrap();
        let n = &c.notifications;
        assert_eq!(
            n.queue,
            QueueConfig {
                directory: "/q".into(),
                max_bytes: 64 << 20,
                fsync: true
            }
        );
        assert_eq!(n.base_url.as_deref(), Some("https://registry.example.com"));
        let e = &n.endpoints[0];
        assert_eq!((e.max_events, e.disabled), (50, true));
        assert_eq!(n.enabled().count(), 0);
        // Defaults as distribution's.
        assert_eq!(e.timeout, Duration::from_secs(1));
        assert_eq!((e.threshold, e.backoff), (10, Duration::from_secs(1)));
        let c = Config::from_yaml("storage:\n  inmemory: {}\n", env(&[])).unwrap();
        assert_eq!(
            c.notifications.queue.directory,
            PathBuf::from("./data/notifications")
        );
    }

    /// Lists come from the environment as one YAML value, as for
    /// `REGISTRY_PROXY_UPSTREAMS`; single keys as usual.
    #[test]
    fn environment_form() {
        let c = Config::from_yaml(
            "",
            env(&[
                (
                    "REGISTRY_NOTIFICATIONS_ENDPOINTS",
                    "[{name: hook, url: http://127.0.0.1:9000/events, timeout: 2s, ignore: {actions: [pull]}}]",
                ),
                ("REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES", "true"),
                ("REGISTRY_NOTIFICATIONS_QUEUE_DIRECTORY", "/var/spool/events"),
                ("REGISTRY_NOTIFICATIONS_QUEUE_MAXSIZE", "2GiB"),
            ]),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let n = &c.notifications;
        assert!(n.include_references);
        assert_eq!(n.queue.directory, PathBuf::from("/var/spool/events"));
        assert_eq!(n.queue.max_bytes, 2 << 30);
        let e = &n.endpoints[0];
        assert_eq!(
            (e.name.as_str(), e.url.as_str()),
            ("hook", "http://127.0.0.1:9000/events")
        );
        assert_eq!(e.timeout, Duration::from_secs(2));
        assert_eq!(e.ignored_actions, ["pull"]);

        // A block sequence works too.
        let c = Config::from_yaml(
            "",
            env(&[(
                "REGISTRY_NOTIFICATIONS_ENDPOINTS",
                "- name: a\n  url: http://h:1/a\n- name: b\n  url: http://h:1/b\n",
            )]),
        )
        .unwrap();
        let names: Vec<&str> = c
            .notifications
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn bad_settings_are_refused_with_the_key() {
        for (yaml, says) in [
            (
                "notifications:\n  endpoints:\n    - url: http://h/e\n",
                "name is required",
            ),
            ("notifications:\n  endpoints:\n    - name: a\n", "url"),
            (
                "notifications:\n  endpoints:\n    - name: a\n      url: ftp://h/e\n",
                "url",
            ),
            (
                "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/e'}\n    - {name: a, url: 'http://h/f'}\n",
                "used twice",
            ),
            (
                "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/e', timeout: soon}\n",
                "timeout",
            ),
            (
                "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/e', threshold: many}\n",
                "threshold",
            ),
            (
                "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/e', ignore: {actions: [fetch]}}\n",
                "fetch",
            ),
            (
                "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/e', maxevents: 0}\n",
                "maxevents",
            ),
            (
                "notifications:\n  endpoints:\n    - {name: a, url: 'http://h/e', headers: {'bad name': [x]}}\n",
                "header name",
            ),
            ("notifications:\n  queue:\n    maxsize: lots\n", "maxsize"),
            (
                "notifications:\n  queue:\n    maxsize: 1000\n",
                "at least 1MiB",
            ),
            ("notifications:\n  endpoints: 3\n", "notifications"),
        ] {
            let err = Config::from_yaml(yaml, env(&[])).unwrap_err().to_string();
            assert!(err.contains(says), "{yaml}: {err}");
        }
        let c = Config::from_yaml(
            "notifications:\n  bogus: 1\n  endpoints:\n    - {name: a, url: 'http://h/e', colour: red}\n",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("notifications.endpoints.0.colour") || w.contains("colour")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn sizes() {
        let n = |s: &str| parse_size(&Value::String(s.into()));
        assert_eq!(n("1048576"), Some(1 << 20));
        assert_eq!(n("512MiB"), Some(512 << 20));
        assert_eq!(n("1G"), Some(1 << 30));
        assert_eq!(n("10 kb"), Some(10 << 10));
        assert_eq!(n("1.5G"), None);
        assert_eq!(n("x"), None);
        assert_eq!(n("99999999999999T"), None);
    }
}
