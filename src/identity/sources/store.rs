//! Users of the database store, read through two caches so that a token request for a known
//! user costs no database round trip in the steady state:
//!
//! - `accounts`: name → the user's record, groups and grants, for `store.cache_ttl_seconds`
//!   (5 s by default). This TTL is the bound within which a change made elsewhere (another
//!   issuer's admin API, the CLI) takes effect here: a disabled user, a new grant, a password.
//!   Unknown names are remembered too, so a stream of them is one query per name per TTL.
//! - `verified`: salted credentials → the password hash they were checked against, for
//!   `identity.cache_ttl_seconds`. A request whose account still has that hash skips bcrypt;
//!   a changed password no longer matches and is checked again.
//!
//! A database that cannot be reached is an `Unavailable` (503) for the names it must decide,
//! never a guess; the caches recover by themselves when it returns.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use moka::future::Cache;

use super::refresh::RefreshTokens;
use super::{Answer, IdentitySource};
use crate::identity::checks::{expiring, Attempt};
use crate::identity::types::{AuthError, CacheKey, Identity, Source};
use crate::store::{self, Account, Store};

pub struct StoreUsers {
    pub store: Arc<Store>,
    /// `store.cache_ttl_seconds`: also caps how long a refused credential is remembered, so
    /// a user created (or a password set) just after a refused attempt works within it.
    pub(crate) ttl: Duration,
    accounts: Cache<String, Option<Arc<Entry>>>,
    /// Group name → its grants, for identities whose groups come from OIDC claims; the same
    /// TTL as `accounts`.
    group_rights: Cache<String, Arc<Vec<store::Rights>>>,
    verified: Cache<CacheKey, Arc<str>>,
    /// Checked against for names the store does not know (when nothing else will check
    /// them), so that unknown names cost the same bcrypt work as wrong passwords.
    pub(crate) dummy_hash: String,
    /// Refresh tokens live in the same store.
    pub refresh: RefreshTokens,
    /// `store.max_expiry_days` and the peppers, given to the store (which outlives a reload)
    /// by [`StoreUsers::apply_settings`] only once the configuration they came with is in
    /// force: a reload that fails keeps the running ones.
    settings: (Option<u64>, Arc<store::Peppers>),
}

/// A store user as the request path uses them.
pub(crate) struct Entry {
    pub identity: Arc<Identity>,
    pub password_hash: Arc<str>,
    disabled: bool,
    expires_at: Option<i64>,
}

impl StoreUsers {
    pub fn new(
        store: Arc<Store>,
        ttl: Duration,
        verified_ttl: Duration,
        capacity: u64,
        refresh_lifetime: Duration,
        settings: (Option<u64>, Arc<store::Peppers>),
    ) -> anyhow::Result<Self> {
        Ok(Self {
            settings,
            refresh: RefreshTokens::new(store.clone(), refresh_lifetime, ttl, capacity),
            store,
            ttl,
            accounts: expiring(capacity, ttl),
            group_rights: expiring(capacity, ttl),
            verified: expiring(capacity, verified_ttl),
            dummy_hash: bcrypt::hash(uuid::Uuid::new_v4().to_string(), 10)?,
        })
    }

    /// Gives the store this configuration's `store.max_expiry_days` and peppers.
    pub fn apply_settings(&self) {
        self.store.set_max_expiry_days(self.settings.0);
        self.store.set_peppers(self.settings.1.clone());
    }

    /// The store's user called `name`, from the cache or (once per TTL, shared by concurrent
    /// callers) the database.
    pub(crate) async fn entry(&self, name: &str) -> Result<Option<Arc<Entry>>, AuthError> {
        // Names the store can never hold are not worth a query (nor a cache slot).
        if !store::valid_name(name) {
            return Ok(None);
        }
        // The steady state: a lookup by the borrowed name, no allocation.
        if let Some(hit) = self.accounts.get(name).await {
            return Ok(hit);
        }
        let store = &self.store;
        self.accounts
            .try_get_with(name.to_string(), async move {
                let account = store.account(name).await?;
                Ok::<_, store::StoreError>(account.map(|a| Arc::new(Entry::from(a))))
            })
            .await
            .map_err(|e| AuthError::Unavailable(format!("user database: {e}")))
    }

    /// The grants of `groups` (names a store may hold; others have none), cached per group.
    pub(crate) async fn group_rights(
        &self,
        groups: &[String],
    ) -> Result<Vec<store::Rights>, AuthError> {
        let mut rights = Vec::new();
        for g in groups.iter().filter(|g| store::valid_name(g)) {
            let store = &self.store;
            let these = self
                .group_rights
                .try_get_with(g.clone(), async move {
                    let grants = store.group_grants(g).await?;
                    Ok::<_, store::StoreError>(Arc::new(store::Rights::of(grants)))
                })
                .await
                .map_err(|e| AuthError::Unavailable(format!("user database: {e}")))?;
            rights.extend(these.iter().cloned());
        }
        Ok(rights)
    }

    /// Forget what is cached about `name` (or everyone): the admin API's changes take effect
    /// on this issuer at once.
    pub async fn invalidate(&self, name: Option<&str>) {
        match name {
            Some(n) => self.accounts.invalidate(n).await,
            None => {
                self.accounts.invalidate_all();
                self.group_rights.invalidate_all();
            }
        }
    }
}

impl IdentitySource for StoreUsers {
    fn name(&self) -> &'static str {
        "store"
    }

    /// A store user: bcrypt against the stored hash unless these credentials were verified
    /// against that same hash recently; then the account's flags. A name the store must
    /// decide while the database is away is a 503, not a guess.
    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            match self.entry(&at.creds.username).await {
                Ok(Some(entry)) => self.verify(entry, at).await.into(),
                Ok(None) => Answer::NotMine,
                Err(e) => Answer::Refused(e),
            }
        })
    }

    fn holds<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move { Ok(self.entry(name).await?.is_some()) })
    }

    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move { Ok(self.entry(name).await?.map(|e| (*e.identity).clone())) })
    }
}

impl StoreUsers {
    async fn verify(
        &self,
        entry: Arc<Entry>,
        at: &Attempt<'_>,
    ) -> Result<Arc<Identity>, AuthError> {
        let hash = entry.password_hash.clone();
        let known = self.verified.get(&at.key).await;
        if known.as_ref().is_some_and(|h| *h != hash) {
            // The password changed since: check again.
            self.verified.invalidate(&at.key).await;
        }
        if known.as_ref() == Some(&hash) {
            crate::metrics::get().cache_hits.inc();
        } else {
            crate::metrics::get().cache_misses.inc();
            let hash = &hash;
            let verify = at.checks.damped(at.creds, at.client, |suspect| async move {
                match self.check(hash, at, suspect).await? {
                    true => Ok(hash.clone()),
                    false => Err(AuthError::BadCredentials),
                }
            });
            let result = Box::pin(self.verified.try_get_with(at.key, verify))
                .await
                .map_err(|e: Arc<AuthError>| (*e).clone());
            if let Err(e) = result {
                if e == AuthError::BadCredentials {
                    at.checks.remember_failure(at.key).await;
                }
                return Err(e);
            }
        }
        if let Some(why) = entry.refusal() {
            return Err(AuthError::Refused(why));
        }
        self.store.note_user_used(&entry.identity.name);
        Ok(entry.identity.clone())
    }
}

impl StoreUsers {
    /// One check of a presented password against a stored hash. What it costs depends on the
    /// password's shape alone, never on the account, so timing tells a guesser nothing: a
    /// generated secret's shape (`tis_...`) is checked by the keyed hash, and never by bcrypt
    /// (`Checks::bcrypt` refuses it); any other password costs one bcrypt, against the dummy
    /// hash when the account holds a keyed one.
    async fn check(
        &self,
        hash: &Arc<str>,
        at: &Attempt<'_>,
        suspect: bool,
    ) -> Result<bool, AuthError> {
        let password = &at.creds.password;
        let keyed = store::is_keyed(hash);
        if keyed && store::looks_generated(password) {
            return Ok(match self.store.peppers().verify(hash, password) {
                store::Keyed::Match => true,
                store::Keyed::Mismatch => false,
                store::Keyed::UnknownPepper(id) => {
                    tracing::warn!(user = ?at.creds.username, pepper = %id,
                        "this account's secret was made under a pepper not in store.pepper_files here (removed, or not yet given to this issuer), so it cannot log in: list the pepper, or give the account a new secret (token-issuer users passwd NAME --generate)");
                    false
                }
            });
        }
        let against = if keyed {
            self.dummy_hash.as_str().into()
        } else {
            hash.clone()
        };
        let ok = at.checks.bcrypt(against, password, suspect).await?;
        Ok(ok && !keyed)
    }
}

impl Entry {
    /// Why the account may not log in now (checked after the password, so a guesser learns
    /// nothing about accounts).
    pub(crate) fn refusal(&self) -> Option<String> {
        if self.disabled {
            return Some(format!(
                "the account {} is disabled; ask an administrator to enable it",
                self.identity.name
            ));
        }
        match self.expires_at {
            Some(t) if t <= store::now() => Some(format!(
                "the account {} expired at {}; ask an administrator to extend it",
                self.identity.name,
                store::rfc3339(t)
            )),
            _ => None,
        }
    }
}

impl From<Account> for Entry {
    fn from(a: Account) -> Self {
        Self {
            password_hash: a.user.password_hash.as_str().into(),
            disabled: a.user.disabled,
            expires_at: a.user.expires_at,
            identity: Arc::new(Identity {
                name: a.user.name,
                groups: a.groups,
                source: Source::Store,
                admin: a.user.admin,
                rights: a.rights,
                expires_at: None,
                subject: None,
            }),
        }
    }
}
