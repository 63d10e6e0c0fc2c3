//! `[[oidc]]`: identity providers whose ID tokens are accepted as the password (GitHub Actions,
//! GitLab CI, Kubernetes service accounts), and the rules their claims must meet.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Deserialize;

use super::setting;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Must equal the tokens' `iss`.
    pub issuer: String,
    /// A token's `aud` must contain one of these.
    pub audiences: Vec<String>,
    /// Default: `jwks_uri` of `{issuer}/.well-known/openid-configuration`.
    pub jwks_url: Option<String>,
    /// The account name rules see, built from claims: `{repository}@{ref}`.
    pub username: String,
    /// Group names built from claims.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Every listed claim must match: a glob for strings, equality for booleans and numbers.
    #[serde(default)]
    pub require: BTreeMap<String, ClaimRule>,
    /// PEM certificates to trust for the provider's HTTPS (a cluster's own CA), besides the
    /// public roots.
    pub ca_file: Option<figment::value::magic::RelativePathBuf>,
    /// An unknown `kid` fetches the JWKS again at most this often (the provider rotated).
    #[serde(default = "default_refetch")]
    pub jwks_refetch_seconds: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ClaimRule {
    Glob(String),
    Bool(bool),
    Integer(i64),
}

fn default_refetch() -> u64 {
    60
}

/// Providers' endpoints over HTTPS; plain HTTP only to this machine (a test's provider).
pub fn check_provider_url(url: &str, key: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("{}: {url:?} is not a URL: {e}", setting(key)))?;
    let host = parsed.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => bail!(
            "{}: {url:?}: the provider must be reached over https (plain http only on this machine)",
            setting(key)
        ),
    }
}

impl OidcConfig {
    pub fn validate(&self, i: usize) -> anyhow::Result<()> {
        let key = |k: &str| format!("oidc[{i}].{k}");
        check_provider_url(&self.issuer, &key("issuer"))?;
        if let Some(u) = &self.jwks_url {
            check_provider_url(u, &key("jwks_url"))?;
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            bail!(
                "{}: give the audience the tokens are minted for (e.g. your registry's host name)",
                setting(&key("audiences"))
            );
        }
        if self.jwks_refetch_seconds == 0 {
            bail!("{}: at least 1", setting(&key("jwks_refetch_seconds")));
        }
        Ok(())
    }
}

/// No two providers with one issuer: which one's rules apply would not be obvious.
pub fn validate_all(providers: &[OidcConfig]) -> anyhow::Result<()> {
    for (i, p) in providers.iter().enumerate() {
        p.validate(i)?;
        if providers[..i].iter().any(|q| q.issuer == p.issuer) {
            bail!(
                "{}: {:?} is configured twice; one [[oidc]] per issuer",
                setting(&format!("oidc[{i}].issuer")),
                p.issuer
            );
        }
    }
    Ok(())
}
