//! What a caller may do: the ordered ACL (`acl`), whose rules may defer to the upstream API's
//! per-repository answers (`upstream`). For a store user no rule matches, the store decides:
//! an `admin` may do everything, anyone else what the union of their grants and their groups'
//! grants allows (see [`store_grant`]).
//!
//! The token carries requested ∩ allowed for each scope; a scope with nothing granted is left
//! out. Asking for more than allowed is not an error (the token spec says so).

pub mod acl;
pub mod glob;
pub mod upstream;

use futures::future::try_join_all;

use crate::identity::{AuthError, CacheKey, Credentials, Identity, Source};
use crate::scope::Scope;
pub use acl::Acl;
use upstream::RepositoryCheck;

pub struct Policy {
    pub acl: Acl,
    pub repository: Option<RepositoryCheck>,
}

/// The authenticated caller, with the credential the upstream API is asked with.
pub struct Caller<'a> {
    pub identity: &'a Identity,
    pub credentials: Option<(&'a Credentials, CacheKey)>,
}

impl Policy {
    /// Every requested scope with its granted actions, scopes checked concurrently.
    pub async fn authorize(
        &self,
        caller: &Caller<'_>,
        scopes: &[Scope],
    ) -> Result<Vec<Scope>, AuthError> {
        if let Some(repo) = &self.repository {
            let asks = scopes
                .iter()
                .filter(|s| self.asks_upstream(caller, s))
                .count();
            if asks > repo.max_per_request {
                return Err(AuthError::TooManyChecks(repo.max_per_request));
            }
        }
        let decided = try_join_all(scopes.iter().map(|s| self.decide(caller, s))).await?;
        Ok(decided.into_iter().flatten().collect())
    }

    /// Whether deciding `scope` takes a call to the API (unless its answer is cached).
    fn asks_upstream(&self, caller: &Caller<'_>, scope: &Scope) -> bool {
        let grant = self.acl.grant(caller.identity, scope);
        let wants_more = scope.actions.iter().any(|a| !grant.actions.contains(a));
        // Only upstream identities carry a credential the API understands.
        grant.ask_upstream
            && wants_more
            && scope.resource_type == "repository"
            && caller.identity.source == Source::Upstream
    }

    async fn decide(&self, caller: &Caller<'_>, scope: &Scope) -> Result<Option<Scope>, AuthError> {
        let grant = self.acl.grant(caller.identity, scope);
        let mut actions = if grant.matched {
            grant.actions
        } else {
            store_grant(caller.identity, scope)
        };
        if self.asks_upstream(caller, scope) {
            if let (Some(repo), Some((creds, key))) = (&self.repository, caller.credentials) {
                let allowed = repo.allowed(creds, key, &scope.name).await?;
                actions = scope
                    .actions
                    .iter()
                    .filter(|a| actions.contains(a) || allowed.iter().any(|x| x == *a || x == "*"))
                    .cloned()
                    .collect();
            }
        }
        Ok((!actions.is_empty()).then(|| Scope {
            actions,
            ..scope.clone()
        }))
    }
}

/// The requested actions a store user's `admin` flag or grants allow (nothing for others).
pub fn store_grant(who: &Identity, scope: &Scope) -> Vec<String> {
    if who.source != Source::Store {
        return Vec::new();
    }
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
