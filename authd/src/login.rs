//! Checking a user name and password: throttling, the user lookup, the
//! password check (argon2 off the async runtime, bounded in parallel), the
//! in-memory cache of successful checks, the upgrade of legacy hashes to
//! argon2id on the first good login, and the audit entries of logins.
//!
//! A check that reaches the password hash runs in a task of its own, from
//! the throttle reservation to the recorded outcome, holding its hashing
//! permit until the hash is done: a client that hangs up can neither free
//! a permit while its hash still runs nor escape the failure count.
//! Every failed check costs one argon2 verification (unknown users and
//! legacy hashes included) so that timing does not tell which names exist.
//!
//! The cache maps HMAC-SHA256(per-process random key, user ‖ password) to
//! the SHA-256 of the stored hash that the password matched. A hit counts
//! only while the stored hash is still the same, so a password change —
//! through this process, another replica or the CLI — takes effect at
//! once; the disabled flag is read from the database on every request.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::db::Db;
use crate::db::audit;
use crate::db::users::{self, User};
use crate::error::Error;
use crate::names::MAX_USER_NAME_LEN;
use crate::password::{self, HashFormat, Hasher, MAX_PASSWORD_LEN};
use crate::throttle::{Reservation, Throttle};

/// Counts of the password hashes computed (verifications and new hashes):
/// how many ran, how many run now, and the most that ever ran at once.
#[derive(Debug, Default)]
pub struct HashStats {
    done: AtomicU64,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl HashStats {
    /// Hashes finished so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Hashes running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// The most hashes that ever ran at the same time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Runs `f`, counted.
    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let out = f();
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        out
    }
}

/// Checks user names and passwords; cheap to share (one `Arc`).
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    hasher: Hasher,
    stats: HashStats,
    cache: Option<moka::sync::Cache<[u8; 32], [u8; 32]>>,
    mac_key: [u8; 32],
    throttle: Throttle,
    /// Verified against when the user does not exist or its hash is not
    /// argon2id, so that every failure takes the same time.
    dummy_hash: String,
    permits: Arc<tokio::sync::Semaphore>,
    max_parallel: usize,
    min_length: usize,
    /// Login events, batched; started with the first login.
    audit: std::sync::OnceLock<audit::Sink>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hasher", &self.inner.hasher)
            .field("throttle", &self.inner.throttle)
            .finish_non_exhaustive()
    }
}

fn fingerprint(stored_hash: &str) -> [u8; 32] {
    Sha256::digest(stored_hash.as_bytes()).into()
}

/// Whether `name` is worth a lookup: rows made before the lowercase rule
/// (see `names::is_valid_user_name`) must still log in, so only the
/// length is checked here; the lookup binds the name as a parameter.
fn may_exist(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_USER_NAME_LEN
}

impl Authenticator {
    /// `db`: where the failure counts of the throttle are shared.
    pub fn new(config: &Config, db: &Db) -> Result<Authenticator, Error> {
        let hasher = Hasher::new(config.password.argon2).map_err(Error::internal)?;
        let dummy_hash = hasher.hash(password::random_password().as_bytes())?;
        let cache = (config.password.cache_ttl > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(config.password.cache_ttl))
                .build()
        });
        let mut mac_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut mac_key);
        let parallel = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Ok(Authenticator {
            inner: Arc::new(Inner {
                hasher,
                stats: HashStats::default(),
                cache,
                mac_key,
                throttle: Throttle::shared(&config.throttle, db.clone()),
                dummy_hash,
                permits: Arc::new(tokio::sync::Semaphore::new(parallel * 2)),
                max_parallel: parallel * 2,
                min_length: config.password.min_length,
                audit: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Counts of the hashes computed so far.
    pub fn hash_stats(&self) -> &HashStats {
        &self.inner.stats
    }

    /// How many hashes may run at once.
    pub fn max_parallel_hashes(&self) -> usize {
        self.inner.max_parallel
    }

    /// The batched audit writer of request-rate events (logins, tokens).
    pub fn audit(&self, db: &Db) -> &audit::Sink {
        self.inner.audit(db)
    }

    /// The failure throttle, shared with the access-token check.
    pub fn throttle(&self) -> &Throttle {
        &self.inner.throttle
    }

    /// An argon2id hash of a new password, after checking the password.
    pub async fn hash_new(&self, password: &str) -> Result<String, Error> {
        password::check_new_password(password, self.inner.min_length)?;
        let hasher = self.inner.hasher.clone();
        let password = password.to_owned();
        self.inner
            .blocking(move || hasher.hash(password.as_bytes()))
            .await?
    }

    /// Checks `name` and `password` from `client`. A wrong password is a
    /// 401, or a 429 once the pair is throttled; a disabled account is a 401
    /// with its own message.
    pub async fn login(
        &self,
        db: &Db,
        name: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<User, Error> {
        let inner = &self.inner;
        if let Err(retry_after) = inner.throttle.check(name, client).await {
            return Err(Error::TooManyRequests { retry_after });
        }
        let user = if may_exist(name) && password.len() <= MAX_PASSWORD_LEN {
            users::get(db, name).await?
        } else {
            None
        };

        let key = inner.cache_key(name, password);
        if let (Some(cache), Some(user)) = (&inner.cache, &user)
            && let Some(remembered) = cache.get(&key)
            && bool::from(remembered.ct_eq(&fingerprint(&user.password_hash)))
        {
            inner.throttle.clear(name, client).await;
            return accept(user.clone());
        }

        let reservation = match inner.throttle.reserve(name, client).await {
            Ok(r) => r,
            Err(retry_after) => {
                inner
                    .audit(db)
                    .record(&client_actor(client), "login.throttled", name, "");
                return Err(Error::TooManyRequests { retry_after });
            }
        };
        let check = Check {
            inner: inner.clone(),
            db: db.clone(),
            user,
            name: name.to_owned(),
            password: password.to_owned(),
            client,
            key,
        };
        // Runs to the end even when this future is dropped.
        tokio::spawn(check.run(reservation))
            .await
            .map_err(Error::internal)?
    }
}

fn client_actor(client: IpAddr) -> String {
    format!("client:{client}")
}

fn accept(user: User) -> Result<User, Error> {
    if user.disabled {
        return Err(Error::unauthorized(format!(
            "account {:?} is disabled",
            user.name
        )));
    }
    Ok(user)
}

impl Inner {
    fn cache_key(&self, name: &str, password: &str) -> [u8; 32] {
        // The key is 32 bytes, which HMAC always accepts.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn audit(&self, db: &Db) -> &audit::Sink {
        self.audit.get_or_init(|| audit::Sink::start(db.clone()))
    }

    /// Runs `f` on the blocking pool, at most a few at a time: argon2 is
    /// slow and memory-hungry by design. The permit moves into the blocking
    /// task, so it is held until `f` returns even if the caller is gone.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        let inner = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            inner.stats.run(f)
        })
        .await
        .map_err(Error::internal)
    }
}

/// One password check past the cache, owned by its own task.
struct Check {
    inner: Arc<Inner>,
    db: Db,
    user: Option<User>,
    name: String,
    password: String,
    client: IpAddr,
    key: [u8; 32],
}

impl Check {
    async fn run(self, reservation: Reservation) -> Result<User, Error> {
        let Check {
            inner,
            db,
            user,
            name,
            password,
            client,
            key,
        } = self;
        let (stored, pay_dummy) = match &user {
            // Only argon2id costs as much as the dummy check.
            Some(u) => (
                u.password_hash.clone(),
                HashFormat::detect(&u.password_hash).is_none_or(HashFormat::is_legacy),
            ),
            None => (inner.dummy_hash.clone(), false),
        };
        let dummy = inner.dummy_hash.clone();
        let candidate = password.clone();
        let matches = inner
            .blocking(move || {
                let ok = password::verify(candidate.as_bytes(), &stored);
                if !ok && pay_dummy {
                    password::verify(candidate.as_bytes(), &dummy);
                }
                ok
            })
            .await?;
        let actor = client_actor(client);
        let Some(mut user) = user.filter(|_| matches) else {
            let retry = reservation.failure().await;
            tracing::warn!(account = %name.escape_debug(), client = %client, "failed login");
            let sink = inner.audit(&db);
            sink.record(&actor, "login.failure", &name, "");
            return Err(match retry {
                Some(retry_after) => {
                    sink.record(
                        &actor,
                        "login.throttled",
                        &name,
                        &format!("blocked for {retry_after} s"),
                    );
                    Error::TooManyRequests { retry_after }
                }
                None => Error::unauthorized("invalid user name or password"),
            });
        };
        reservation.success().await;

        if HashFormat::detect(&user.password_hash).is_some_and(HashFormat::is_legacy) {
            let hasher = inner.hasher.clone();
            let upgraded = inner
                .blocking(move || hasher.hash(password.as_bytes()))
                .await??;
            if users::upgrade_hash(&db, user.id, &user.password_hash, &upgraded).await? {
                tracing::info!(user = %user.name, "password hash upgraded to argon2id");
                user.password_hash = upgraded;
            }
        }
        if let Some(cache) = &inner.cache {
            cache.insert(key, fingerprint(&user.password_hash));
        }
        let (action, detail) = if user.disabled {
            ("login.failure", "account disabled")
        } else {
            ("login.success", "")
        };
        inner.audit(&db).record(&actor, action, &user.name, detail);
        accept(user)
    }
}
