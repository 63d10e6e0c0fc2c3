//! The policy as the configuration describes it: the rules (or, with the upstream API deciding
//! every repository, the one implicit rule), the per-repository upstream check, the
//! open-balena profile, and the start-up warnings about rules that can never apply.

use crate::config::{setting, AclRule, Config, UpstreamProfile};
use crate::upstream::Client;

use super::open_balena::OpenBalenaCheck;
use super::upstream::RepositoryCheck;
use super::{Acl, Policy};

impl Policy {
    /// Built at start-up and on every reload; `services` are the ones served.
    pub fn build(
        cfg: &Config,
        client: Option<Client>,
        services: &[String],
    ) -> anyhow::Result<Self> {
        let capacity = cfg.identity.cache_capacity;
        let open_balena = match (&cfg.upstream, &client) {
            (Some(up), Some(client)) if up.profile == UpstreamProfile::OpenBalena => {
                Some(OpenBalenaCheck::new(up, client.clone(), capacity)?)
            }
            _ => None,
        };
        let repository = match (&cfg.upstream, client) {
            (Some(up), Some(client)) => up
                .repository
                .as_ref()
                .map(|r| RepositoryCheck::new(up, r, client, capacity)),
            _ => None,
        };
        let acl = if cfg.acl.is_empty() && repository.is_some() {
            // Jellyfish / open-balena style with no local rules: the API decides every repository.
            tracing::info!(
                "no [[acl]] rules: every repository is decided by upstream.repository.url"
            );
            Acl::compile(&[AclRule {
                account: Some("*".into()),
                group: None,
                service: None,
                ip: Vec::new(),
                resource_type: "repository".into(),
                name: "**".into(),
                actions: vec!["upstream".into()],
            }])?
        } else {
            Acl::compile(&cfg.acl)?
        };
        for warning in acl.shadow_warnings() {
            tracing::warn!("{warning}");
        }
        for warning in acl.unserved_warnings(services) {
            tracing::warn!("{warning}");
        }
        if acl.uses_upstream() && repository.is_none() {
            anyhow::bail!(
                "acl: a rule grants \"upstream\" but {} is not set",
                setting("upstream.repository.url")
            );
        }
        if acl.is_empty() && cfg.store.is_none() && open_balena.is_none() {
            tracing::warn!("no [[acl]] rules: tokens will grant nothing");
        }
        Ok(Policy {
            acl,
            repository,
            open_balena,
        })
    }
}
