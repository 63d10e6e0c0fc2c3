//! The upstream identity API: the registry password is a session token or API key that only
//! the platform's API can resolve. 2xx → an identity; 401/403 → bad credentials; anything
//! else (5xx, timeout, refused, a body that is not the documented JSON) → unavailable, which
//! the realm turns into a 503: never a token on a guess.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use moka::future::Cache;

use super::{Answer, IdentitySource};
use crate::config::{CredentialForwarding, UpstreamConfig};
use crate::identity::checks::{expiring, Attempt};
use crate::identity::types::{AuthError, CacheKey, Credentials, Identity, Source};
use crate::upstream::{self as api, call, unavailable, Client, Endpoint, UpstreamError};

impl From<UpstreamError> for AuthError {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unavailable(how) => Self::Unavailable(how),
        }
    }
}

pub struct Upstream {
    client: Client,
    url: String,
    forwarding: CredentialForwarding,
    username_pointer: String,
    match_username: bool,
    groups_pointer: Option<String>,
    /// Verified credentials, for `upstream.cache_ttl_seconds`.
    verified: Cache<CacheKey, Arc<Identity>>,
}

impl IdentitySource for Upstream {
    fn name(&self) -> &'static str {
        "upstream"
    }

    /// Every name the sources before it did not hold is the API's to decide.
    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            at.checks
                .once(&self.verified, at, |_| async move {
                    Ok(Arc::new(self.whoami(at.creds).await?))
                })
                .await
                .into()
        })
    }

    fn builds_names(&self) -> bool {
        true
    }
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig, client: Client, capacity: u64) -> Self {
        Self {
            verified: expiring(capacity, Duration::from_secs(cfg.cache_ttl_seconds)),
            client,
            url: cfg.url.clone(),
            forwarding: cfg.credentials,
            // Required by the generic profile, the only one this source serves
            // (`UpstreamConfig::check_profile`).
            username_pointer: cfg.username_pointer.clone().unwrap_or_default(),
            match_username: cfg.match_username,
            groups_pointer: cfg.groups_pointer.clone(),
        }
    }

    pub async fn whoami(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        let body = match call(
            &self.client,
            &self.url,
            self.forwarding,
            creds,
            Endpoint::Identity,
        )
        .await?
        {
            api::Answer::Granted(body) => body,
            api::Answer::Refused(status) => {
                tracing::debug!(user = %creds.username, %status, "upstream identity refused the credential");
                return Err(AuthError::BadCredentials);
            }
        };
        let (name, groups) = read_answer(
            &body,
            &self.username_pointer,
            self.groups_pointer.as_deref(),
        )
        .map_err(|why| unavailable(&self.url, &why))?;
        if self.match_username && name != creds.username {
            tracing::debug!(user = %creds.username, upstream_name = %name, "credential belongs to another user");
            return Err(AuthError::BadCredentials);
        }
        Ok(Identity {
            name,
            groups,
            source: Source::Upstream,
            admin: false,
            rights: Vec::new(),
            expires_at: None,
            subject: None,
        })
    }
}

/// What an identity API's answer says: the caller's name (at `name_at`) and groups (at
/// `groups_at`, an array of strings; absent or null is none), or why it cannot be read.
pub(crate) fn read_answer(
    body: &serde_json::Value,
    name_at: &str,
    groups_at: Option<&str>,
) -> Result<(String, Vec<String>), String> {
    let name = body
        .pointer(name_at)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("its answer has no string at {name_at}"))?;
    if name.is_empty() {
        // "" is the anonymous caller's name: an identity must never become it.
        return Err(format!("the name at {name_at} is empty"));
    }
    let not_strings = |p: &str| format!("{p} is not an array of strings");
    let groups = match groups_at {
        None => Vec::new(),
        Some(p) => match body.pointer(p) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| not_strings(p))?,
            Some(_) => return Err(not_strings(p)),
        },
    };
    Ok((name.to_string(), groups))
}
