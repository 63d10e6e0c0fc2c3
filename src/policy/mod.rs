//! What a caller may do: the ordered ACL (`acl`), whose rules may defer to the upstream API's
//! per-repository answers (`upstream`).
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
        let decided = try_join_all(scopes.iter().map(|s| self.decide(caller, s))).await?;
        Ok(decided.into_iter().flatten().collect())
    }

    async fn decide(&self, caller: &Caller<'_>, scope: &Scope) -> Result<Option<Scope>, AuthError> {
        let grant = self.acl.grant(caller.identity, scope);
        let mut actions = grant.actions;
        let wants_more = scope.actions.iter().any(|a| !actions.contains(a));
        // Only upstream identities carry a credential the API understands.
        if grant.ask_upstream
            && wants_more
            && scope.resource_type == "repository"
            && caller.identity.source == Source::Upstream
        {
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
