//! Repositories decided as open-balena-api's token endpoint decides them
//! (`src/features/registry/registry.ts` in balena-io/open-balena-api at 61a847ac), for
//! `upstream.profile = "open-balena"`, asking the API over HTTP what it asks its database:
//!
//! - `resin/resinos` and `resin/<name>-supervisor`: pull, for everyone (the anonymous caller too);
//! - the builder's token: pull and push on everything else;
//! - `v2/<hash>` images (and `v2/<hash>-<n>`, a multistage build's cache, checked as
//!   `v2/<hash>`; and the legacy `<appId>/<buildId>`): the image's id is looked up with this
//!   service's API key (open-balena-api does it as root); pull when the caller can see an
//!   application owning a release with the image, push when `image(<id>)/canAccess` with
//!   `{"action":"push"}` answers with the image, both asked with the caller's own key;
//! - `<org>/<app>` and `<org>/<app>/<release>`: the release's image location is looked up
//!   with the caller's key, and pull is granted on that location (where the image is stored);
//! - any other name: nothing. (open-balena-api grants pull on unknown names to everyone and
//!   asks about push; here a name the profile does not know grants nothing.)
//!
//! Answers are cached per caller and repository for `upstream.cache_ttl_seconds`, refusals
//! for at most 5 s, as the generic per-repository answers are.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use regex::Regex;
use serde_json::{json, Value};

use crate::config::CredentialForwarding;
use crate::config::UpstreamConfig;
use crate::identity::open_balena::is_builder;
use crate::identity::{CacheKey, Caller};
use crate::scope::Scope;
use crate::upstream::{send, Answer, Auth, Call, Client, Endpoint, UpstreamError};

/// open-balena-api's resource version the queries are written for.
const API: &str = "v7";

/// A repository name as open-balena reads it.
#[derive(Debug, PartialEq, Eq)]
enum Repo {
    /// The host OS and supervisor images: pull for everyone.
    Base,
    /// An image, by the name its location ends with.
    Image(String),
    /// An application's release: `slug` (`org/app`) and the release (commit or version), if
    /// any.
    Release {
        slug: String,
        release: Option<String>,
    },
    /// Not a name open-balena serves.
    Unknown,
}

struct Patterns {
    supervisor: Regex,
    image: Regex,
    legacy: Regex,
    release: Regex,
}

impl Patterns {
    fn new() -> Self {
        // Valid patterns: a failure here is a bug in this file, caught by its tests.
        let re = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("{p}: {e}"));
        Self {
            supervisor: re(r"^resin/(?:[a-zA-Z0-9]+-)+supervisor$"),
            image: re(r"^(v2/[a-z0-9]+)(?:-[0-9]+)?$"),
            legacy: re(r"^[0-9]+/[0-9-]+$"),
            release: re(r"^([a-z0-9_-]+/[a-z0-9_-]+)(?:/([a-z0-9_.-]+))?$"),
        }
    }

    fn classify(&self, name: &str) -> Repo {
        if name == "resin/resinos" || self.supervisor.is_match(name) {
            return Repo::Base;
        }
        if let Some(c) = self.image.captures(name) {
            return Repo::Image(c[1].to_string());
        }
        if self.legacy.is_match(name) {
            return Repo::Image(name.to_string());
        }
        if let Some(c) = self.release.captures(name) {
            // open-balena-api reads these as "whatever should be running".
            let release = c
                .get(2)
                .map(|m| m.as_str())
                .filter(|r| !["latest", "current", "default", "pinned"].contains(r));
            return Repo::Release {
                slug: c[1].to_string(),
                release: release.map(str::to_string),
            };
        }
        Repo::Unknown
    }
}

pub struct OpenBalenaCheck {
    client: Client,
    base: String,
    service_key: String,
    builder_token: Option<String>,
    patterns: Patterns,
    /// Image ids by the name their location ends with (the service key's answers, shared).
    image_ids: Cache<String, Option<u64>>,
    /// Per caller and question (`pull:NAME`, `push:NAME`, `locate:NAME`): the answer.
    answers: Cache<(CacheKey, String), Option<String>>,
    pub max_per_request: usize,
}

impl OpenBalenaCheck {
    pub fn new(up: &UpstreamConfig, client: Client, capacity: u64) -> anyhow::Result<Self> {
        let service_key = up.service_api_key().ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not set",
                crate::config::upstream::SERVICE_API_KEY_ENV
            )
        })?;
        let ttl = Duration::from_secs(up.cache_ttl_seconds).max(Duration::from_millis(1));
        Ok(Self {
            client,
            base: format!("{}/{API}", up.url.trim_end_matches('/')),
            service_key,
            builder_token: up.builder_token(),
            patterns: Patterns::new(),
            image_ids: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
            answers: Cache::builder()
                .max_capacity(capacity)
                .expire_after(super::upstream::Expiry::new(ttl, |a: &Option<String>| {
                    a.is_some()
                }))
                .build(),
            max_per_request: up.max_repository_checks,
        })
    }

    /// The access `caller` gets on `scope`: the actions, and the name they are granted on
    /// (the image's location for a release), or `None` when nothing is granted.
    pub async fn decide(
        &self,
        caller: &Caller,
        scope: &Scope,
    ) -> Result<Option<Scope>, UpstreamError> {
        if scope.resource_type != "repository" {
            return Ok(None);
        }
        let wants = |a: &str| scope.actions.iter().any(|x| x == a);
        let grant = |name: &str, actions: &[&str]| {
            let actions: Vec<String> = actions
                .iter()
                .filter(|a| wants(a))
                .map(|a| a.to_string())
                .collect();
            (!actions.is_empty()).then(|| Scope {
                resource_type: "repository".into(),
                name: name.to_string(),
                actions,
            })
        };
        let repo = self.patterns.classify(&scope.name);
        if repo == Repo::Base {
            return Ok(grant(&scope.name, &["pull"]));
        }
        let Caller::Upstream { credential, .. } = caller else {
            return Ok(None);
        };
        let creds = credential.credentials();
        if is_builder(self.builder_token.as_deref(), &creds.password) {
            return Ok(grant(&scope.name, &["pull", "push"]));
        }
        let key = credential.key();
        match repo {
            Repo::Image(effective) => {
                let Some(id) = self.image_id(&effective).await? else {
                    return Ok(None);
                };
                let mut actions = Vec::new();
                if wants("pull") && self.ask(key, creds, "pull", &effective, id).await? {
                    actions.push("pull");
                }
                if wants("push") && self.ask(key, creds, "push", &effective, id).await? {
                    actions.push("push");
                }
                Ok(grant(&scope.name, &actions))
            }
            Repo::Release { slug, release } => {
                let located = self.locate(key, creds, &scope.name, &slug, release.as_deref());
                Ok(located.await?.and_then(|at| grant(&at, &["pull"])))
            }
            Repo::Base | Repo::Unknown => Ok(None),
        }
    }

    /// The id of the image whose location ends with `name`, asked with the service key.
    async fn image_id(&self, name: &str) -> Result<Option<u64>, UpstreamError> {
        let url = format!(
            "{}/image?$select=id&$filter=endswith(is_stored_at__image_location,'{name}')",
            self.base
        );
        self.image_ids
            .try_get_with_by_ref(name, async {
                let body = self
                    .query(&url, Auth::Service(&self.service_key), None)
                    .await?;
                Ok(first(&body)
                    .and_then(|d| d.get("id"))
                    .and_then(Value::as_u64))
            })
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())
    }

    /// Whether the caller may `action` the image `id` (stored as `name`).
    async fn ask(
        &self,
        key: CacheKey,
        creds: &crate::credentials::Credentials,
        action: &str,
        name: &str,
        id: u64,
    ) -> Result<bool, UpstreamError> {
        let question = format!("{action}:{name}");
        let answer = self
            .answers
            .try_get_with((key, question), async {
                let auth = Auth::Caller(CredentialForwarding::Bearer, creds);
                let found = match action {
                    "pull" => {
                        let url = format!(
                            "{}/application?$top=1&$select=id&$filter=owns__release/any(r:r/release_image/any(ri:ri/image eq {id}))",
                            self.base
                        );
                        first(&self.query(&url, auth, None).await?).is_some()
                    }
                    _ => {
                        let url = format!("{}/image({id})/canAccess", self.base);
                        let body = json!({"action": "push"});
                        let answer = self.query(&url, auth, Some(&body)).await?;
                        first(&answer).and_then(|d| d.get("id")).and_then(Value::as_u64)
                            == Some(id)
                    }
                };
                Ok::<_, UpstreamError>(found.then(String::new))
            })
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())?;
        Ok(answer.is_some())
    }

    /// Where the release's image is stored (its location without the registry host), looked
    /// up with the caller's key: the release of `slug` named `release`, else the one that
    /// should be running.
    async fn locate(
        &self,
        key: CacheKey,
        creds: &crate::credentials::Credentials,
        name: &str,
        slug: &str,
        release: Option<&str>,
    ) -> Result<Option<String>, UpstreamError> {
        let which = match release {
            None => format!("r/should_be_running_on__application/any(a:a/slug eq '{slug}')"),
            Some(r) => format!(
                "(r/commit eq '{r}' or (r/semver eq '{r}' and r/is_final eq true) or (r/raw_version eq '{r}' and r/is_final eq false))"
            ),
        };
        let url = format!(
            "{}/image?$top=1&$select=is_stored_at__image_location&$filter=status eq 'success' and \
             release_image/any(ri:ri/is_part_of__release/any(r:r/status eq 'success' and \
             r/belongs_to__application/any(a:a/slug eq '{slug}') and {which}))\
             &$orderby=id asc",
            self.base
        );
        self.answers
            .try_get_with((key, format!("locate:{name}")), async {
                let auth = Auth::Caller(CredentialForwarding::Bearer, creds);
                let body = self.query(&url, auth, None).await?;
                let location = first(&body)
                    .and_then(|d| d.get("is_stored_at__image_location"))
                    .and_then(Value::as_str)
                    // `registry.example.test/v2/<hash>`: the repository is after the host.
                    .and_then(|l| l.split_once('/').map(|(_, repo)| repo.to_string()));
                Ok::<_, UpstreamError>(location)
            })
            .await
            .map_err(|e: Arc<UpstreamError>| (*e).clone())
    }

    /// An OData call's `d` array's owner: the JSON answer, or `Null` when the key was refused.
    async fn query(
        &self,
        url: &str,
        auth: Auth<'_>,
        body: Option<&Value>,
    ) -> Result<Value, UpstreamError> {
        let call = Call {
            url,
            auth,
            body,
            endpoint: Endpoint::Lookup,
        };
        Ok(match send(&self.client, &call).await? {
            Answer::Granted(v) => v,
            Answer::Refused(_) => Value::Null,
        })
    }
}

/// The first record of an OData answer (`{"d": [...]}`).
fn first(body: &Value) -> Option<&Value> {
    body.get("d")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_as_open_balena_reads_them() {
        let p = Patterns::new();
        assert_eq!(p.classify("resin/resinos"), Repo::Base);
        assert_eq!(p.classify("resin/aarch64-supervisor"), Repo::Base);
        assert_eq!(p.classify("resin/amd64-x-supervisor"), Repo::Base);
        assert_eq!(p.classify("v2/abc123"), Repo::Image("v2/abc123".into()));
        assert_eq!(
            p.classify("v2/abc123-4"),
            Repo::Image("v2/abc123".into()),
            "multistage"
        );
        assert_eq!(
            p.classify("12/34-56"),
            Repo::Image("12/34-56".into()),
            "legacy"
        );
        assert_eq!(
            p.classify("my-org/app"),
            Repo::Release {
                slug: "my-org/app".into(),
                release: None
            }
        );
        assert_eq!(
            p.classify("my-org/app/latest"),
            Repo::Release {
                slug: "my-org/app".into(),
                release: None
            }
        );
        assert_eq!(
            p.classify("my-org/app/1.2.3"),
            Repo::Release {
                slug: "my-org/app".into(),
                release: Some("1.2.3".into())
            }
        );
        // No `<arch>-` before it: an application's name, not the base image.
        assert_ne!(p.classify("resin/supervisor"), Repo::Base);
        for unknown in ["v2/ABC", "a/b/c/d", "x", "org/app/'x", "org/a pp"] {
            assert_eq!(p.classify(unknown), Repo::Unknown, "{unknown}");
        }
    }
}
