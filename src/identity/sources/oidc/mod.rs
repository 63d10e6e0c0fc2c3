//! OIDC ID tokens as passwords (GitHub Actions, GitLab CI, Kubernetes service accounts): a
//! Basic password that is a JWT naming a configured issuer is verified against that issuer's
//! keys and rules, and becomes an identity named by the provider's `username` template.
//!
//! Checked in this order, so that every refusal after the signature speaks of a genuine token:
//! the header (`alg` RS256, ES256 or ES384; never `none` or HMAC), the `kid` in the provider's
//! key set, the signature (the key decides the algorithm), `aud`, `exp` (no leeway: the access
//! token may not outlive it), `nbf` (60 s leeway), then `require` and the templates.
//! A verified token is remembered by its salted hash until it expires.

mod claims;
mod jwks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use data_encoding::BASE64URL_NOPAD;
use moka::future::Cache;
use serde_json::{Map, Value};

use futures::future::BoxFuture;

use super::{Answer, IdentitySource};
use crate::config::OidcConfig;
use crate::identity::checks::{expiring, Attempt};
use crate::identity::types::{AuthError, CacheKey, Identity, Source};
use claims::{Rule, Template};
use jwks::{KeyError, KeySet};

/// Clock skew allowed on `nbf`.
const LEEWAY: u64 = 60;
/// ID tokens are a few KiB; a password longer than this is not one.
const MAX_TOKEN: usize = 16 * 1024;
/// Verified tokens are remembered at most this long (and never past their `exp`).
const CACHE_TTL: Duration = Duration::from_secs(3600);

struct Provider {
    issuer: String,
    audiences: Vec<String>,
    username: Template,
    groups: Vec<Template>,
    require: Vec<(String, Rule)>,
    keys: KeySet,
}

pub struct Oidc {
    providers: Vec<Provider>,
    verified: Cache<CacheKey, Arc<Identity>>,
}

impl Oidc {
    pub fn new(cfgs: &[OidcConfig], capacity: u64) -> anyhow::Result<Option<Arc<Self>>> {
        if cfgs.is_empty() {
            return Ok(None);
        }
        let mut providers = Vec::new();
        for (i, c) in cfgs.iter().enumerate() {
            let key = |k: &str| crate::config::setting(&format!("oidc[{i}].{k}"));
            let username = Template::compile(&c.username)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key("username")))?;
            let groups: Vec<Template> = c
                .groups
                .iter()
                .map(|g| Template::compile(g))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", key("groups")))?;
            let require: Vec<(String, Rule)> = c
                .require
                .iter()
                .map(|(claim, r)| Ok((claim.clone(), Rule::compile(r)?)))
                .collect::<Result<_, String>>()
                .map_err(|e| anyhow::anyhow!("{}: {e}", key("require")))?;
            // A bare `{sub}` makes whatever the provider signs a name in the same namespace as
            // store users, store groups and ACL rules: a CI job could be handed a store
            // group's grants. Unless `require` pins the claim it is built from, say so.
            for (what, t) in
                std::iter::once(("username", &username)).chain(groups.iter().map(|g| ("groups", g)))
            {
                let pinned = t.claims().all(|c| require.iter().any(|(r, _)| r == c));
                if !t.has_literal() && !pinned {
                    tracing::warn!(
                        "{}: a template of claims alone shares its names with store users and \
                         groups and with [[acl]] accounts; give it a prefix (\"ci:{{sub}}\") \
                         or pin its claims in oidc[{i}].require",
                        key(what)
                    );
                }
            }
            let ca = c
                .ca_file
                .as_ref()
                .map(|f| {
                    std::fs::read(f.relative()).map_err(|e| {
                        anyhow::anyhow!("{}: {}: {e}", key("ca_file"), f.relative().display())
                    })
                })
                .transpose()?;
            providers.push(Provider {
                issuer: c.issuer.clone(),
                audiences: c.audiences.clone(),
                username,
                groups,
                require,
                keys: KeySet::new(
                    &c.issuer,
                    c.jwks_url.as_deref(),
                    ca.as_deref(),
                    Duration::from_secs(c.jwks_refetch_seconds),
                )
                .map_err(|e| anyhow::anyhow!("{}: {e}", key("ca_file")))?,
            });
        }
        let oidc = Arc::new(Self {
            providers,
            verified: expiring(capacity, CACHE_TTL),
        });
        // Keys fetched now, not by the first token; a provider away at start-up is retried
        // when a token names it.
        let prefetch = oidc.clone();
        tokio::spawn(async move {
            for p in &prefetch.providers {
                p.keys.prefetch().await;
            }
        });
        Ok(Some(oidc))
    }

    /// The provider a token names by its (not yet verified) `iss`; the verifier then checks
    /// the same bytes under that provider's keys.
    fn provider(&self, password: &str) -> Option<&Provider> {
        if password.len() > MAX_TOKEN || !password.starts_with("eyJ") {
            return None;
        }
        let mut parts = password.split('.');
        let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next())
        else {
            return None;
        };
        let claims: Map<String, Value> =
            serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).ok()?).ok()?;
        let iss = claims.get("iss")?.as_str()?;
        self.providers.iter().find(|p| p.issuer == iss)
    }

    /// The identity `token` proves (`key` is its salted hash), or why not.
    async fn identify(
        &self,
        token: &str,
        key: CacheKey,
    ) -> Option<Result<Arc<Identity>, AuthError>> {
        if !token.starts_with("eyJ") {
            return None;
        }
        let now = unix_now();
        if let Some(id) = self.verified.get(&key).await {
            if id.expires_at.is_some_and(|exp| exp > now) {
                crate::metrics::get().cache_hits.inc();
                return Some(Ok(id));
            }
            self.verified.invalidate(&key).await;
        }
        let provider = self.provider(token)?;
        crate::metrics::get().cache_misses.inc();
        let result = provider.verify(token, now).await;
        match &result {
            Ok(id) => self.verified.insert(key, id.clone()).await,
            Err(AuthError::Refused(why)) => tracing::info!(issuer = %provider.issuer, "{why}"),
            Err(e) => tracing::warn!(issuer = %provider.issuer, "OIDC token not verified: {e}"),
        }
        Some(result)
    }
}

/// A token of a configured provider is decided by that provider alone, with no damping: a
/// signature cannot be guessed, and checking one costs less than the damping would.
impl IdentitySource for Oidc {
    fn name(&self) -> &'static str {
        "oidc"
    }

    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            match self.identify(&at.creds.password, at.key).await {
                None => Answer::NotMine,
                Some(result) => result.into(),
            }
        })
    }

    fn builds_names(&self) -> bool {
        true
    }

    /// A template like `{actor}` must not hand a CI job a person's rules.
    fn taken(&self, name: &str) -> AuthError {
        AuthError::Refused(format!(
            "the OIDC token was refused: the name built from its claims, {name:?}, is another user's; change the provider's username template"
        ))
    }

    fn takes_group_grants(&self) -> bool {
        true
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn refused(why: impl std::fmt::Display) -> AuthError {
    AuthError::Refused(format!("the OIDC token was refused: {why}"))
}

impl Provider {
    /// Through the one verifier (`jwt`): the header, this provider's key by `kid` (fetched
    /// again when unknown), the signature, then the verified claims' `aud` and dates.
    async fn verify(&self, token: &str, now: u64) -> Result<Arc<Identity>, AuthError> {
        use crate::jwt::{self, JwtError};
        let why = |e: JwtError| match e {
            JwtError::Malformed => refused("not a JWT"),
            JwtError::Header => refused("its header is not JSON"),
            JwtError::Algorithm(alg) => refused(format_args!(
                "alg {alg:?} is not accepted (RS256, ES256 or ES384)"
            )),
            JwtError::KeyAlgorithm => refused("alg does not match the key's"),
            JwtError::SignatureEncoding => refused("the signature is not base64url"),
            JwtError::Signature => refused("the signature does not verify"),
            JwtError::Payload => refused("its claims are not a JSON object"),
            JwtError::Audience => refused("its audience (aud) is not one this registry accepts"),
            JwtError::NoExp => refused("it has no exp"),
            JwtError::Expired => refused("it has expired"),
            JwtError::NotYetValid => refused("it is not valid yet (nbf)"),
            JwtError::NotNumericDate(name) => refused(format_args!(
                "its {name} is not a NumericDate (a number of seconds)"
            )),
        };
        let parsed = jwt::parse(token).map_err(why)?;
        let key = match self.keys.key(&parsed.kid).await {
            Ok(k) => k,
            Err(KeyError::Unknown) => {
                return Err(refused("its kid is not in the provider's key set"))
            }
            Err(KeyError::Unavailable(why)) => {
                return Err(AuthError::Unavailable(format!(
                    "the keys of OIDC issuer {} are not available: {why}",
                    self.issuer
                )))
            }
        };
        let claims = parsed.verify(&key).map_err(why)?;
        let audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
        jwt::check_audience(&claims, &audiences).map_err(why)?;
        // No grace past exp (-1: the token ends at the second it names), since the access
        // token may not outlive it; nbf with the clock skew allowed.
        let exp = jwt::check_times(&claims, now, -1, LEEWAY).map_err(why)?;
        claims::check(&self.require, &claims)
            .map_err(|claim| refused(format_args!("claim {claim:?} does not meet its rule")))?;
        let name = self.username.render(&claims).map_err(refused)?;
        let groups = self
            .groups
            .iter()
            .map(|g| g.render(&claims))
            .collect::<Result<Vec<_>, _>>()
            .map_err(refused)?;
        Ok(Arc::new(Identity {
            name,
            groups,
            source: Source::Oidc,
            admin: false,
            rights: Vec::new(),
            expires_at: Some(exp),
            subject: None,
        }))
    }
}
