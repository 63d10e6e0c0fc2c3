//! Name globs (repositories, users, groups, OIDC claims): `*` within one path segment, `**`
//! across segments, and `${account}` standing for the caller's name. Compiled once; matching is a small backtracking walk over
//! tokens (no regex, so a user name can never inject pattern syntax).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(String),
    Star,
    DoubleStar,
    Account,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    toks: Vec<Tok>,
}

impl Glob {
    pub fn compile(pattern: &str) -> Result<Self, String> {
        let mut toks = Vec::new();
        let mut lit = String::new();
        let mut rest = pattern;
        while let Some(c) = rest.chars().next() {
            let token = if let Some(r) = rest.strip_prefix("${account}") {
                rest = r;
                Some(Tok::Account)
            } else if let Some(r) = rest.strip_prefix("**") {
                if r.starts_with('*') {
                    return Err(format!(
                        "{pattern:?}: '***' is not a pattern; use '*' or '**'"
                    ));
                }
                rest = r;
                Some(Tok::DoubleStar)
            } else if let Some(r) = rest.strip_prefix('*') {
                rest = r;
                Some(Tok::Star)
            } else if c == '$' && rest.starts_with("${") {
                return Err(format!("{pattern:?}: the only variable is ${{account}}"));
            } else {
                lit.push(c);
                rest = &rest[c.len_utf8()..];
                None
            };
            if let Some(t) = token {
                if !lit.is_empty() {
                    toks.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                toks.push(t);
            }
        }
        if !lit.is_empty() {
            toks.push(Tok::Lit(lit));
        }
        Ok(Self { toks })
    }

    /// For globs over user and group names, which have no path segments: `*` matches anything.
    pub fn compile_flat(pattern: &str) -> Result<Self, String> {
        let mut g = Self::compile(pattern)?;
        for t in &mut g.toks {
            if *t == Tok::Star {
                *t = Tok::DoubleStar;
            }
        }
        Ok(g)
    }

    pub fn matches(&self, s: &str, account: &str) -> bool {
        match_toks(&self.toks, s, account)
    }
}

fn match_toks(toks: &[Tok], s: &str, account: &str) -> bool {
    let Some((first, rest)) = toks.split_first() else {
        return s.is_empty();
    };
    match first {
        Tok::Lit(l) => s
            .strip_prefix(l.as_str())
            .is_some_and(|r| match_toks(rest, r, account)),
        // `${account}` stands for one path segment: a user name holding `/` would otherwise
        // reach into a deeper namespace (`alice/x` matching `${account}/*` on `alice/x/app`).
        Tok::Account => {
            !account.is_empty()
                && !account.contains('/')
                && s.strip_prefix(account)
                    .is_some_and(|r| match_toks(rest, r, account))
        }
        Tok::Star => {
            let segment_end = s.find('/').unwrap_or(s.len());
            (0..=segment_end)
                .filter(|&i| s.is_char_boundary(i))
                .any(|i| match_toks(rest, &s[i..], account))
        }
        Tok::DoubleStar => (0..=s.len())
            .filter(|&i| s.is_char_boundary(i))
            .any(|i| match_toks(rest, &s[i..], account)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::compile(p).expect("compile").matches(s, "alice")
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(m("org/*", "org/app"));
        assert!(!m("org/*", "org/team/app"));
        assert!(!m("org/*", "org"));
        assert!(m("*", "app"));
        assert!(!m("*", "org/app"));
        assert!(m("org/backend-*", "org/backend-api"));
        assert!(!m("org/backend-*", "org/frontend"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(m("**", "a/b/c"));
        assert!(m("org/**", "org/team/app"));
        assert!(!m("org/**", "other/app"));
        assert!(m("**/app", "x/y/app"));
        assert!(!m("**/app", "x/y/apps"));
    }

    #[test]
    fn exact_and_account() {
        assert!(m("org/app", "org/app"));
        assert!(!m("org/app", "org/app2"));
        assert!(m("users/${account}/*", "users/alice/app"));
        assert!(!m("users/${account}/*", "users/bob/app"));
        // A name is literal: a dot in the user or pattern is not "any character".
        assert!(!m("a.b", "axb"));
        assert!(!Glob::compile("${account}").expect("c").matches("", ""));
        let own = Glob::compile("${account}/*").expect("c");
        assert!(own.matches("bob/app", "bob"));
        assert!(
            !own.matches("alice/x/app", "alice/x"),
            "a '/' in a user name is not a segment"
        );
        let any = Glob::compile_flat("*").expect("c");
        assert!(any.matches("ci/bot", "ci/bot"), "account '*' is any user");
    }

    #[test]
    fn bad_patterns() {
        assert!(Glob::compile("a/***").is_err());
        assert!(Glob::compile("${user}/x").is_err());
    }
}
