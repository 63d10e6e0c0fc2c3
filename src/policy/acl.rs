//! Ordered `[[acl]]` rules, first match wins. A rule's action `upstream` defers to the upstream
//! repository endpoint (see `policy::upstream`), so local rules and API decisions can mix.
//!
//! A rule applies when every condition it names holds: the caller's account and groups, the
//! service asked for, the client's network, the resource type and the name. `check` says which
//! condition failed, so the realm (`grant`) and `explain` walk the rules with the same test.

use std::net::IpAddr;

use anyhow::bail;

use super::acl_index::NameIndex;
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
    service: Option<Glob>,
    ip: Vec<ipnet::IpNet>,
    resource_type: String,
    name: Glob,
    actions: Vec<String>,
    /// The rule as written, for `explain` and the shadowed-rule warning.
    text: String,
}

#[derive(Debug, Default)]
pub struct Acl {
    rules: Vec<Rule>,
    index: NameIndex,
}

/// Who asks, for which service, from where: what a rule matches besides the scope.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub who: &'a Identity,
    pub service: &'a str,
    pub client: IpAddr,
}

/// The first condition of a rule that did not hold, in the order `check` tests them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Account,
    Group,
    Type,
    Name,
    Service,
    Ip,
}

impl Miss {
    /// One short phrase for `explain`.
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Type => "another resource type",
            Self::Name => "the name does not match",
            Self::Account => "the account does not match",
            Self::Group => "no group of the caller matches",
            Self::Service => "another service",
            Self::Ip => "the client is outside its networks",
        }
    }

    /// The condition's key, for JSON.
    pub fn key(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Name => "name",
            Self::Account => "account",
            Self::Group => "group",
            Self::Service => "service",
            Self::Ip => "ip",
        }
    }
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

fn quoted_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|a| format!("{a:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// A rule in TOML's inline form, the conditions it names in `check`'s order of reading.
fn render(r: &AclRule) -> String {
    let mut parts = Vec::new();
    if let Some(a) = &r.account {
        parts.push(format!("account = {a:?}"));
    }
    if let Some(g) = &r.group {
        parts.push(format!("group = {g:?}"));
    }
    if let Some(s) = &r.service {
        parts.push(format!("service = {s:?}"));
    }
    if !r.ip.is_empty() {
        parts.push(format!("ip = {}", quoted_list(&r.ip)));
    }
    if r.resource_type != "repository" {
        parts.push(format!("type = {:?}", r.resource_type));
    }
    parts.push(format!("name = {:?}", r.name));
    parts.push(format!("actions = {}", quoted_list(&r.actions)));
    format!("{{ {} }}", parts.join(", "))
}

/// A rule's networks: CIDRs or addresses, as `http.trusted_proxies` reads them, with two
/// mistakes refused rather than left to match nothing or more than meant: host bits set
/// (`10.1.2.3/8`), and v4 written as v4-mapped v6 (`::ffff:10.0.0.0/104`), which is taken as
/// the v4 network it means, since clients are compared in their v4 form.
fn networks(list: &[String], at: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let key = format!("{at}.ip");
    let mut out = crate::config::limits::networks(list, &key)?;
    for n in &mut out {
        if n.trunc() != *n {
            bail!("{key}: {n} has host bits set; did you mean {}?", n.trunc());
        }
        if let ipnet::IpNet::V6(v6) = n {
            if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
                *n = ipnet::IpNet::V4(ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)?);
            }
        }
    }
    Ok(out)
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
            let flat = |v: &Option<String>, key: &str| {
                v.as_deref()
                    .map(|g| Glob::compile_flat(g).map_err(|e| anyhow::anyhow!("{at}.{key}: {e}")))
                    .transpose()
            };
            let group = flat(&r.group, "group")?;
            if r.service.as_deref().is_some_and(|s| s.contains("${")) {
                bail!(
                    "{at}.service: a service glob names services, not the caller: no ${{account}}"
                );
            }
            let service = flat(&r.service, "service")?;
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
                service,
                ip: networks(&r.ip, &at)?,
                resource_type: r.resource_type.clone(),
                name: Glob::compile(&r.name).map_err(|e| anyhow::anyhow!("{at}.name: {e}"))?,
                actions: r.actions.clone(),
                text: render(r),
            });
        }
        let index = NameIndex::new(out.iter().map(|r| &r.name));
        Ok(Self { rules: out, index })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn uses_upstream(&self) -> bool {
        self.rules
            .iter()
            .any(|r| r.actions.iter().any(|a| a == UPSTREAM))
    }

    /// Rule `n` as written.
    pub fn text(&self, n: usize) -> Option<&str> {
        self.rules.get(n).map(|r| r.text.as_str())
    }

    /// What the first matching rule grants of `scope` to the asker.
    pub fn grant(&self, at: &Asker, scope: &Scope) -> Grant {
        let first = self
            .index
            .candidates(&scope.name)
            .find(|&i| self.rules[i].check(at, scope).is_ok());
        self.granted(first, scope)
    }

    /// What [`Self::grant`] decides, by trying every rule in order (what the index must agree
    /// with).
    #[cfg(test)]
    pub(crate) fn grant_by_scan(&self, at: &Asker, scope: &Scope) -> Grant {
        let first = (0..self.rules.len()).find(|&i| self.rules[i].check(at, scope).is_ok());
        self.granted(first, scope)
    }

    fn granted(&self, first: Option<usize>, scope: &Scope) -> Grant {
        let Some((index, rule)) = first.map(|i| (i, &self.rules[i])) else {
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

    /// Why each rule before `upto` (all of them for `None`) did not apply to `scope`.
    pub fn misses(&self, at: &Asker, scope: &Scope, upto: Option<usize>) -> Vec<(usize, Miss)> {
        let end = upto.unwrap_or(self.rules.len());
        self.rules[..end]
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.check(at, scope).err().map(|m| (i, m)))
            .collect()
    }

    /// Rules that can never decide anything, each with the earlier rule that matches every
    /// request it would: `(later, earlier)`.
    pub fn shadowed(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, later) in self.rules.iter().enumerate() {
            let earlier = self.index.rivals(&later.name).take_while(|&i| i < j);
            if let Some(i) = earlier.into_iter().find(|&i| self.rules[i].covers(later)) {
                out.push((j, i));
            }
        }
        out
    }

    /// Rules naming a `service` that matches none of `services`: they never apply.
    pub fn unserved_warnings(&self, services: &[String]) -> Vec<String> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.service
                    .as_ref()
                    .is_some_and(|g| !services.iter().any(|s| g.matches(s, "")))
            })
            .map(|(i, r)| {
                format!(
                    "rule acl[{i}] {} never applies: its service matches none of the services served ({services:?}, token.services)",
                    r.text
                )
            })
            .collect()
    }

    /// The shadowed-rule warnings, one sentence each.
    pub fn shadow_warnings(&self) -> Vec<String> {
        self.shadowed()
            .into_iter()
            .map(|(j, i)| {
                format!(
                    "rule acl[{j}] {} never applies: rule acl[{i}] {} matches every request it would",
                    self.rules[j].text, self.rules[i].text
                )
            })
            .collect()
    }
}

impl Rule {
    /// `Ok` when the rule applies; else the first condition that does not hold, tested in the
    /// order the rule's text reads.
    fn check(&self, at: &Asker, scope: &Scope) -> Result<(), Miss> {
        let who = at.who;
        let account_ok = match &self.account {
            None => true,
            Some(AccountMatch::Anonymous) => who.name.is_empty(),
            Some(AccountMatch::User(g)) => !who.name.is_empty() && g.matches(&who.name, &who.name),
        };
        if !account_ok {
            return Err(Miss::Account);
        }
        if let Some(g) = &self.group {
            if !who.groups.iter().any(|name| g.matches(name, &who.name)) {
                return Err(Miss::Group);
            }
        }
        if self.resource_type != scope.resource_type {
            return Err(Miss::Type);
        }
        if !self.name.matches(&scope.name, &who.name) {
            return Err(Miss::Name);
        }
        if let Some(g) = &self.service {
            if !g.matches(at.service, &who.name) {
                return Err(Miss::Service);
            }
        }
        if !self.ip.is_empty() {
            // A v4 client reaching a dual-stack socket shows as ::ffff:a.b.c.d.
            let client = at.client.to_canonical();
            if !self.ip.iter().any(|n| n.contains(&client)) {
                return Err(Miss::Ip);
            }
        }
        Ok(())
    }

    /// Whether this rule applies to every request `later` applies to (cheaply decided: false
    /// when unsure, so a warning is never wrong).
    fn covers(&self, later: &Rule) -> bool {
        let account = match (&self.account, &later.account) {
            (None, _) => true,
            (Some(AccountMatch::Anonymous), Some(AccountMatch::Anonymous)) => true,
            (Some(AccountMatch::User(a)), Some(AccountMatch::User(b))) => a.covers(b),
            _ => false,
        };
        let glob = |a: &Option<Glob>, b: &Option<Glob>| match (a, b) {
            (None, _) => true,
            (Some(a), Some(b)) => a.covers(b),
            (Some(_), None) => false,
        };
        let ip = self.ip.is_empty()
            || (!later.ip.is_empty()
                && later
                    .ip
                    .iter()
                    .all(|n| self.ip.iter().any(|m| m.contains(n))));
        account
            && glob(&self.group, &later.group)
            && glob(&self.service, &later.service)
            && ip
            && self.resource_type == later.resource_type
            && self.name.covers(&later.name)
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
