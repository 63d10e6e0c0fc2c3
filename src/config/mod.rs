//! Configuration: an optional TOML file, then the environment, then command-line flags.
//!
//! The environment has two vocabularies: the names open-balena/Jellyfish deployments already
//! use (`REGISTRY_TOKEN_AUTH_CERT`, `REGISTRY_HOST`, ... see [`SEED_ENV`]) and `TOKEN_ISSUER_*`
//! for every TOML key (`TOKEN_ISSUER_TOKEN__TTL_SECONDS` is `[token] ttl_seconds`).
//! Unknown keys are errors in both the file and the `TOKEN_ISSUER_` namespace: a typo must not
//! silently drop a rule.

use std::path::Path;

use anyhow::bail;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::Figment;
use serde::Deserialize;

use layers::{describe, seed_env, warn_overridden, Given};

mod ineffective;
mod key_sources;
mod layers;
pub mod ldap;
pub mod limits;
pub mod observe;
pub mod oidc;
pub mod registry;
pub mod store;
pub mod upstream;
mod validate;
pub use key_sources::KeySources;
pub use ldap::{LdapConfig, LdapPosition, BIND_PASSWORD_ENV};
pub use limits::{DampingConfig, HttpConfig};
pub use observe::{AuditConfig, MetricsConfig, ReloadConfig};
pub use oidc::{ClaimRule, OidcConfig};
pub use registry::{
    RegistryConfig, RegistryGcConfig, DEFAULT_MAX_UPLOADS, DEFAULT_MAX_UPLOADS_PER_REPOSITORY,
};
pub use store::StoreConfig;
pub use upstream::{
    CredentialForwarding, UpstreamConfig, UpstreamProfile, UpstreamRepositoryConfig,
};

/// The seed's environment names and the TOML keys they set.
pub const SEED_ENV: &[(&str, &str)] = &[
    ("REGISTRY_TOKEN_AUTH_CERT", "keys.cert"),
    ("REGISTRY_TOKEN_AUTH_CERT_KEY", "keys.key"),
    ("REGISTRY_TOKEN_AUTH_CERT_KID", "keys.kid"),
    ("REGISTRY_TOKEN_AUTH_CERT_ISSUER", "token.issuer"),
    ("REGISTRY_TOKEN_AUTH_JWT_ALGO", "token.algorithm"),
    ("REGISTRY_HOST", "token.service"),
    ("REGISTRY_TOKEN_AUTH_REALM", "token.realm"),
];

/// `TOKEN_ISSUER_*` variables that are read elsewhere, not configuration keys.
const NON_CONFIG_ENV: &[&str] = &[
    "dev_password",
    "log",
    "ldap.bind_password",
    "upstream.service_api_key",
    // A debug build's panicking route, for the tests (`server::panics`).
    "test_panic",
];

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// `token.ttl_seconds` with `upstream.profile = "open-balena"` when not set: 4 h.
pub const OPEN_BALENA_TTL: u64 = 14_400;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub token: TokenConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub damping: DampingConfig,
    #[serde(default)]
    pub acl: Vec<AclRule>,
    pub upstream: Option<UpstreamConfig>,
    /// OIDC providers whose ID tokens are passwords.
    #[serde(default)]
    pub oidc: Vec<OidcConfig>,
    pub registry: Option<RegistryConfig>,
    pub store: Option<StoreConfig>,
    pub ldap: Option<LdapConfig>,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Settings given to no effect, found while loading (where it is known what was given)
    /// and logged when the service is assembled, at start-up and on reload: a CLI command
    /// reading the same file does not repeat them.
    #[serde(skip)]
    pub ineffective: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `iss`: must equal the registry's `auth.token.issuer`.
    pub issuer: Option<String>,
    /// `aud`: the registry's `auth.token.service` (open-balena: `REGISTRY_HOST`).
    pub service: Option<String>,
    /// Every token's `aud`, whatever service the client named (any is then accepted), as
    /// open-balena-api does with its registry host.
    pub audience: Option<String>,
    /// Several registries served by one issuer: each is a service a client may ask for, and
    /// becomes the token's `aud`; the first is the default. Instead of `service`.
    #[serde(default)]
    pub services: Vec<String>,
    /// The realm URL registries advertise; used by the built-in registry's challenges.
    pub realm: Option<String>,
    /// If given, must be what the key's type decides (ES256, ES384, RS256).
    pub algorithm: Option<String>,
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
    /// Whether tokens carry the certificate chain in an `x5c` header.
    #[serde(default)]
    pub x5c: X5cMode,
    /// How long a refresh token (OAuth2 offline access) lives, in days.
    #[serde(default = "default_refresh_ttl_days")]
    pub refresh_ttl_days: u64,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            service: None,
            audience: None,
            services: Vec::new(),
            realm: None,
            algorithm: None,
            ttl_seconds: default_ttl(),
            x5c: X5cMode::default(),
            refresh_ttl_days: default_refresh_ttl_days(),
        }
    }
}

/// `[token] x5c`. Every distribution version tries a token's `x5c` chain first and verifies it
/// against `rootcertbundle`, validity dates included, without falling back to `kid` when it
/// fails; a token without `x5c` is looked up by `kid` (2.x: in the bundle; 3.x: in the JWKS only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum X5cMode {
    /// `x5c` while the chain is valid for the token's whole life, else `kid` alone: tokens work
    /// with a bundle-only registry of any version, and an expired certificate still works
    /// where the `kid` path does (2.x bundle, 3.x JWKS).
    #[default]
    Auto,
    /// Always `x5c` (tokens are refused everywhere once the certificate expires).
    Always,
    /// Never `x5c`: for a 3.x registry configured with `jwks` and no `rootcertbundle`, which
    /// cannot verify a chain.
    Never,
}

/// Each of cert, key and kid comes either inline as base64 (the seed's env vars) or as a file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub kid: Option<String>,
    pub cert_file: Option<RelativePathBuf>,
    pub key_file: Option<RelativePathBuf>,
    pub kid_file: Option<RelativePathBuf>,
    /// Certificates of keys that are published (JWKS, bundle) but do not sign: the next key
    /// and the previous one during a rotation. Base64 of PEM, like `cert`...
    #[serde(default)]
    pub published: Vec<String>,
    /// ... or PEM files.
    #[serde(default)]
    pub published_files: Vec<RelativePathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub htpasswd: Option<RelativePathBuf>,
    #[serde(default)]
    pub anonymous: bool,
    /// How long a successful login is remembered, so repeated pulls skip bcrypt.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_seconds: u64,
    #[serde(default = "default_cache_capacity")]
    pub cache_capacity: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            htpasswd: None,
            anonymous: false,
            cache_ttl_seconds: default_cache_ttl(),
            cache_capacity: default_cache_capacity(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Glob over user names; `*` is any authenticated user, `""` the anonymous caller.
    pub account: Option<String>,
    /// Glob over the caller's groups (from the upstream API's `groups_pointer`).
    pub group: Option<String>,
    /// Glob over the requested service (one of `token.services`); none: any.
    pub service: Option<String>,
    /// Client networks (CIDR or address) the rule applies to; none: any client.
    #[serde(default)]
    pub ip: Vec<String>,
    #[serde(rename = "type", default = "default_resource_type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}
fn default_ttl() -> u64 {
    3600
}
fn default_refresh_ttl_days() -> u64 {
    90
}
pub(super) fn default_cache_ttl() -> u64 {
    60
}
fn default_cache_capacity() -> u64 {
    10_000
}
pub(super) fn default_true() -> bool {
    true
}
fn default_resource_type() -> String {
    "repository".into()
}

/// An address clients on this machine can reach: a wildcard listen address becomes loopback.
pub fn reachable(addr: &str) -> String {
    addr.replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]")
}

/// The name a user would look for: the TOML key, and the env var that sets it.
pub fn setting(key: &str) -> String {
    match SEED_ENV.iter().find(|(_, k)| *k == key) {
        Some((env, _)) => format!("{env} ({key})"),
        None => format!(
            "{key} (TOKEN_ISSUER_{})",
            key.to_uppercase().replace('.', "__")
        ),
    }
}

impl Config {
    /// File, then env, then `overrides` (command-line flags, as `key = value` pairs).
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> anyhow::Result<Self> {
        // Rules decide who may push: they come from the reviewed file only, never from a stray
        // variable that would silently replace them all.
        if let Some((name, _)) =
            std::env::vars().find(|(k, _)| k.to_uppercase().starts_with("TOKEN_ISSUER_ACL"))
        {
            bail!("{name}: [[acl]] rules can only be set in the config file");
        }
        let mut fig = Figment::new();
        if let Some(f) = file {
            if !f.is_file() {
                bail!("config file {} does not exist", f.display());
            }
            fig = fig.merge(Toml::file(f));
        }
        fig = fig.merge(seed_env()).merge(
            Env::prefixed("TOKEN_ISSUER_")
                .split("__")
                .ignore(NON_CONFIG_ENV),
        );
        for (key, value) in overrides {
            fig = fig.merge(Serialized::default(key, value));
        }
        // The file alone, parsed and copied once here for the two checks on it below.
        let file_only = file.map(|f| (f, Given::of(&Figment::from(Toml::file(f)))));
        if let Some((f, in_file)) = &file_only {
            // A config file is read, copied and shown: the directory's password stays out of
            // it. Checked before parsing, whose errors would show the value.
            if in_file.has("ldap.bind_password") {
                bail!(
                    "ldap.bind_password in {}: set {BIND_PASSWORD_ENV} or ldap.bind_password_file \
                     instead of the password in the config file",
                    f.display()
                );
            }
        }
        let mut cfg: Config = fig.extract().map_err(|e| {
            let msgs: Vec<String> = e.into_iter().map(describe).collect();
            anyhow::anyhow!("configuration: {}", msgs.join("; "))
        })?;
        if let Some(store) = &mut cfg.store {
            // A relative SQLite path is relative to the config file, as every other path.
            store.base = file
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_default();
        }
        let open_balena = cfg
            .upstream
            .as_ref()
            .is_some_and(|u| u.profile == UpstreamProfile::OpenBalena);
        // Every question below about what was given reads this one copy of the merged
        // layers: each `Figment::find_value` copies the whole tree first, so with 10,000
        // `[[acl]]` rules the forty-odd questions were most of the start-up.
        let given = Given::of(&fig);
        if open_balena && !given.has("token.ttl_seconds") {
            // open-balena-api's default (REGISTRY_TOKEN_EXPIRY_SECONDS), "so that huge
            // pulls/pushes go through".
            cfg.token.ttl_seconds = OPEN_BALENA_TTL;
        }
        if let Some((f, in_file)) = &file_only {
            warn_overridden(&fig, &given, in_file, f);
        }
        cfg.validate()?;
        cfg.ineffective = ineffective::warnings(&cfg, |key| given.has(key));
        Ok(cfg)
    }

    pub fn issuer(&self) -> anyhow::Result<&str> {
        required(self.token.issuer.as_deref(), "token.issuer")
    }

    /// The default service: `token.audience`, `token.service`, or the first of
    /// `token.services`.
    pub fn service(&self) -> anyhow::Result<&str> {
        if let Some(a) = self.token.audience.as_deref() {
            return required(Some(a), "token.audience");
        }
        match self.token.services.first() {
            Some(first) => Ok(first),
            None => required(self.token.service.as_deref(), "token.service"),
        }
    }

    /// Every service tokens are issued for, the default first. `token.service` and
    /// `token.services` together are an error: which one is the default would be a guess.
    pub fn services(&self) -> anyhow::Result<Vec<String>> {
        let many = &self.token.services;
        if self.token.audience.is_some() && !many.is_empty() {
            bail!(
                "{} and {} are both set: with one audience for every token, name the registry in {} alone",
                setting("token.audience"),
                setting("token.services"),
                setting("token.audience")
            );
        }
        if many.is_empty() || self.token.audience.is_some() {
            return Ok(vec![self.service()?.to_string()]);
        }
        if self.token.service.is_some() {
            bail!(
                "{} and {} are both set: list every service in {} (the first is the default)",
                setting("token.service"),
                setting("token.services"),
                setting("token.services")
            );
        }
        for (i, s) in many.iter().enumerate() {
            if s.trim().is_empty() || s.trim() != s {
                bail!(
                    "{}[{i}]: {s:?} is not a service name",
                    setting("token.services")
                );
            }
            if many[..i].contains(s) {
                bail!("{}: {s:?} appears twice", setting("token.services"));
            }
        }
        Ok(many.clone())
    }
}

fn required<'a>(v: Option<&'a str>, key: &str) -> anyhow::Result<&'a str> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => bail!("{} is required", setting(key)),
    }
}

#[cfg(test)]
// figment::Jail's closures return figment's (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests;
