//! The scope grammar of the token spec: `type[(class)]:name:action[,action...]`.
//!
//! A name may carry a `host:port` prefix, so the type runs to the FIRST `:` and the actions
//! start after the LAST one. Classes are deprecated: accepted and dropped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// One resource with actions: a requested scope, or an entry of a token's `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed scope {scope:?}: {reason}")]
pub struct ScopeError {
    /// The scope as given, cut to [`MAX_ECHO`] characters.
    pub scope: String,
    pub reason: &'static str,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopesError {
    #[error(transparent)]
    Malformed(#[from] ScopeError),
    #[error("more than {0} scopes in one request; ask for fewer at a time")]
    TooMany(usize),
}

/// Actions one scope may name (real clients use pull, push, delete and `*`).
pub const MAX_ACTIONS: usize = 16;
/// Resources one request's scopes are merged by scanning, before a map takes over.
const SCAN_RESOURCES: usize = 8;
/// How much of a malformed scope an error message repeats.
const MAX_ECHO: usize = 200;

mod grammar;
pub use grammar::is_repository_name;

impl Scope {
    pub fn new(resource_type: &str, name: &str, actions: &[&str]) -> Self {
        Self {
            resource_type: resource_type.into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let err = |reason| ScopeError {
            scope: s.chars().take(MAX_ECHO).collect(),
            reason,
        };
        let (first, last) = match (s.find(':'), s.rfind(':')) {
            (Some(f), Some(l)) if f < l => (f, l),
            _ => return Err(err("expected type:name:actions")),
        };
        let (type_part, name, actions_part) = (&s[..first], &s[first + 1..last], &s[last + 1..]);
        let resource_type = grammar::resource_type(type_part)
            .ok_or_else(|| err("the resource type must be lowercase letters and digits"))?;
        if name.is_empty() {
            return Err(err("the name is empty"));
        }
        if resource_type == "repository" {
            if !is_repository_name(name) {
                return Err(err("not a valid repository name"));
            }
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("the name holds whitespace"));
        }
        let mut actions: Vec<String> = Vec::new();
        for a in actions_part.split(',') {
            if !grammar::is_action(a) {
                return Err(err("actions must be a comma-separated list like pull,push"));
            }
            if !actions.iter().any(|x| x == a) {
                if actions.len() == MAX_ACTIONS {
                    return Err(err("too many actions"));
                }
                actions.push(a.to_string());
            }
        }
        Ok(Self {
            resource_type: resource_type.into(),
            name: name.into(),
            actions,
        })
    }

    /// Parses every scope in `values`, each of which may hold several space-separated scopes
    /// (clients send both forms). Scopes naming the same resource are merged, in linear time;
    /// more than `max` scopes is an error before any is parsed further.
    pub fn parse_all<'a>(
        values: impl IntoIterator<Item = &'a str>,
        max: usize,
    ) -> Result<Vec<Self>, ScopesError> {
        let mut out: Vec<Self> = Vec::new();
        // Where each resource (type, name) is in `out`: found by a scan while `out` is short (a
        // request asks for one to a few resources), by a map once it is not, so that many
        // scopes stay linear. The map and its keys cost allocations every request would pay.
        let mut index: Option<HashMap<(String, String), usize>> = None;
        let mut count = 0;
        for value in values {
            for piece in value.split_ascii_whitespace() {
                count += 1;
                if count > max {
                    return Err(ScopesError::TooMany(max));
                }
                let scope = Self::parse(piece)?;
                let seen = match &mut index {
                    Some(map) => {
                        let key = (scope.resource_type.clone(), scope.name.clone());
                        let next = out.len();
                        Some(*map.entry(key).or_insert(next)).filter(|&i| i < next)
                    }
                    None => out.iter().position(|s| {
                        s.resource_type == scope.resource_type && s.name == scope.name
                    }),
                };
                match seen {
                    Some(i) => {
                        // At most MAX_ACTIONS each: this stays small.
                        let existing = &mut out[i];
                        for a in scope.actions {
                            if !existing.actions.contains(&a) {
                                existing.actions.push(a);
                            }
                        }
                    }
                    None => {
                        out.push(scope);
                        if index.is_none() && out.len() > SCAN_RESOURCES {
                            let keys = out
                                .iter()
                                .map(|s| (s.resource_type.clone(), s.name.clone()));
                            index = Some(keys.zip(0..).collect());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn allows(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action || a == "*")
    }

    /// The scope's text, `type:name:action,action`, handed to `put` piece by piece, without a
    /// joined string: what `Display` writes, and what the audit line copies straight into its
    /// buffer (a closure, not an iterator: it inlines to the plain loop the audit measured).
    pub fn for_each_piece(&self, mut put: impl FnMut(&str)) {
        put(&self.resource_type);
        put(":");
        put(&self.name);
        put(":");
        for (i, a) in self.actions.iter().enumerate() {
            if i > 0 {
                put(",");
            }
            put(a);
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut written = Ok(());
        self.for_each_piece(|p| {
            if written.is_ok() {
                written = f.write_str(p);
            }
        });
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_repository_scope() {
        let s = Scope::parse("repository:org/app:pull,push").expect("parse");
        assert_eq!(s, Scope::new("repository", "org/app", &["pull", "push"]));
        assert_eq!(s.to_string(), "repository:org/app:pull,push");
    }

    #[test]
    fn host_and_port_in_the_name() {
        let s = Scope::parse("repository:localhost:5000/org/app:pull").expect("parse");
        assert_eq!(s.name, "localhost:5000/org/app");
        assert_eq!(s.actions, vec!["pull"]);
        let s = Scope::parse("repository:registry.example.com:443/a/b-c__d.e:push").expect("parse");
        assert_eq!(s.name, "registry.example.com:443/a/b-c__d.e");
    }

    #[test]
    fn class_is_accepted_and_dropped() {
        let s = Scope::parse("repository(plugin):vieux/sshfs:pull").expect("parse");
        assert_eq!(s, Scope::new("repository", "vieux/sshfs", &["pull"]));
    }

    #[test]
    fn catalog_scope() {
        let s = Scope::parse("registry:catalog:*").expect("parse");
        assert_eq!(s, Scope::new("registry", "catalog", &["*"]));
        assert!(s.allows("pull"));
    }

    #[test]
    fn repeated_and_space_joined_are_merged() {
        let scopes = Scope::parse_all(
            [
                "repository:a/b:pull repository:c:push",
                "repository:a/b:push,pull",
                "registry:catalog:*",
            ],
            100,
        )
        .expect("parse");
        assert_eq!(
            scopes,
            vec![
                Scope::new("repository", "a/b", &["pull", "push"]),
                Scope::new("repository", "c", &["push"]),
                Scope::new("registry", "catalog", &["*"]),
            ]
        );
        assert_eq!(Scope::parse_all([""], 100).expect("empty"), vec![]);
    }

    #[test]
    fn work_is_bounded() {
        // The limit counts every scope given, duplicates too, and stops before parsing on.
        let many = "repository:a:pull ".repeat(101);
        assert_eq!(
            Scope::parse_all([many.as_str()], 100),
            Err(ScopesError::TooMany(100))
        );
        let hundred = (0..100)
            .map(|i| format!("repository:org/app{i}:pull"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(
            Scope::parse_all([hundred.as_str()], 100)
                .expect("100")
                .len(),
            100
        );
        // Distinct actions are capped per scope; the error does not echo a huge scope whole.
        let actions: Vec<String> = (0..17).map(|i| format!("a{i}")).collect();
        let wide = format!("repository:org/app:{}", actions.join(","));
        let err = Scope::parse(&wide).expect_err("17 actions");
        assert_eq!(err.reason, "too many actions");
        let huge = format!("repository:{}:pull", "a/".repeat(10_000));
        assert!(Scope::parse(&huge).expect_err("bad").scope.len() <= 200);
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in [
            "repository",
            "repository:org/app",
            "repository::pull",
            "repository:org/app:",
            "repository:Org/App:pull",
            "repository:Org/app:pull",
            "repository:org//app:pull",
            "repository:org/app/:pull",
            "repository:-org:pull",
            "repository:org/app:pull,,push",
            "repository:org/app:PULL",
            "Repository:org/app:pull",
            "repository(:org/app:pull",
        ] {
            let err = Scope::parse(bad).expect_err(bad);
            assert_eq!(err.scope, bad);
            assert!(err.to_string().contains(bad));
        }
        assert!(Scope::parse(&format!("repository:{}:pull", "a".repeat(256))).is_err());
    }
}
