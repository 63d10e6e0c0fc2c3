//! Local users from an htpasswd file (bcrypt only, as distribution's htpasswd auth): the
//! source decides the names the file has; a verified credential is kept for
//! `identity.cache_ttl_seconds`, so a pull's many token requests pay bcrypt once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures::future::BoxFuture;
use moka::future::Cache;

use super::{Answer, IdentitySource};
use crate::identity::checks::{expiring, Attempt};
use crate::identity::types::{AuthError, CacheKey, Identity};

/// The file as an identity source.
pub(crate) struct LocalUsers {
    pub(crate) file: Arc<Htpasswd>,
    verified: Cache<CacheKey, Arc<Identity>>,
}

impl LocalUsers {
    pub(crate) fn new(file: Htpasswd, ttl: Duration, capacity: u64) -> Self {
        Self {
            file: Arc::new(file),
            verified: expiring(capacity, ttl),
        }
    }

    #[cfg(test)]
    pub(crate) async fn cached(&self) -> u64 {
        self.verified.run_pending_tasks().await;
        self.verified.entry_count()
    }
}

impl IdentitySource for LocalUsers {
    fn name(&self) -> &'static str {
        "htpasswd"
    }

    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            let Some(hash) = self.file.hash_of(&at.creds.username) else {
                return Answer::NotMine;
            };
            let hash: Arc<str> = hash.into();
            let name = &at.creds.username;
            at.checks
                .once(&self.verified, at, |suspect| async move {
                    match at.checks.bcrypt(hash, &at.creds.password, suspect).await? {
                        true => Ok(Arc::new(Identity::local(name))),
                        false => Err(AuthError::BadCredentials),
                    }
                })
                .await
                .into()
        })
    }

    fn holds<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.file.knows(name)) })
    }

    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move { Ok(self.file.knows(name).then(|| Identity::local(name))) })
    }
}

pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Verified against when the user is unknown, so that an unknown user costs the same
    /// bcrypt work as a wrong password and names cannot be probed by timing.
    dummy_hash: String,
}

impl Htpasswd {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("identity.htpasswd: reading {}: {e}", path.display()))?;
        Self::parse(&text)
            .map_err(|e| anyhow::anyhow!("identity.htpasswd: {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut users = HashMap::new();
        let mut costs: HashMap<u32, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bail!("line {}: expected user:hash", i + 1);
            };
            // Rules read a '/' in an account as path segments (`${account}/**`): only a source
            // that names callers after their repository (OIDC) may.
            if user.contains('/') {
                bail!("line {}: user {user:?}: a name may not hold '/'", i + 1);
            }
            let cost = bcrypt_cost(hash).ok_or_else(|| {
                anyhow::anyhow!(
                    "line {}: user {user:?} has a hash that is not bcrypt; only $2y$, $2a$ and $2b$ are supported (htpasswd -B)",
                    i + 1
                )
            })?;
            *costs.entry(cost).or_default() += 1;
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                bail!("line {}: user {user:?} appears twice", i + 1);
            }
        }
        let cost = costs
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or(10, |(c, _)| c);
        let dummy_hash = bcrypt::hash(uuid::Uuid::new_v4().to_string(), cost)?;
        Ok(Self { users, dummy_hash })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// The users and their hashes (for `users import`).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users.iter().map(|(u, h)| (u.as_str(), h.as_str()))
    }

    pub fn knows(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// The user's bcrypt hash (refresh tokens are bound to it).
    pub fn hash_of(&self, user: &str) -> Option<&str> {
        self.users.get(user).map(|h| h.as_ref())
    }

    /// A hash of the file's usual cost that no password matches: what an unknown user is
    /// checked against, so that a name cannot be probed by timing.
    pub(crate) fn dummy_hash(&self) -> &str {
        &self.dummy_hash
    }
}

pub fn bcrypt_cost(hash: &str) -> Option<u32> {
    let rest = ["$2y$", "$2a$", "$2b$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))?;
    let (cost, tail) = rest.split_once('$')?;
    (tail.len() == 53).then_some(())?;
    cost.parse().ok().filter(|c| (4..=31).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bcrypt_variants() {
        let h = bcrypt::hash("s3cret", 4).expect("hash");
        let y = h.replacen("$2b$", "$2y$", 1);
        let a = h.replacen("$2b$", "$2a$", 1);
        let f = Htpasswd::parse(&format!("# comment\nb:{h}\ny:{y}\n\na:{a}\n")).expect("parse");
        // What the authenticator checks: the user's hash, or the dummy for an unknown name.
        let check = |u: &str, pw: &str| {
            let hash = f.hash_of(u).unwrap_or(f.dummy_hash());
            bcrypt::verify(pw, hash).expect("a bcrypt hash")
        };
        for u in ["a", "b", "y"] {
            assert!(check(u, "s3cret"), "{u}");
            assert!(!check(u, "wrong"), "{u}");
        }
        assert!(f.hash_of("nobody").is_none());
        assert!(!check("nobody", "s3cret"), "the dummy matches no password");
        assert!(f.knows("a") && !f.knows("nobody"));
    }

    #[test]
    fn other_hashes_are_refused_naming_the_user() {
        let err = Htpasswd::parse("bob:{SHA}fEqNCco3Yq9h5ZUglD3CZJT4lBs=\n")
            .err()
            .expect("sha");
        assert!(err.to_string().contains("\"bob\""), "{err}");
        assert!(
            !err.to_string().contains("fEqN"),
            "no hash in errors: {err}"
        );
        assert!(Htpasswd::parse("carol:$apr1$abc$def\n").is_err());
        assert!(Htpasswd::parse("no-colon\n").is_err());
    }

    #[test]
    fn a_slash_in_a_name_is_refused() {
        let h = bcrypt::hash("s3cret", 4).expect("hash");
        let err = Htpasswd::parse(&format!("my-org/app:{h}\n"))
            .err()
            .expect("slash");
        assert!(err.to_string().contains("'/'"), "{err}");
    }
}
