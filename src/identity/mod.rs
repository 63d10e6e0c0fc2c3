//! Who is calling: credentials in, an [`Identity`] out.
//!
//! The [`Authenticator`] walks the identity sources (`sources/`, one file each) in the
//! configured order and owns only what they share ([`checks`]) and the rules between them:
//! the first source that decides a credential answers; a name a source builds (an API's
//! answer, an ID token's claims, a directory entry) may not be another source's account; a
//! credential no source decides costs a check of the same price as a wrong password.
//!
//! Successful verifications are cached under a salted hash of the credentials (never the
//! credentials themselves), so the many token requests of one `docker pull` pay bcrypt once.

mod caller;
mod checks;
pub mod damping;
mod slots;
pub mod sources;
mod types;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use moka::future::Cache;

use crate::config::LdapPosition;
pub use caller::{Caller, UpstreamCredential};
use checks::{Attempt, Checks};
use damping::Damping;
pub use sources::{htpasswd, ldap, oidc, open_balena, refresh, store, upstream};
use sources::{htpasswd::LocalUsers, store::StoreUsers, Answer, IdentitySource};
pub use types::{AuthError, CacheKey, Credentials, Identity, Source};

/// Failed logins are remembered this long, so a client retrying a bad token in a loop
/// (or a brute-force run) does not turn into bcrypt work or upstream load.
const FAILURE_TTL: Duration = Duration::from_secs(5);

pub struct Authenticator {
    /// The sources in the order they are asked.
    chain: Vec<Arc<dyn IdentitySource>>,
    /// The htpasswd and store sources again by kind: refresh tokens are bound to their
    /// password hashes, and the admin API manages the store.
    local: Option<Arc<LocalUsers>>,
    store: Option<Arc<StoreUsers>>,
    checks: Checks,
    /// What a name no source holds is checked against (see [`Self::nobody`]); concurrent
    /// attempts with the same credentials share that check through this (always empty) cache.
    dummy_hash: Option<Arc<str>>,
    unknown: Cache<CacheKey, Arc<Identity>>,
    /// Identities a name-building source proved (the very `Arc` its cache holds) whose name
    /// no other source held when last checked: the check is not repeated for each of a pull's
    /// token requests, only after these few seconds (at most the store's cache TTL).
    unique: Cache<CacheKey, Arc<Identity>>,
    salt: [u8; 32],
}

/// The sources an [`Authenticator`] asks, by kind; [`Authenticator::new`] puts them in order.
#[derive(Default)]
pub struct Sources {
    pub htpasswd: Option<htpasswd::Htpasswd>,
    pub store: Option<StoreUsers>,
    pub upstream: Option<upstream::Upstream>,
    /// open-balena-api instead of `upstream` (`upstream.profile = "open-balena"`).
    pub open_balena: Option<open_balena::OpenBalenaUsers>,
    pub oidc: Option<Arc<oidc::Oidc>>,
    pub ldap: Option<ldap::LdapUsers>,
    pub ldap_position: crate::config::LdapPosition,
}

/// The leading segments of a built name checked against the other sources' accounts; a
/// repository path rarely has more than a few.
const MAX_NAME_SEGMENTS: usize = 16;

pub struct CacheSettings {
    pub local_ttl: Duration,
    pub capacity: u64,
}

impl Authenticator {
    pub fn new(
        sources: Sources,
        cache: CacheSettings,
        damping: Option<Damping>,
    ) -> anyhow::Result<Self> {
        let mut salt = [0u8; 32];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| anyhow::anyhow!("no system randomness"))?;
        let local = sources
            .htpasswd
            .map(|f| Arc::new(LocalUsers::new(f, cache.local_ttl, cache.capacity)));
        let store = sources.store.map(Arc::new);
        // A name no source knows costs a check of the file's usual cost (or the store's).
        let dummy_hash = match (&local, &store) {
            (Some(l), _) => Some(l.file.dummy_hash().into()),
            (None, Some(s)) => Some(s.dummy_hash.as_str().into()),
            (None, None) => None,
        };
        let failure_ttl = store
            .as_ref()
            .map_or(FAILURE_TTL, |s| FAILURE_TTL.min(s.ttl));
        // The order: an ID token is recognised by its shape and decided by its provider
        // alone; then the sources that hold names (htpasswd before the store, the directory
        // where `ldap.position` puts it), then the upstream API, which decides every name left.
        let mut chain: Vec<Arc<dyn IdentitySource>> = Vec::new();
        if let Some(o) = sources.oidc {
            chain.push(o);
        }
        let directory = sources.ldap.map(|d| Arc::new(d) as Arc<dyn IdentitySource>);
        let at = |p: LdapPosition| directory.clone().filter(|_| sources.ldap_position == p);
        chain.extend(at(LdapPosition::First));
        if let Some(l) = &local {
            chain.push(l.clone());
        }
        chain.extend(at(LdapPosition::AfterHtpasswd));
        if let Some(s) = &store {
            chain.push(s.clone());
        }
        chain.extend(at(LdapPosition::AfterStore));
        if let Some(u) = sources.upstream {
            chain.push(Arc::new(u));
        }
        if let Some(o) = sources.open_balena {
            chain.push(Arc::new(o));
        }
        Ok(Self {
            chain,
            local,
            store,
            checks: Checks::new(damping, cache.capacity, failure_ttl),
            dummy_hash,
            unknown: Cache::builder().max_capacity(cache.capacity).build(),
            unique: checks::expiring(cache.capacity, failure_ttl),
            salt,
        })
    }

    /// One more source at the end of the chain (the chain's rules are tested with stubs).
    #[cfg(test)]
    fn then(mut self, source: Arc<dyn IdentitySource>) -> Self {
        self.chain.push(source);
        self
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

    /// The caller `creds` prove. `client` is the caller's address, as the realm determined
    /// it (damping counts by it).
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
        if self.checks.refused_lately(&key) {
            return Err(AuthError::BadCredentials);
        }
        let at = Attempt {
            creds,
            key,
            client,
            checks: &self.checks,
        };
        for (i, source) in self.chain.iter().enumerate() {
            match source.answer(&at).await {
                Answer::NotMine => continue,
                Answer::Refused(e) => return Err(e),
                Answer::Known(id) => return Box::pin(self.admit(i, id, key)).await,
            }
        }
        Box::pin(self.nobody(&at)).await
    }

    /// The rules between sources for an identity the `i`th source proved: a name it built may
    /// not be another source's account, and groups from outside take the store's group
    /// grants, as fresh as a store user's.
    async fn admit(
        &self,
        i: usize,
        id: Arc<Identity>,
        key: CacheKey,
    ) -> Result<Arc<Identity>, AuthError> {
        let source = &self.chain[i];
        let checked = || async {
            let seen = self.unique.get(&key).await;
            seen.is_some_and(|u| Arc::ptr_eq(&u, &id))
        };
        if source.builds_names() && !checked().await {
            // The name, and each run of its leading segments: rules read `alice/x` as below
            // `alice` (`${account}/**`), so a built name may not start inside another
            // source's account either. Names hold few segments; each check is cached.
            let name = id.name.as_str();
            let prefixes = name.match_indices('/').map(|(at, _)| &name[..at]);
            for held in std::iter::once(name)
                .chain(prefixes)
                .take(MAX_NAME_SEGMENTS)
            {
                for (j, other) in self.chain.iter().enumerate() {
                    if j != i && other.holds(held).await? {
                        tracing::warn!(user = ?id.name, account = ?held, source = source.name(),
                            holder = other.name(), "refused an identity named like, or inside, another source's account");
                        return Err(source.taken(&id.name));
                    }
                }
            }
            self.unique.insert(key, id.clone()).await;
        }
        self.with_group_grants(source.as_ref(), id).await
    }

    /// `id` with the store's grants of its groups, when `source`'s groups are from outside.
    async fn with_group_grants(
        &self,
        source: &dyn IdentitySource,
        id: Arc<Identity>,
    ) -> Result<Arc<Identity>, AuthError> {
        let Some(users) = self
            .store
            .as_ref()
            .filter(|_| source.takes_group_grants() && !id.groups.is_empty())
        else {
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

    /// Who `name` is, asked of the sources in order without a password (`explain --resolve`),
    /// with the source that knows them; `None` when no source can tell.
    pub async fn lookup(
        &self,
        name: &str,
    ) -> Result<Option<(Arc<Identity>, &'static str)>, AuthError> {
        for source in &self.chain {
            if let Some(id) = source.lookup(name).await? {
                let id = self
                    .with_group_grants(source.as_ref(), Arc::new(id))
                    .await?;
                return Ok(Some((id, source.name())));
            }
        }
        Ok(None)
    }

    /// Outside groups' store grants for an identity `explain` was given rather than looked up
    /// (as an OIDC or directory identity's groups get them).
    pub async fn group_rights(
        &self,
        groups: &[String],
    ) -> Result<Vec<crate::store::Rights>, AuthError> {
        match &self.store {
            Some(users) if !groups.is_empty() => users.group_rights(groups).await,
            _ => Ok(Vec::new()),
        }
    }

    /// A credential no source decides costs what a wrong password does: a check against a
    /// dummy hash of the same cost, under the same damping.
    async fn nobody(&self, at: &Attempt<'_>) -> Result<Arc<Identity>, AuthError> {
        let Some(hash) = &self.dummy_hash else {
            return Err(AuthError::BadCredentials);
        };
        self.checks
            .once(&self.unknown, at, |suspect| async move {
                self.checks
                    .bcrypt(hash.clone(), &at.creds.password, suspect)
                    .await?;
                Err(AuthError::BadCredentials)
            })
            .await
    }

    /// Records held by brute-force damping (0 when it is off).
    pub fn damping_entries(&self) -> u64 {
        self.checks.damping_entries()
    }

    /// Whether the htpasswd file has `name` (a store user may not have it too).
    pub fn local_knows(&self, name: &str) -> bool {
        self.local.as_ref().is_some_and(|l| l.file.knows(name))
    }

    fn local_hash(&self, name: &str) -> Option<&str> {
        self.local.as_ref().and_then(|l| l.file.hash_of(name))
    }

    /// The store, for the admin API (after it has authenticated an admin).
    pub fn store(&self) -> Option<&StoreUsers> {
        self.store.as_deref()
    }

    /// After a reload that replaced the htpasswd file: revokes the refresh tokens of the users
    /// `self` (the running side) had and `new` removed or gave another hash. Returns how many.
    pub async fn revoke_changed_local(&self, new: &Authenticator) -> u64 {
        match (&self.local, &new.store) {
            (Some(old), Some(users)) => {
                let now = new.local.as_ref().map(|l| &*l.file);
                refresh::revoke_changed_local(&old.file, now, &users.refresh).await
            }
            _ => 0,
        }
    }

    /// The identity behind a refresh token, checked again as its account is now. `client_id`
    /// is the request's.
    pub async fn refresh(
        &self,
        token: &str,
        client_id: Option<&str>,
        client: IpAddr,
    ) -> Result<Caller, AuthError> {
        let Some(users) = &self.store else {
            return Err(AuthError::Refused(
                "this token service issues no refresh tokens (no store.url); log in with a password"
                    .into(),
            ));
        };
        let record = users
            .refresh
            .redeem(token, client_id, &self.checks, client)
            .await?;
        let caller = self.refreshed(users, token, &record, client).await?;
        users.store.note_token_used(&record.id);
        Ok(caller)
    }

    /// The caller a redeemed refresh token stands for, its account checked as it is now.
    async fn refreshed(
        &self,
        users: &StoreUsers,
        token: &str,
        record: &crate::store::RefreshRecord,
        client: IpAddr,
    ) -> Result<Caller, AuthError> {
        let user = record.user.as_str();
        match record.source.as_str() {
            "store" => {
                let entry = users
                    .entry(user)
                    .await?
                    .ok_or_else(|| refresh::gone(user))?;
                if refresh::binding(&entry.password_hash) != record.binding {
                    return Err(refresh::changed(user));
                }
                if let Some(why) = entry.refusal() {
                    return Err(AuthError::Refused(why));
                }
                users.store.note_user_used(user);
                Ok(Caller::Known(entry.identity.clone()))
            }
            "local" => {
                // Refused, not revoked: with several issuers on one database, this one's
                // htpasswd file may be the older one. The reload that changes a hash revokes.
                let hash = self.local_hash(user).ok_or_else(|| refresh::gone(user))?;
                if refresh::binding(hash) != record.binding {
                    return Err(refresh::changed(user));
                }
                Ok(Caller::Known(Arc::new(Identity::local(user))))
            }
            "upstream" => {
                let creds = refresh::sealed_credentials(token, record)?;
                // The platform is asked again (through its cache), so a revoked key revokes
                // this token too; the credential goes on to the per-repository checks.
                match self.authenticate(&creds, client).await {
                    Ok(caller @ Caller::Upstream { .. }) if caller.identity().name == user => {
                        Ok(caller)
                    }
                    Ok(_) | Err(AuthError::BadCredentials) | Err(AuthError::Refused(_)) => {
                        Err(AuthError::Refused(format!(
                            "the identity service no longer accepts the credential this refresh \
                             token was issued for (user {user}); log in again"
                        )))
                    }
                    Err(e) => Err(e),
                }
            }
            _ => Err(refresh::unknown()),
        }
    }

    /// A refresh token for a caller that has just logged in with a password, or `None`
    /// when there is no store (or the user has had too many this minute).
    pub async fn mint_refresh(
        &self,
        caller: &Caller,
        client_id: &str,
    ) -> Result<Option<String>, AuthError> {
        let identity = caller.identity();
        let Some(users) = &self.store else {
            return Ok(None);
        };
        let (source, binding, sealed) = match identity.source {
            // An ID token's holder asks with a fresh one; a refresh token would outlive it.
            // A directory user's token would outlive a password change or a disabled account
            // the directory tells us of only at a bind, which a refresh token never makes.
            Source::Anonymous | Source::Oidc | Source::Ldap => return Ok(None),
            Source::Local => {
                let Some(hash) = self.local_hash(&identity.name) else {
                    return Ok(None);
                };
                ("local", refresh::binding(hash), None)
            }
            Source::Store => {
                let Some(entry) = users.entry(&identity.name).await? else {
                    return Ok(None);
                };
                ("store", refresh::binding(&entry.password_hash), None)
            }
            Source::Upstream => match caller {
                Caller::Upstream { credential, .. } => {
                    ("upstream", String::new(), Some(credential.credentials()))
                }
                Caller::Known(_) => return Ok(None),
            },
        };
        users
            .refresh
            .mint(&identity.name, source, client_id, binding, sealed)
            .await
            .map_err(|e| AuthError::Unavailable(format!("refresh token database: {e}")))
    }
}

#[cfg(test)]
mod tests;
