//! Bearer tokens issued by authd (or any Docker token service): the trusted
//! keys, their refresh, and a cache of verified tokens.
//!
//! Keys come from PEM certificates (`rootcertbundle`), a JWKS file
//! (`jwks`) and/or a JWKS URL (`jwksurl`, by default authd's). The URL is
//! fetched at start — retried in the background until it answers, since
//! authd may start after us — and again when a token names a key we do not
//! know (key rotation), at most once per [`REFETCH_INTERVAL`].
//!
//! A token is verified once: the result is cached by the SHA-256 of the
//! token until the token expires, in at most [`CACHE_BYTES`] of memory.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};
use token::{Access, TrustedKeys, VerifyError, VerifyOptions};

use crate::config::TokenAuthConfig;

/// Least time between two fetches of the JWKS URL.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a verified token is remembered, whatever its `exp`.
const CACHE_TTL: Duration = Duration::from_secs(15 * 60);

/// What a verified token says about its bearer.
#[derive(Debug)]
pub struct Verified {
    pub subject: String,
    pub access: Access,
    /// `exp` of the token, seconds since the epoch.
    pub expires: i64,
}

pub struct TokenAuth {
    pub config: TokenAuthConfig,
    options: VerifyOptions,
    /// Keys from files, fixed for the life of the process.
    file_keys: TrustedKeys,
    /// File keys plus the last keys fetched from the JWKS URL.
    keys: RwLock<Arc<TrustedKeys>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    /// Whether the JWKS URL has answered at least once.
    fetched: std::sync::atomic::AtomicBool,
    verified: VerifiedCache,
    http: reqwest::Client,
}

/// Verified tokens by the SHA-256 of the token.
struct VerifiedCache(moka::sync::Cache<[u8; 32], Arc<Verified>>);

impl VerifiedCache {
    fn new() -> VerifiedCache {
        VerifiedCache::with_max_bytes(CACHE_BYTES)
    }

    /// Bounded by memory, not by count: an anonymous token can carry many
    /// scopes, and anyone may present one when an anonymous grant exists.
    fn with_max_bytes(max_bytes: u64) -> VerifiedCache {
        VerifiedCache(
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, v: &Arc<Verified>| heap_estimate(v))
                .expire_after(UntilExpiry)
                .build(),
        )
    }

    fn get(&self, key: &[u8; 32]) -> Option<Arc<Verified>> {
        self.0.get(key)
    }

    fn insert(&self, key: [u8; 32], v: Arc<Verified>) {
        // Accepted within the leeway but already expired: not worth keeping.
        if !time_left(&v).is_zero() {
            self.0.insert(key, v);
        }
    }

    fn invalidate(&self, key: &[u8; 32]) {
        self.0.invalidate(key);
    }
}

/// How long a verified token may stay cached: until its `exp`, and
/// [`CACHE_TTL`] at most.
fn time_left(v: &Verified) -> Duration {
    let exp = UNIX_EPOCH + Duration::from_secs(u64::try_from(v.expires).unwrap_or(0));
    exp.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .min(CACHE_TTL)
}

/// Per-entry expiry: each token leaves the cache when it expires.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Arc<Verified>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        v: &Arc<Verified>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(time_left(v))
    }
}

/// Memory given to verified tokens.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Heap bytes held by a cached token, estimated from its parts: the
/// capacity of every string and vector, plus what the allocator adds to
/// each allocation and the cache's own bookkeeping per entry.
fn heap_estimate(v: &Verified) -> u32 {
    /// Allocator header and rounding, per allocation.
    const PER_ALLOCATION: usize = 16;
    /// The key, the `Arc` and moka's entry, node and timer wheel slots.
    const PER_ENTRY: usize = 256;
    let string = |s: &String| s.capacity() + PER_ALLOCATION;
    let access: usize = v
        .access
        .0
        .iter()
        .map(|ra| {
            string(&ra.resource_type)
                + string(&ra.name)
                + ra.actions.capacity() * std::mem::size_of::<String>()
                + PER_ALLOCATION
                + ra.actions.iter().map(string).sum::<usize>()
        })
        .sum();
    let total = PER_ENTRY
        + std::mem::size_of::<Verified>()
        + string(&v.subject)
        + v.access.0.capacity() * std::mem::size_of::<token::ResourceActions>()
        + PER_ALLOCATION
        + access;
    u32::try_from(total).unwrap_or(u32::MAX)
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl TokenAuth {
    /// Loads the configured key files. The JWKS URL is fetched separately by
    /// [`TokenAuth::fetch_until_ready`].
    pub fn new(config: TokenAuthConfig) -> anyhow::Result<TokenAuth> {
        let mut file_keys = TrustedKeys::new();
        if let Some(path) = &config.rootcertbundle {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("auth.token.rootcertbundle {}: {e}", path.display())
            })?;
            file_keys.extend(TrustedKeys::from_pem(&pem).map_err(|e| {
                anyhow::anyhow!("auth.token.rootcertbundle {}: {e}", path.display())
            })?);
        }
        if let Some(path) = &config.jwks {
            let json = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("auth.token.jwks {}: {e}", path.display()))?;
            file_keys.extend(
                TrustedKeys::from_jwks(&json)
                    .map_err(|e| anyhow::anyhow!("auth.token.jwks {}: {e}", path.display()))?,
            );
        }
        if file_keys.is_empty() && config.jwks_url.is_none() {
            anyhow::bail!(
                "auth.token needs rootcertbundle, jwks or jwksurl to find the issuer's keys"
            );
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("HTTP client for the JWKS URL: {e}"))?;
        Ok(TokenAuth {
            options: VerifyOptions::new(&config.issuer, &config.service),
            keys: RwLock::new(Arc::new(file_keys.clone())),
            file_keys,
            config,
            last_fetch: tokio::sync::Mutex::new(None),
            fetched: std::sync::atomic::AtomicBool::new(false),
            verified: VerifiedCache::new(),
            http,
        })
    }

    fn current_keys(&self) -> Arc<TrustedKeys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Fetches the JWKS URL now, replacing the fetched keys.
    async fn fetch(&self, url: &str) -> anyhow::Result<usize> {
        let resp = self.http.get(url).send().await?.error_for_status()?;
        let body = resp.bytes().await?;
        let fetched = TrustedKeys::from_jwks(&body)?;
        let count = fetched.len();
        let mut all = self.file_keys.clone();
        all.extend(fetched);
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(all);
        self.fetched
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(count)
    }

    /// Fetches the JWKS URL unless it was fetched less than
    /// [`REFETCH_INTERVAL`] ago; concurrent callers share one fetch.
    async fn refetch(&self) {
        let Some(url) = &self.config.jwks_url else {
            return;
        };
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < REFETCH_INTERVAL) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch(url).await {
            Ok(n) => tracing::info!("fetched {n} token signing key(s) from {url}"),
            Err(e) => tracing::warn!("fetching token signing keys from {url}: {e:#}"),
        }
    }

    /// Fetches the JWKS URL, retrying with backoff until it answers once.
    pub async fn fetch_until_ready(self: &TokenAuth) {
        let Some(url) = self.config.jwks_url.clone() else {
            return;
        };
        let mut delay = Duration::from_millis(200);
        loop {
            {
                let mut last = self.last_fetch.lock().await;
                // A request that met an unknown key may have fetched first.
                if self.fetched.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                *last = Some(Instant::now());
                match self.fetch(&url).await {
                    Ok(n) => {
                        tracing::info!("fetched {n} token signing key(s) from {url}");
                        return;
                    }
                    Err(e) => tracing::warn!(
                        "fetching token signing keys from {url}: {e:#}; retrying in {delay:?}"
                    ),
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Verifies a bearer token (or finds it verified in the cache).
    pub async fn verify(&self, token: &str) -> Result<Arc<Verified>, VerifyError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let leeway = i64::try_from(self.options.leeway_secs).unwrap_or(i64::MAX);
        if let Some(v) = self.verified.get(&key) {
            if now() <= v.expires.saturating_add(leeway) {
                return Ok(v);
            }
            self.verified.invalidate(&key);
            return Err(VerifyError::Expired);
        }
        let claims = match token::verify::verify(token, &self.current_keys(), &self.options) {
            Err(VerifyError::UnknownKey { .. }) if self.config.jwks_url.is_some() => {
                // Maybe the issuer rotated its key: look again, once.
                self.refetch().await;
                token::verify::verify(token, &self.current_keys(), &self.options)?
            }
            other => other?,
        };
        let v = Arc::new(Verified {
            subject: claims.sub,
            access: Access(claims.access),
            expires: claims.exp,
        });
        self.verified.insert(key, v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use token::ResourceActions;

    fn verified(expires: i64, scopes: usize) -> Arc<Verified> {
        let access = (0..scopes)
            .map(|i| {
                ResourceActions::new(
                    "repository",
                    &format!("some-team/some-fairly-long-repository-name-{i:04}"),
                    &[token::Action::Pull, token::Action::Push],
                )
            })
            .collect();
        Arc::new(Verified {
            subject: String::new(),
            access: Access(access),
            expires,
        })
    }

    const TEST_CACHE_BYTES: u64 = 4 * 1024 * 1024;

    #[test]
    fn an_entry_is_gone_once_its_token_expires() {
        let cache = VerifiedCache::with_max_bytes(TEST_CACHE_BYTES);
        let soon = verified(now() + 1, 1);
        let later = verified(now() + 600, 1);
        cache.insert([1; 32], soon);
        cache.insert([2; 32], later);
        assert!(cache.get(&[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(cache.get(&[1; 32]).is_none(), "kept past its exp");
        assert!(cache.get(&[2; 32]).is_some());
    }

    #[test]
    fn the_cache_is_bounded_by_bytes() {
        let cache = VerifiedCache::with_max_bytes(TEST_CACHE_BYTES);
        // 3,000 anonymous tokens of 64 scopes each (the review's attack).
        let one = verified(now() + 600, 64);
        let each = heap_estimate(&one);
        assert!(each > 10_000, "a 64-scope entry is estimated at {each} B");
        for i in 0..3000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            cache.insert(key, verified(now() + 600, 64));
        }
        cache.0.run_pending_tasks();
        let held: u64 = cache
            .0
            .iter()
            .map(|(_, v)| u64::from(heap_estimate(&v)))
            .sum();
        assert!(
            held <= TEST_CACHE_BYTES,
            "{} entries hold {held} B, over the {TEST_CACHE_BYTES} B cap",
            cache.0.entry_count()
        );
        assert!(cache.0.entry_count() > 0, "the cache still caches");
    }
}
