//! `[upstream]` and `[upstream.repository]`: the identity API that knows the callers, and its
//! per-repository endpoint.

use anyhow::bail;
use serde::Deserialize;

use super::{default_cache_ttl, default_true, setting};

/// The service API key of the open-balena profile (root reads of `image`), not a setting: the
/// config layers would print it in an error.
pub const SERVICE_API_KEY_ENV: &str = "TOKEN_ISSUER_UPSTREAM__SERVICE_API_KEY";
/// open-balena-api's own name for the builder's shared token.
pub const BUILDER_TOKEN_ENV: &str = "TOKEN_AUTH_BUILDER_TOKEN";

/// Which API `[upstream]` speaks.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamProfile {
    /// Any API with an identity endpoint and, optionally, a per-repository one.
    #[default]
    Generic,
    /// open-balena-api itself: `url` is its base, callers are users, applications, devices
    /// and the builder, and repositories are decided as its token endpoint does.
    OpenBalena,
}

/// An HTTP identity API that answers "who is this credential?" (Jellyfish, a balena-like API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default)]
    pub profile: UpstreamProfile,
    /// The identity endpoint; with the open-balena profile, the API's base URL.
    pub url: String,
    #[serde(default)]
    pub credentials: CredentialForwarding,
    /// JSON pointer to the identity's name in the 2xx body (generic profile).
    pub username_pointer: Option<String>,
    /// The name must equal the Basic username (Jellyfish's rule).
    #[serde(default = "default_true")]
    pub match_username: bool,
    /// JSON pointer to an array of group names.
    pub groups_pointer: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_seconds: u64,
    /// Calls to the API in flight at once, over all requests.
    #[serde(default = "default_upstream_concurrent")]
    pub max_concurrent: usize,
    /// Repositories one token request may have the API check; more is a 400.
    #[serde(default = "default_repository_checks")]
    pub max_repository_checks: usize,
    /// Larger answers are a 503 ("answered too much"), read no further.
    #[serde(default = "default_response_bytes")]
    pub max_response_bytes: usize,
    pub repository: Option<UpstreamRepositoryConfig>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CredentialForwarding {
    /// `Authorization: Bearer <password>`: the password is a session token or API key.
    #[default]
    Bearer,
    /// The caller's Basic pair, forwarded as is.
    Basic,
}

/// Per-repository decisions: `GET url` (with `{name}` replaced) as the caller; 2xx grants `actions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamRepositoryConfig {
    pub url: String,
    #[serde(default = "default_upstream_actions")]
    pub actions: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    2000
}

fn default_upstream_concurrent() -> usize {
    64
}

fn default_repository_checks() -> usize {
    16
}

fn default_response_bytes() -> usize {
    1024 * 1024
}

fn default_upstream_actions() -> Vec<String> {
    vec!["pull".into(), "push".into()]
}

impl UpstreamConfig {
    /// What each profile needs and refuses.
    pub(super) fn check_profile(&self) -> anyhow::Result<()> {
        match self.profile {
            UpstreamProfile::Generic => {
                if self.username_pointer.is_none() {
                    bail!(
                        "{} is required: the JSON pointer to the caller's name in the identity endpoint's answer",
                        setting("upstream.username_pointer")
                    );
                }
            }
            UpstreamProfile::OpenBalena => {
                for (key, set) in [
                    ("upstream.username_pointer", self.username_pointer.is_some()),
                    ("upstream.groups_pointer", self.groups_pointer.is_some()),
                    ("upstream.repository", self.repository.is_some()),
                    (
                        "upstream.credentials",
                        self.credentials != CredentialForwarding::Bearer,
                    ),
                ] {
                    if set {
                        bail!(
                            "{} has no place with upstream.profile = \"open-balena\": the profile reads open-balena-api's answers and decides repositories as its token endpoint does",
                            setting(key)
                        );
                    }
                }
                if self.service_api_key().is_none() {
                    bail!(
                        "upstream.profile = \"open-balena\" needs {SERVICE_API_KEY_ENV}: an API key with read rights on every image (open-balena-api looks images up as root)"
                    );
                }
            }
        }
        Ok(())
    }

    /// The open-balena profile's service API key, from [`SERVICE_API_KEY_ENV`].
    pub fn service_api_key(&self) -> Option<String> {
        std::env::var(SERVICE_API_KEY_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
    }

    /// The open-balena builder's token, from [`BUILDER_TOKEN_ENV`], when set.
    pub fn builder_token(&self) -> Option<String> {
        std::env::var(BUILDER_TOKEN_ENV)
            .ok()
            .filter(|k| !k.trim().is_empty())
    }
}
