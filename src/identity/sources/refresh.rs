//! Refresh tokens (OAuth2 offline access): what `docker login` stores instead of the password.
//!
//! A refresh token is `tirt_` and 256 random bits (base64url). The store keeps a SHA-256 of it
//! and what it stands for: the user, their identity source, the `client_id`, an expiry, and
//!
//! - for htpasswd and store users, a hash of the password hash it was issued under: each use
//!   checks the account as it is *now* (still there, enabled, unexpired, same password), so a
//!   changed password ends every refresh token issued before it;
//! - for upstream identities, the platform credential (session token or API key) sealed with
//!   AES-256-GCM under a key derived from the refresh token, which the store does not hold.
//!   Each use opens it and asks the platform again, through the upstream identity cache (at most
//!   once per `upstream.cache_ttl_seconds`), so a revoked API key revokes the refresh token.
//!
//! Tokens are never rotated on use: docker saves the refresh token only at login, so a rotated
//! one would be lost. They end at their expiry (`token.refresh_ttl_days`) or when revoked (CLI
//! `tokens revoke`, the admin API). Lookups go through a cache by token hash for
//! `store.cache_ttl_seconds`, the bound within which a revocation made elsewhere takes effect.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use data_encoding::{BASE64URL_NOPAD, HEXLOWER};
use moka::future::Cache;

use super::htpasswd::Htpasswd;
use crate::identity::checks::{expiring, Checks};
use crate::identity::types::{AuthError, Credentials};
use crate::store::{self, RefreshRecord, Store, StoreError};

/// What every refresh token starts with (and secret scanners can look for).
pub const PREFIX: &str = "tirt_";
/// 256 bits, base64url without padding.
const ENCODED_LEN: usize = 43;

/// Refresh tokens one user may be issued per minute; past it, a login still gets its access
/// token but no refresh token (the client keeps the password, as with any server that issues
/// none) and a warning is logged. Bounds the database writes one account can cause.
const MAX_MINTS_PER_MINUTE: u32 = 30;

const UNKNOWN: &str = "the refresh token is not valid here (revoked, expired and removed, or \
                       issued by another token service); log in again (docker login <registry>)";

pub struct RefreshTokens {
    store: Arc<Store>,
    lifetime: Duration,
    /// Token hash → its record (or `None`: unknown), for `store.cache_ttl_seconds`.
    records: Cache<[u8; 32], Option<Arc<RefreshRecord>>>,
    /// Refresh tokens minted per user in the current minute.
    mints: Cache<String, Arc<AtomicU32>>,
    rng: SystemRandom,
}

/// A domain-separated SHA-256 of a token: a 256-bit secret needs no stretching.
fn token_digest(label: &[u8], token: &str) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(label);
    ctx.update(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// What the store finds the token by.
fn id_hash(token: &str) -> [u8; 32] {
    token_digest(b"token-issuer refresh id\0", token)
}

/// The key an upstream credential is sealed under (needed only for upstream identities).
fn seal_key(token: &str) -> [u8; 32] {
    token_digest(b"token-issuer refresh seal\0", token)
}

/// Ties a token to the password hash it was issued under.
pub(crate) fn binding(password_hash: &str) -> String {
    HEXLOWER.encode(digest::digest(&digest::SHA256, password_hash.as_bytes()).as_ref())
}

/// Whether `s` has a refresh token's shape (what the realm uses to tell one from a password).
pub fn looks_like(s: &str) -> bool {
    s.len() == PREFIX.len() + ENCODED_LEN && s.starts_with(PREFIX)
}

fn seal(key: &[u8; 32], creds: &Credentials, rng: &SystemRandom) -> Option<String> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).ok()?;
    let mut data = serde_json::to_vec(&[&creds.username, &creds.password]).ok()?;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .ok()?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&data);
    Some(BASE64URL_NOPAD.encode(&out))
}

fn open(key: &[u8; 32], sealed: &str) -> Option<Credentials> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).ok()?);
    let mut data = BASE64URL_NOPAD.decode(sealed.as_bytes()).ok()?;
    if data.len() < NONCE_LEN {
        return None;
    }
    let mut body = data.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&data).ok()?;
    let plain = key.open_in_place(nonce, Aad::empty(), &mut body).ok()?;
    let [username, password]: [String; 2] = serde_json::from_slice(plain).ok()?;
    Some(Credentials { username, password })
}

impl RefreshTokens {
    pub fn new(store: Arc<Store>, lifetime: Duration, cache_ttl: Duration, capacity: u64) -> Self {
        Self {
            store,
            lifetime,
            records: expiring(capacity, cache_ttl),
            mints: expiring(capacity, Duration::from_secs(60)),
            rng: SystemRandom::new(),
        }
    }

    /// Issues and stores a refresh token for `user`; `None` when this user has had too many
    /// this minute.
    pub(crate) async fn mint(
        &self,
        user: &str,
        source: &str,
        client_id: &str,
        binding: String,
        credentials: Option<&Credentials>,
    ) -> Result<Option<String>, StoreError> {
        let count = self
            .mints
            .get_with_by_ref(user, async { Arc::new(AtomicU32::new(0)) })
            .await;
        if count.fetch_add(1, Ordering::Relaxed) >= MAX_MINTS_PER_MINUTE {
            tracing::warn!(user = ?user, "more than {MAX_MINTS_PER_MINUTE} refresh tokens asked for in a minute: this login gets none");
            return Ok(None);
        }
        let mut secret = [0u8; 32];
        self.rng
            .fill(&mut secret)
            .map_err(|_| StoreError::Unavailable("no system randomness".into()))?;
        let token = format!("{PREFIX}{}", BASE64URL_NOPAD.encode(&secret));
        let id_hash = id_hash(&token);
        let sealed = match credentials {
            Some(c) => Some(
                seal(&seal_key(&token), c, &self.rng)
                    .ok_or_else(|| StoreError::Unavailable("sealing failed".into()))?,
            ),
            None => None,
        };
        let now = store::now();
        self.store
            .add_refresh_token(&RefreshRecord {
                id: uuid::Uuid::new_v4().to_string(),
                token_hash: HEXLOWER.encode(&id_hash),
                user: user.to_string(),
                source: source.to_string(),
                client_id: client_id.to_string(),
                binding,
                sealed,
                created_at: now,
                expires_at: now.saturating_add(self.lifetime.as_secs() as i64),
                last_used_at: None,
            })
            .await?;
        // A token looked up (and found unknown) before it existed must not stay unknown.
        self.records.invalidate(&id_hash).await;
        Ok(Some(token))
    }

    /// The record of `token` from the cache, if it is there.
    async fn cached(&self, id_hash: &[u8; 32]) -> Option<Option<Arc<RefreshRecord>>> {
        self.records.get(id_hash).await
    }

    /// The record of `token` (once per cache TTL from the database, shared by concurrent
    /// callers).
    async fn lookup(&self, id_hash: [u8; 32]) -> Result<Option<Arc<RefreshRecord>>, AuthError> {
        let store = &self.store;
        self.records
            .try_get_with(id_hash, async move {
                Ok::<_, StoreError>(
                    store
                        .refresh_token(&HEXLOWER.encode(&id_hash))
                        .await?
                        .map(Arc::new),
                )
            })
            .await
            .map_err(|e| AuthError::Unavailable(format!("refresh token database: {e}")))
    }

    /// Forget cached lookups: a revocation takes effect on this issuer at once.
    pub fn invalidate_all(&self) {
        self.records.invalidate_all();
    }
}

impl RefreshTokens {
    /// The record behind `token`, if it may be used now: known, unexpired, and (when the
    /// request names one) issued to the same `client_id` (a GET from containerd's fallback
    /// sends none, and is not held to it). The account it stands for is checked by the caller.
    pub(crate) async fn redeem(
        &self,
        token: &str,
        client_id: Option<&str>,
        checks: &Checks,
        client: IpAddr,
    ) -> Result<Arc<RefreshRecord>, AuthError> {
        let id_hash = id_hash(token);
        let record = match self.cached(&id_hash).await {
            Some(hit) => hit,
            None if !looks_like(token) => None,
            // Unknown tokens are damped per address like wrong passwords: each one costs a
            // query (then sits in the cache as unknown).
            None => {
                let probe = Credentials {
                    username: String::new(),
                    password: String::new(),
                };
                let found = checks
                    .damped(&probe, client, |_| async move {
                        self.lookup(id_hash).await?.ok_or(AuthError::BadCredentials)
                    })
                    .await;
                match found {
                    Ok(r) => Some(r),
                    Err(AuthError::BadCredentials) => None,
                    Err(e) => return Err(e),
                }
            }
        };
        let record = record.ok_or_else(|| AuthError::Refused(UNKNOWN.into()))?;
        if record.expires_at <= store::now() {
            return Err(AuthError::Refused(format!(
                "the refresh token expired at {}; log in again (docker login <registry>)",
                store::rfc3339(record.expires_at)
            )));
        }
        if let Some(c) = client_id.filter(|c| !c.is_empty()) {
            if !record.client_id.is_empty() && c != record.client_id {
                return Err(AuthError::Refused(format!(
                    "this refresh token was issued to client {:?}, not {c:?}; log in with this client",
                    record.client_id
                )));
            }
        }
        Ok(record)
    }
}

/// The platform credential sealed into an upstream identity's `record` (only `token` opens it).
pub(crate) fn sealed_credentials(
    token: &str,
    record: &RefreshRecord,
) -> Result<Credentials, AuthError> {
    record
        .sealed
        .as_deref()
        .and_then(|s| open(&seal_key(token), s))
        .ok_or_else(|| AuthError::Refused(UNKNOWN.into()))
}

/// The refusals of a token whose account is gone or has another password now.
pub(crate) fn gone(user: &str) -> AuthError {
    AuthError::Refused(format!(
        "the account {user} no longer exists; log in as another user"
    ))
}

pub(crate) fn changed(user: &str) -> AuthError {
    AuthError::Refused(format!(
        "the password of {user} changed after this refresh token was issued; log in again"
    ))
}

pub(crate) fn unknown() -> AuthError {
    AuthError::Refused(UNKNOWN.into())
}

/// After a reload that replaced the htpasswd file: revokes the refresh tokens of the users
/// `old` had and `new` removed or gave another hash. Returns how many.
pub(crate) async fn revoke_changed_local(
    old: &Htpasswd,
    new: Option<&Htpasswd>,
    tokens: &RefreshTokens,
) -> u64 {
    let mut revoked = 0;
    for (name, hash) in old.entries() {
        let now = new.and_then(|l| l.hash_of(name));
        if now == Some(hash) {
            continue;
        }
        // Tokens bound to the new hash stay: another issuer of the same database that read
        // the new file first may have issued them.
        let keep = now.map(binding);
        match tokens
            .store
            .revoke_local_refresh_tokens(name, keep.as_deref())
            .await
        {
            Ok(n) => revoked += n,
            Err(e) => tracing::warn!(
                user = ?name,
                "the refresh tokens of a changed htpasswd user were not revoked: {e}"
            ),
        }
    }
    if revoked > 0 {
        tokens.invalidate_all();
        tracing::info!(
            revoked,
            "refresh tokens of htpasswd users removed or given a new password revoked"
        );
    }
    revoked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_credentials_open_only_with_their_token() {
        let rng = SystemRandom::new();
        let creds = Credentials {
            username: "dev".into(),
            password: "api-key".into(),
        };
        let key = seal_key("tirt_one");
        let other = seal_key("tirt_two");
        let sealed = seal(&key, &creds, &rng).expect("seal");
        assert!(!sealed.contains("api-key"));
        let opened = open(&key, &sealed).expect("opens");
        assert_eq!(
            (opened.username.as_str(), opened.password.as_str()),
            ("dev", "api-key")
        );
        assert!(open(&other, &sealed).is_none(), "another token's key");
        assert!(open(&key, "AAAA").is_none(), "too short");
        let mut tampered = BASE64URL_NOPAD.decode(sealed.as_bytes()).expect("b64");
        tampered[NONCE_LEN] ^= 1;
        assert!(open(&key, &BASE64URL_NOPAD.encode(&tampered)).is_none());
    }

    #[test]
    fn lookup_hash_and_key_differ_and_shape_is_checked() {
        assert_ne!(id_hash("tirt_x"), seal_key("tirt_x"));
        let token = format!("{PREFIX}{}", BASE64URL_NOPAD.encode(&[7u8; 32]));
        assert!(looks_like(&token));
        assert!(!looks_like("tirt_short"));
        assert!(!looks_like(&token.replace(PREFIX, "xxxx_")));
    }
}
