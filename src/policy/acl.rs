//! Ordered `[[acl]]` rules, first match wins. A rule's action `upstream` defers to the upstream
//! repository endpoint (see `policy::upstream`), so local rules and API decisions can mix.

use anyhow::bail;

use crate::config::AclRule;
use crate::glob::Glob;
use crate::identity::Identity;
use crate::scope::Scope;

pub(crate) const ACTIONS: &[&str] = &["pull", "push", "delete", "*", UPSTREAM];
pub(crate) const UPSTREAM: &str = "upstream";

#[derive(Debug)]
enum AccountMatch {
    /// `account = ""`: only the anonymous caller.
    Anonymous,
    /// A glob over authenticated user names; never matches the anonymous caller.
    User(Glob),
}

#[derive(Debug)]
struct Rule {
    account: Option<AccountMatch>,
    group: Option<Glob>,
    resource_type: String,
    name: Glob,
    actions: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

/// The deciding rule's answer for one scope.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Requested actions the rule lists.
    pub actions: Vec<String>,
    /// The rule says `upstream`: ask the repository endpoint about the rest.
    pub ask_upstream: bool,
    /// The index of the rule that matched (and decided, even if it granted nothing).
    pub rule: Option<usize>,
}

impl Acl {
    pub fn compile(rules: &[AclRule]) -> anyhow::Result<Self> {
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = format!("acl[{i}]");
            let account = match r.account.as_deref() {
                None => None,
                Some("") => Some(AccountMatch::Anonymous),
                Some(p) => Some(AccountMatch::User(
                    Glob::compile_flat(p).map_err(|e| anyhow::anyhow!("{at}.account: {e}"))?,
                )),
            };
            let group = r
                .group
                .as_deref()
                .map(|g| Glob::compile_flat(g).map_err(|e| anyhow::anyhow!("{at}.group: {e}")))
                .transpose()?;
            if account.is_none() && group.is_none() {
                bail!("{at}: needs an account (a user name glob; \"*\" for any user, \"\" for anonymous) or a group");
            }
            // The token spec's resource types that distribution checks: anything else would
            // start and silently never match.
            match r.resource_type.as_str() {
                "repository" => {}
                "registry" if r.name == "catalog" => {}
                "registry" => bail!(
                    "{at}.name: {:?}: a rule of type \"registry\" names \"catalog\", the only registry resource (GET /v2/_catalog)",
                    r.name
                ),
                other => bail!(
                    "{at}.type: {other:?} is not a resource type; use \"repository\" (the default) or \"registry\""
                ),
            }
            if r.name.is_empty() {
                bail!("{at}.name: empty");
            }
            for a in &r.actions {
                if !ACTIONS.contains(&a.as_str()) {
                    bail!(
                        "{at}.actions: unknown action {a:?}; use pull, push, delete, * or upstream"
                    );
                }
            }
            out.push(Rule {
                account,
                group,
                resource_type: r.resource_type.clone(),
                name: Glob::compile(&r.name).map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?,
                actions: r.actions.clone(),
            });
        }
        Ok(Self { rules: out })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn uses_upstream(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.actions.iter().any(|a| a == UPSTREAM))
    }

    /// What the first matching rule grants of `scope` to `who`.
    pub fn grant(&self, who: &Identity, scope: &Scope) -> Grant {
        let Some((index, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(who, scope))
        else {
            return Grant::default();
        };
        Grant {
            actions: scope
                .actions
                .iter()
                .filter(|a| {
                    rule.actions
                        .iter()
                        .any(|allowed| allowed == "*" || allowed == *a)
                })
                .cloned()
                .collect(),
            ask_upstream: rule.actions.iter().any(|a| a == UPSTREAM),
            rule: Some(index),
        }
    }
}

impl Rule {
    fn matches(&self, who: &Identity, scope: &Scope) -> bool {
        let account_ok = match &self.account {
            None => true,
            Some(AccountMatch::Anonymous) => who.name.is_empty(),
            Some(AccountMatch::User(g)) => !who.name.is_empty() && g.matches(&who.name, &who.name),
        };
        let group_ok = self
            .group
            .as_ref()
            .is_none_or(|g| who.groups.iter().any(|name| g.matches(name, &who.name)));
        account_ok
            && group_ok
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
            group: None,
            resource_type: t.into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn who(name: &str) -> Identity {
        Identity::local(name)
    }

    fn granted(acl: &Acl, who: &Identity, s: &Scope) -> Vec<String> {
        acl.grant(who, s).actions
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
        assert_eq!(granted(&acl, &who("admin"), &s), vec!["pull", "push"]);
        assert_eq!(granted(&acl, &who("reader"), &s), vec!["pull"]);
        // First match wins, even when it grants nothing.
        assert!(granted(
            &acl,
            &who("reader"),
            &Scope::new("repository", "secret/x", &["pull"])
        )
        .is_empty());
        assert!(granted(&acl, &who("stranger"), &s).is_empty());
    }

    #[test]
    fn account_expansion_and_anonymous() {
        let acl = acl();
        let own = Scope::new("repository", "users/carol/app", &["push"]);
        assert_eq!(granted(&acl, &who("carol"), &own), vec!["push"]);
        assert!(granted(&acl, &who("dave"), &own).is_empty());
        let public = Scope::new("repository", "public/app", &["pull", "push"]);
        assert_eq!(granted(&acl, &Identity::anonymous(), &public), vec!["pull"]);
        // "*" is any authenticated user, not the anonymous one.
        assert!(granted(
            &acl,
            &Identity::anonymous(),
            &Scope::new("repository", "users//x", &["pull"])
        )
        .is_empty());
    }

    #[test]
    fn catalog_and_star_actions() {
        let acl = acl();
        let catalog = Scope::new("registry", "catalog", &["*"]);
        assert_eq!(granted(&acl, &who("admin"), &catalog), vec!["*"]);
        assert!(granted(&acl, &who("reader"), &catalog).is_empty());
        // A type mismatch does not match: a repository named "catalog" is not the catalog.
        assert!(granted(
            &acl,
            &who("reader"),
            &Scope::new("repository", "catalog", &["*"])
        )
        .is_empty());
        assert_eq!(
            granted(
                &acl,
                &who("reader"),
                &Scope::new("repository", "a", &["pull", "delete"])
            ),
            vec!["pull"]
        );
    }

    #[test]
    fn groups_and_upstream_rules() {
        let mut admins = rule("*", "repository", "**", &["*"]);
        admins.account = None;
        admins.group = Some("admins".into());
        let acl = Acl::compile(&[
            admins,
            rule("*", "repository", "fleet/**", &["pull", "upstream"]),
        ])
        .expect("compile");
        let mut eve = who("eve");
        eve.groups = vec!["devs".into(), "admins".into()];
        let s = Scope::new("repository", "fleet/app", &["pull", "push"]);
        assert_eq!(
            acl.grant(&eve, &s),
            Grant {
                actions: vec!["pull".into(), "push".into()],
                ask_upstream: false,
                rule: Some(0)
            }
        );
        assert_eq!(
            acl.grant(&who("frank"), &s),
            Grant {
                actions: vec!["pull".into()],
                ask_upstream: true,
                rule: Some(1)
            }
        );
        assert!(acl.uses_upstream());
        assert!(granted(
            &acl,
            &who("frank"),
            &Scope::new("repository", "other", &["pull"])
        )
        .is_empty());
    }

    #[test]
    fn bad_rules_are_startup_errors() {
        let err = Acl::compile(&[rule("a", "repository", "x", &["pul"])]).expect_err("action");
        assert!(err.to_string().contains("acl[0].actions"), "{err}");
        let mut r = rule("a", "repository", "x", &["pull"]);
        r.account = None;
        assert!(Acl::compile(&[r]).is_err(), "neither account nor group");
        assert!(Acl::compile(&[rule("a", "Repo", "x", &["pull"])]).is_err());
    }
}
