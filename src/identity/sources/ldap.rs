//! An LDAP directory (OpenLDAP, FreeIPA, Active Directory): the service account searches for
//! the one entry the login name matches, the caller's password is checked by binding as that
//! entry, and the groups come from a group search or the entry's `memberOf`.
//!
//! The directory is never guessed at: an empty password is refused before any bind (a simple
//! bind with a DN and no password is an unauthenticated bind many servers call a success), a
//! login name is escaped before it enters a filter and never becomes part of a DN, and a
//! directory that does not answer is a 503, never a 401 or a token.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use ldap3::{LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use moka::future::Cache;
use tokio::sync::{Semaphore, SemaphorePermit};
use zeroize::Zeroizing;

use super::{Answer, IdentitySource};
use crate::config::{setting, LdapConfig};
use crate::identity::checks::Attempt;
use crate::identity::types::{AuthError, CacheKey, Identity, Source};

/// LDAP result codes (RFC 4511 appendix A) this file acts on.
const SUCCESS: u32 = 0;
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
    /// Whether a name is a directory account: for the names other sources build, and so
    /// that a name the directory does not hold is not searched again within the TTL.
    holders: Cache<String, bool>,
}

enum Groups {
    None,
    Search {
        base: String,
        filter: String,
        name_attribute: String,
    },
    MemberOf(String),
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
            // The entry is looked up before the cache-or-verify step, because a name the
            // directory does not hold is the next source's; it is found again only when the
            // cached identity expired in between.
            // A name the directory did not hold a moment ago is passed on without a search,
            // so a client repeating one costs the directory nothing more.
            let mut entry = None;
            let name = &at.creds.username;
            if !self.verified.contains_key(&at.key) {
                if self.holders.get(name).await == Some(false) {
                    return Answer::NotMine;
                }
                match self.find(name).await {
                    Ok(Some(e)) => entry = Some(e),
                    Ok(None) => {
                        tracing::info!(user = ?name, entries = 0, "no directory entry matches the name");
                        self.holders.insert(name.clone(), false).await;
                        return Answer::NotMine;
                    }
                    Err(e) => return Answer::Refused(e),
                }
            }
            at.checks
                .once(&self.verified, at, |_| async move {
                    let entry = match entry {
                        Some(e) => e,
                        None => self
                            .find(&at.creds.username)
                            .await?
                            .ok_or(AuthError::BadCredentials)?,
                    };
                    self.login(entry, &at.creds.password).await.map(Arc::new)
                })
                .await
                .into()
        })
    }

    fn holds<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async move {
            self.holders
                .try_get_with_by_ref(name, async { Ok(self.find(name).await?.is_some()) })
                .await
                .map_err(|e: Arc<AuthError>| (*e).clone())
        })
    }

    fn builds_names(&self) -> bool {
        true
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
            (None, _, Some(attr)) => Groups::MemberOf(attr.clone()),
            _ => Groups::None,
        };
        let ttl = cache_ttl.max(Duration::from_millis(1));
        Ok(Self {
            pool: Pool::new(cfg)?,
            user_base: cfg.user_base.clone(),
            user_filter: cfg.user_filter.clone(),
            username_attribute: cfg.username_attribute.clone(),
            groups,
            max_groups: cfg.max_groups,
            verified: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            holders: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
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

    /// The one entry `username` matches, or `None` when it matches none. Several is a
    /// refusal: which entry would be meant is not ours to guess.
    async fn find(&self, username: &str) -> Result<Option<Entry>, AuthError> {
        let filter = fill(&self.user_filter, &[("{username}", username)]);
        let mut attrs = vec![self.username_attribute.as_str()];
        if let Groups::MemberOf(a) = &self.groups {
            attrs.push(a);
        }
        let mut found = self
            .search(&self.user_base, &filter, &attrs, 2, "ldap.user_base")
            .await?;
        match found.len() {
            0 => Ok(None),
            1 => {
                let e = found.remove(0);
                let Some(name) = first(&e, &self.username_attribute) else {
                    tracing::warn!(dn = %e.dn, attribute = %self.username_attribute,
                        "the user's directory entry has no name attribute");
                    return Err(AuthError::Unavailable(format!(
                        "the directory entry of this user has no {} ({})",
                        self.username_attribute,
                        setting("ldap.username_attribute")
                    )));
                };
                let member_of = match &self.groups {
                    Groups::MemberOf(a) => values(&e, a).to_vec(),
                    _ => Vec::new(),
                };
                Ok(Some(Entry {
                    name: name.to_string(),
                    dn: e.dn,
                    member_of,
                }))
            }
            n => {
                tracing::info!(user = ?username, entries = n,
                    "several directory entries match the name: refused (ldap.user_filter)");
                Err(AuthError::BadCredentials)
            }
        }
    }

    /// Binds as the entry with `password`, then, as the service account again, reads its
    /// groups.
    async fn login(&self, entry: Entry, password: &str) -> Result<Identity, AuthError> {
        let pool = &self.pool;
        let mut conn = pool.within(pool.get()).await?;
        let bound = pool
            .within(async {
                conn.ldap
                    .simple_bind(&entry.dn, password)
                    .await
                    .map_err(|e| pool.down(&format!("the user's bind failed: {e}")))
            })
            .await?;
        // The connection goes back to the pool only bound as the service account again.
        pool.within(pool.bind_service(&mut conn.ldap)).await?;
        conn.release();
        match bound.rc {
            SUCCESS => {}
            rc if REFUSED_BINDS.contains(&rc) => {
                tracing::debug!(user = %entry.name, rc, "the directory refused the bind");
                return Err(AuthError::BadCredentials);
            }
            rc => return Err(pool.down(&format!("the user's bind answered {rc} ({})", bound.text))),
        }
        let mut groups = match &self.groups {
            Groups::None => Vec::new(),
            Groups::MemberOf(_) => entry
                .member_of
                .iter()
                .filter_map(|dn| first_rdn(dn))
                .collect(),
            Groups::Search {
                base,
                filter,
                name_attribute,
            } => {
                let filter = fill(filter, &[("{dn}", &entry.dn), ("{username}", &entry.name)]);
                let found = self
                    .search(
                        base,
                        &filter,
                        &[name_attribute.as_str()],
                        self.max_groups,
                        "ldap.group_base",
                    )
                    .await?;
                found
                    .iter()
                    .filter_map(|e| first(e, name_attribute).map(str::to_string))
                    .collect()
            }
        };
        groups.sort();
        groups.dedup();
        if groups.len() > self.max_groups {
            tracing::warn!(user = %entry.name, groups = groups.len(), max = self.max_groups,
                "the user is in more groups than ldap.max_groups; the rest are left out");
            groups.truncate(self.max_groups);
        }
        Ok(Identity {
            name: entry.name,
            groups,
            source: Source::Ldap,
            admin: false,
            rights: Vec::new(),
            expires_at: None,
        })
    }

    /// A subtree search as the service account, at most `limit` entries (more are cut, as the
    /// server's size limit cuts them). Search references (Active Directory's referrals to other
    /// domains) are not followed.
    async fn search(
        &self,
        base: &str,
        filter: &str,
        attrs: &[&str],
        limit: usize,
        base_key: &str,
    ) -> Result<Vec<SearchEntry>, AuthError> {
        let pool = &self.pool;
        let mut conn = pool.within(pool.get()).await?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = pool
            .within(async {
                conn.ldap
                    .with_search_options(SearchOptions::new().sizelimit(limit))
                    .search(base, Scope::Subtree, filter, attrs)
                    .await
                    .map_err(|e| pool.down(&format!("search failed: {e}")))
            })
            .await?;
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
        Ok(result
            .0
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }
}

/// Fills a filter's holes with values escaped for a filter (RFC 4515), in one pass: a value
/// that holds a hole's name is never filled again.
fn fill(template: &str, holes: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (hole, value) in holes {
            if let Some(after) = rest.strip_prefix(hole) {
                out.push_str(&ldap3::ldap_escape(*value));
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// An attribute's values, its name matched ignoring case (servers answer in their own case).
fn values<'e>(entry: &'e SearchEntry, attribute: &str) -> &'e [String] {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attribute))
        .map_or(&[], |(_, v)| v.as_slice())
}

fn first<'e>(entry: &'e SearchEntry, attribute: &str) -> Option<&'e str> {
    values(entry, attribute)
        .first()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A group's name from its DN in `memberOf`: the first RDN's value (`cn=dev\2Cops,ou=groups`
/// → `dev,ops`), its escapes (RFC 4514) undone.
fn first_rdn(dn: &str) -> Option<String> {
    let (_, value) = dn.split_once('=')?;
    let mut out = Vec::new();
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' | b'+' => break,
            b'\\' => {
                let Some(next) = bytes.next() else { break };
                let hex = |c: u8| (c as char).to_digit(16);
                match hex(next) {
                    Some(hi) => {
                        let lo = bytes.next().and_then(hex)?;
                        out.push((hi * 16 + lo) as u8);
                    }
                    None => out.push(next),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

/// Connections bound as the service account, at most `pool_size` in use at once. A connection
/// goes back only after every operation on it succeeded; one that failed, timed out or closed
/// is dropped, and the next login opens a new one.
struct Pool {
    url: String,
    settings: LdapConnSettings,
    bind_dn: String,
    bind_password: Zeroizing<String>,
    timeout: Duration,
    idle: Mutex<Vec<ldap3::Ldap>>,
    permits: Semaphore,
}

struct Conn<'p> {
    ldap: ldap3::Ldap,
    pool: &'p Pool,
    _permit: SemaphorePermit<'p>,
}

impl Conn<'_> {
    fn release(self) {
        let mut idle = self
            .pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        idle.push(self.ldap);
    }
}

impl Pool {
    fn new(cfg: &LdapConfig) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(cfg.timeout_seconds);
        let password = match (&cfg.bind_password, &cfg.bind_password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(file)) => {
                let path = file.relative();
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: cannot read {}: {e}",
                        setting("ldap.bind_password_file"),
                        path.display()
                    )
                })?;
                let p = text.strip_suffix('\n').unwrap_or(&text);
                let p = p.strip_suffix('\r').unwrap_or(p);
                if p.is_empty() {
                    anyhow::bail!(
                        "{}: {} is empty (an empty password is an unauthenticated bind)",
                        setting("ldap.bind_password_file"),
                        path.display()
                    );
                }
                p.to_string()
            }
            (None, None) => anyhow::bail!("{}: missing", setting("ldap.bind_password_file")),
        };
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_starttls(cfg.start_tls);
        if cfg.start_tls || cfg.url.starts_with("ldaps://") {
            settings = settings.set_config(tls_config(cfg)?);
        }
        Ok(Self {
            url: cfg.url.clone(),
            settings,
            bind_dn: cfg.bind_dn.clone(),
            bind_password: Zeroizing::new(password),
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(cfg.pool_size),
        })
    }

    /// The directory failed: a 503 naming it and how (never a credential).
    fn down(&self, how: &str) -> AuthError {
        tracing::warn!(url = %self.url, "directory: {how}");
        AuthError::Unavailable(format!("the directory {}: {how}", self.url))
    }

    /// Every exchange with the directory, and the wait for a connection, has the timeout.
    async fn within<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, AuthError>>,
    ) -> Result<T, AuthError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(self.down(&format!(
                "no answer within {} s ({})",
                self.timeout.as_secs(),
                setting("ldap.timeout_seconds")
            ))),
        }
    }

    async fn get(&self) -> Result<Conn<'_>, AuthError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| self.down("closed"))?;
        let reused = loop {
            let next = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match next {
                Some(mut l) => {
                    if !l.is_closed() {
                        break Some(l);
                    }
                }
                None => break None,
            }
        };
        let ldap = match reused {
            Some(l) => l,
            None => self.connect().await?,
        };
        Ok(Conn {
            ldap,
            pool: self,
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<ldap3::Ldap, AuthError> {
        let (conn, mut ldap) = LdapConnAsync::with_settings(self.settings.clone(), &self.url)
            .await
            .map_err(|e| self.down(&format!("cannot connect: {}", describe(&e))))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "directory connection ended");
            }
        });
        self.bind_service(&mut ldap).await?;
        Ok(ldap)
    }

    async fn bind_service(&self, ldap: &mut ldap3::Ldap) -> Result<(), AuthError> {
        let r = ldap
            .simple_bind(&self.bind_dn, &self.bind_password)
            .await
            .map_err(|e| self.down(&format!("the service account's bind failed: {e}")))?;
        if r.rc != SUCCESS {
            return Err(self.down(&format!(
                "the service account's bind was refused ({} {}); check {} and its password",
                r.rc,
                r.text,
                setting("ldap.bind_dn")
            )));
        }
        Ok(())
    }
}

fn describe(e: &LdapError) -> String {
    match e {
        LdapError::Io { source } => source.to_string(),
        other => other.to_string(),
    }
}

/// The system's roots and `ca_file`'s certificates, with aws-lc-rs.
fn tls_config(cfg: &LdapConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(file) = &cfg.ca_file {
        let path = file.relative();
        let key = setting("ldap.ca_file");
        let certs = CertificateDer::pem_file_iter(&path)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("{key}: {}: {e}", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{key}: {} holds no certificate", path.display());
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| anyhow::anyhow!("{key}: {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_one_pass() {
        let f = "(&(uid={username})(x={dn}))";
        assert_eq!(
            fill(f, &[("{username}", "*)(|(uid=*"), ("{dn}", "{username}")]),
            "(&(uid=\\2a\\29\\28|\\28uid=\\2a)(x={username}))"
        );
        assert_eq!(
            fill("(uid={username})", &[("{username}", "a\0b\\")]),
            "(uid=a\\00b\\5c)"
        );
    }

    #[test]
    fn group_names_come_from_the_first_rdn() {
        assert_eq!(first_rdn("cn=devs,ou=groups,dc=x").as_deref(), Some("devs"));
        assert_eq!(first_rdn("CN=dev\\2Cops,OU=g").as_deref(), Some("dev,ops"));
        assert_eq!(first_rdn("cn=a\\,b+uid=c,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn("cn=,dc=x"), None);
        assert_eq!(first_rdn("nodn"), None);
        assert_eq!(first_rdn("cn=bad\\2"), None);
    }
}
