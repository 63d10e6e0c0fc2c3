//! Start-up: turns a [`Config`] into the running parts, failing with a message that names the
//! setting when anything is wrong. Everything per-request is precomputed here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::config::{setting, Config};
use crate::identity::{htpasswd::Htpasswd, Authenticator};
use crate::keys::{jwk::Jwks, KeyMaterial};
use crate::policy::Acl;
use crate::token::Signer;

pub struct App {
    pub signer: Signer,
    pub keys: KeyMaterial,
    pub auth: Authenticator,
    pub acl: Acl,
    pub anonymous: bool,
    pub jwks_json: String,
    /// The `realm` of our own `WWW-Authenticate: Basic` challenges.
    pub basic_realm: String,
}

impl App {
    pub fn build(cfg: &Config) -> anyhow::Result<Self> {
        let issuer = cfg.issuer()?;
        let service = cfg.service()?;
        let (cert, key, kid) = cfg.key_sources()?;
        let keys = KeyMaterial::load(&cert, &key, kid.as_deref()).with_context(|| {
            format!(
                "signing key from {}, {} and {}",
                setting("keys.cert"),
                setting("keys.key"),
                setting("keys.kid")
            )
        })?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if keys.is_expired(now) {
            tracing::warn!(
                kid = %keys.kid,
                "the signing certificate has expired: distribution 2.x still accepts its tokens \
                 (it does not check expiry on the kid path), 3.x trusts the JWKS; rotate it soon"
            );
        }
        let htpasswd = cfg
            .identity
            .htpasswd
            .as_ref()
            .map(|p| Htpasswd::load(&p.relative()))
            .transpose()?;
        if htpasswd.is_none() && !cfg.identity.anonymous {
            anyhow::bail!(
                "no identity source: set {} (or allow anonymous callers with identity.anonymous = true)",
                setting("identity.htpasswd")
            );
        }
        let auth = Authenticator::new(
            htpasswd,
            Duration::from_secs(cfg.identity.cache_ttl_seconds),
            cfg.identity.cache_capacity,
        )?;
        let acl = Acl::compile(&cfg.acl)?;
        let signer = Signer::new(
            &keys,
            issuer,
            service,
            Duration::from_secs(cfg.token.ttl_seconds),
        );
        Ok(Self {
            jwks_json: Jwks {
                keys: vec![keys.jwk()],
            }
            .to_json(),
            basic_realm: issuer.to_string(),
            signer,
            keys,
            auth,
            acl,
            anonymous: cfg.identity.anonymous,
        })
    }
}
