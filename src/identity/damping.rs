//! Brute-force damping: failed logins are counted per (account, client address) and per client
//! address, in leaky buckets that drain at the configured rate per minute. Past the threshold,
//! attempts of that pair (or from that address) take turns, one at a time, each after a delay
//! that doubles with every failure over the threshold, up to `max_delay_seconds`. The answer
//! stays a 401: no client retries a 429, and a delayed 401 costs a guesser time without telling
//! a user anything new. A success clears the pair.
//!
//! The delay is spent before any password check, holding nothing other users need: not a
//! bcrypt slot, not an upstream call. Entries live in bounded caches keyed by a keyed hash of
//! the pair (a flood of invented names cannot grow the table past `table_capacity`), and expire
//! once idle.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::AuthError;
use crate::config::DampingConfig;

/// The first delay past the threshold; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(500);
/// Buckets stop filling this far past their threshold, so they drain within minutes.
const OVERFILL: f64 = 20.0;
/// Entries unused this long are dropped (a full bucket has drained long before).
const IDLE_EXPIRY: Duration = Duration::from_secs(600);

pub struct Damping {
    pair_threshold: f64,
    ip_threshold: f64,
    max_delay: Duration,
    max_waiting: u32,
    hasher: RandomState,
    pairs: Cache<u64, Arc<Entry>>,
    ips: Cache<IpAddr, Arc<Entry>>,
}

struct Entry {
    bucket: Mutex<Bucket>,
    /// Rate at which the bucket drains, failures per second.
    drain: f64,
    /// One attempt at a time once damped.
    turn: Arc<Semaphore>,
    waiting: AtomicU32,
}

struct Bucket {
    level: f64,
    at: Instant,
}

impl Entry {
    fn new(per_minute: f64) -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                level: 0.0,
                at: Instant::now(),
            }),
            drain: per_minute / 60.0,
            turn: Arc::new(Semaphore::new(1)),
            waiting: AtomicU32::new(0),
        }
    }

    fn level(&self) -> f64 {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.level = (b.level - now.duration_since(b.at).as_secs_f64() * self.drain).max(0.0);
        b.at = now;
        b.level
    }

    /// Adds one failure; returns the new level.
    fn fill(&self, cap: f64) -> f64 {
        let level = self.level();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.level = (level + 1.0).min(cap);
        b.level
    }
}

/// What a login attempt must do before its credentials are checked.
pub struct Plan {
    /// The pair or the address failed recently: its check queues behind first attempts.
    pub suspect: bool,
    wait: Option<(Arc<Entry>, Duration)>,
}

/// Held while a damped attempt is checked; the next one waits for it.
pub struct Turn(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Damping {
    pub fn new(cfg: &DampingConfig) -> Self {
        fn build<K>(capacity: u64) -> Cache<K, Arc<Entry>>
        where
            K: std::hash::Hash + Eq + Send + Sync + 'static,
        {
            Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(IDLE_EXPIRY)
                .build()
        }
        Self {
            pair_threshold: f64::from(cfg.failures_per_minute),
            ip_threshold: f64::from(cfg.ip_failures_per_minute),
            max_delay: Duration::from_secs(cfg.max_delay_seconds),
            max_waiting: cfg.max_waiting,
            hasher: RandomState::new(),
            pairs: build(cfg.table_capacity),
            ips: build(cfg.table_capacity),
        }
    }

    fn pair_key(&self, account: &str, ip: IpAddr) -> u64 {
        self.hasher.hash_one((account, ip))
    }

    fn delay(&self, excess: f64) -> Duration {
        if excess <= 0.0 {
            return Duration::ZERO;
        }
        let doublings = (excess.ceil() as u32).saturating_sub(1).min(16);
        FIRST_DELAY
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    pub fn plan(&self, account: &str, ip: IpAddr) -> Plan {
        let pair = self.pairs.get(&self.pair_key(account, ip));
        let addr = self.ips.get(&ip);
        let pair_level = pair.as_ref().map_or(0.0, |e| e.level());
        let ip_level = addr.as_ref().map_or(0.0, |e| e.level());
        let suspect = pair_level >= 0.5 || ip_level >= 0.5;
        let pair_delay = self.delay(pair_level - self.pair_threshold);
        let ip_delay = self.delay(ip_level - self.ip_threshold);
        let wait = if !ip_delay.is_zero() {
            addr.map(|e| (e, ip_delay.max(pair_delay)))
        } else if !pair_delay.is_zero() {
            pair.map(|e| (e, pair_delay))
        } else {
            None
        };
        Plan { suspect, wait }
    }

    /// Waits for the attempt's turn and its delay, or refuses it when too many already wait.
    pub async fn admit(&self, plan: &Plan) -> Result<Turn, AuthError> {
        let Some((entry, delay)) = &plan.wait else {
            return Ok(Turn(None));
        };
        if entry.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            entry.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(AuthError::TooManyAttempts {
                retry_after: delay.as_secs().max(1),
            });
        }
        let waiting = Waiting(&entry.waiting);
        let permit = entry.turn.clone().acquire_owned().await.ok();
        drop(waiting);
        tokio::time::sleep(*delay).await;
        Ok(Turn(permit))
    }

    /// A credential was checked and refused.
    pub fn failed(&self, account: &str, ip: IpAddr) {
        let (pair_threshold, ip_threshold) = (self.pair_threshold, self.ip_threshold);
        let pair = self.pairs.get_with(self.pair_key(account, ip), || {
            Arc::new(Entry::new(pair_threshold))
        });
        let level = pair.fill(pair_threshold + OVERFILL);
        if level > pair_threshold && level - 1.0 <= pair_threshold {
            tracing::warn!(
                user = ?account,
                peer = %ip,
                "slowing logins of this user from this address: more than {pair_threshold} failures a minute"
            );
        }
        let addr = self.ips.get_with(ip, || Arc::new(Entry::new(ip_threshold)));
        let level = addr.fill(ip_threshold + OVERFILL);
        if level > ip_threshold && level - 1.0 <= ip_threshold {
            tracing::warn!(
                peer = %ip,
                "slowing every login from this address: more than {ip_threshold} failures a minute"
            );
        }
    }

    /// A credential was checked and accepted: the pair starts afresh.
    pub fn succeeded(&self, account: &str, ip: IpAddr) {
        self.pairs.invalidate(&self.pair_key(account, ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn damping() -> Damping {
        Damping::new(&DampingConfig {
            failures_per_minute: 3,
            ip_failures_per_minute: 5,
            max_delay_seconds: 4,
            ..DampingConfig::default()
        })
    }

    #[test]
    fn delays_grow_past_the_threshold_and_success_resets() {
        let d = damping();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        assert!(!d.plan("alice", ip).suspect);
        for _ in 0..3 {
            d.failed("alice", ip);
        }
        let p = d.plan("alice", ip);
        assert!(p.suspect);
        assert!(p.wait.is_none(), "at the threshold: not yet slowed");
        d.failed("alice", ip);
        assert_eq!(d.plan("alice", ip).wait.expect("slowed").1, FIRST_DELAY);
        d.failed("alice", ip);
        // The address crossed its own threshold (5) too: the longer delay counts.
        assert_eq!(d.plan("alice", ip).wait.expect("slowed").1, FIRST_DELAY * 2);
        for _ in 0..10 {
            d.failed("alice", ip);
        }
        assert_eq!(
            d.plan("alice", ip).wait.expect("slowed").1,
            Duration::from_secs(4),
            "capped"
        );
        // Another address is untouched; another account from this address is slowed by the
        // address's count.
        assert!(d
            .plan("alice", "192.0.2.2".parse().expect("ip"))
            .wait
            .is_none());
        assert!(d.plan("bob", ip).wait.is_some());
        d.succeeded("alice", ip);
        let p = d.plan("alice", ip);
        assert!(p.suspect, "the address still failed recently");
    }

    #[tokio::test]
    async fn too_many_waiting_are_refused_fast() {
        let d = Damping::new(&DampingConfig {
            failures_per_minute: 1,
            max_waiting: 1,
            max_delay_seconds: 1,
            ..DampingConfig::default()
        });
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        d.failed("alice", ip);
        d.failed("alice", ip);
        let plan = d.plan("alice", ip);
        let first = d.admit(&plan).await.expect("first attempt waits its turn");
        // The first holds the turn; one may wait for it, the next is refused at once.
        let plan2 = d.plan("alice", ip);
        let waiter = d.admit(&plan2);
        tokio::pin!(waiter);
        assert!(futures::poll!(waiter.as_mut()).is_pending());
        let refused = d.admit(&d.plan("alice", ip)).await;
        assert!(matches!(
            refused,
            Err(AuthError::TooManyAttempts { retry_after: 1 })
        ));
        drop(first);
        waiter.await.expect("its turn comes");
    }
}
