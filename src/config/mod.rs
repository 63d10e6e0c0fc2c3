//! Configuration: an optional TOML file, then the environment, then command-line flags.
//!
//! The environment has two vocabularies: the names open-balena/Jellyfish deployments already
//! use (`REGISTRY_TOKEN_AUTH_CERT`, `REGISTRY_HOST`, ... see [`SEED_ENV`]) and `TOKEN_ISSUER_*`
//! for every TOML key (`TOKEN_ISSUER_TOKEN__TTL_SECONDS` is `[token] ttl_seconds`).
//! Unknown keys are errors in both the file and the `TOKEN_ISSUER_` namespace: a typo must not
//! silently drop a rule.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::magic::RelativePathBuf;
use figment::Figment;
use figment::Provider;
use serde::Deserialize;

pub mod limits;
pub mod observe;
pub mod oidc;
pub mod registry;
pub mod store;
pub mod upstream;
pub use limits::{DampingConfig, HttpConfig};
pub use observe::{AuditConfig, MetricsConfig, ReloadConfig};
pub use oidc::{ClaimRule, OidcConfig};
pub use registry::{RegistryConfig, RegistryGcConfig};
pub use store::StoreConfig;
pub use upstream::{CredentialForwarding, UpstreamConfig, UpstreamRepositoryConfig};

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
const NON_CONFIG_ENV: &[&str] = &["dev_password", "log"];

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

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
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// `iss`: must equal the registry's `auth.token.issuer`.
    pub issuer: Option<String>,
    /// `aud`: the registry's `auth.token.service` (open-balena: `REGISTRY_HOST`).
    pub service: Option<String>,
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
        if let Some(f) = file {
            warn_overridden(&fig, f);
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "{}: {:?} is not an address like 127.0.0.1:8080",
                setting("listen"),
                self.listen
            );
        }
        if let Some(a) = &self.token.algorithm {
            if crate::keys::Alg::from_name(a).is_none() {
                bail!(
                    "{}: {a:?} is not supported; use ES256 (EC P-256 key), ES384 (P-384) or RS256 (RSA), or leave it out: the key's type decides",
                    setting("token.algorithm"),
                );
            }
        }
        if let Some(realm) = &self.token.realm {
            check_http_url(realm, "token.realm")?;
        }
        self.http.validate()?;
        self.damping.validate()?;
        self.metrics.validate()?;
        oidc::validate_all(&self.oidc)?;
        self.audit.validate()?;
        if let Some(s) = &self.store {
            s.validate()?;
        }
        if !(60..=86_400).contains(&self.token.ttl_seconds) {
            bail!(
                "{}: {} is out of range; clients treat anything under 60 s as 60, and 86400 is the most allowed",
                setting("token.ttl_seconds"),
                self.token.ttl_seconds
            );
        }
        if !(1..=3650).contains(&self.token.refresh_ttl_days) {
            bail!(
                "{}: {} is out of range; give 1 to 3650 days",
                setting("token.refresh_ttl_days"),
                self.token.refresh_ttl_days
            );
        }
        if self.identity.cache_ttl_seconds > 3600 {
            bail!("{}: at most 3600", setting("identity.cache_ttl_seconds"));
        }
        if let Some(r) = &self.registry {
            if r.listen.parse::<std::net::SocketAddr>().is_err() {
                bail!(
                    "{}: {:?} is not an address like 127.0.0.1:5000",
                    setting("registry.listen"),
                    r.listen
                );
            }
            r.gc.every()?;
            if r.gc.grace_seconds == 0 {
                bail!(
                    "{}: at least 1 (a push's blobs wait this long for their manifest)",
                    setting("registry.gc.grace_seconds")
                );
            }
            if r.upload_ttl_seconds < 60 {
                bail!("{}: at least 60", setting("registry.upload_ttl_seconds"));
            }
            if !(1..=1_000_000).contains(&r.max_uploads) {
                bail!("{}: between 1 and 1000000", setting("registry.max_uploads"));
            }
            if !(1..=r.max_uploads).contains(&r.max_uploads_per_repository) {
                bail!(
                    "{}: between 1 and registry.max_uploads ({})",
                    setting("registry.max_uploads_per_repository"),
                    r.max_uploads
                );
            }
        }
        if let Some(u) = &self.upstream {
            check_http_url(&u.url, "upstream.url")?;
            for (key, pointer) in [
                ("upstream.username_pointer", Some(&u.username_pointer)),
                ("upstream.groups_pointer", u.groups_pointer.as_ref()),
            ] {
                if let Some(p) = pointer {
                    if !p.starts_with('/') {
                        bail!(
                            "{}: {p:?} is not a JSON pointer (like \"/slug\" or \"/data/slug\")",
                            setting(key)
                        );
                    }
                }
            }
            if !(1..=60_000).contains(&u.timeout_ms) {
                bail!("{}: between 1 and 60000", setting("upstream.timeout_ms"));
            }
            for (key, value, max) in [
                ("upstream.max_concurrent", u.max_concurrent, 10_000),
                (
                    "upstream.max_repository_checks",
                    u.max_repository_checks,
                    10_000,
                ),
                (
                    "upstream.max_response_bytes",
                    u.max_response_bytes,
                    64 << 20,
                ),
            ] {
                if !(1..=max).contains(&value) {
                    bail!("{}: between 1 and {max}", setting(key));
                }
            }
            if u.cache_ttl_seconds > 3600 {
                bail!("{}: at most 3600", setting("upstream.cache_ttl_seconds"));
            }
            if let Some(r) = &u.repository {
                check_http_url(&r.url, "upstream.repository.url")?;
                if !r.url.contains("{name}") {
                    bail!(
                        "{}: must contain {{name}}, the repository",
                        setting("upstream.repository.url")
                    );
                }
                if r.actions.is_empty()
                    || r.actions
                        .iter()
                        .any(|a| !["pull", "push", "delete", "*"].contains(&a.as_str()))
                {
                    bail!(
                        "{}: {:?}: use pull, push, delete or *",
                        setting("upstream.repository.actions"),
                        r.actions
                    );
                }
            }
        }
        Ok(())
    }

    pub fn issuer(&self) -> anyhow::Result<&str> {
        required(self.token.issuer.as_deref(), "token.issuer")
    }

    pub fn service(&self) -> anyhow::Result<&str> {
        required(self.token.service.as_deref(), "token.service")
    }

    /// The PEM certificate, the PEM key and the kid, if given.
    pub fn key_sources(&self) -> anyhow::Result<(Vec<u8>, Vec<u8>, Option<String>)> {
        let k = &self.keys;
        let cert = inline_or_file(
            k.cert.as_deref(),
            k.cert_file.as_ref(),
            "keys.cert",
            "keys.cert_file",
        )?
        .with_context(|| {
            format!(
                "no signing certificate: set {} or keys.cert_file",
                setting("keys.cert")
            )
        })?;
        let key = inline_or_file(
            k.key.as_deref(),
            k.key_file.as_ref(),
            "keys.key",
            "keys.key_file",
        )?
        .with_context(|| {
            format!(
                "no signing key: set {} or keys.key_file",
                setting("keys.key")
            )
        })?;
        let kid = inline_or_file(
            k.kid.as_deref(),
            k.kid_file.as_ref(),
            "keys.kid",
            "keys.kid_file",
        )?
        .map(|b| String::from_utf8(b).context("the kid is not text"))
        .transpose()?;
        Ok((cert, key, kid))
    }
}

impl Config {
    /// The certificates of `keys.published` and `keys.published_files`, each with the setting
    /// it came from (for error messages).
    pub fn published_sources(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let k = &self.keys;
        let mut out = Vec::new();
        for (i, b64) in k.published.iter().enumerate() {
            let what = format!("{} entry {}", setting("keys.published"), i + 1);
            out.push((what.clone(), decode_base64(b64).with_context(|| what)?));
        }
        for path in &k.published_files {
            let path: PathBuf = path.relative();
            let what = format!("keys.published_files: {}", path.display());
            let bytes = std::fs::read(&path).with_context(|| format!("{what}: reading it"))?;
            out.push((what, bytes));
        }
        Ok(out)
    }
}

fn check_http_url(url: &str, key: &str) -> anyhow::Result<()> {
    // `{name}` is not valid in a URL until it is filled in; check the rest.
    let probe = url.replace("{name}", "x");
    match reqwest::Url::parse(&probe) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => bail!(
            "{}: {url:?} is not an absolute http(s) URL (like https://host/path)",
            setting(key)
        ),
    }
}

fn required<'a>(v: Option<&'a str>, key: &str) -> anyhow::Result<&'a str> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => bail!("{} is required", setting(key)),
    }
}

/// Says which keys of the file the environment or a flag replaced with another value (the
/// container image's `TOKEN_ISSUER_LISTEN`, a stray variable): a config that says one thing
/// while the process does another must not be silent. Values are not shown (some are secret).
fn warn_overridden(fig: &Figment, file: &Path) {
    let from_file = Figment::from(Toml::file(file));
    let Ok(data) = from_file.data() else { return };
    let mut keys = Vec::new();
    for dict in data.values() {
        leaves("", dict, &mut keys);
    }
    for key in keys {
        let (Ok(mine), Ok(theirs)) = (from_file.find_value(&key), fig.find_value(&key)) else {
            continue;
        };
        if mine == theirs {
            continue;
        }
        let by = match fig.find_metadata(&key) {
            Some(m) if m.name.contains("environment") => env_var_for(&key),
            _ => "a command-line flag".to_string(),
        };
        tracing::warn!(
            "{key} in {}: overridden by {by}, which sets another value",
            file.display()
        );
    }
}

/// The variable that set `key` from the environment: a seed name when that is set, else the
/// `TOKEN_ISSUER_` name.
fn env_var_for(key: &str) -> String {
    match SEED_ENV
        .iter()
        .find(|(env, k)| *k == key && std::env::var_os(env).is_some())
    {
        Some((env, _)) => format!("{env} ({key})"),
        None => format!("TOKEN_ISSUER_{}", key.to_uppercase().replace('.', "__")),
    }
}

fn leaves(prefix: &str, dict: &figment::value::Dict, out: &mut Vec<String>) {
    for (k, v) in dict {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            figment::value::Value::Dict(_, d) => leaves(&key, d, out),
            _ => out.push(key),
        }
    }
}

/// One figment error in the user's terms: the variable they set (not figment's upper-cased
/// TOML path), or the key and the file it is in.
fn describe(e: figment::Error) -> String {
    let key = e.path.join(".").to_lowercase();
    let from_env = e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"));
    let file = e.metadata.as_ref().and_then(|m| match &m.source {
        Some(figment::Source::File(p)) => Some(p.display().to_string()),
        _ => None,
    });
    let what = if from_env {
        match SEED_ENV
            .iter()
            .find(|(env, k)| *k == key && std::env::var_os(env).is_some())
        {
            Some((env, _)) => format!("{env} ({key})"),
            None => format!("TOKEN_ISSUER_{}", key.to_uppercase().replace('.', "__")),
        }
    } else if let Some(file) = file {
        format!("{key} in {file}")
    } else {
        key
    };
    // serde quotes its list of expected fields inside another pair of backticks.
    let kind = e
        .kind
        .to_string()
        .replace("expected `one of ", "expected one of ")
        .replace("``", "`");
    format!("{what}: {kind}")
}

fn seed_env() -> Env {
    let names: Vec<&str> = SEED_ENV.iter().map(|(e, _)| *e).collect();
    Env::raw().only(&names).map(|name| {
        SEED_ENV
            .iter()
            .find(|(e, _)| name == *e)
            .map(|(_, key)| (*key).into())
            .unwrap_or_else(|| name.into())
    })
}

fn inline_or_file(
    inline: Option<&str>,
    file: Option<&RelativePathBuf>,
    inline_key: &str,
    file_key: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!(
            "{} and {file_key} are both set; keep one",
            setting(inline_key)
        ),
        (Some(b64), None) => decode_base64(b64)
            .map(Some)
            .with_context(|| setting(inline_key)),
        (None, Some(path)) => {
            let path: PathBuf = path.relative();
            let bytes = std::fs::read(&path)
                .with_context(|| format!("{file_key}: reading {}", path.display()))?;
            Ok(Some(trim_end(bytes)))
        }
        (None, None) => Ok(None),
    }
}

/// Base64 as open-balena's tooling writes it: line breaks allowed, and the decoded file's
/// trailing newline trimmed.
pub fn decode_base64(value: &str) -> anyhow::Result<Vec<u8>> {
    let compact: String = value.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = data_encoding::BASE64
        .decode(compact.as_bytes())
        .or_else(|_| data_encoding::BASE64_NOPAD.decode(compact.as_bytes()))
        .map_err(|_| anyhow::anyhow!("is not valid base64 (expected `base64 -w0 < file`)"))?;
    Ok(trim_end(bytes))
}

fn trim_end(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
// figment::Jail's closures return figment's (large) error type; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_trimmed_after_decoding() {
        // "kid\n" with a line break inside the base64.
        assert_eq!(decode_base64("a2lk\nCg==\n").expect("b64"), b"kid");
        assert!(decode_base64("not base64!").is_err());
    }

    #[test]
    fn settings_name_their_env_var() {
        assert_eq!(setting("token.service"), "REGISTRY_HOST (token.service)");
        assert_eq!(
            setting("token.ttl_seconds"),
            "token.ttl_seconds (TOKEN_ISSUER_TOKEN__TTL_SECONDS)"
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "listen = \"127.0.0.1:1\"\n[token]\nttl_secnds = 5\n",
            )?;
            let err = Config::load(Some(Path::new("c.toml")), &[]).expect_err("unknown key");
            assert!(err.to_string().contains("ttl_secnds"), "{err}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("TOKEN_ISSUER_LISTN", "x");
            let err = Config::load(None, &[]).expect_err("unknown env key");
            assert!(err.to_string().contains("listn"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn file_env_and_flags_layer() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                r#"
                listen = "127.0.0.1:1"
                [token]
                issuer = "from-file"
                ttl_seconds = 600
                [identity]
                htpasswd = "users.htpasswd"
                [[acl]]
                account = "reader"
                name = "org/*"
                actions = ["pull"]
                "#,
            )?;
            jail.set_env("REGISTRY_TOKEN_AUTH_CERT_ISSUER", "from-env");
            jail.set_env("REGISTRY_HOST", "registry.test");
            jail.set_env("TOKEN_ISSUER_TOKEN__TTL_SECONDS", "900");
            let cfg = Config::load(
                Some(Path::new("c.toml")),
                &[("listen", "127.0.0.1:2".into())],
            )
            .expect("load");
            assert_eq!(cfg.listen, "127.0.0.1:2");
            assert_eq!(cfg.issuer().expect("issuer"), "from-env");
            assert_eq!(cfg.service().expect("service"), "registry.test");
            assert_eq!(cfg.token.ttl_seconds, 900);
            assert_eq!(cfg.acl.len(), 1);
            assert_eq!(cfg.acl[0].resource_type, "repository");
            // Relative paths are relative to the config file.
            let p = cfg.identity.htpasswd.as_ref().expect("htpasswd").relative();
            assert!(
                p.is_absolute() && p.ends_with("users.htpasswd"),
                "{}",
                p.display()
            );
            Ok(())
        });
    }

    #[test]
    fn acl_cannot_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TOKEN_ISSUER_ACL",
                r#"[{account="alice",name="**",actions=["*"]}]"#,
            );
            let err = Config::load(None, &[])
                .expect_err("acl from env")
                .to_string();
            assert!(err.contains("TOKEN_ISSUER_ACL"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("REGISTRY_TOKEN_AUTH_JWT_ALGO", "HS256");
            let err = Config::load(None, &[]).expect_err("algo").to_string();
            assert!(
                err.contains("REGISTRY_TOKEN_AUTH_JWT_ALGO") && err.contains("HS256"),
                "{err}"
            );
            Ok(())
        });
        figment::Jail::expect_with(|_| {
            let cfg = Config::load(None, &[]).expect("defaults");
            let err = cfg.service().expect_err("no service").to_string();
            assert!(err.contains("REGISTRY_HOST"), "{err}");
            let err = cfg.key_sources().expect_err("no cert").to_string();
            assert!(err.contains("REGISTRY_TOKEN_AUTH_CERT"), "{err}");
            Ok(())
        });
    }
}
