//! Per-repository decisions from the upstream API (Jellyfish / open-balena style): the
//! repository is looked up as the caller; 2xx grants the configured actions, 401/403/404 grant
//! nothing, anything else makes the whole request fail closed (503).

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::config::{CredentialForwarding, UpstreamConfig, UpstreamRepositoryConfig};
use crate::identity::{CacheKey, UpstreamCredential};
use crate::upstream::{call, Answer, Client, Endpoint, UpstreamError};

pub struct RepositoryCheck {
    client: Client,
    /// Repositories one token request may have checked (`upstream.max_repository_checks`).
    pub max_per_request: usize,
    url_template: String,
    forwarding: CredentialForwarding,
    actions: Vec<String>,
    /// Keyed by (credential hash, repository): one caller's answer is never another's.
    cache: Cache<(CacheKey, String), bool>,
}

/// A refusal is remembered only briefly: the user may be creating or sharing the record
/// upstream right now, and should not wait a whole TTL to push.
const REFUSAL_TTL: Duration = Duration::from_secs(5);

/// A grant lives for the TTL, a refusal for at most [`REFUSAL_TTL`]; `granted` tells which
/// a cached answer is.
pub(crate) struct Expiry<F> {
    ttl: Duration,
    granted: F,
}

impl<F> Expiry<F> {
    pub(crate) fn new(ttl: Duration, granted: F) -> Self {
        Self { ttl, granted }
    }
}

impl<K, V, F: Fn(&V) -> bool> moka::Expiry<K, V> for Expiry<F> {
    fn expire_after_create(&self, _: &K, answer: &V, _: std::time::Instant) -> Option<Duration> {
        Some(if (self.granted)(answer) {
            self.ttl
        } else {
            REFUSAL_TTL.min(self.ttl)
        })
    }
}

impl RepositoryCheck {
    pub fn new(
        up: &UpstreamConfig,
        repo: &UpstreamRepositoryConfig,
        client: Client,
        capacity: u64,
    ) -> Self {
        Self {
            client,
            max_per_request: up.max_repository_checks,
            url_template: repo.url.clone(),
            forwarding: up.credentials,
            actions: repo.actions.clone(),
            cache: Cache::builder()
                .max_capacity(capacity)
                .expire_after(Expiry::new(
                    Duration::from_secs(up.cache_ttl_seconds).max(Duration::from_millis(1)),
                    |granted: &bool| *granted,
                ))
                .build(),
        }
    }

    /// The actions the endpoint grants `credential` on `name` (all configured ones, or none).
    pub async fn allowed(
        &self,
        credential: &UpstreamCredential,
        name: &str,
    ) -> Result<&[String], UpstreamError> {
        let creds = credential.credentials();
        let granted = self
            .cache
            .try_get_with((credential.key(), name.to_string()), async {
                // Every byte but letters and digits is escaped, `/` included: `{name}` is one path segment.
                let url = self.url_template.replace("{name}", &utf8_percent_encode(name, NON_ALPHANUMERIC).to_string());
                match call(&self.client, &url, self.forwarding, creds, Endpoint::Repository).await? {
                    Answer::Granted(_) => Ok(true),
                    Answer::Refused(status) => {
                        tracing::debug!(user = %creds.username, repository = %name, %status, "upstream refused the repository");
                        Ok(false)
                    }
                }
            })
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())?;
        Ok(if granted { &self.actions } else { &[] })
    }
}
