//! Brute-force throttling of password checks, keyed by (account, client
//! address): after a few free failures every further failure blocks that
//! pair for a doubling delay (`429` with `Retry-After`). Another address is
//! never affected, so nobody can lock a CI account out by guessing wrong.
//!
//! The state is per process on purpose: it is cheap to lose, and replicas
//! throttle independently.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ThrottleConfig;

/// Accounts are keyed by at most this many bytes of their name, so junk
/// names cannot make entries large.
const MAX_KEY_NAME: usize = 128;
/// Entries untouched this long are forgotten.
const IDLE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Default)]
struct Entry {
    failures: u32,
    blocked_until: Option<Instant>,
}

type Key = (String, IpAddr);

#[derive(Clone)]
pub struct Throttle {
    entries: moka::sync::Cache<Key, Arc<Mutex<Entry>>>,
    free: u32,
    max_delay: u64,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("free", &self.free)
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

fn key(account: &str, client: IpAddr) -> Key {
    let mut end = account.len().min(MAX_KEY_NAME);
    while !account.is_char_boundary(end) {
        end -= 1;
    }
    (account[..end].to_owned(), client.to_canonical())
}

fn seconds_until(t: Instant, now: Instant) -> u64 {
    let d = t.saturating_duration_since(now);
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl Throttle {
    pub fn new(config: &ThrottleConfig) -> Throttle {
        Throttle {
            entries: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(IDLE)
                .build(),
            free: config.free_failures,
            max_delay: config.max_delay.max(1),
        }
    }

    /// `Err(seconds)` while the pair is blocked.
    pub fn check(&self, account: &str, client: IpAddr) -> Result<(), u64> {
        let Some(entry) = self.entries.get(&key(account, client)) else {
            return Ok(());
        };
        let entry = entry.lock().map_err(|_| 1u64)?;
        match entry.blocked_until {
            Some(t) if t > Instant::now() => Err(seconds_until(t, Instant::now())),
            _ => Ok(()),
        }
    }

    /// Records a failure; `Some(seconds)` when the pair is now blocked.
    pub fn failure(&self, account: &str, client: IpAddr) -> Option<u64> {
        let entry = self.entries.get_with(key(account, client), || {
            Arc::new(Mutex::new(Entry::default()))
        });
        let mut entry = entry.lock().ok()?;
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures <= self.free {
            return None;
        }
        let exponent = (entry.failures - self.free - 1).min(30);
        let delay = (1u64 << exponent).min(self.max_delay);
        let now = Instant::now();
        entry.blocked_until = Some(now + Duration::from_secs(delay));
        Some(delay)
    }

    /// Forgets the pair's failures after a good login.
    pub fn success(&self, account: &str, client: IpAddr) {
        let k = key(account, client);
        if self.entries.contains_key(&k) {
            self.entries.invalidate(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(free: u32) -> Throttle {
        Throttle::new(&ThrottleConfig {
            free_failures: free,
            max_delay: 8,
            trusted_proxies: Vec::new(),
        })
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn free_failures_then_doubling_delays_capped() {
        let t = throttle(2);
        assert_eq!(t.failure("ci", A), None);
        assert_eq!(t.failure("ci", A), None);
        assert!(t.check("ci", A).is_ok());
        assert_eq!(t.failure("ci", A), Some(1));
        assert_eq!(t.check("ci", A), Err(1));
        assert_eq!(t.failure("ci", A), Some(2));
        assert_eq!(t.failure("ci", A), Some(4));
        assert_eq!(t.failure("ci", A), Some(8));
        assert_eq!(t.failure("ci", A), Some(8));
        assert!(matches!(t.check("ci", A), Err(s) if (7..=8).contains(&s)));
    }

    #[test]
    fn other_addresses_and_accounts_are_unaffected() {
        let t = throttle(0);
        assert!(t.failure("ci", A).is_some());
        assert!(t.check("ci", A).is_err());
        assert!(t.check("ci", B).is_ok());
        assert!(t.check("other", A).is_ok());
        t.success("ci", A);
        assert!(t.check("ci", A).is_ok());
    }

    #[test]
    fn mapped_addresses_and_long_names_share_a_key() {
        let t = throttle(0);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        t.failure("ci", mapped);
        assert!(t.check("ci", A).is_err());
        let long = "é".repeat(100);
        t.failure(&long, A);
        assert!(t.check(&format!("{long}x"), A).is_err());
    }
}
