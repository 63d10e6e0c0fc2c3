//! What a caller may do: the ordered ACL (`acl`), whose rules may defer to the upstream API's
//! per-repository answers (`upstream`). For a store user no rule matches, the store decides:
//! an `admin` may do everything, anyone else what the union of their grants and their groups'
//! grants allows (see `store_grant`); for an OIDC identity, the grants of the store's groups
//! named like its groups.
//!
//! The token carries requested ∩ allowed for each scope; a scope with nothing granted is left
//! out. Asking for more than allowed is not an error (the token spec says so).

pub(crate) mod acl;
mod acl_index;
mod build;
pub(crate) mod explain;
pub(crate) mod open_balena;
pub(crate) mod upstream;

use std::net::IpAddr;

use futures::future::try_join_all;

use crate::identity::{Caller, Identity, Source};
use crate::scope::Scope;
use crate::upstream::UpstreamError;
use acl::Grant;
pub(crate) use acl::{Acl, Asker};
use upstream::RepositoryCheck;

pub struct Policy {
    pub acl: Acl,
    pub repository: Option<RepositoryCheck>,
    /// `upstream.profile = "open-balena"`: what no rule decides, open-balena-api does.
    pub open_balena: Option<open_balena::OpenBalenaCheck>,
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
    /// No rule matched; open-balena-api's answers decided (`upstream.profile`).
    OpenBalena { allowed: bool },
}

impl DecidedBy {
    /// The text in two parts: the rule number, if any, written as `acl[N]`, then a fixed
    /// suffix. The audit line writes these bytes straight in; `Display` renders the same.
    pub fn parts(&self) -> (Option<usize>, &'static str) {
        match self {
            Self::Rule(n) => (Some(*n), ""),
            Self::Upstream {
                rule,
                allowed: true,
            } => (Some(*rule), "+upstream:allowed"),
            Self::Upstream {
                rule,
                allowed: false,
            } => (Some(*rule), "+upstream:refused"),
            Self::StoreAdmin => (None, "store:admin"),
            Self::StoreGrants => (None, "store:grants"),
            Self::NoRule => (None, "no-rule"),
            Self::OpenBalena { allowed: true } => (None, "open-balena:allowed"),
            Self::OpenBalena { allowed: false } => (None, "open-balena:refused"),
        }
    }
}

impl std::fmt::Display for DecidedBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rule, rest) = self.parts();
        if let Some(n) = rule {
            write!(f, "acl[{n}]")?;
        }
        f.write_str(rest)
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
    /// Every requested scope with its granted actions, scopes checked concurrently, for a
    /// token for `service` asked from `client`.
    pub async fn authorize(
        &self,
        caller: &Caller,
        service: &str,
        client: IpAddr,
        scopes: &[Scope],
    ) -> Result<Authorization, PolicyError> {
        let at = Asker {
            who: caller.identity(),
            service,
            client,
        };
        // Each scope's rule is found once, here; `decide` and the check below reuse it.
        let grants: Vec<Grant> = scopes.iter().map(|s| self.acl.grant(&at, s)).collect();
        if let Some(repo) = &self.repository {
            let asks = scopes
                .iter()
                .zip(&grants)
                .filter(|(s, g)| asks_upstream(caller, s, g))
                .count();
            if asks > repo.max_per_request {
                return Err(PolicyError::TooManyChecks(repo.max_per_request));
            }
        }
        if let Some(ob) = &self.open_balena {
            let asks = grants.iter().filter(|g| g.rule.is_none()).count();
            if asks > ob.max_per_request {
                return Err(PolicyError::TooManyChecks(ob.max_per_request));
            }
        }
        // Scopes are decided concurrently (each may wait for the API); one scope, docker's usual
        // request, in place: try_join_all's futures cost about 700 instructions a token.
        let pairs = scopes.iter().zip(grants);
        let decided = if scopes.len() == 1 {
            let mut one = Vec::with_capacity(1);
            for (s, g) in pairs {
                one.push(self.decide(caller, &at, s, g).await?);
            }
            one
        } else {
            try_join_all(pairs.map(|(s, g)| self.decide(caller, &at, s, g))).await?
        };
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

    /// `scope`'s grant: the local decision (`local`), then the API's for what the rule
    /// defers to it.
    async fn decide(
        &self,
        caller: &Caller,
        at: &Asker<'_>,
        scope: &Scope,
        grant: Grant,
    ) -> Result<(Option<Scope>, DecidedBy), PolicyError> {
        if let (None, Some(ob)) = (grant.rule, &self.open_balena) {
            let granted = ob.decide(caller, scope).await?;
            let allowed = granted.is_some();
            return Ok((granted, DecidedBy::OpenBalena { allowed }));
        }
        let ask = asks_upstream(caller, scope, &grant);
        let (mut actions, mut by) = local(at, scope, &grant);
        if ask {
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
        let actions = concrete(&scope.resource_type, actions);
        let granted = (!actions.is_empty()).then(|| Scope {
            resource_type: scope.resource_type.clone(),
            name: scope.name.clone(),
            actions,
        });
        Ok((granted, by))
    }
}

/// A repository's granted `*` written out as the actions it stands for. zot compares action
/// names exactly and knows no `*`; distribution's checks name concrete actions too. The
/// catalog keeps `*`: it is the one action distribution asks of `registry:catalog`.
fn concrete(resource_type: &str, actions: Vec<String>) -> Vec<String> {
    if resource_type != "repository" || !actions.iter().any(|a| a == "*") {
        return actions;
    }
    let mut out: Vec<String> = Vec::with_capacity(3);
    for a in actions {
        let each: &[&str] = match a.as_str() {
            "*" => &["pull", "push", "delete"],
            one => &[one][..],
        };
        for x in each {
            if !out.iter().any(|o| o == x) {
                out.push(x.to_string());
            }
        }
    }
    out
}

/// What is decided without the upstream API: the rule's `grant`, else the store's (the
/// `admin` flag, the grants), else nothing. The realm (`decide`) and `explain` both use it.
fn local(at: &Asker, scope: &Scope, grant: &Grant) -> (Vec<String>, DecidedBy) {
    let who: &Identity = at.who;
    match grant.rule {
        Some(n) => (grant.actions.clone(), DecidedBy::Rule(n)),
        None if who.source == Source::Store && who.admin => {
            (store_grant(at, scope), DecidedBy::StoreAdmin)
        }
        None if who.source == Source::Store => (store_grant(at, scope), DecidedBy::StoreGrants),
        // An OIDC or directory identity's groups may have grants in the store.
        None if matches!(who.source, Source::Oidc | Source::Ldap) && !who.rights.is_empty() => {
            (store_grant(at, scope), DecidedBy::StoreGrants)
        }
        None => (Vec::new(), DecidedBy::NoRule),
    }
}

/// Whether deciding `scope` takes a call to the API (unless its answer is cached), given the
/// rule's `grant`.
fn asks_upstream(caller: &Caller, scope: &Scope, grant: &Grant) -> bool {
    let wants_more = scope.actions.iter().any(|a| !grant.actions.contains(a));
    // Only upstream identities carry a credential the API understands.
    grant.ask_upstream
        && wants_more
        && scope.resource_type == "repository"
        && matches!(caller, Caller::Upstream { .. })
}

/// The requested actions a store user's `admin` flag or grants allow at `at.service` (`local`
/// calls it only for identities that carry grants).
fn store_grant(at: &Asker, scope: &Scope) -> Vec<String> {
    let who = at.who;
    scope
        .actions
        .iter()
        .filter(|a| {
            who.admin
                || who
                    .rights
                    .iter()
                    .any(|r| r.allows(&who.name, at.service, &scope.resource_type, &scope.name, a))
        })
        .cloned()
        .collect()
}
