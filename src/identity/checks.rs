//! What every identity source shares when it verifies a credential: the bcrypt slots, the
//! brute-force damping, the memory of refused credentials, and the cache-then-verify step that
//! makes concurrent requests with the same credentials share one verification. Sources call
//! these; they never call a source.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::damping::Damping;
pub(crate) use super::damping::Outcome;
use super::slots::BcryptSlots;
use super::types::{AuthError, CacheKey, Credentials, Identity};

pub(crate) struct Checks {
    bcrypt: BcryptSlots,
    damping: Option<Damping>,
    /// Credentials refused within the last seconds: answered from memory, not counted again.
    failures: Cache<CacheKey, ()>,
}

/// One credential being checked: what the sources see of the request.
pub(crate) struct Attempt<'a> {
    pub(crate) creds: &'a Credentials,
    /// The salted hash of `creds` every cache is keyed by.
    pub(crate) key: CacheKey,
    /// The caller's address, as the realm determined it (damping counts by it).
    pub(crate) client: IpAddr,
    pub(crate) checks: &'a Checks,
}

/// A cache of at most `capacity` entries, each kept `ttl`: what every identity cache is. A TTL
/// of 0 (a setting's "do not keep") is made 1 ms: expired at once, whatever the cache makes of
/// a zero duration.
pub(crate) fn expiring<K, V>(capacity: u64, ttl: Duration) -> Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(capacity)
        .time_to_live(ttl.max(Duration::from_millis(1)))
        .build()
}

impl Checks {
    pub(super) fn new(damping: Option<Damping>, capacity: u64, failure_ttl: Duration) -> Self {
        Self {
            bcrypt: BcryptSlots::new(),
            damping,
            failures: expiring(capacity, failure_ttl),
        }
    }

    /// Whether `key` was refused within the last seconds.
    pub(super) fn refused_lately(&self, key: &CacheKey) -> bool {
        self.failures.contains_key(key)
    }

    pub(crate) async fn remember_failure(&self, key: CacheKey) {
        self.failures.insert(key, ()).await;
    }

    /// Records held by brute-force damping (0 when it is off).
    pub(super) fn damping_entries(&self) -> u64 {
        self.damping.as_ref().map_or(0, Damping::entries)
    }

    /// Runs a verification under a damping plan (see [`super::damping`]): waits for the
    /// attempt's turn, calls `verify` with whether the attempt is suspect (its pair or address
    /// failed lately), and settles the plan with the outcome: refused counts against the pair
    /// and address, accepted refunds.
    pub(crate) async fn damped<T, F, Fut>(
        &self,
        creds: &Credentials,
        client: IpAddr,
        verify: F,
    ) -> Result<T, AuthError>
    where
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<T, AuthError>>,
    {
        self.damped_as(&creds.username, client, verify, |r| match r {
            Ok(_) => Outcome::Accepted,
            Err(AuthError::BadCredentials) => Outcome::Refused,
            Err(_) => Outcome::Undecided,
        })
        .await
    }

    /// [`Self::damped`] for a source that counts attempts under its own spelling of the
    /// account (a directory that ignores case) and decides what each result means for damping
    /// (a name it does not hold is neither accepted nor refused here: the next source says).
    pub(crate) async fn damped_as<T, F, Fut>(
        &self,
        account: &str,
        client: IpAddr,
        verify: F,
        outcome: impl FnOnce(&Result<T, AuthError>) -> Outcome,
    ) -> Result<T, AuthError>
    where
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<T, AuthError>>,
    {
        let Some(damping) = &self.damping else {
            return verify(false).await;
        };
        let plan = damping.plan(account, client);
        let result = async {
            let _turn = damping.admit(&plan).await?;
            verify(plan.suspect).await
        }
        .await;
        let outcome = match &result {
            // Too many waiting: nothing was checked.
            Err(AuthError::TooManyAttempts { .. }) => Outcome::Undecided,
            r => outcome(r),
        };
        damping.settle(&plan, account, client, outcome);
        result
    }

    /// The identity `at.creds` proves, from `cache` or else verified once under damping
    /// (concurrent requests with the same credentials, as a `docker compose pull` of many
    /// images sends, share the one verification). A refused credential is remembered.
    pub(crate) async fn once<F, Fut>(
        &self,
        cache: &Cache<CacheKey, Arc<Identity>>,
        at: &Attempt<'_>,
        verify: F,
    ) -> Result<Arc<Identity>, AuthError>
    where
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<Arc<Identity>, AuthError>>,
    {
        if let Some(id) = cache.get(&at.key).await {
            crate::metrics::get().cache_hits.inc();
            return Ok(id);
        }
        crate::metrics::get().cache_misses.inc();
        // Boxed: the futures past the cache (bcrypt, the store, an API, a directory) are
        // kilobytes, and unboxed they would make every request's future that large, copied
        // whole at each layer of the server on the warm path too.
        let verify = self.damped(at.creds, at.client, verify);
        let result = Box::pin(cache.try_get_with(at.key, verify))
            .await
            .map_err(|e: Arc<AuthError>| (*e).clone());
        if result == Err(AuthError::BadCredentials) {
            self.remember_failure(at.key).await;
        }
        result
    }

    /// The one bcrypt check, whatever the hash's source: a fair slot (suspects queue apart),
    /// a blocking thread (~60 ms of CPU must not stall the runtime), and the metrics.
    ///
    /// A password of a generated secret's shape (`tis_...`) is never given to bcrypt: no bcrypt
    /// hash can hold one (they are refused), and such a refusal must cost what it costs
    /// everywhere (see `store::refuse_generated`), so timing does not tell which source or
    /// kind of account a name has.
    pub(crate) async fn bcrypt(
        &self,
        hash: Arc<str>,
        password: &str,
        suspect: bool,
    ) -> Result<bool, AuthError> {
        if crate::store::looks_generated(password) {
            crate::store::refuse_generated(password);
            return Ok(false);
        }
        let pass = password.to_string();
        let slot = self.bcrypt.acquire(suspect).await?;
        let ok = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            bcrypt::verify(pass, &hash).unwrap_or(false)
        })
        .await
        .map_err(|_| AuthError::Unavailable("password verification failed".into()))?;
        let m = crate::metrics::get();
        if ok {
            m.bcrypt_match.inc();
        } else {
            m.bcrypt_mismatch.inc();
        }
        Ok(ok)
    }
}
