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
//! ## Shared by every process on the database
//!
//! The counts live in the database's `login_failures` table
//! ([`Throttle::shared`], which authd always uses), so that replicas on one
//! PostgreSQL count the same failures; this process keeps a view of them:
//!
//! - A failure is one write: an upsert that increments the pair's count in
//!   the database and returns it, so failures spread over replicas add up
//!   and the block follows from all of them.
//! - A password check reads the pair's row before it reserves (one
//!   primary-key SELECT, next to an argon2 verification of tens of
//!   milliseconds), so a pair blocked by another replica is refused before
//!   its guess is verified. An access-token check (a hash, no argon2; the
//!   secret cannot be guessed) reads it only when this process knows of
//!   failures of the pair.
//! - A good login writes only when the pair had failures (it deletes the
//!   row). A good login served from the password cache reads nothing unless
//!   this process knows of failures of the pair — its own, or those of
//!   other processes, which [`Throttle::run_sync`] reads every second (the
//!   pairs that failed recently, one indexed query) — and then reads the
//!   row: another replica may have blocked the pair since, or a good login
//!   elsewhere cleared it. So a pair blocked on one replica is refused by
//!   the others at once when they verify a password, and within a second
//!   when they answer from their password cache.
//! - Rows are deleted 30 minutes after their last failure.
//!
//! Concurrent checks cannot outrun the free failures within one process;
//! on N replicas at most N such batches run before the block. A block runs
//! from the wall-clock time of the last failure (replica clocks are assumed
//! in step, as token expiry already assumes). When the database fails the
//! throttle goes on with this process's counts.
//!
//! SQLite shares them too, for the same code on both engines and because
//! it is worth it there as well: the counts survive a restart (restarting
//! authd grants no fresh free failures) and every process on the file (a
//! second server started before the first stops) agrees. A failure's write
//! queues on SQLite's single writer, at most as fast as argon2 verifies.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::config::ThrottleConfig;
use crate::db::{self, Db};

/// Accounts are keyed by at most this many bytes of their name, so junk
/// names cannot make entries large.
const MAX_KEY_NAME: usize = 128;
/// Entries (and rows) untouched this long are forgotten.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// Longest wait for a free slot; then the attempt is refused with a 429.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the table is read for failures other processes recorded.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Each poll reads again the failures of this long before the previous
/// one started: one written while a poll ran, or by a replica whose clock
/// is a little behind, is not missed.
const POLL_OVERLAP_MS: i64 = 5_000;
/// Most rows one poll reads (the newest); the others are still read by
/// each password check of their pair.
const POLL_LIMIT: i64 = 10_000;
/// Idle rows are deleted every this many polls.
const EXPIRE_EVERY: u32 = 60;

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// Reserved attempts not settled yet.
    in_flight: u32,
    blocked_until: Option<Instant>,
    /// Bumped by every settlement in this process: a snapshot of the table
    /// read before it may be stale, and is not applied.
    generation: u64,
}

impl State {
    /// Whether, as far as this process knows, the pair has failures (and
    /// so may have a row).
    fn has_failures(&self) -> bool {
        self.failures > 0 || self.blocked_until.is_some()
    }

    fn forget(&mut self) {
        self.failures = 0;
        self.blocked_until = None;
        self.generation += 1;
    }
}

#[derive(Debug, Default)]
struct Entry {
    state: Mutex<State>,
    /// Wakes attempts waiting for a slot when one is settled.
    settled: Notify,
}

fn lock(entry: &Entry) -> MutexGuard<'_, State> {
    entry
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Key = (String, IpAddr);

#[derive(Clone)]
pub struct Throttle {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    free: u32,
    max_delay: u64,
    /// The shared table; `None`: this process alone (unit tests).
    store: Option<Db>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("free", &self.free)
            .field("max_delay", &self.max_delay)
            .field("shared", &self.store.is_some())
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

/// The client column of a key.
fn client_text(key: &Key) -> String {
    key.1.to_string()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
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

/// The block (seconds) the `failures`-th failure starts, if any.
fn delay_for(failures: u32, free: u32, max_delay: u64) -> Option<u64> {
    if failures <= free {
        return None;
    }
    let exponent = (failures - free - 1).min(30);
    Some((1u64 << exponent).min(max_delay))
}

/// Counts a failure of a reserved check — `recorded`: the pair's count in
/// the table after it, when written there — and frees its slot;
/// `Some(seconds)` when it starts a block.
fn settle_failure(entry: &Entry, free: u32, max_delay: u64, recorded: Option<i64>) -> Option<u64> {
    let mut s = lock(entry);
    s.in_flight = s.in_flight.saturating_sub(1);
    s.generation += 1;
    let n = s.failures.saturating_add(1);
    s.failures = recorded.map_or(n, |r| n.max(count(r)));
    let delay = delay_for(s.failures, free, max_delay)?;
    s.blocked_until = Some(Instant::now() + Duration::from_secs(delay));
    Some(delay)
}

/// A reserved password check of one (account, client) pair.
#[derive(Debug)]
pub struct Reservation {
    entry: Option<Arc<Entry>>,
    key: Key,
    throttle: Throttle,
}

impl Reservation {
    /// Records a failure; `Some(seconds)` when the pair is now blocked.
    /// The failure is recorded (and the slot freed) even when the caller
    /// stops waiting for the answer.
    pub async fn failure(mut self) -> Option<u64> {
        let entry = self.entry.take()?;
        let throttle = self.throttle.clone();
        let key = self.key.clone();
        let settle = async move {
            let recorded = match &throttle.store {
                Some(db) => {
                    match db::login_failures::add(db, &key.0, &client_text(&key), now_ms()).await {
                        Ok(n) => Some(n),
                        Err(e) => {
                            tracing::error!(error = %e, "recording a failed login in the database");
                            None
                        }
                    }
                }
                None => None,
            };
            let retry = settle_failure(&entry, throttle.free, throttle.max_delay, recorded);
            entry.settled.notify_waiters();
            retry
        };
        if self.throttle.store.is_some() {
            tokio::spawn(settle).await.unwrap_or_default()
        } else {
            settle.await
        }
    }

    /// Forgets the pair's failures after a good login: in the table too
    /// when there were any.
    pub async fn success(mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let had = {
            let mut s = lock(&entry);
            s.in_flight = s.in_flight.saturating_sub(1);
            let had = s.has_failures();
            s.forget();
            had
        };
        entry.settled.notify_waiters();
        if had {
            self.throttle.forget_in_table(&self.key, entry).await;
        }
    }
}

impl Drop for Reservation {
    /// An attempt dropped unsettled (a cancelled request, or an error
    /// before the verdict) only frees its slot.
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            {
                let mut s = lock(&entry);
                s.in_flight = s.in_flight.saturating_sub(1);
            }
            entry.settled.notify_waiters();
        }
    }
}

impl Throttle {
    /// A throttle of this process alone.
    pub fn new(config: &ThrottleConfig) -> Throttle {
        Throttle {
            entries: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(IDLE)
                .build(),
            free: config.free_failures,
            max_delay: config.max_delay.max(1),
            store: None,
        }
    }

    /// A throttle whose counts are shared through `db` with every process
    /// on it.
    pub fn shared(config: &ThrottleConfig, db: Db) -> Throttle {
        Throttle {
            store: Some(db),
            ..Throttle::new(config)
        }
    }

    /// `Err(seconds)` while the pair is blocked. Reads the table only when
    /// this process knows of failures of the pair: another replica may
    /// have blocked it since, or a good login elsewhere cleared it.
    pub async fn check(&self, account: &str, client: IpAddr) -> Result<(), u64> {
        let key = key(account, client);
        let Some(entry) = self.entries.get(&key) else {
            return Ok(());
        };
        if !lock(&entry).has_failures() {
            return Ok(());
        }
        self.sync(&key, &entry).await;
        blocked(&lock(&entry))
    }

    /// Forgets the pair's failures after a good login that needed no
    /// password check (a cache hit): a write only when this process knows
    /// of failures.
    pub async fn clear(&self, account: &str, client: IpAddr) {
        let key = key(account, client);
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        let had = {
            let mut s = lock(&entry);
            let had = s.has_failures();
            s.forget();
            had
        };
        if had {
            self.forget_in_table(&key, entry).await;
        }
    }

    /// Reserves a password check of the pair, after reading its failures
    /// from the table, waiting while as many checks are outstanding as
    /// could still fail without a block; `Err(seconds)` when the pair is
    /// (or becomes) blocked, or no slot frees up in time.
    pub async fn reserve(&self, account: &str, client: IpAddr) -> Result<Reservation, u64> {
        self.reserve_with(account, client, true).await
    }

    /// [`Throttle::reserve`] for a cheap check (an access token): reads the
    /// table only when this process knows of failures of the pair.
    pub async fn reserve_cheap(&self, account: &str, client: IpAddr) -> Result<Reservation, u64> {
        self.reserve_with(account, client, false).await
    }

    async fn reserve_with(
        &self,
        account: &str,
        client: IpAddr,
        always_read: bool,
    ) -> Result<Reservation, u64> {
        let key = key(account, client);
        let entry = self.entries.get_with(key.clone(), Arc::default);
        if always_read || lock(&entry).has_failures() {
            self.sync(&key, &entry).await;
        }
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            let settled = entry.settled.notified();
            tokio::pin!(settled);
            {
                let mut s = lock(&entry);
                blocked(&s)?;
                // Past the free failures, one check at a time: its failure
                // renews the block.
                if s.in_flight == 0 || s.failures.saturating_add(s.in_flight) <= self.free {
                    s.in_flight += 1;
                    return Ok(Reservation {
                        entry: Some(entry.clone()),
                        key,
                        throttle: self.clone(),
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

    /// The block a row of the table stands for, if it still runs.
    fn block_of(&self, failures: u32, last_failure_at: i64) -> Option<Instant> {
        let delay = delay_for(failures, self.free, self.max_delay)?;
        let remaining = last_failure_at.saturating_add(delay as i64 * 1000) - now_ms();
        (remaining > 0).then(|| Instant::now() + Duration::from_millis(remaining as u64))
    }

    /// Replaces this process's view of the pair with its row, unless this
    /// process settled an attempt of the pair meanwhile.
    async fn sync(&self, key: &Key, entry: &Entry) {
        let Some(db) = &self.store else {
            return;
        };
        let generation = lock(entry).generation;
        match db::login_failures::get(db, &key.0, &client_text(key)).await {
            Ok(row) => {
                let mut s = lock(entry);
                if s.generation == generation {
                    let failures = row.map_or(0, |r| count(r.failures));
                    s.failures = failures;
                    s.blocked_until = row.and_then(|r| self.block_of(failures, r.last_failure_at));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading login failures: throttling on this process's counts");
            }
        }
    }

    /// Deletes the pair's row; runs to the end even when the caller stops
    /// waiting.
    async fn forget_in_table(&self, key: &Key, entry: Arc<Entry>) {
        let Some(db) = self.store.clone() else {
            return;
        };
        let (account, client) = (key.0.clone(), client_text(key));
        let task = tokio::spawn(async move {
            if let Err(e) = db::login_failures::clear(&db, &account, &client).await {
                tracing::error!(error = %e, "clearing login failures in the database");
            }
            // A snapshot read before the delete is stale.
            lock(&entry).generation += 1;
        });
        let _ = task.await;
    }

    /// Reads the pairs whose last failure is at or after `since_ms` (Unix
    /// ms) into this process's view — the counts of other processes, so
    /// that a login served from the password cache sees their blocks —
    /// and returns the `since_ms` of the next poll.
    pub async fn poll(&self, since_ms: i64) -> i64 {
        let Some(db) = &self.store else {
            return since_ms;
        };
        let started = now_ms();
        let rows = match db::login_failures::changed_since(db, since_ms, POLL_LIMIT).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "reading recent login failures");
                return since_ms;
            }
        };
        for row in rows {
            let Ok(client) = row.client.parse::<IpAddr>() else {
                continue;
            };
            let failures = count(row.failures);
            let until = self.block_of(failures, row.last_failure_at);
            let entry = self
                .entries
                .get_with(key(&row.account, client), Arc::default);
            let mut s = lock(&entry);
            // Never less than this process knows: a stale count only
            // errs on the strict side until the next password check reads
            // the row.
            s.failures = s.failures.max(failures);
            if until > s.blocked_until {
                s.blocked_until = until;
            }
        }
        started - POLL_OVERLAP_MS
    }

    /// Deletes the rows idle for 30 minutes (or longer than the longest
    /// block); returns how many.
    pub async fn expire(&self) -> u64 {
        let Some(db) = &self.store else {
            return 0;
        };
        let idle = IDLE.max(Duration::from_secs(self.max_delay));
        match db::login_failures::expire(db, now_ms() - idle.as_millis() as i64).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "deleting idle login failures");
                0
            }
        }
    }

    /// Keeps this process's view in step with the table ([`Throttle::poll`]
    /// every second) and deletes idle rows every minute; runs until
    /// dropped.
    pub async fn run_sync(self) {
        if self.store.is_none() {
            return;
        }
        let mut since = now_ms() - self.max_delay as i64 * 1000 - POLL_OVERLAP_MS;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls = 0u32;
        loop {
            tick.tick().await;
            since = self.poll(since).await;
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(EXPIRE_EVERY) {
                let n = self.expire().await;
                if n > 0 {
                    tracing::debug!(count = n, "deleted idle login failures");
                }
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
        settle_failure(&entry, t.free, t.max_delay, None)
    }

    #[tokio::test]
    async fn free_failures_then_doubling_delays_capped() {
        let t = throttle(2);
        assert_eq!(failure(&t, "ci", A), None);
        assert_eq!(failure(&t, "ci", A), None);
        assert!(t.check("ci", A).await.is_ok());
        assert_eq!(failure(&t, "ci", A), Some(1));
        assert_eq!(t.check("ci", A).await, Err(1));
        assert_eq!(failure(&t, "ci", A), Some(2));
        assert_eq!(failure(&t, "ci", A), Some(4));
        assert_eq!(failure(&t, "ci", A), Some(8));
        assert_eq!(failure(&t, "ci", A), Some(8));
        assert!(matches!(t.check("ci", A).await, Err(s) if (7..=8).contains(&s)));
    }

    #[tokio::test]
    async fn blocked_pairs_get_no_reservation_and_success_clears() {
        let t = throttle(0);
        assert_eq!(t.reserve("ci", A).await.unwrap().failure().await, Some(1));
        assert!(t.check("ci", A).await.is_err());
        assert_eq!(t.reserve("ci", A).await.unwrap_err(), 1);
        assert!(t.check("ci", B).await.is_ok());
        assert!(t.check("other", A).await.is_ok());
        let t = throttle(1);
        assert_eq!(t.reserve("ci", A).await.unwrap().failure().await, None);
        t.reserve("ci", A).await.unwrap().success().await;
        assert_eq!(t.reserve("ci", A).await.unwrap().failure().await, None);
    }

    #[tokio::test]
    async fn mapped_addresses_and_long_names_share_a_key() {
        let t = throttle(0);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        failure(&t, "ci", mapped);
        assert!(t.check("ci", A).await.is_err());
        let long = "é".repeat(100);
        failure(&t, &long, A);
        assert!(t.check(&format!("{long}x"), A).await.is_err());
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
        first.success().await;
        let third = waiter.await.unwrap().unwrap();
        // Two failures start the block: the next waiter is refused.
        let waiter = spawn_waiter();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        assert_eq!(second.failure().await, None);
        assert_eq!(third.failure().await, Some(1));
        assert_eq!(waiter.await.unwrap().unwrap_err(), 1);
    }

    #[tokio::test]
    async fn a_dropped_reservation_frees_its_slot() {
        let t = throttle(0);
        let r = t.reserve("ci", A).await.unwrap();
        let waiter = tokio::spawn({
            let t = t.clone();
            async move {
                match t.reserve("ci", A).await {
                    Ok(r) => {
                        r.success().await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        drop(r);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(t.check("ci", A).await.is_ok());
    }
}
