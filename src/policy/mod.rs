//! What a caller may do: the ordered ACL (`acl`), whose rules may defer to the upstream API's
//! per-repository answers (`upstream`). For a store user no rule matches, the store decides:
//! an `admin` may do everything, anyone else what the union of their grants and their groups'
//! grants allows (see `store_grant`); for an OIDC identity, the grants of the store's groups
//! named like its groups.
//!
//! The token carries requested ∩ allowed for each scope; a scope with nothing granted is left
//! out. Asking for more than allowed is not an error (the token spec says so).

pub mod acl;
pub mod upstream;

use futures::future::try_join_all;

use crate::identity::{Caller, Identity, Source};
use crate::scope::Scope;
use crate::upstream::UpstreamError;
pub use acl::Acl;
use upstream::RepositoryCheck;

pub struct Policy {
    pub acl: Acl,
    pub repository: Option<RepositoryCheck>,
}

/// What decided a scope's grant: the audit log's `decided_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecidedBy {
    /// `[[acl]]` rule number n (from 0), alone.
    Rule(usize),
    /// Rule n deferred to the upstream repository endpoint, which allowed something or not.
    Upstream { rule: usize, allowed: bool },
    /// No rule matched; the store user's `admin` flag.
    StoreAdmin,
    /// No rule matched; the store user's grants (possibly none).
    StoreGrants,
    /// No rule matched and no store decides: nothing granted.
    NoRule,
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rule(n) => write!(f, "acl[{n}]"),
            Self::Upstream { rule, allowed } => write!(
                f,
                "acl[{rule}]+upstream:{}",
                if *allowed { "allowed" } else { "refused" }
            ),
            Self::StoreAdmin => f.write_str("store:admin"),
            Self::StoreGrants => f.write_str("store:grants"),
            Self::NoRule => f.write_str("no-rule"),
        }
    }
}

/// The granted scopes (those with any action), and what decided each requested scope, in
/// the order asked.
#[derive(Debug, Default)]
pub struct Authorization {
    pub granted: Vec<Scope>,
    pub decided_by: Vec<DecidedBy>,
}

/// Why no decision could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("at most {0} repositories can be checked with the identity service in one token request (upstream.max_repository_checks); ask for fewer scopes")]
    TooManyChecks(usize),
    /// The upstream repository endpoint gave no answer to act on.
    #[error("{0}")]
    Unavailable(#[from] UpstreamError),
}

impl Policy {
    /// Every requested scope with its granted actions, scopes checked concurrently.
    pub async fn authorize(
        &self,
        caller: &Caller,
        scopes: &[Scope],
    ) -> Result<Authorization, PolicyError> {
        if let Some(repo) = &self.repository {
            let asks = scopes
                .iter()
                .filter(|s| self.asks_upstream(caller, s))
                .count();
            if asks > repo.max_per_request {
                return Err(PolicyError::TooManyChecks(repo.max_per_request));
            }
        }
        let decided = try_join_all(scopes.iter().map(|s| self.decide(caller, s))).await?;
        let mut out = Authorization {
            granted: Vec::with_capacity(decided.len()),
            decided_by: Vec::with_capacity(decided.len()),
        };
        for (granted, by) in decided {
            out.granted.extend(granted);
            out.decided_by.push(by);
        }
        Ok(out)
    }

    /// Whether deciding `scope` takes a call to the API (unless its answer is cached).
    fn asks_upstream(&self, caller: &Caller, scope: &Scope) -> bool {
        let grant = self.acl.grant(caller.identity(), scope);
        let wants_more = scope.actions.iter().any(|a| !grant.actions.contains(a));
        // Only upstream identities carry a credential the API understands.
        grant.ask_upstream
            && wants_more
            && scope.resource_type == "repository"
            && matches!(caller, Caller::Upstream { .. })
    }

    async fn decide(
        &self,
        caller: &Caller,
        scope: &Scope,
    ) -> Result<(Option<Scope>, DecidedBy), PolicyError> {
        let who: &Identity = caller.identity();
        let grant = self.acl.grant(who, scope);
        let (mut actions, mut by) = match grant.rule {
            Some(n) => (grant.actions, DecidedBy::Rule(n)),
            None if who.source == Source::Store && who.admin => {
                (store_grant(who, scope), DecidedBy::StoreAdmin)
            }
            None if who.source == Source::Store => {
                (store_grant(who, scope), DecidedBy::StoreGrants)
            }
            // An OIDC identity's groups may have grants in the store.
            None if who.source == Source::Oidc && !who.rights.is_empty() => {
                (store_grant(who, scope), DecidedBy::StoreGrants)
            }
            None => (Vec::new(), DecidedBy::NoRule),
        };
        if self.asks_upstream(caller, scope) {
            if let (Some(repo), Caller::Upstream { credential, .. }) = (&self.repository, caller) {
                let allowed = repo.allowed(credential, &scope.name).await?;
                by = DecidedBy::Upstream {
                    rule: grant.rule.unwrap_or(0),
                    allowed: !allowed.is_empty(),
                };
                actions = scope
                    .actions
                    .iter()
                    .filter(|a| actions.contains(a) || allowed.iter().any(|x| x == *a || x == "*"))
                    .cloned()
                    .collect();
            }
        }
        let granted = (!actions.is_empty()).then(|| Scope {
            actions,
            ..scope.clone()
        });
        Ok((granted, by))
    }
}

/// The requested actions a store user's `admin` flag or grants allow (`decide` calls it only
/// for store identities; others carry no grants).
fn store_grant(who: &Identity, scope: &Scope) -> Vec<String> {
    scope
        .actions
        .iter()
        .filter(|a| {
            who.admin
                || who
                    .rights
                    .iter()
                    .any(|r| r.allows(&who.name, &scope.resource_type, &scope.name, a))
        })
        .cloned()
        .collect()
}
