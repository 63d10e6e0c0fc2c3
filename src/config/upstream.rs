//! `[upstream]` and `[upstream.repository]`: the identity API that knows the callers, and its
//! per-repository endpoint.

use serde::Deserialize;

use super::{default_cache_ttl, default_true};

/// An HTTP identity API that answers "who is this credential?" (Jellyfish, a balena-like API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub url: String,
    #[serde(default)]
    pub credentials: CredentialForwarding,
    /// JSON pointer to the identity's name in the 2xx body.
    pub username_pointer: String,
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
