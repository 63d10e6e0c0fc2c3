//! `explain`: for each scope, what a caller would be granted and why, decided by the same
//! steps as the realm (`Acl::grant`, then `local`), with the reason each earlier rule did not
//! apply (`Acl::misses`). The upstream API is not asked: a rule that defers to it says so.

use std::net::IpAddr;

use super::acl::{Asker, Miss};
use super::{concrete, local, DecidedBy, Policy};
use crate::identity::Identity;
use crate::scope::Scope;

/// One scope's decision.
#[derive(Debug)]
pub struct Explained {
    /// The scope as asked (merged like the realm merges them).
    pub scope: Scope,
    /// The requested actions granted.
    pub granted: Vec<String>,
    pub decided_by: DecidedBy,
    /// The ids of the store grants that allowed something, when the store decided.
    pub grants: Vec<String>,
    /// The deciding rule defers what it does not grant to the upstream API.
    pub defers_upstream: bool,
    /// Each rule before the deciding one (every rule when none decided) and why it did not
    /// apply.
    pub passed: Vec<(usize, Miss)>,
}

impl Policy {
    /// The decision for each of `scopes`, as the realm would make it for `who` asking for a
    /// token for `service` from `client` (leaving out the upstream API's part).
    pub fn explain(
        &self,
        who: &Identity,
        service: &str,
        client: IpAddr,
        scopes: &[Scope],
    ) -> Vec<Explained> {
        let at = Asker {
            who,
            service,
            client,
        };
        scopes
            .iter()
            .map(|scope| {
                let grant = self.acl.grant(&at, scope);
                let (granted, mut decided_by) = local(&at, scope, &grant);
                let asks_api = grant.rule.is_none() && self.open_balena.is_some();
                if asks_api {
                    decided_by = DecidedBy::OpenBalena { allowed: false };
                }
                let granted = concrete(&scope.resource_type, granted);
                let grants = match decided_by {
                    DecidedBy::StoreGrants => who
                        .rights
                        .iter()
                        .filter(|r| {
                            granted.iter().any(|a| {
                                r.allows(&who.name, service, &scope.resource_type, &scope.name, a)
                            })
                        })
                        .map(|r| r.id.clone())
                        .collect(),
                    _ => Vec::new(),
                };
                Explained {
                    scope: scope.clone(),
                    granted,
                    decided_by,
                    grants,
                    // Only the upstream source's callers carry a credential the API reads.
                    defers_upstream: (grant.ask_upstream || asks_api)
                        && who.source == crate::identity::Source::Upstream,
                    passed: self.acl.misses(&at, scope, grant.rule),
                }
            })
            .collect()
    }

    /// The decisions as people read them: per scope, what was granted, what decided, and why
    /// each earlier rule did not apply.
    pub fn explain_text(&self, decisions: &[Explained]) -> String {
        let mut out = String::new();
        for d in decisions {
            out.push_str(&format!("{}\n", d.scope));
            let granted = match d.granted.is_empty() {
                true => "nothing".to_string(),
                false => d.granted.join(","),
            };
            out.push_str(&format!("  granted: {granted}\n"));
            out.push_str(&format!("  decided by: {}\n", self.decider(d)));
            if d.defers_upstream {
                out.push_str(
                    "  the rule asks the upstream API about the other actions (explain does not ask it)\n",
                );
            }
            for (n, why) in &d.passed {
                out.push_str(&format!(
                    "  acl[{n}] {}: {}\n",
                    self.acl.text(*n).unwrap_or_default(),
                    why.phrase()
                ));
            }
        }
        out
    }

    /// The decisions as JSON (`POST /admin/v1/explain`).
    pub fn explain_json(&self, decisions: &[Explained]) -> serde_json::Value {
        let scopes: Vec<serde_json::Value> = decisions
            .iter()
            .map(|d| {
                let rule = d.decided_by.parts().0;
                serde_json::json!({
                    "scope": d.scope.to_string(),
                    "granted": d.granted,
                    "decided_by": d.decided_by.to_string(),
                    "rule": rule.map(|n| serde_json::json!({
                        "index": n,
                        "text": self.acl.text(n).unwrap_or_default(),
                    })),
                    "grants": d.grants,
                    "defers_upstream": d.defers_upstream,
                    "passed": d.passed.iter().map(|(n, why)| serde_json::json!({
                        "index": n,
                        "text": self.acl.text(*n).unwrap_or_default(),
                        "condition": why.key(),
                        "why": why.phrase(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({ "scopes": scopes })
    }

    /// What decided, in one phrase.
    fn decider(&self, d: &Explained) -> String {
        match d.decided_by {
            DecidedBy::Rule(n) | DecidedBy::Upstream { rule: n, .. } => {
                format!("acl[{n}] {}", self.acl.text(n).unwrap_or_default())
            }
            DecidedBy::StoreAdmin => "no rule; the store user is an admin".into(),
            DecidedBy::StoreGrants if d.grants.is_empty() => {
                "no rule; no store grant allows it".into()
            }
            DecidedBy::StoreGrants => format!("no rule; store grant {}", d.grants.join(", ")),
            DecidedBy::NoRule => "no rule applies".into(),
            DecidedBy::OpenBalena { .. } => "no rule; open-balena-api would decide".into(),
        }
    }
}
