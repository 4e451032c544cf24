//! htpasswd authentication as distribution does it: bcrypt entries of an
//! htpasswd file, reloaded when the file changes, with successful checks
//! cached.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a successful password check is remembered.
const CHECK_TTL: Duration = Duration::from_secs(60);
/// How often the file's modification time is looked at.
const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Users of an htpasswd file (bcrypt entries, as distribution supports),
/// reloaded when the file changes, with successful checks cached.
///
/// bcrypt at cost 10–12 takes 50–250 ms; distribution pays it on every
/// request of a push (distribution issue #3017). The cache is keyed by an
/// HMAC of user and password under a per-process random key, so it holds
/// no password and a wrong password never matches.
pub struct Htpasswd {
    pub realm: String,
    path: PathBuf,
    inner: std::sync::Mutex<HtpasswdFile>,
    key: [u8; 32],
    verified: moka::sync::Cache<[u8; 32], ()>,
    /// A hash checked for unknown users, so that answering "no such user"
    /// takes as long as "wrong password".
    dummy_hash: std::sync::OnceLock<String>,
}

#[derive(Default)]
struct HtpasswdFile {
    users: Arc<std::collections::HashMap<String, String>>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

impl Htpasswd {
    pub fn load(realm: String, path: PathBuf) -> anyhow::Result<Htpasswd> {
        let h = Htpasswd {
            realm,
            path,
            inner: std::sync::Mutex::new(HtpasswdFile::default()),
            key: rand::random(),
            verified: moka::sync::Cache::builder()
                .time_to_live(CHECK_TTL)
                .max_capacity(10_000)
                .build(),
            dummy_hash: std::sync::OnceLock::new(),
        };
        h.reload(true)?;
        // Computed now, on the blocking thread `load` runs on, not later
        // inside a request.
        let users = h
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .users
            .clone();
        h.dummy_hash(&users);
        Ok(h)
    }

    /// Re-reads the file when it changed. At start (`strict`) a missing or
    /// unreadable file is an error; later the last good version is kept.
    fn reload(&self, strict: bool) -> anyhow::Result<()> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !strict && inner.checked.is_some_and(|t| t.elapsed() < RELOAD_INTERVAL) {
            return Ok(());
        }
        inner.checked = Some(Instant::now());
        // At start a missing or unreadable file is an error; later the
        // users loaded before are kept (and the problem logged).
        let keep_or_fail = |e: std::io::Error| -> anyhow::Result<()> {
            if strict {
                anyhow::bail!("htpasswd file {}: {e}", self.path.display());
            }
            tracing::warn!(
                "htpasswd file {}: {e}; keeping the users loaded before",
                self.path.display()
            );
            Ok(())
        };
        let modified = match std::fs::metadata(&self.path).and_then(|m| m.modified()) {
            Ok(m) => m,
            Err(e) => return keep_or_fail(e),
        };
        if inner.modified == Some(modified) {
            return Ok(());
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => return keep_or_fail(e),
        };
        let mut users = std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((user, hash)) if hash.starts_with("$2") => {
                    users.insert(user.to_owned(), hash.to_owned());
                }
                _ => tracing::warn!(
                    "htpasswd file {} line {}: not a bcrypt entry, ignored (authd imports other formats)",
                    self.path.display(),
                    n + 1
                ),
            }
        }
        tracing::info!("loaded {} users from {}", users.len(), self.path.display());
        inner.users = Arc::new(users);
        inner.modified = Some(modified);
        // Passwords may have changed: forget what was verified.
        self.verified.invalidate_all();
        Ok(())
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn dummy_hash(&self, users: &std::collections::HashMap<String, String>) -> String {
        self.dummy_hash
            .get_or_init(|| {
                // Same cost as the file's entries: `$2y$NN$…`.
                let cost = users
                    .values()
                    .next()
                    .and_then(|h| h.get(4..6))
                    .and_then(|c| c.parse().ok());
                let random: [u8; 16] = rand::random();
                bcrypt::hash(random, cost.unwrap_or(bcrypt::DEFAULT_COST)).unwrap_or_default()
            })
            .clone()
    }

    /// Whether `password` is right for `user`.
    pub async fn check(self: &Htpasswd, user: String, password: String) -> bool {
        if let Err(e) = self.reload(false) {
            tracing::warn!("{e}");
        }
        let key = self.cache_key(&user, &password);
        if self.verified.contains_key(&key) {
            return true;
        }
        let users = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .users
            .clone();
        let known = users.get(&user).cloned();
        let hash = match &known {
            Some(h) => h.clone(),
            None => self.dummy_hash(&users),
        };
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if ok && known.is_some() {
            self.verified.insert(key, ());
            true
        } else {
            false
        }
    }
}
