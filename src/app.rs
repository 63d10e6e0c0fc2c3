//! Start-up: turns a [`Config`] into the running parts, failing with a message that names the
//! setting when anything is wrong. Everything per-request is precomputed here.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::config::UpstreamProfile;
use crate::config::{setting, Config, KeySources, X5cMode};
use crate::identity::ldap::LdapUsers;
use crate::identity::open_balena::OpenBalenaUsers;
use crate::identity::store::StoreUsers;
use crate::identity::upstream::Upstream;
use crate::identity::{
    damping::Damping, htpasswd::Htpasswd, Authenticator, CacheSettings, Sources,
};
use crate::keys::{jwk::Jwks, KeyError, KeyMaterial, PublishedKey};
use crate::policy::Policy;
use crate::store::Store;
use crate::token::Signer;
use crate::upstream;

pub struct App {
    pub signer: Signer,
    pub keys: KeyMaterial,
    /// Shared with the next reload's state when the identity settings did not change, so its
    /// caches and damping records survive a rule or key change.
    pub auth: Arc<Authenticator>,
    pub policy: Policy,
    pub anonymous: bool,
    pub max_scopes: usize,
    /// Peers whose forwarding headers name the client (`http.trusted_proxies`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub jwks_json: String,
    /// What `/v1/registry/certs` serves: the signing chain, then every published certificate.
    pub bundle_pem: String,
    /// Keys published beside the signing one (`keys.published`): registries and the built-in
    /// registry trust them, nothing signs with them.
    pub published: Vec<PublishedKey>,
    /// The `realm` of our own `WWW-Authenticate: Basic` challenges.
    pub basic_realm: String,
    /// The audit log, when `audit.enabled` (kept across reloads).
    pub audit: Option<crate::audit::Audit>,
    /// What the identity side was built from (see [`identity_fingerprint`]).
    identity_inputs: String,
    /// The upstream HTTP client (and its concurrency cap), kept while `[upstream]` is unchanged.
    client: Option<upstream::Client>,
}

impl App {
    /// The state at start-up.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        let audit = crate::audit::Audit::start(&cfg.audit)?;
        Self::assemble(cfg, None, audit).await
    }

    /// The state for a one-off command (`explain`): everything read and checked as at
    /// start-up, with no audit log opened.
    pub async fn build_offline(cfg: &Config) -> anyhow::Result<Self> {
        Self::assemble(cfg, None, None).await
    }

    /// The state for a reload: everything read and checked again, reusing from `old` what
    /// has not changed (the identity side with its caches, the store's connections, the
    /// upstream client, the audit writer).
    pub async fn rebuild(cfg: &Config, old: &App) -> anyhow::Result<Self> {
        Self::assemble(cfg, Some(old), old.audit.clone()).await
    }

    async fn assemble(
        cfg: &Config,
        old: Option<&App>,
        audit: Option<crate::audit::Audit>,
    ) -> anyhow::Result<Self> {
        for warning in &cfg.ineffective {
            tracing::warn!("{warning}");
        }
        let issuer = cfg.issuer()?;
        let service = cfg.service()?;
        let src = cfg.key_sources()?;
        let keys = load_signing_key(&src)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if let Some(a) = cfg.token.algorithm.as_deref() {
            if a != keys.alg().name() {
                anyhow::bail!(
                    "{} is {a} but the signing key ({}) is {}, which signs {}: set it to {} or leave it out",
                    setting("token.algorithm"),
                    setting("keys.key"),
                    keys.alg().key_type(),
                    keys.alg().name(),
                    keys.alg().name()
                );
            }
        }
        warn_on_expiry(&keys, now, cfg.token.x5c);
        let published = load_published(cfg, &keys, now)?;
        // Read once: the users parsed and the fingerprint that decides whether the running
        // identity side can stay come from the same bytes.
        let htpasswd_text = cfg
            .identity
            .htpasswd
            .as_ref()
            .map(|p| {
                let path = p.relative();
                std::fs::read_to_string(&path)
                    .map(|text| (path.clone(), text))
                    .map_err(|e| {
                        anyhow::anyhow!("identity.htpasswd: reading {}: {e}", path.display())
                    })
            })
            .transpose()?;
        let htpasswd = htpasswd_text
            .as_ref()
            .map(|(path, text)| {
                Htpasswd::parse(text)
                    .map_err(|e| anyhow::anyhow!("identity.htpasswd: {}: {e}", path.display()))
            })
            .transpose()?;
        if htpasswd.is_none()
            && cfg.store.is_none()
            && cfg.upstream.is_none()
            && cfg.oidc.is_empty()
            && cfg.ldap.is_none()
            && !cfg.identity.anonymous
        {
            anyhow::bail!(
                "no identity source: set {}, store.url, ldap.url, upstream.url or an [[oidc]] provider (or allow anonymous callers with identity.anonymous = true)",
                setting("identity.htpasswd")
            );
        }
        let identity_inputs =
            identity_fingerprint(cfg, htpasswd_text.as_ref().map(|(_, t)| t.as_str()));
        let client = match (old, &cfg.upstream) {
            (Some(o), Some(_)) if o.client.is_some() && same_upstream(o, cfg) => o.client.clone(),
            (_, Some(u)) => Some(upstream::Client::new(u)?),
            (_, None) => None,
        };
        let auth = match old {
            Some(o) if o.identity_inputs == identity_inputs => o.auth.clone(),
            _ => Arc::new(build_auth(cfg, htpasswd, old, client.clone()).await?),
        };
        let services = cfg.services()?;
        let policy = Policy::build(cfg, client.clone(), &services)?;
        let signer = Signer::new(
            &keys,
            issuer,
            service,
            Duration::from_secs(cfg.token.ttl_seconds),
            cfg.token.x5c,
        )
        .with_services(services)
        .with_audience(cfg.token.audience.as_deref());
        Ok(Self {
            jwks_json: Jwks {
                keys: std::iter::once(keys.jwk())
                    .chain(published.iter().map(PublishedKey::jwk))
                    .collect(),
            }
            .to_json(),
            bundle_pem: std::iter::once(keys.cert_pem.as_str())
                .chain(published.iter().map(|p| p.cert_pem.as_str()))
                .collect(),
            published,
            basic_realm: issuer.to_string(),
            signer,
            keys,
            auth,
            policy,
            anonymous: cfg.identity.anonymous,
            max_scopes: cfg.http.max_scopes,
            trusted_proxies: cfg.http.limits()?.trusted_proxies,
            audit,
            identity_inputs,
            client,
        })
    }
}

/// The signing key from its sources; errors name the settings that were used, and a kid that
/// disagrees with the certificate (a key rotated without its `kid_file`) says what to change.
fn load_signing_key(src: &KeySources) -> anyhow::Result<KeyMaterial> {
    KeyMaterial::load(&src.cert, &src.key, src.kid.as_deref()).map_err(|e| match e {
        KeyError::Kid { given, computed } => {
            let kid_from = src.kid_from.as_deref().unwrap_or("the kid");
            let fix = if kid_from.starts_with("keys.kid_file") {
                "point keys.kid_file at the new key's .kid file, or remove it (the kid is computed \
                 from the certificate)"
            } else {
                "set it to the new key's kid, or unset it (the kid is computed from the certificate)"
            };
            anyhow::anyhow!(
                "{kid_from} names kid {given}, but {} has kid {computed}; {fix}",
                src.cert_from
            )
        }
        other => anyhow::anyhow!(
            "signing key from {} and {}: {other}",
            src.cert_from,
            src.key_from
        ),
    })
}

/// Whether `[upstream]` is what `old` was built with.
fn same_upstream(old: &App, cfg: &Config) -> bool {
    old.identity_inputs
        .contains(&format!("upstream={:?};", cfg.upstream))
}

/// Everything the identity side is built from, as text: the settings, and the htpasswd file's
/// digest. Equal text means the running [`Authenticator`] (and its caches) can stay.
fn identity_fingerprint(cfg: &Config, htpasswd: Option<&str>) -> String {
    let digest = |bytes: &[u8]| {
        data_encoding::HEXLOWER
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
    };
    let htpasswd = htpasswd.map_or(String::new(), |text| digest(text.as_bytes()));
    // A pepper file rewritten in place is a new pepper, though its name is the same.
    let peppers: Vec<String> = cfg
        .store
        .iter()
        .flat_map(|s| s.pepper_paths())
        .map(|p| std::fs::read(&p).map_or_else(|_| "unreadable".into(), |b| digest(&b)))
        .collect();
    // Debug text of plain config data: equal text is equal settings.
    format!(
        "upstream={:?};identity={:?};store={:?};peppers={peppers:?};damping={:?};oidc={:?};refresh_ttl_days={};htpasswd={htpasswd};ldap={:?}",
        cfg.upstream, cfg.identity, cfg.store, cfg.damping, cfg.oidc, cfg.token.refresh_ttl_days,
        cfg.ldap.as_ref().map(|l| l.fingerprint())
    )
}

/// A new identity side: the store's connections are reused from `old` (its URL is
/// restart-only), everything else is new.
async fn build_auth(
    cfg: &Config,
    htpasswd: Option<Htpasswd>,
    old: Option<&App>,
    client: Option<upstream::Client>,
) -> anyhow::Result<Authenticator> {
    let running = old.and_then(|o| o.auth.store()).map(|s| s.store.clone());
    let store = match &cfg.store {
        Some(sc) => Some(open_store(sc, htpasswd.as_ref(), cfg, running).await?),
        None => None,
    };
    let capacity = cfg.identity.cache_capacity;
    let sources = Sources {
        htpasswd,
        store,
        upstream: cfg
            .upstream
            .as_ref()
            .filter(|u| u.profile == UpstreamProfile::Generic)
            .zip(client.clone())
            .map(|(u, c)| Upstream::new(u, c, capacity)),
        open_balena: cfg
            .upstream
            .as_ref()
            .filter(|u| u.profile == UpstreamProfile::OpenBalena)
            .zip(client)
            .map(|(u, c)| OpenBalenaUsers::new(u, c, capacity)),
        oidc: crate::identity::oidc::Oidc::new(&cfg.oidc, capacity)?,
        ldap: match &cfg.ldap {
            Some(l) => {
                let ttl = Duration::from_secs(cfg.identity.cache_ttl_seconds);
                let users = LdapUsers::new(l, ttl, capacity)?;
                users.probe().await;
                Some(users)
            }
            None => None,
        },
        ldap_position: cfg.ldap.as_ref().map(|l| l.position).unwrap_or_default(),
    };
    Authenticator::new(
        sources,
        CacheSettings {
            local_ttl: Duration::from_secs(cfg.identity.cache_ttl_seconds),
            capacity,
        },
        cfg.damping.enabled.then(|| Damping::new(&cfg.damping)),
    )
}

/// The peppers `[store]` names, read and checked.
fn load_peppers(sc: &crate::config::StoreConfig) -> anyhow::Result<Arc<crate::store::Peppers>> {
    let what = setting("store.pepper_files");
    Ok(Arc::new(crate::store::Peppers::load(
        &sc.pepper_paths(),
        &what,
    )?))
}

/// What the CLI's store takes from `[store]` besides its URL, at once (a serving issuer's
/// waits for its configuration to be in force: [`StoreUsers::apply_settings`]).
pub fn configure_store(store: &Store, sc: &crate::config::StoreConfig) -> anyhow::Result<()> {
    store.set_max_expiry_days(sc.max_expiry_days);
    store.set_peppers(load_peppers(sc)?);
    Ok(())
}

/// Opens and migrates the store, and refuses to start when a name is both an htpasswd user
/// and a store user (which one would decide is not obvious; sources must not overlap).
async fn open_store(
    sc: &crate::config::StoreConfig,
    htpasswd: Option<&Htpasswd>,
    cfg: &Config,
    running: Option<Arc<Store>>,
) -> anyhow::Result<StoreUsers> {
    let fresh = running.is_none();
    let store = match running {
        Some(s) => s,
        None => {
            let s = Arc::new(
                Store::open(&sc.url, &sc.base)
                    .await
                    .with_context(|| setting("store.url"))?,
            );
            // Whether opened at start-up or by a reload that adds `[store]`: its uses are
            // written once a minute, and at shutdown by `serve`.
            crate::store::spawn_last_used_flusher(s.clone());
            s
        }
    };
    let peppers = load_peppers(sc)?;
    let beyond = store.count_beyond_lifetime(sc.max_expiry_days).await?;
    if beyond > 0 {
        tracing::warn!(
            accounts = beyond,
            "non-admin accounts have no expiry or one beyond {}: made before the limit, they are left as they are; give each an expiry (PATCH /admin/v1/users/NAME)",
            setting("store.max_expiry_days")
        );
    }
    if let Some(h) = htpasswd {
        for name in h.names() {
            if store.user(name).await?.is_some() {
                anyhow::bail!(
                    "user {name:?} is both in {} and in the store {}; remove it from one",
                    setting("identity.htpasswd"),
                    store.shown
                );
            }
        }
    }
    tracing::info!(store = %store.shown, cache_ttl_seconds = sc.cache_ttl_seconds, "user store open");
    let users = StoreUsers::new(
        store,
        Duration::from_secs(sc.cache_ttl_seconds),
        Duration::from_secs(cfg.identity.cache_ttl_seconds),
        cfg.identity.cache_capacity,
        Duration::from_secs(cfg.token.refresh_ttl_days * 86_400),
        (sc.max_expiry_days, peppers),
    )?;
    // A store opened now serves nothing yet; a running one gets these when the reload's
    // configuration goes into force (`reload`).
    if fresh {
        users.apply_settings();
    }
    Ok(users)
}

/// The published keys, each checked: a certificate, not the signing key's, not twice.
fn load_published(cfg: &Config, keys: &KeyMaterial, now: i64) -> anyhow::Result<Vec<PublishedKey>> {
    let mut out: Vec<PublishedKey> = Vec::new();
    for (what, pem) in cfg.published_sources()? {
        let key = PublishedKey::load(&pem).with_context(|| what.clone())?;
        if key.kid == keys.kid {
            anyhow::bail!(
                "{what}: this is the signing key's certificate (kid {}); list only the next or previous keys",
                key.kid
            );
        }
        if out.iter().any(|k| k.kid == key.kid) {
            anyhow::bail!("{what}: kid {} is published twice", key.kid);
        }
        if key.not_after < now {
            tracing::warn!(kid = %key.kid, "{what}: this published certificate has expired; registries verifying x5c ignore it, drop it once its tokens are gone");
        }
        tracing::info!(kid = %key.kid, "publishing a key that does not sign ({what})");
        out.push(key);
    }
    Ok(out)
}

/// Certificates warned about this long before they expire.
const EXPIRY_WARNING_DAYS: i64 = 30;

fn warn_on_expiry(keys: &KeyMaterial, now: i64, x5c: X5cMode) {
    let until = humantime::format_rfc3339_seconds(
        UNIX_EPOCH + Duration::from_secs(keys.not_after.max(0) as u64),
    );
    let effect = match x5c {
        X5cMode::Always => {
            "tokens carry x5c (token.x5c = \"always\"), so every registry will refuse them"
        }
        _ => {
            "tokens carry only kid: distribution 2.x finds the key in rootcertbundle (without \
              checking dates), 3.x only in its jwks; a bundle-only 3.x registry refuses them"
        }
    };
    if keys.is_expired(now) {
        tracing::warn!(kid = %keys.kid, "the signing certificate expired at {until}: {effect}; rotate the key");
    } else if keys.not_after - now < EXPIRY_WARNING_DAYS * 86_400 {
        tracing::warn!(
            kid = %keys.kid,
            "the signing certificate expires at {until}, within {EXPIRY_WARNING_DAYS} days; then {effect}; rotate the key"
        );
    }
}

/// The built-in registry for `[registry]`, open and running its background work: it trusts
/// this issuer's keys, issuer and service.
pub fn build_registry(
    cfg: &Config,
    app: &App,
) -> anyhow::Result<Option<Arc<crate::registry::Registry>>> {
    let Some(rc) = &cfg.registry else {
        return Ok(None);
    };
    let auth = crate::registry::auth::TokenAuth {
        trusted: arc_swap::ArcSwap::from_pointee(trusted_keys(app)),
        issuer: app.signer.issuer.clone(),
        service: app.signer.service.clone(),
        realm: realm_url(cfg),
    };
    crate::registry::Registry::open(rc, auth).map(Some)
}

/// The keys the built-in registry accepts tokens from: the signing key and the published ones.
pub fn trusted_keys(app: &App) -> crate::token::TrustedKeys {
    let mut trusted = crate::token::TrustedKeys::default();
    trusted.add(&app.keys.kid, app.keys.public.clone());
    for p in &app.published {
        trusted.add(&p.kid, p.public.clone());
    }
    trusted
}

/// The realm registries send clients to: `token.realm`, else this issuer's own address
/// (a wildcard listen address becomes loopback, which clients can reach).
pub fn realm_url(cfg: &Config) -> String {
    if let Some(r) = cfg.token.realm.as_deref().filter(|r| !r.is_empty()) {
        return r.to_string();
    }
    format!(
        "http://{}/v1/registry",
        crate::config::reachable(&cfg.listen)
    )
}
