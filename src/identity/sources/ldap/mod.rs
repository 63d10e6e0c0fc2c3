//! An LDAP directory (OpenLDAP, FreeIPA, Active Directory): the service account searches for
//! the one entry the login name matches, the caller's password is checked by binding as that
//! entry, and the groups come from a group search or the entry's `memberOf`.
//!
//! The directory is never guessed at: an empty password is refused before any bind (a simple
//! bind with a DN and no password is an unauthenticated bind many servers call a success), a
//! login name is escaped before it enters a filter and never becomes part of a DN, and a
//! directory that does not answer is a 503, never a 401 or a token.

mod pool;
mod text;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use ldap3::{Scope, SearchEntry, SearchOptions};
use moka::future::Cache;

use super::{Answer, IdentitySource};
use crate::config::{setting, LdapConfig};
use crate::identity::checks::{expiring, Attempt, Outcome};
use crate::identity::types::{AuthError, CacheKey, Identity, Source};
use pool::Pool;
use text::{canonical_dn, fill, first, first_rdn, fold, values};

/// LDAP result codes (RFC 4511 appendix A) this source acts on.
pub(super) const SUCCESS: u32 = 0;
const SIZE_LIMIT_EXCEEDED: u32 = 4;
const REFERRAL: u32 = 10;
const NO_SUCH_OBJECT: u32 = 32;
/// A bind refused for the password or the account (AD says which in the text: expired,
/// disabled, locked): all mean "not this password", never "the directory is down".
const REFUSED_BINDS: [u32; 4] = [48, 49, 50, 53];

pub struct LdapUsers {
    pool: Pool,
    user_base: String,
    user_filter: String,
    username_attribute: String,
    groups: Groups,
    max_groups: usize,
    /// Verified credentials with their groups, for `identity.cache_ttl_seconds`.
    verified: Cache<CacheKey, Arc<Identity>>,
    /// Login names `user_filter` matched no entry for, within the TTL: passed on to the next
    /// source without another search, so a client repeating one costs the directory nothing.
    unknown: Cache<String, ()>,
    /// Whether an account is named so (by `username_attribute`), for the names other sources
    /// build.
    holders: Cache<String, bool>,
}

enum Groups {
    None,
    Search {
        base: String,
        filter: String,
        name_attribute: String,
    },
    /// Group DNs in the user's entry; with a base, only those under it count (anyone who may
    /// create a group elsewhere could otherwise name one like a privileged group).
    MemberOf {
        attribute: String,
        under: Option<String>,
    },
}

/// The one entry a login name matched.
struct Entry {
    dn: String,
    name: String,
    member_of: Vec<String>,
}

impl IdentitySource for LdapUsers {
    fn name(&self) -> &'static str {
        "ldap"
    }

    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            if at.creds.password.is_empty() {
                return Answer::Refused(AuthError::BadCredentials);
            }
            // A name the directory lacked a moment ago is passed on first: the callers of the
            // sources after this one (an upstream API's) pay one lookup here per request.
            let name = &at.creds.username;
            if self.unknown.contains_key(name) {
                return Answer::NotMine;
            }
            let metrics = crate::metrics::get();
            if let Some(id) = self.verified.get(&at.key).await {
                metrics.cache_hits.inc();
                return Answer::Known(id);
            }
            metrics.cache_misses.inc();
            // The search is damped with the bind: a client trying names costs the directory
            // what one trying passwords does. Attempts count under the name as the directory
            // compares it (ignoring case and surrounding spaces), so `Alice ` is `alice`.
            let result = at
                .checks
                .damped_as(
                    &fold(name),
                    at.client,
                    |_| self.pool.within(self.check(at)),
                    |r| match r {
                        Ok(Some(_)) => Outcome::Accepted,
                        Err(AuthError::BadCredentials) => Outcome::Refused,
                        Ok(None) | Err(_) => Outcome::Undecided,
                    },
                )
                .await;
            match result {
                Ok(Some(id)) => Answer::Known(id),
                Ok(None) => {
                    tracing::info!(user = ?name, entries = 0, "no directory entry matches the name");
                    self.unknown.insert(name.clone(), ()).await;
                    Answer::NotMine
                }
                Err(e) => {
                    if e == AuthError::BadCredentials {
                        at.checks.remember_failure(at.key).await;
                    }
                    Answer::Refused(e)
                }
            }
        })
    }

    fn holds<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            let filter = fill(
                &format!("({}={{username}})", self.username_attribute),
                &[("{username}", name)],
            );
            self.holders
                .try_get_with_by_ref(name, async {
                    let found = self.pool.within(self.find(&filter, name)).await?;
                    Ok(found.is_some())
                })
                .await
                .map_err(|e: Arc<AuthError>| (*e).clone())
        })
    }

    fn builds_names(&self) -> bool {
        true
    }

    fn lookup<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let filter = fill(&self.user_filter, &[("{username}", name)]);
            let found = self.pool.within(self.find(&filter, name)).await?;
            match found {
                Some(entry) => Ok(Some(self.pool.within(self.identity_of(entry)).await?)),
                None => Ok(None),
            }
        })
    }

    fn takes_group_grants(&self) -> bool {
        true
    }
}

impl LdapUsers {
    /// Reads the password and CA files: a missing or unreadable one stops start-up.
    pub fn new(cfg: &LdapConfig, cache_ttl: Duration, capacity: u64) -> anyhow::Result<Self> {
        let groups = match (&cfg.group_filter, &cfg.group_base, &cfg.member_of_attribute) {
            (Some(filter), Some(base), _) => Groups::Search {
                base: base.clone(),
                filter: filter.clone(),
                name_attribute: cfg.group_name_attribute.clone(),
            },
            (None, under, Some(attribute)) => Groups::MemberOf {
                attribute: attribute.clone(),
                under: under.as_deref().map(canonical_dn),
            },
            _ => Groups::None,
        };
        Ok(Self {
            pool: Pool::new(cfg)?,
            user_base: cfg.user_base.clone(),
            user_filter: cfg.user_filter.clone(),
            username_attribute: cfg.username_attribute.clone(),
            groups,
            max_groups: cfg.max_groups,
            verified: expiring(capacity, cache_ttl),
            unknown: expiring(capacity, cache_ttl),
            holders: expiring(capacity, cache_ttl),
        })
    }

    /// At start-up: a directory that cannot be reached now may come later, so it is a warning.
    pub async fn probe(&self) {
        match self.pool.within(self.pool.get()).await {
            Ok(conn) => {
                conn.release();
                tracing::info!(url = %self.pool.url, "directory reachable; service account bound");
            }
            Err(e) => tracing::warn!(
                "{e}; logins of directory users get 503 until it answers ({})",
                setting("ldap.url")
            ),
        }
    }

    /// The login: the entry the name matches (`None`: not the directory's), then its password,
    /// checked once for concurrent attempts with the same credentials.
    async fn check(&self, at: &Attempt<'_>) -> Result<Option<Arc<Identity>>, AuthError> {
        let filter = fill(&self.user_filter, &[("{username}", &at.creds.username)]);
        let Some(entry) = self.find(&filter, &at.creds.username).await? else {
            return Ok(None);
        };
        let login = async { self.login(entry, &at.creds.password).await.map(Arc::new) };
        let id = Box::pin(self.verified.try_get_with(at.key, login))
            .await
            .map_err(|e: Arc<AuthError>| (*e).clone())?;
        Ok(Some(id))
    }

    /// The one entry `filter` matches, or `None` when it matches none. Several (or a server
    /// that cut the answer short) is a refusal: which entry is meant is not ours to guess.
    async fn find(&self, filter: &str, typed: &str) -> Result<Option<Entry>, AuthError> {
        let mut attrs = vec![self.username_attribute.as_str()];
        if let Groups::MemberOf { attribute, .. } = &self.groups {
            attrs.push(attribute);
        }
        let (mut found, cut) = self
            .search(&self.user_base, filter, &attrs, 2, "ldap.user_base")
            .await?;
        if found.len() > 1 || cut {
            tracing::info!(user = ?typed, entries = found.len(), cut,
                "several directory entries match the name: refused (ldap.user_filter)");
            return Err(AuthError::BadCredentials);
        }
        let Some(e) = found.pop() else {
            return Ok(None);
        };
        let name = self.account_name(&e, typed)?;
        let member_of = match &self.groups {
            Groups::MemberOf { attribute, .. } => values(&e, attribute).to_vec(),
            _ => Vec::new(),
        };
        Ok(Some(Entry {
            name,
            dn: e.dn,
            member_of,
        }))
    }

    /// The entry's account name: its one `username_attribute` value, or, when the attribute
    /// has several (`uid` may), the one the caller typed.
    fn account_name(&self, e: &SearchEntry, typed: &str) -> Result<String, AuthError> {
        let names = values(e, &self.username_attribute);
        let name = match names {
            [one] => Some(one),
            several => several
                .iter()
                .find(|n| n.trim().eq_ignore_ascii_case(typed.trim())),
        };
        match name.filter(|n| !n.is_empty()) {
            // Rules read a '/' in an account as path segments (`${account}/**`); a directory
            // name is typed by people, so it may not reach into another's namespace.
            Some(n) if n.contains('/') => {
                tracing::warn!(dn = %e.dn, user = ?n,
                    "the user's account name holds '/', which rules would read as a repository path: refused");
                Err(AuthError::BadCredentials)
            }
            Some(n) => Ok(n.clone()),
            None => {
                tracing::warn!(dn = %e.dn, attribute = %self.username_attribute, values = names.len(),
                    "the user's directory entry has no single account name");
                Err(AuthError::Unavailable(format!(
                    "the directory entry of this user has {} values of {} ({})",
                    names.len(),
                    self.username_attribute,
                    setting("ldap.username_attribute")
                )))
            }
        }
    }

    /// Binds as the entry with `password`, then, as the service account again, reads its
    /// groups (`identity_of`).
    async fn login(&self, entry: Entry, password: &str) -> Result<Identity, AuthError> {
        let pool = &self.pool;
        let mut conn = pool.get().await?;
        let bound = conn
            .ldap
            .simple_bind(&entry.dn, password)
            .await
            .map_err(|e| pool.down(&format!("the user's bind failed: {e}")))?;
        // The connection goes back to the pool only bound as the service account again.
        pool.bind_service(&mut conn.ldap).await?;
        conn.release();
        match bound.rc {
            SUCCESS => {}
            rc if REFUSED_BINDS.contains(&rc) => {
                tracing::debug!(user = %entry.name, rc, "the directory refused the bind");
                return Err(AuthError::BadCredentials);
            }
            rc => return Err(pool.down(&format!("the user's bind answered {rc} ({})", bound.text))),
        }
        self.identity_of(entry).await
    }

    /// The entry's identity: its name and its groups, read as the service account.
    async fn identity_of(&self, entry: Entry) -> Result<Identity, AuthError> {
        let (mut groups, cut) = match &self.groups {
            Groups::None => (Vec::new(), false),
            Groups::MemberOf { under, .. } => {
                let names = entry.member_of.iter().filter(|dn| {
                    under
                        .as_ref()
                        .is_none_or(|base| canonical_dn(dn).ends_with(&format!(",{base}")))
                });
                (names.filter_map(|dn| first_rdn(dn)).collect(), false)
            }
            Groups::Search {
                base,
                filter,
                name_attribute,
            } => {
                let filter = fill(filter, &[("{dn}", &entry.dn), ("{username}", &entry.name)]);
                let attrs = [name_attribute.as_str()];
                let limit = self.max_groups + 1;
                let (found, cut) = self
                    .search(base, &filter, &attrs, limit, "ldap.group_base")
                    .await?;
                let names = found
                    .iter()
                    .filter_map(|e| first(e, name_attribute).map(str::to_string));
                (names.collect(), cut)
            }
        };
        groups.sort();
        groups.dedup();
        if groups.len() > self.max_groups || cut {
            tracing::warn!(user = %entry.name, groups = groups.len(), max = self.max_groups,
                "the user is in more groups than ldap.max_groups or the directory answers at \
                 once; the rest are left out");
            groups.truncate(self.max_groups);
        }
        Ok(Identity {
            name: entry.name,
            groups,
            source: Source::Ldap,
            admin: false,
            rights: Vec::new(),
            expires_at: None,
            subject: None,
        })
    }

    /// A subtree search as the service account: at most `limit` entries, and whether the
    /// answer was cut there (or by the server's own size limit). Search references (Active
    /// Directory's referrals to other domains) are not followed.
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        limit: usize,
        base_key: &str,
    ) -> Result<(Vec<SearchEntry>, bool), AuthError> {
        let pool = &self.pool;
        let mut conn = pool.get().await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = conn
            .ldap
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .search(base, Scope::Subtree, filter, attrs)
            .await
            .map_err(|e| pool.down(&format!("search failed: {e}")))?;
        conn.release();
        match result.1.rc {
            SUCCESS | SIZE_LIMIT_EXCEEDED => {}
            NO_SUCH_OBJECT => {
                return Err(pool.down(&format!("{base:?} does not exist ({})", setting(base_key))))
            }
            REFERRAL => {
                return Err(pool.down(&format!(
                    "the search under {base:?} was referred to another server; referrals are \
                     not followed ({})",
                    setting(base_key)
                )))
            }
            rc => return Err(pool.down(&format!("the search answered {rc} ({})", result.1.text))),
        }
        let entries = result
            .0
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect();
        Ok((entries, result.1.rc == SIZE_LIMIT_EXCEEDED))
    }
}
