//! Checking a user name and password: throttling, the user lookup, the
//! password check (argon2 off the async runtime, bounded in parallel), the
//! in-memory cache of successful checks, and the upgrade of legacy hashes to
//! argon2id on the first good login.
//!
//! The cache maps HMAC-SHA256(per-process random key, user ‖ password) to
//! the SHA-256 of the stored hash that the password matched. A hit counts
//! only while the stored hash is still the same, so a password change —
//! through this process, another replica or the CLI — takes effect at
//! once; the disabled flag is read from the database on every request.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::db::Db;
use crate::db::users::{self, User};
use crate::error::Error;
use crate::names::is_valid_user_name;
use crate::password::{self, HashFormat, Hasher, MAX_PASSWORD_LEN};
use crate::throttle::Throttle;

pub struct Authenticator {
    hasher: Hasher,
    cache: Option<moka::sync::Cache<[u8; 32], [u8; 32]>>,
    mac_key: [u8; 32],
    throttle: Throttle,
    /// Verified against when the user does not exist, so that unknown and
    /// known names take the same time.
    dummy_hash: String,
    permits: Arc<tokio::sync::Semaphore>,
    min_length: usize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("hasher", &self.hasher)
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

fn fingerprint(stored_hash: &str) -> [u8; 32] {
    Sha256::digest(stored_hash.as_bytes()).into()
}

impl Authenticator {
    pub fn new(config: &Config) -> Result<Authenticator, Error> {
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
            hasher,
            cache,
            mac_key,
            throttle: Throttle::new(&config.throttle),
            dummy_hash,
            permits: Arc::new(tokio::sync::Semaphore::new(parallel * 2)),
            min_length: config.password.min_length,
        })
    }

    fn cache_key(&self, name: &str, password: &str) -> [u8; 32] {
        // The key is 32 bytes, which HMAC always accepts.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&(name.len() as u64).to_be_bytes());
        mac.update(name.as_bytes());
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Runs `f` on the blocking pool, at most a few at a time: argon2 is
    /// slow and memory-hungry by design.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(Error::internal)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(Error::internal)
    }

    /// An argon2id hash of a new password, after checking the password.
    pub async fn hash_new(&self, password: &str) -> Result<String, Error> {
        password::check_new_password(password, self.min_length)?;
        let hasher = self.hasher.clone();
        let password = password.to_owned();
        self.blocking(move || hasher.hash(password.as_bytes()))
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
        if let Err(retry_after) = self.throttle.check(name, client) {
            return Err(Error::TooManyRequests { retry_after });
        }
        let user = if is_valid_user_name(name) && password.len() <= MAX_PASSWORD_LEN {
            users::get(db, name).await?
        } else {
            None
        };

        let key = self.cache_key(name, password);
        if let (Some(cache), Some(user)) = (&self.cache, &user)
            && let Some(remembered) = cache.get(&key)
            && bool::from(remembered.ct_eq(&fingerprint(&user.password_hash)))
        {
            return self.accept(user.clone(), client);
        }

        let stored = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.password_hash.clone());
        let candidate = password.to_owned();
        let matches = self
            .blocking(move || password::verify(candidate.as_bytes(), &stored))
            .await?;
        let Some(mut user) = user.filter(|_| matches) else {
            let retry = self.throttle.failure(name, client);
            tracing::warn!(account = %name.escape_debug(), client = %client, "failed login");
            return Err(match retry {
                Some(retry_after) => Error::TooManyRequests { retry_after },
                None => Error::unauthorized("invalid user name or password"),
            });
        };

        if HashFormat::detect(&user.password_hash).is_some_and(HashFormat::is_legacy) {
            let hasher = self.hasher.clone();
            let candidate = password.to_owned();
            let upgraded = self
                .blocking(move || hasher.hash(candidate.as_bytes()))
                .await??;
            if users::upgrade_hash(db, user.id, &user.password_hash, &upgraded).await? {
                tracing::info!(user = %user.name, "password hash upgraded to argon2id");
                user.password_hash = upgraded;
            }
        }
        if let Some(cache) = &self.cache {
            cache.insert(key, fingerprint(&user.password_hash));
        }
        self.accept(user, client)
    }

    /// The failure throttle, shared with the access-token check.
    pub(crate) fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    fn accept(&self, user: User, client: IpAddr) -> Result<User, Error> {
        if user.disabled {
            return Err(Error::unauthorized(format!(
                "account {:?} is disabled",
                user.name
            )));
        }
        self.throttle.success(&user.name, client);
        Ok(user)
    }
}
