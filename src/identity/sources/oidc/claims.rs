//! What a provider's rules do with a verified token's claims: `require` (globs over string
//! claims, equality for booleans and numbers) and the templates that build the account name
//! and groups (`{repository}@{ref}`).

use serde_json::{Map, Value};

use crate::config::ClaimRule;
use crate::glob::Glob;

/// Longest account or group name a template may build (the store's and ACL's names are short).
const MAX_NAME: usize = 255;

#[derive(Debug)]
enum Part {
    Lit(String),
    Claim(String),
}

/// `{claim}` placeholders between literal text; `{{` and `}}` are literal braces.
#[derive(Debug)]
pub(super) struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub(super) fn compile(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed || name.is_empty() || name.contains('{') {
                        return Err(format!(
                            "{s:?}: a placeholder is {{claim}}, with a claim name"
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Claim(name));
                }
                '}' => {
                    return Err(format!(
                        "{s:?}: a '}}' without its '{{' (write '}}}}' for one)"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if !parts.iter().any(|p| matches!(p, Part::Claim(_))) {
            return Err(format!("{s:?} names no claim; use e.g. \"{{sub}}\""));
        }
        Ok(Self { parts })
    }

    /// Whether the name has literal text of its own (`ci:{sub}`), which keeps it apart from
    /// store users and groups and from the names ACL rules were written for.
    pub(super) fn has_literal(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Lit(_)))
    }

    /// The claims the template reads.
    pub(super) fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Claim(c) => Some(c.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// The name, or which claim is missing or not a string (never a name with a hole in it).
    pub(super) fn render(&self, claims: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(l) => out.push_str(l),
                Part::Claim(c) => match claims.get(c) {
                    Some(Value::String(v)) if !v.is_empty() => out.push_str(v),
                    Some(Value::String(_)) => return Err(format!("claim {c:?} is empty")),
                    Some(_) => return Err(format!("claim {c:?} is not a string")),
                    None => return Err(format!("claim {c:?} is missing")),
                },
            }
        }
        if out.len() > MAX_NAME || out.chars().any(char::is_control) {
            return Err(format!(
                "the name built from the claims is longer than {MAX_NAME} bytes or holds control characters"
            ));
        }
        Ok(out)
    }
}

#[derive(Debug)]
pub(super) enum Rule {
    Glob(Glob),
    Bool(bool),
    Integer(i64),
}

impl Rule {
    pub(super) fn compile(rule: &ClaimRule) -> Result<Self, String> {
        Ok(match rule {
            ClaimRule::Glob(g) if g.contains("${") => {
                return Err(format!("{g:?}: claim rules have no variables"))
            }
            ClaimRule::Glob(g) => Self::Glob(Glob::compile(g)?),
            ClaimRule::Bool(b) => Self::Bool(*b),
            ClaimRule::Integer(i) => Self::Integer(*i),
        })
    }

    fn holds(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (Self::Glob(g), Some(Value::String(s))) => g.matches(s, ""),
            (Self::Bool(b), Some(Value::Bool(v))) => b == v,
            (Self::Integer(i), Some(Value::Number(n))) => n.as_i64() == Some(*i),
            _ => false,
        }
    }
}

/// The first claim that fails its rule, by name.
pub(super) fn check<'a>(
    rules: &'a [(String, Rule)],
    claims: &Map<String, Value>,
) -> Result<(), &'a str> {
    match rules.iter().find(|(c, r)| !r.holds(claims.get(c))) {
        Some((c, _)) => Err(c),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn templates_render_or_name_the_claim() {
        let t = Template::compile("{repository}@{ref}").expect("compile");
        let c =
            claims(serde_json::json!({"repository": "org/app", "ref": "refs/heads/main", "n": 3}));
        assert_eq!(t.render(&c).as_deref(), Ok("org/app@refs/heads/main"));
        let t = Template::compile("ci-{n}").expect("compile");
        assert_eq!(t.render(&c), Err("claim \"n\" is not a string".into()));
        let t = Template::compile("{missing}").expect("compile");
        assert_eq!(t.render(&c), Err("claim \"missing\" is missing".into()));
        assert_eq!(
            Template::compile("{{literal}}-{sub}")
                .expect("compile")
                .render(&claims(serde_json::json!({"sub": "x"}))),
            Ok("{literal}-x".into())
        );
        for bad in ["{}", "{a", "a}", "plain"] {
            assert!(Template::compile(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_match_globs_booleans_and_numbers() {
        let rules: Vec<(String, Rule)> = [
            ("ref", ClaimRule::Glob("refs/heads/*".into())),
            ("protected", ClaimRule::Bool(true)),
            ("run", ClaimRule::Integer(7)),
        ]
        .into_iter()
        .map(|(c, r)| (c.to_string(), Rule::compile(&r).expect("rule")))
        .collect();
        let ok = claims(serde_json::json!({"ref": "refs/heads/main", "protected": true, "run": 7}));
        assert_eq!(check(&rules, &ok), Ok(()));
        for (bad, failing) in [
            (
                serde_json::json!({"ref": "refs/tags/v1", "protected": true, "run": 7}),
                "ref",
            ),
            // `*` stays within one segment.
            (
                serde_json::json!({"ref": "refs/heads/a/b", "protected": true, "run": 7}),
                "ref",
            ),
            (
                serde_json::json!({"ref": "refs/heads/main", "protected": "true", "run": 7}),
                "protected",
            ),
            (
                serde_json::json!({"ref": "refs/heads/main", "protected": true}),
                "run",
            ),
        ] {
            assert_eq!(check(&rules, &claims(bad)), Err(failing));
        }
    }
}
