//! open-balena-api as the identity source (`upstream.profile = "open-balena"`): the Basic
//! password is an API key, and `GET {url}/actor/v1/whoami` (Bearer key) says whose. Its answer
//! differs per actor type (`src/features/auth/whoami.ts` in balena-io/open-balena-api at
//! 61a847ac): `{"actorType":"user","username"}`, `{"actorType":"application","slug"}`,
//! `{"actorType":"device","uuid"}`. The token's `sub` is what open-balena-api's registry
//! endpoint puts there (`getSubject`): a user's name, a device's Basic user as sent (`d_<uuid>`
//! or the bare uuid), and nothing for application keys and the builder. The builder's shared
//! token (`TOKEN_AUTH_BUILDER_TOKEN`) is a password of its own, with any user name.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use moka::future::Cache;

use super::{Answer, IdentitySource};
use crate::config::{CredentialForwarding, UpstreamConfig};
use crate::identity::checks::{expiring, Attempt};
use crate::identity::types::{AuthError, CacheKey, Credentials, Identity};
use crate::upstream::{self as api, send, unavailable, Auth, Call, Client, Endpoint};

/// The builder's identity name (its token's `sub` is empty, as open-balena-api's).
pub const BUILDER: &str = "builder";

pub struct OpenBalenaUsers {
    client: Client,
    whoami: String,
    builder_token: Option<String>,
    /// Verified API keys, for `upstream.cache_ttl_seconds`.
    verified: Cache<CacheKey, Arc<Identity>>,
}

impl IdentitySource for OpenBalenaUsers {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> BoxFuture<'a, Answer> {
        Box::pin(async move {
            if is_builder(self.builder_token.as_deref(), &at.creds.password) {
                return Answer::Known(Arc::new(Identity {
                    subject: Some(String::new()),
                    ..Identity::upstream(BUILDER)
                }));
            }
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

/// Whether `password` is the builder's token, compared in constant time.
pub fn is_builder(token: Option<&str>, password: &str) -> bool {
    token.is_some_and(|t| {
        aws_lc_rs::constant_time::verify_slices_are_equal(t.as_bytes(), password.as_bytes()).is_ok()
    })
}

impl OpenBalenaUsers {
    pub fn new(cfg: &UpstreamConfig, client: Client, capacity: u64) -> Self {
        Self {
            verified: expiring(capacity, Duration::from_secs(cfg.cache_ttl_seconds)),
            client,
            whoami: format!("{}/actor/v1/whoami", cfg.url.trim_end_matches('/')),
            builder_token: cfg.builder_token(),
        }
    }

    async fn whoami(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        let call = Call {
            url: &self.whoami,
            auth: Auth::Caller(CredentialForwarding::Bearer, creds),
            body: None,
            endpoint: Endpoint::Identity,
        };
        let body = match send(&self.client, &call).await? {
            api::Answer::Granted(body) => body,
            api::Answer::Refused(status) => {
                tracing::debug!(user = ?creds.username, %status, "open-balena-api refused the API key");
                return Err(AuthError::BadCredentials);
            }
        };
        let field = |name: &str| {
            body.get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    unavailable(
                        &self.whoami,
                        &format!("its answer has no {name} for its actorType"),
                    )
                })
        };
        let identity = match body.get("actorType").and_then(|v| v.as_str()) {
            Some("user") => Identity::upstream(field("username")?),
            Some("application") => Identity {
                subject: Some(String::new()),
                ..Identity::upstream(field("slug")?)
            },
            Some("device") => {
                // The device's key with its own name only: `d_<uuid>`, or the bare uuid.
                let uuid = field("uuid")?;
                let sent = creds.username.as_str();
                if sent.strip_prefix("d_").unwrap_or(sent) != uuid {
                    tracing::info!(user = ?sent, "a device's API key sent with another device's name: refused");
                    return Err(AuthError::BadCredentials);
                }
                Identity::upstream(sent)
            }
            other => {
                return Err(unavailable(
                    &self.whoami,
                    &format!("its actorType {other:?} is not user, application or device"),
                )
                .into())
            }
        };
        Ok(identity)
    }
}
