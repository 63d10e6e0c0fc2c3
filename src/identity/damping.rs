//! Brute-force damping: failed logins are counted per (account, client address), per client
//! address and per account over every address, in leaky buckets that drain at the configured rate per minute. Past the threshold,
//! attempts of that pair (or from that address) take turns, one at a time, each after a delay
//! that doubles with every failure over the threshold, up to `max_delay_seconds`. The answer
//! stays a 401: no client retries a 429, and a delayed 401 costs a guesser time without telling
//! a user anything new. A success clears the pair.
//!
//! An IPv6 client is counted by its network (`damping.ipv6_prefix`, a /64 by default): one
//! host holds a whole /64 and can rotate through it. The per-account bucket slows a guesser
//! who rotates addresses faster than that, one attempt at a time; the account's real user is
//! not locked out by it: a credential already verified is answered from the identity cache
//! before any damping, and a login from a network the account has logged in from before (kept
//! for 30 days, bounded like the rest) is not held by the account's bucket at all, so a
//! guesser filling it cannot queue the real user behind their own attempts.
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

use super::types::AuthError;
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
    account_threshold: f64,
    ipv6_prefix: u8,
    hasher: RandomState,
    pairs: Cache<u64, Arc<Entry>>,
    ips: Cache<IpAddr, Arc<Entry>>,
    accounts: Cache<u64, Arc<Entry>>,
    /// (account, network) pairs that have logged in: exempt from the account's bucket.
    familiar: Cache<u64, ()>,
}

/// How long a network an account logged in from stays familiar without another login.
const FAMILIAR_FOR: Duration = Duration::from_secs(30 * 86_400);

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

    /// Adds one failure; returns the levels before and after.
    fn fill(&self, cap: f64) -> (f64, f64) {
        let before = self.level();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.level = (before + 1.0).min(cap);
        (before, b.level)
    }

    fn refund(&self) {
        let level = self.level();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.level = (level - 1.0).max(0.0);
    }
}

/// What a login attempt must do before its credentials are checked (cheap to clone).
#[derive(Clone)]
pub struct Plan {
    /// The pair or the address failed recently: its check queues behind first attempts.
    pub suspect: bool,
    wait: Option<(Arc<Entry>, Duration)>,
    /// The (account, network) pair's key, hashed once.
    pair_key: u64,
    pair: Arc<Entry>,
    addr: Arc<Entry>,
    account: Arc<Entry>,
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
            account_threshold: f64::from(cfg.account_failures_per_minute),
            ipv6_prefix: cfg.ipv6_prefix,
            hasher: RandomState::new(),
            pairs: build(cfg.table_capacity),
            ips: build(cfg.table_capacity),
            accounts: build(cfg.table_capacity),
            familiar: Cache::builder()
                .max_capacity(cfg.table_capacity)
                .time_to_idle(FAMILIAR_FOR)
                .build(),
        }
    }

    fn pair_key(&self, account: &str, ip: IpAddr) -> u64 {
        self.hasher.hash_one((account, self.network(ip)))
    }

    fn account_key(&self, account: &str) -> u64 {
        self.hasher.hash_one(account)
    }

    /// The address as counted: an IPv6 address by its network, an IPv4-mapped one as IPv4.
    fn network(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(_) => ip,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let bits = u128::from(v6);
                    let keep = u32::from(self.ipv6_prefix.min(128));
                    let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                    IpAddr::V6((bits & mask).into())
                }
            },
        }
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

    /// Counts the attempt against its pair before it is checked (so guesses sent in parallel
    /// see each other: the 32nd of a burst is slowed like the 32nd in a row), and says what it
    /// must do first. [`Self::settle`] refunds it unless it did fail. The address is charged
    /// only for failures, so many users behind one NAT logging in at once are not slowed.
    /// Records held (pairs and addresses), for the metrics: moka's estimate.
    pub fn entries(&self) -> u64 {
        self.pairs.entry_count() + self.ips.entry_count() + self.accounts.entry_count()
    }

    pub fn plan(&self, account: &str, ip: IpAddr) -> Plan {
        let (pair_threshold, ip_threshold) = (self.pair_threshold, self.ip_threshold);
        let account_threshold = self.account_threshold;
        let pair_key = self.pair_key(account, ip);
        let pair = self
            .pairs
            .get_with(pair_key, || Arc::new(Entry::new(pair_threshold)));
        let addr = self
            .ips
            .get_with(self.network(ip), || Arc::new(Entry::new(ip_threshold)));
        let whole = self.accounts.get_with(self.account_key(account), || {
            Arc::new(Entry::new(account_threshold))
        });
        let (pair_before, pair_level) = pair.fill(pair_threshold + OVERFILL);
        let ip_level = addr.level();
        let ip_before = ip_level;
        if pair_level > pair_threshold && pair_before <= pair_threshold {
            tracing::warn!(
                user = ?account,
                peer = %ip,
                "slowing logins of this user from this address: more than {pair_threshold} failures a minute"
            );
        }
        let suspect = pair_before >= 0.5 || ip_before >= 0.5;
        let pair_delay = self.delay(pair_level - pair_threshold);
        let ip_delay = self.delay(ip_level - ip_threshold);
        let account_delay = if self.familiar.contains_key(&pair_key) {
            Duration::ZERO
        } else {
            self.delay(whole.level() - account_threshold)
        };
        // The widest entry that is slowed holds the turn: the address over the account over
        // the pair (its attempts are the others' too); the delay is the longest of them.
        let delay = ip_delay.max(pair_delay).max(account_delay);
        let wait = if !ip_delay.is_zero() {
            Some((addr.clone(), delay))
        } else if !account_delay.is_zero() {
            Some((whole.clone(), delay))
        } else if !pair_delay.is_zero() {
            Some((pair.clone(), delay))
        } else {
            None
        };
        Plan {
            suspect,
            wait,
            pair_key,
            pair,
            addr,
            account: whole,
        }
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

    /// The attempt's outcome: a refused credential keeps its pair's count and counts at its
    /// address; an accepted one clears its pair; anything else (the identity service down,
    /// too many waiting) is refunded.
    pub fn settle(&self, plan: &Plan, account: &str, ip: IpAddr, outcome: Outcome) {
        match outcome {
            Outcome::Refused => {
                let threshold = self.ip_threshold;
                let (before, level) = plan.addr.fill(threshold + OVERFILL);
                if level > threshold && before <= threshold {
                    tracing::warn!(
                        peer = %ip,
                        "slowing every login from this address: more than {threshold} failures a minute"
                    );
                }
                let threshold = self.account_threshold;
                let (before, level) = plan.account.fill(threshold + OVERFILL);
                if level > threshold && before <= threshold {
                    tracing::warn!(
                        user = ?account,
                        "slowing new logins of this user from every address: more than {threshold} failures a minute"
                    );
                }
            }
            Outcome::Accepted => {
                self.pairs.invalidate(&plan.pair_key);
                self.familiar.insert(plan.pair_key, ());
            }
            Outcome::Undecided => plan.pair.refund(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
    Undecided,
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

    /// One failed attempt: planned (charged) and settled as refused.
    fn fail(d: &Damping, account: &str, ip: IpAddr) {
        let p = d.plan(account, ip);
        d.settle(&p, account, ip, Outcome::Refused);
    }

    #[test]
    fn delays_grow_past_the_threshold_and_success_resets() {
        let d = damping();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let first = d.plan("alice", ip);
        assert!(!first.suspect && first.wait.is_none());
        d.settle(&first, "alice", ip, Outcome::Refused);
        fail(&d, "alice", ip);
        let p = d.plan("alice", ip);
        assert!(p.suspect);
        assert!(
            p.wait.is_none(),
            "the third attempt: at the threshold, not slowed"
        );
        d.settle(&p, "alice", ip, Outcome::Refused);
        let p = d.plan("alice", ip);
        assert_eq!(p.wait.as_ref().expect("slowed").1, FIRST_DELAY);
        d.settle(&p, "alice", ip, Outcome::Refused);
        // The fifth: the pair's second past its threshold; the address is at its own (5).
        assert_eq!(d.plan("alice", ip).wait.expect("slowed").1, FIRST_DELAY * 2);
        for _ in 0..10 {
            fail(&d, "alice", ip);
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
        // A success clears the pair, and the address is charged for failures only.
        let other: IpAddr = "192.0.2.3".parse().expect("ip");
        for _ in 0..40 {
            let p = d.plan("carol", other);
            d.settle(&p, "carol", other, Outcome::Accepted);
        }
        let p = d.plan("carol", other);
        assert!(
            !p.suspect && p.wait.is_none(),
            "successes counted as failures"
        );
    }

    #[test]
    fn an_ipv6_network_is_one_address() {
        let d = damping();
        let host = |n: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n));
        // Six failures from six addresses of one /64 pass the address threshold (5).
        for n in 1..=6 {
            fail(&d, &format!("user{n}"), host(n));
        }
        assert!(d.plan("someone", host(999)).wait.is_some(), "same /64");
        let next_net = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1));
        assert!(d.plan("someone", next_net).wait.is_none(), "another /64");
    }

    #[test]
    fn an_account_guessed_from_many_addresses_is_slowed() {
        let d = Damping::new(&DampingConfig {
            account_failures_per_minute: 4,
            ..DampingConfig::default()
        });
        for n in 1..=5u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n));
            let p = d.plan("admin", ip);
            assert!(
                p.wait.is_none(),
                "guess {n}: neither its pair nor its address is slowed"
            );
            d.settle(&p, "admin", ip, Outcome::Refused);
        }
        let fresh = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));
        assert!(
            d.plan("admin", fresh).wait.is_some(),
            "a sixth address finds the account slowed"
        );
        assert!(
            d.plan("other", fresh).wait.is_none(),
            "other accounts are not"
        );
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
        fail(&d, "alice", ip);
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
