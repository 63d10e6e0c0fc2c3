//! What a caller may do: ordered `[[acl]]` rules, first match wins.
//!
//! The token carries requested ∩ allowed for each scope; a scope with nothing granted is left
//! out. Asking for more than allowed is not an error (the token spec says so).

pub mod glob;

use anyhow::bail;

use crate::config::AclRule;
use crate::identity::Identity;
use crate::scope::Scope;
use glob::Glob;

pub const ACTIONS: &[&str] = &["pull", "push", "delete", "*"];

#[derive(Debug)]
enum AccountMatch {
    /// `account = ""`: only the anonymous caller.
    Anonymous,
    /// A glob over authenticated user names; never matches the anonymous caller.
    User(Glob),
}

#[derive(Debug)]
struct Rule {
    account: AccountMatch,
    resource_type: String,
    name: Glob,
    actions: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

impl Acl {
    pub fn compile(rules: &[AclRule]) -> anyhow::Result<Self> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = format!("acl[{i}]");
            let account = match r.account.as_deref() {
                None => bail!("{at}: needs an account (a user name glob; \"*\" for any user, \"\" for anonymous)"),
                Some("") => AccountMatch::Anonymous,
                Some(p) => AccountMatch::User(Glob::compile(p).map_err(|e| anyhow::anyhow!("{at}.account: {e}"))?),
            };
            if r.resource_type.is_empty()
                || !r
                    .resource_type
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                bail!(
                    "{at}.type: {:?} is not a resource type like \"repository\" or \"registry\"",
                    r.resource_type
                );
            }
            if r.name.is_empty() {
                bail!("{at}.name: empty");
            }
            for a in &r.actions {
                if !ACTIONS.contains(&a.as_str()) {
                    bail!("{at}.actions: unknown action {a:?}; use pull, push, delete or *");
                }
            }
            out.push(Rule {
                account,
                resource_type: r.resource_type.clone(),
                name: Glob::compile(&r.name).map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?,
                actions: r.actions.clone(),
            });
        }
        Ok(Self { rules: out })
    }

    /// The actions of `scope` that `who` is granted.
    pub fn grant(&self, who: &Identity, scope: &Scope) -> Vec<String> {
        let Some(rule) = self.rules.iter().find(|r| r.matches(who, scope)) else {
            return Vec::new();
        };
        scope
            .actions
            .iter()
            .filter(|a| {
                rule.actions
                    .iter()
                    .any(|allowed| allowed == "*" || allowed == *a)
            })
            .cloned()
            .collect()
    }

    /// Every requested scope with its granted actions; scopes granted nothing are left out.
    pub fn authorize(&self, who: &Identity, scopes: &[Scope]) -> Vec<Scope> {
        scopes
            .iter()
            .filter_map(|s| {
                let actions = self.grant(who, s);
                (!actions.is_empty()).then(|| Scope {
                    actions,
                    ..s.clone()
                })
            })
            .collect()
    }
}

impl Rule {
    fn matches(&self, who: &Identity, scope: &Scope) -> bool {
        let account_ok = match &self.account {
            AccountMatch::Anonymous => who.name.is_empty(),
            AccountMatch::User(g) => !who.name.is_empty() && g.matches(&who.name, &who.name),
        };
        account_ok
            && self.resource_type == scope.resource_type
            && self.name.matches(&scope.name, &who.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(account: &str, t: &str, name: &str, actions: &[&str]) -> AclRule {
        AclRule {
            account: Some(account.into()),
            resource_type: t.into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn who(name: &str) -> Identity {
        Identity {
            name: name.into(),
            groups: vec![],
        }
    }

    fn acl() -> Acl {
        Acl::compile(&[
            rule("admin", "repository", "**", &["*"]),
            rule("admin", "registry", "catalog", &["*"]),
            rule("reader", "repository", "secret/**", &[]),
            rule("reader", "repository", "**", &["pull"]),
            rule("*", "repository", "users/${account}/*", &["pull", "push"]),
            rule("", "repository", "public/*", &["pull"]),
        ])
        .expect("compile")
    }

    #[test]
    fn intersection_and_first_match() {
        let acl = acl();
        let s = Scope::new("repository", "org/app", &["pull", "push"]);
        assert_eq!(acl.grant(&who("admin"), &s), vec!["pull", "push"]);
        assert_eq!(acl.grant(&who("reader"), &s), vec!["pull"]);
        // First match wins, even when it grants nothing.
        assert!(acl
            .grant(
                &who("reader"),
                &Scope::new("repository", "secret/x", &["pull"])
            )
            .is_empty());
        assert!(acl.grant(&who("stranger"), &s).is_empty());
    }

    #[test]
    fn account_expansion_and_anonymous() {
        let acl = acl();
        let own = Scope::new("repository", "users/carol/app", &["push"]);
        assert_eq!(acl.grant(&who("carol"), &own), vec!["push"]);
        assert!(acl.grant(&who("dave"), &own).is_empty());
        let public = Scope::new("repository", "public/app", &["pull", "push"]);
        assert_eq!(acl.grant(&Identity::anonymous(), &public), vec!["pull"]);
        // "*" is any authenticated user, not the anonymous one.
        assert!(acl
            .grant(
                &Identity::anonymous(),
                &Scope::new("repository", "users//x", &["pull"])
            )
            .is_empty());
    }

    #[test]
    fn catalog_and_star_actions() {
        let acl = acl();
        let catalog = Scope::new("registry", "catalog", &["*"]);
        assert_eq!(acl.grant(&who("admin"), &catalog), vec!["*"]);
        assert!(acl.grant(&who("reader"), &catalog).is_empty());
        // A type mismatch does not match: a repository named "catalog" is not the catalog.
        assert!(acl
            .grant(&who("reader"), &Scope::new("repository", "catalog", &["*"]))
            .is_empty());
        let scopes = [
            Scope::new("repository", "a", &["pull", "delete"]),
            Scope::new("repository", "secret/b", &["pull"]),
        ];
        assert_eq!(
            acl.authorize(&who("reader"), &scopes),
            vec![Scope::new("repository", "a", &["pull"])]
        );
    }

    #[test]
    fn bad_rules_are_startup_errors() {
        let err = Acl::compile(&[rule("a", "repository", "x", &["pul"])]).expect_err("action");
        assert!(err.to_string().contains("acl[0].actions"), "{err}");
        let mut r = rule("a", "repository", "x", &["pull"]);
        r.account = None;
        assert!(Acl::compile(&[r]).is_err());
        assert!(Acl::compile(&[rule("a", "Repo", "x", &["pull"])]).is_err());
    }
}
