//! Who is calling: credentials in, an [`Identity`] out.
//!
//! Successful verifications are cached under a salted hash of the credentials (never the
//! credentials themselves), so the many token requests of one `docker pull` pay bcrypt once.

mod caller;
pub mod damping;
pub mod htpasswd;
pub mod oidc;
pub mod refresh;
mod slots;
pub mod store;
mod types;
pub mod upstream;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use moka::future::Cache;

pub use caller::{Caller, UpstreamCredential};
use damping::{Damping, Outcome};
use htpasswd::Htpasswd;
use slots::BcryptSlots;
use store::StoreUsers;
pub use types::{AuthError, CacheKey, Credentials, Identity, Source};
use upstream::Upstream;

/// Failed logins are remembered this long, so a client retrying a bad token in a loop
/// (or a brute-force run) does not turn into bcrypt work or upstream load.
const FAILURE_TTL: Duration = Duration::from_secs(5);

pub struct Authenticator {
    local: Option<Arc<Htpasswd>>,
    store: Option<StoreUsers>,
    bcrypt: BcryptSlots,
    damping: Option<Damping>,
    upstream: Option<Upstream>,
    oidc: Option<Arc<oidc::Oidc>>,
    local_cache: Cache<CacheKey, Arc<Identity>>,
    upstream_cache: Cache<CacheKey, Arc<Identity>>,
    failures: Cache<CacheKey, ()>,
    salt: [u8; 32],
}

pub struct CacheSettings {
    pub local_ttl: Duration,
    pub upstream_ttl: Duration,
    pub capacity: u64,
}

impl Authenticator {
    pub fn new(
        local: Option<Htpasswd>,
        store: Option<StoreUsers>,
        upstream: Option<Upstream>,
        oidc: Option<Arc<oidc::Oidc>>,
        cache: CacheSettings,
        damping: Option<Damping>,
    ) -> anyhow::Result<Self> {
        let mut salt = [0u8; 32];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let build = |ttl: Duration| {
            Cache::builder()
                .max_capacity(cache.capacity)
                .time_to_live(ttl.max(Duration::from_millis(1)))
                .build()
        };
        let failure_ttl = store
            .as_ref()
            .map_or(FAILURE_TTL, |s| FAILURE_TTL.min(s.ttl));
        Ok(Self {
            local: local.map(Arc::new),
            store,
            bcrypt: BcryptSlots::new(),
            damping,
            upstream,
            oidc,
            local_cache: build(cache.local_ttl),
            upstream_cache: build(cache.upstream_ttl),
            failures: Cache::builder()
                .max_capacity(cache.capacity)
                .time_to_live(failure_ttl)
                .build(),
            salt,
        })
    }

    fn cache_key(&self, c: &Credentials) -> CacheKey {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.salt);
        ctx.update(&(c.username.len() as u64).to_le_bytes());
        ctx.update(c.username.as_bytes());
        ctx.update(c.password.as_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// Local users first; a user they do not know goes to the upstream API, if there is one.
    /// Concurrent lookups of the same credentials share one verification. Credentials already
    /// verified are answered from the cache; others are damped first (see [`damping`]).
    /// `key` is [`Self::cache_key`] of `creds` (the caller keeps it for per-repository caching);
    /// `client` is the caller's address, as the realm determined it.
    pub async fn authenticate(
        &self,
        creds: &Credentials,
        client: IpAddr,
    ) -> Result<Caller, AuthError> {
        let key = self.cache_key(creds);
        let identity = self.identify(creds, key, client).await?;
        Ok(Caller::proven(identity, creds, key))
    }

    async fn identify(
        &self,
        creds: &Credentials,
        key: CacheKey,
        client: IpAddr,
    ) -> Result<Arc<Identity>, AuthError> {
        // The same refused credential again within seconds (containerd's GET after its POST, a
        // retry loop): answered from memory, not counted as another failure.
        if self.failures.contains_key(&key) {
            return Err(AuthError::BadCredentials);
        }
        // An ID token of a configured provider is decided by that provider alone (no damping:
        // a signature cannot be guessed, and checking one costs less than the damping would).
        if let Some(oidc) = &self.oidc {
            if let Some(result) = Box::pin(oidc.identify(&creds.password, key)).await {
                return Box::pin(self.oidc_identity(result?)).await;
            }
        }
        let local_knows = self
            .local
            .as_ref()
            .is_some_and(|l| l.knows(&creds.username));
        // Sources in order: htpasswd, store, upstream. A name the store must decide while the
        // database is away is a 503, not a guess.
        if let (false, Some(users)) = (local_knows, &self.store) {
            if let Some(entry) = Box::pin(users.entry(&creds.username)).await? {
                return Box::pin(self.authenticate_stored(users, entry, creds, key, client)).await;
            }
        }
        let via_upstream = self.upstream.is_some() && !local_knows;
        let cache = if via_upstream {
            &self.upstream_cache
        } else {
            &self.local_cache
        };
        if let Some(id) = cache.get(&key).await {
            crate::metrics::get().cache_hits.inc();
            return Ok(id);
        }
        crate::metrics::get().cache_misses.inc();
        // The futures of the paths past the cache (bcrypt, the store, the upstream API, OIDC
        // keys) are boxed: they are kilobytes, and unboxed they would make every request's
        // future that large, copied whole at each layer of the server on the warm path too.
        // Concurrent requests with the same credentials (a `docker compose pull` of many
        // images) share one damping plan and one verification.
        let verify = self.damped(creds, client, |plan| async move {
            self.check(creds, via_upstream, plan.as_ref()).await
        });
        let result = Box::pin(cache.try_get_with(key, verify))
            .await
            .map_err(|e: Arc<AuthError>| (*e).clone());
        if result == Err(AuthError::BadCredentials) {
            self.failures.insert(key, ()).await;
        }
        result
    }

    /// An OIDC identity as the rules will see it. Rules match names whatever their source, so
    /// a name built from claims that is also an htpasswd or store user's is refused: a
    /// template like `{actor}` must not hand a CI job a person's rules. With a store, its
    /// groups' grants come along, as fresh as a store user's.
    async fn oidc_identity(&self, id: Arc<Identity>) -> Result<Arc<Identity>, AuthError> {
        let taken = self.local.as_ref().is_some_and(|l| l.knows(&id.name))
            || match &self.store {
                Some(users) => users.entry(&id.name).await?.is_some(),
                None => false,
            };
        if taken {
            tracing::warn!(user = %id.name, "OIDC token refused: its name is a local or store user's");
            return Err(AuthError::Refused(format!(
                "the OIDC token was refused: the name built from its claims, {:?}, is another user's; change the provider's username template",
                id.name
            )));
        }
        let Some(users) = self.store.as_ref().filter(|_| !id.groups.is_empty()) else {
            return Ok(id);
        };
        let rights = users.group_rights(&id.groups).await?;
        Ok(if rights.is_empty() {
            id
        } else {
            Arc::new(Identity {
                rights,
                ..(*id).clone()
            })
        })
    }

    /// Runs a verification under a damping plan (see [`damping`]), settling the plan with
    /// its outcome: refused counts against the pair and address, accepted refunds.
    async fn damped<'a, T, F, Fut>(
        &'a self,
        creds: &'a Credentials,
        client: IpAddr,
        verify: F,
    ) -> Result<T, AuthError>
    where
        F: FnOnce(Option<damping::Plan>) -> Fut,
        Fut: std::future::Future<Output = Result<T, AuthError>>,
    {
        let plan = self
            .damping
            .as_ref()
            .map(|d| d.plan(&creds.username, client));
        let result = verify(plan.clone()).await;
        if let (Some(d), Some(p)) = (&self.damping, &plan) {
            let outcome = match &result {
                Ok(_) => Outcome::Accepted,
                Err(AuthError::BadCredentials) => Outcome::Refused,
                Err(_) => Outcome::Undecided,
            };
            d.settle(p, &creds.username, client, outcome);
        }
        result
    }

    /// A store user: bcrypt against the stored hash unless these credentials were verified
    /// against that same hash recently; then the account's flags.
    async fn authenticate_stored(
        &self,
        users: &StoreUsers,
        entry: Arc<store::Entry>,
        creds: &Credentials,
        key: CacheKey,
        client: IpAddr,
    ) -> Result<Arc<Identity>, AuthError> {
        let hash = entry.password_hash.clone();
        let known = users.verified.get(&key).await;
        if known.as_ref().is_some_and(|h| *h != hash) {
            // The password changed since: check again.
            users.verified.invalidate(&key).await;
        }
        if known.as_ref() == Some(&hash) {
            crate::metrics::get().cache_hits.inc();
        } else {
            crate::metrics::get().cache_misses.inc();
            let hash = &hash;
            let verify = self.damped(creds, client, |plan| async move {
                self.check_hash(hash, creds, plan.as_ref())
                    .await
                    .map(|()| hash.clone())
            });
            let result = users
                .verified
                .try_get_with(key, verify)
                .await
                .map_err(|e: Arc<AuthError>| (*e).clone());
            if let Err(e) = result {
                if e == AuthError::BadCredentials {
                    self.failures.insert(key, ()).await;
                }
                return Err(e);
            }
        }
        if let Some(why) = entry.refusal() {
            return Err(AuthError::Refused(why));
        }
        Ok(entry.identity.clone())
    }

    /// Waits for a damped attempt's turn, then checks `creds.password` against `hash`.
    async fn check_hash(
        &self,
        hash: &Arc<str>,
        creds: &Credentials,
        plan: Option<&damping::Plan>,
    ) -> Result<(), AuthError> {
        let _turn = match (&self.damping, plan) {
            (Some(d), Some(p)) => Some(d.admit(p).await?),
            _ => None,
        };
        let suspect = plan.is_some_and(|p| p.suspect);
        match self.bcrypt(hash.clone(), &creds.password, suspect).await? {
            true => Ok(()),
            false => Err(AuthError::BadCredentials),
        }
    }

    /// The one bcrypt check, whatever the hash's source: a fair slot (suspects queue apart),
    /// a blocking thread (~60 ms of CPU must not stall the runtime), and the metrics.
    async fn bcrypt(
        &self,
        hash: Arc<str>,
        password: &str,
        suspect: bool,
    ) -> Result<bool, AuthError> {
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

    /// Records held by brute-force damping (0 when it is off).
    pub fn damping_entries(&self) -> u64 {
        self.damping.as_ref().map_or(0, Damping::entries)
    }

    /// Whether the htpasswd file has `name` (a store user may not have it too).
    pub fn local_knows(&self, name: &str) -> bool {
        self.local.as_ref().is_some_and(|l| l.knows(name))
    }

    /// The store, for the admin API (after it has authenticated an admin).
    pub fn store(&self) -> Option<&StoreUsers> {
        self.store.as_ref()
    }

    /// Waits for a damped attempt's turn, then verifies.
    async fn check(
        &self,
        creds: &Credentials,
        via_upstream: bool,
        plan: Option<&damping::Plan>,
    ) -> Result<Arc<Identity>, AuthError> {
        let _turn = match (&self.damping, plan) {
            (Some(d), Some(p)) => Some(d.admit(p).await?),
            _ => None,
        };
        let suspect = plan.is_some_and(|p| p.suspect);
        match &self.upstream {
            Some(upstream) if via_upstream => {
                let id = upstream.whoami(creds).await?;
                // An API identity named like a local user would get that user's rules.
                if self.local.as_ref().is_some_and(|l| l.knows(&id.name)) {
                    tracing::warn!(name = ?id.name, "refused an upstream identity named like a local user");
                    return Err(AuthError::BadCredentials);
                }
                if let Some(users) = &self.store {
                    if users.entry(&id.name).await?.is_some() {
                        tracing::warn!(name = ?id.name, "refused an upstream identity named like a store user");
                        return Err(AuthError::BadCredentials);
                    }
                }
                Ok(Arc::new(id))
            }
            _ => self.verify_local(creds, suspect).await,
        }
    }

    async fn verify_local(
        &self,
        creds: &Credentials,
        suspect: bool,
    ) -> Result<Arc<Identity>, AuthError> {
        // A name no source knows costs what a wrong password does: the check runs against a
        // dummy hash of the same cost.
        let (hash, known): (Arc<str>, bool) = match (&self.local, &self.store) {
            (Some(local), _) => match local.hash_of(&creds.username) {
                Some(h) => (h.into(), true),
                None => (local.dummy_hash().into(), false),
            },
            (None, Some(users)) => (users.dummy_hash.as_str().into(), false),
            (None, None) => return Err(AuthError::BadCredentials),
        };
        match self.bcrypt(hash, &creds.password, suspect).await? {
            true if known => Ok(Arc::new(Identity::local(&creds.username))),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

#[cfg(test)]
mod tests;
