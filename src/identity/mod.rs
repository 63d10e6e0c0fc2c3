//! Who is calling: credentials in, an [`Identity`] out.
//!
//! Successful verifications are cached under a salted hash of the credentials (never the
//! credentials themselves), so the many token requests of one `docker pull` pay bcrypt once.

pub mod htpasswd;

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use moka::future::Cache;

use htpasswd::{Htpasswd, Verdict};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `""` for the anonymous caller.
    pub name: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn anonymous() -> Self {
        Self {
            name: String::new(),
            groups: Vec::new(),
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

type CacheKey = [u8; 32];

pub struct Authenticator {
    local: Option<Arc<Htpasswd>>,
    cache: Cache<CacheKey, Arc<Identity>>,
    salt: [u8; 32],
}

impl Authenticator {
    pub fn new(
        local: Option<Htpasswd>,
        cache_ttl: Duration,
        cache_capacity: u64,
    ) -> anyhow::Result<Self> {
        let mut salt = [0u8; 32];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        Ok(Self {
            local: local.map(Arc::new),
            cache: Cache::builder()
                .max_capacity(cache_capacity)
                .time_to_live(cache_ttl.max(Duration::from_millis(1)))
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

    pub async fn authenticate(&self, creds: &Credentials) -> Result<Arc<Identity>, AuthError> {
        let key = self.cache_key(creds);
        // Concurrent lookups of the same credentials share one verification; errors are not cached.
        self.cache
            .try_get_with(key, self.verify(creds))
            .await
            .map_err(|e: Arc<AuthError>| (*e).clone())
    }

    async fn verify(&self, creds: &Credentials) -> Result<Arc<Identity>, AuthError> {
        let Some(local) = self.local.clone() else {
            return Err(AuthError::BadCredentials);
        };
        let (user, pass) = (creds.username.clone(), creds.password.clone());
        let verdict = tokio::task::spawn_blocking(move || local.verify(&user, &pass))
            .await
            .map_err(|_| AuthError::Unavailable("password verification failed".into()))?;
        match verdict {
            Verdict::Valid => Ok(Arc::new(Identity {
                name: creds.username.clone(),
                groups: vec![],
            })),
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
        let auth = Authenticator::new(Some(file), Duration::from_secs(60), 100).expect("auth");
        assert_eq!(
            auth.authenticate(&creds("alice", "pw"))
                .await
                .expect("ok")
                .name,
            "alice"
        );
        assert_eq!(auth.cache.entry_count(), 0, "moka counts lazily");
        auth.cache.run_pending_tasks().await;
        assert_eq!(auth.cache.entry_count(), 1);
        assert_eq!(
            auth.authenticate(&creds("alice", "nope")).await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(&creds("bob", "pw")).await,
            Err(AuthError::BadCredentials)
        );
        auth.cache.run_pending_tasks().await;
        assert_eq!(
            auth.cache.entry_count(),
            1,
            "failures are not cached as identities"
        );
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
