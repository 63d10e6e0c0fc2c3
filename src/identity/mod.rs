//! Who is calling: credentials in, an [`Identity`] out.
//!
//! Successful verifications are cached under a salted hash of the credentials (never the
//! credentials themselves), so the many token requests of one `docker pull` pay bcrypt once.

pub mod htpasswd;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use moka::future::Cache;

use htpasswd::{Htpasswd, Verdict};
use upstream::Upstream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `""` for the anonymous caller.
    pub name: String,
    pub groups: Vec<String>,
    pub source: Source,
}

/// Where an identity came from: only upstream identities can be asked about repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Anonymous,
    Local,
    Upstream,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            name: String::new(),
            groups: Vec::new(),
            source: Source::Anonymous,
        }
    }

    pub fn local(name: &str) -> Self {
        Self {
            name: name.into(),
            groups: Vec::new(),
            source: Source::Local,
        }
    }
}

pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("invalid username or password")]
    BadCredentials,
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
}

/// A salted SHA-256 of the credentials: what caches are keyed by, never the credentials.
pub type CacheKey = [u8; 32];

/// Failed logins are remembered this long, so a client retrying a bad token in a loop
/// (or a brute-force run) does not turn into bcrypt work or upstream load.
const FAILURE_TTL: Duration = Duration::from_secs(5);

pub struct Authenticator {
    local: Option<Arc<Htpasswd>>,
    /// bcrypt runs at most one per core: a flood of bad logins queues here instead of taking
    /// every blocking thread and starving token signing.
    bcrypt_slots: Arc<tokio::sync::Semaphore>,
    upstream: Option<Upstream>,
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
        upstream: Option<Upstream>,
        cache: CacheSettings,
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
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            local: local.map(Arc::new),
            bcrypt_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            upstream,
            local_cache: build(cache.local_ttl),
            upstream_cache: build(cache.upstream_ttl),
            failures: Cache::builder()
                .max_capacity(cache.capacity)
                .time_to_live(FAILURE_TTL)
                .build(),
            salt,
        })
    }

    pub fn cache_key(&self, c: &Credentials) -> CacheKey {
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
    /// Concurrent lookups of the same credentials share one verification.
    /// `key` is [`Self::cache_key`] of `creds` (the caller keeps it for per-repository caching).
    pub async fn authenticate(
        &self,
        creds: &Credentials,
        key: CacheKey,
    ) -> Result<Arc<Identity>, AuthError> {
        if self.failures.contains_key(&key) {
            return Err(AuthError::BadCredentials);
        }
        let local_knows = self
            .local
            .as_ref()
            .is_some_and(|l| l.knows(&creds.username));
        let result = match &self.upstream {
            Some(upstream) if !local_knows => self
                .upstream_cache
                .try_get_with(key, async {
                    let id = upstream.whoami(creds).await?;
                    // An API identity named like a local user would get that user's rules.
                    if self.local.as_ref().is_some_and(|l| l.knows(&id.name)) {
                        tracing::warn!(name = %id.name, "refused an upstream identity named like a local user");
                        return Err(AuthError::BadCredentials);
                    }
                    Ok(Arc::new(id))
                })
                .await
                .map_err(|e: Arc<AuthError>| (*e).clone()),
            _ => self
                .local_cache
                .try_get_with(key, self.verify_local(creds))
                .await
                .map_err(|e: Arc<AuthError>| (*e).clone()),
        };
        if result == Err(AuthError::BadCredentials) {
            self.failures.insert(key, ()).await;
        }
        result
    }

    async fn verify_local(&self, creds: &Credentials) -> Result<Arc<Identity>, AuthError> {
        let Some(local) = self.local.clone() else {
            return Err(AuthError::BadCredentials);
        };
        let (user, pass) = (creds.username.clone(), creds.password.clone());
        let slot = self
            .bcrypt_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Unavailable("password verification is shutting down".into()))?;
        let verdict = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            local.verify(&user, &pass)
        })
        .await
        .map_err(|_| AuthError::Unavailable("password verification failed".into()))?;
        match verdict {
            Verdict::Valid => Ok(Arc::new(Identity::local(&creds.username))),
            Verdict::WrongPassword | Verdict::UnknownUser => Err(AuthError::BadCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[tokio::test]
    async fn local_users_and_cache() {
        let h = bcrypt::hash("pw", 4).expect("hash");
        let file = Htpasswd::parse(&format!("alice:{h}\n")).expect("parse");
        let settings = CacheSettings {
            local_ttl: Duration::from_secs(60),
            upstream_ttl: Duration::ZERO,
            capacity: 100,
        };
        let auth = Authenticator::new(Some(file), None, settings).expect("auth");
        let login = |u: &str, p: &str| {
            let c = creds(u, p);
            let key = auth.cache_key(&c);
            let auth = &auth;
            async move { auth.authenticate(&c, key).await }
        };
        assert_eq!(login("alice", "pw").await.expect("ok").name, "alice");
        auth.local_cache.run_pending_tasks().await;
        assert_eq!(auth.local_cache.entry_count(), 1);
        assert_eq!(login("alice", "nope").await, Err(AuthError::BadCredentials));
        assert_eq!(login("bob", "pw").await, Err(AuthError::BadCredentials));
        auth.local_cache.run_pending_tasks().await;
        assert_eq!(
            auth.local_cache.entry_count(),
            1,
            "failures are not cached as identities"
        );
        assert!(auth
            .failures
            .contains_key(&auth.cache_key(&creds("alice", "nope"))));
        // The key depends on both halves and on where the split falls.
        assert_ne!(
            auth.cache_key(&creds("ab", "c")),
            auth.cache_key(&creds("a", "bc"))
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        assert!(!format!("{:?}", creds("u", "hunter2")).contains("hunter2"));
    }
}
