//! Brute-force throttling of password checks, keyed by (account, client
//! address): after a few free failures every further failure blocks that
//! pair for a doubling delay (`429` with `Retry-After`). Another address is
//! never affected, so nobody can lock a CI account out by guessing wrong.
//!
//! A password check must [`Throttle::reserve`] its attempt before it runs:
//! at most `free_failures + 1` checks of one pair are outstanding at a time
//! (each could be the failure that starts the block) — one at a time once
//! the free failures are used up — and further ones wait for those to
//! settle. So concurrent guesses cannot outrun the limit, and a
//! burst of good logins (CI jobs starting together) waits briefly instead of
//! failing. A reservation is settled by [`Reservation::failure`] or
//! [`Reservation::success`]; dropping it unsettled just frees the slot.
//!
//! The state is per process on purpose: it is cheap to lose, and replicas
//! throttle independently.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::ThrottleConfig;

/// Accounts are keyed by at most this many bytes of their name, so junk
/// names cannot make entries large.
const MAX_KEY_NAME: usize = 128;
/// Entries untouched this long are forgotten.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// Longest wait for a free slot; then the attempt is refused with a 429.
const MAX_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// Reserved attempts not settled yet.
    in_flight: u32,
    blocked_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Entry {
    state: Mutex<State>,
    /// Wakes attempts waiting for a slot when one is settled.
    settled: Notify,
}

type Key = (String, IpAddr);

#[derive(Clone)]
pub struct Throttle {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
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

/// `Err(seconds)` while `state` is blocked.
fn blocked(state: &State) -> Result<(), u64> {
    let now = Instant::now();
    match state.blocked_until {
        Some(t) if t > now => Err(seconds_until(t, now)),
        _ => Ok(()),
    }
}

/// Counts a failure of a reserved check: `Some(seconds)` when it starts a
/// block.
fn settle_failure(entry: &Entry, free: u32, max_delay: u64) -> Option<u64> {
    let mut s = entry
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    s.in_flight = s.in_flight.saturating_sub(1);
    s.failures = s.failures.saturating_add(1);
    if s.failures <= free {
        return None;
    }
    let exponent = (s.failures - free - 1).min(30);
    let delay = (1u64 << exponent).min(max_delay);
    s.blocked_until = Some(Instant::now() + Duration::from_secs(delay));
    Some(delay)
}

/// A reserved password check of one (account, client) pair.
#[derive(Debug)]
pub struct Reservation {
    entry: Option<Arc<Entry>>,
    free: u32,
    max_delay: u64,
}

impl Reservation {
    /// Records a failure; `Some(seconds)` when the pair is now blocked.
    pub fn failure(mut self) -> Option<u64> {
        let entry = self.entry.take()?;
        let retry = settle_failure(&entry, self.free, self.max_delay);
        entry.settled.notify_waiters();
        retry
    }

    /// Forgets the pair's failures after a good login.
    pub fn success(mut self) {
        self.release(|s| {
            s.failures = 0;
            s.blocked_until = None;
        });
    }

    /// Frees the in-flight slot and applies `outcome` under the same lock,
    /// then wakes the checks waiting on the pair. Once only: the entry is
    /// taken, so `Drop` after `success` does nothing.
    fn release(&mut self, outcome: impl FnOnce(&mut State)) {
        if let Some(entry) = self.entry.take() {
            {
                let mut s = entry
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                s.in_flight = s.in_flight.saturating_sub(1);
                outcome(&mut s);
            }
            entry.settled.notify_waiters();
        }
    }
}

impl Drop for Reservation {
    /// An attempt dropped unsettled (a cancelled request, or an error
    /// before the verdict) only frees its slot.
    fn drop(&mut self) {
        self.release(|_| {});
    }
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
        match self.entries.get(&key(account, client)) {
            Some(entry) => blocked(&*entry.state.lock().map_err(|_| 1u64)?),
            None => Ok(()),
        }
    }

    /// Forgets the pair's failures after a good login that needed no
    /// password check (a cache hit).
    pub fn clear(&self, account: &str, client: IpAddr) {
        if let Some(entry) = self.entries.get(&key(account, client)) {
            let mut s = entry
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.failures = 0;
            s.blocked_until = None;
        }
    }

    /// Reserves a password check of the pair, waiting while as many checks
    /// are outstanding as could still fail without a block; `Err(seconds)`
    /// when the pair is (or becomes) blocked, or no slot frees up in time.
    pub async fn reserve(&self, account: &str, client: IpAddr) -> Result<Reservation, u64> {
        let entry = self.entries.get_with(key(account, client), Arc::default);
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let settled = entry.settled.notified();
            tokio::pin!(settled);
            {
                let mut s = entry.state.lock().map_err(|_| 1u64)?;
                blocked(&s)?;
                // Past the free failures, one check at a time: its failure
                // renews the block.
                if s.in_flight == 0 || s.failures.saturating_add(s.in_flight) <= self.free {
                    s.in_flight += 1;
                    return Ok(Reservation {
                        entry: Some(entry.clone()),
                        free: self.free,
                        max_delay: self.max_delay,
                    });
                }
                // Registered before the lock is released: a settlement
                // right after cannot be missed.
                settled.as_mut().enable();
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return Err(1);
            }
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

    /// A failure counted without a reservation (which a block refuses):
    /// the delay sequence without waiting it out.
    fn failure(t: &Throttle, account: &str, client: IpAddr) -> Option<u64> {
        let entry = t.entries.get_with(key(account, client), Arc::default);
        settle_failure(&entry, t.free, t.max_delay)
    }

    #[test]
    fn free_failures_then_doubling_delays_capped() {
        let t = throttle(2);
        assert_eq!(failure(&t, "ci", A), None);
        assert_eq!(failure(&t, "ci", A), None);
        assert!(t.check("ci", A).is_ok());
        assert_eq!(failure(&t, "ci", A), Some(1));
        assert_eq!(t.check("ci", A), Err(1));
        assert_eq!(failure(&t, "ci", A), Some(2));
        assert_eq!(failure(&t, "ci", A), Some(4));
        assert_eq!(failure(&t, "ci", A), Some(8));
        assert_eq!(failure(&t, "ci", A), Some(8));
        assert!(matches!(t.check("ci", A), Err(s) if (7..=8).contains(&s)));
    }

    #[tokio::test]
    async fn blocked_pairs_get_no_reservation_and_success_clears() {
        let t = throttle(0);
        assert_eq!(t.reserve("ci", A).await.unwrap().failure(), Some(1));
        assert!(t.check("ci", A).is_err());
        assert_eq!(t.reserve("ci", A).await.unwrap_err(), 1);
        assert!(t.check("ci", B).is_ok());
        assert!(t.check("other", A).is_ok());
        let t = throttle(1);
        assert_eq!(t.reserve("ci", A).await.unwrap().failure(), None);
        t.reserve("ci", A).await.unwrap().success();
        assert_eq!(t.reserve("ci", A).await.unwrap().failure(), None);
    }

    #[test]
    fn mapped_addresses_and_long_names_share_a_key() {
        let t = throttle(0);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        failure(&t, "ci", mapped);
        assert!(t.check("ci", A).is_err());
        let long = "é".repeat(100);
        failure(&t, &long, A);
        assert!(t.check(&format!("{long}x"), A).is_err());
    }

    #[tokio::test]
    async fn reservations_beyond_the_free_failures_wait_for_a_settlement() {
        let t = throttle(1);
        let first = t.reserve("ci", A).await.unwrap();
        let second = t.reserve("ci", A).await.unwrap();
        // Both could fail: a third waits.
        let spawn_waiter = || {
            let t = t.clone();
            tokio::spawn(async move { t.reserve("ci", A).await })
        };
        let waiter = spawn_waiter();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        // Another pair is not held up.
        drop(t.reserve("ci", B).await.unwrap());
        // A success frees a slot.
        first.success();
        let third = waiter.await.unwrap().unwrap();
        // Two failures start the block: the next waiter is refused.
        let waiter = spawn_waiter();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        assert_eq!(second.failure(), None);
        assert_eq!(third.failure(), Some(1));
        assert_eq!(waiter.await.unwrap().unwrap_err(), 1);
    }

    #[tokio::test]
    async fn a_dropped_reservation_frees_its_slot() {
        let t = throttle(0);
        let r = t.reserve("ci", A).await.unwrap();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move { t.reserve("ci", A).await.map(Reservation::success) }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        drop(r);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(t.check("ci", A).is_ok());
    }
}
