//! Name globs (repositories, users, groups, OIDC claims): `*` within one path segment, `**`
//! across segments, and `${account}` standing for the caller's name. Compiled once; matching
//! runs in time linear in the name for a given pattern (no regex, so a user name can never
//! inject pattern syntax).
//!
//! In a repository glob `${account}` stands for whole path segments: it must sit between
//! slashes or the pattern's ends (`users/${account}/*`, `${account}/**`), so an account can
//! only ever be substituted as the segments it spells. An account of several segments (an OIDC
//! identity named `my-org/app` after its repository) thereby owns `my-org/app` and what lies
//! below, never `my-org/application` or `my-org/app2`; and `${account}/**` also matches the
//! account's own repository, as a CI job pushing `my-org/app` and `my-org/app/cache` expects.

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
    /// `P${account}/**` also matches `P${account}`: the account's repository itself.
    own: Option<Vec<Tok>>,
}

impl Glob {
    /// A repository glob: `${account}` must be whole path segments.
    pub fn compile(pattern: &str) -> Result<Self, String> {
        let mut g = Self::tokens(pattern)?;
        for (i, t) in g.toks.iter().enumerate() {
            if *t != Tok::Account {
                continue;
            }
            let before = i.checked_sub(1).map(|j| &g.toks[j]);
            let after = g.toks.get(i + 1);
            let starts = match before {
                None => true,
                Some(Tok::Lit(l)) => l.ends_with('/'),
                Some(_) => false,
            };
            let ends = match after {
                None => true,
                Some(Tok::Lit(l)) => l.starts_with('/'),
                Some(_) => false,
            };
            if !starts || !ends {
                return Err(format!(
                    "{pattern:?}: ${{account}} must be whole path segments, between slashes or the pattern's ends (e.g. \"users/${{account}}/*\" or \"${{account}}/**\")"
                ));
            }
        }
        if let [head @ .., Tok::Account, Tok::Lit(slash), Tok::DoubleStar] = g.toks.as_slice() {
            if slash == "/" {
                let mut own = head.to_vec();
                own.push(Tok::Account);
                g.own = Some(own);
            }
        }
        Ok(g)
    }

    fn tokens(pattern: &str) -> Result<Self, String> {
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
        Ok(Self { toks, own: None })
    }

    /// For globs over user and group names, which have no path segments: `*` matches anything.
    pub fn compile_flat(pattern: &str) -> Result<Self, String> {
        let mut g = Self::tokens(pattern)?;
        for t in &mut g.toks {
            if *t == Tok::Star {
                *t = Tok::DoubleStar;
            }
        }
        Ok(g)
    }

    pub fn matches(&self, s: &str, account: &str) -> bool {
        match_toks(&self.toks, s, account)
            || self
                .own
                .as_ref()
                .is_some_and(|own| match_toks(own, s, account))
    }

    /// The literal text before the first wildcard or variable, and whether the pattern is that
    /// text alone: what the shadowed-rule lint compares.
    pub fn literal_prefix(&self) -> (&str, bool) {
        match self.toks.as_slice() {
            [] => ("", true),
            [Tok::Lit(l)] => (l, true),
            [Tok::Lit(l), ..] => (l, false),
            _ => ("", false),
        }
    }

    /// The first path segment of every name this glob can match, when the pattern spells it
    /// out (`team/**`, `team/app`, `users/${account}/*`: `team`, `team`, `users`); `None`
    /// when a wildcard or `${account}` may stand in it (`team-*/x`, `**`, `${account}/**`).
    /// The rules' index files rules by it.
    pub fn first_segment(&self) -> Option<&str> {
        let (text, whole) = self.literal_prefix();
        match text.find('/') {
            Some(i) => Some(&text[..i]),
            None if whole => Some(text),
            None => None,
        }
    }

    /// Whether this glob matches every name `other` can match, as far as a cheap look can
    /// tell (`**`, the same pattern, or `P**` against a pattern that starts with `P`); false
    /// when unsure.
    pub fn covers(&self, other: &Glob) -> bool {
        if self == other {
            return true;
        }
        match self.toks.as_slice() {
            [Tok::DoubleStar] => true,
            [Tok::Star] => {
                let (text, whole) = other.literal_prefix();
                whole && !text.contains('/')
            }
            [Tok::Lit(l), Tok::DoubleStar] if self.own.is_none() => {
                other.literal_prefix().0.starts_with(l.as_str())
            }
            [Tok::Lit(l), Tok::Star] => {
                let (text, whole) = other.literal_prefix();
                whole
                    && text
                        .strip_prefix(l.as_str())
                        .is_some_and(|r| !r.contains('/'))
            }
            _ => false,
        }
    }
}

/// Matches in O(name × tokens) whatever the pattern: one pass over the name per token, keeping
/// the set of name positions the tokens so far can end at. A backtracking walk (what this was)
/// is exponential in the number of stars (`**a**a**a**b` against a long name), and a scope's
/// name and an ACL's or grant's pattern are both someone else's input.
fn match_toks(toks: &[Tok], s: &str, account: &str) -> bool {
    // The common patterns need no table: a literal, and a literal followed by `*` or `**`.
    match toks {
        [] => return s.is_empty(),
        [Tok::DoubleStar] => return true,
        [Tok::Star] => return !s.contains('/'),
        [Tok::Lit(l)] => return s == l,
        [Tok::Lit(l), Tok::DoubleStar] => return s.starts_with(l.as_str()),
        [Tok::Lit(l), Tok::Star] => {
            return s.strip_prefix(l.as_str()).is_some_and(|r| !r.contains('/'))
        }
        _ => {}
    }
    // An account of several segments takes part only as whole, non-empty segments (the
    // pattern's `${account}` sits between slashes: `Glob::compile`).
    let account_ok = !account.is_empty()
        && !account.starts_with('/')
        && !account.ends_with('/')
        && !account.contains("//");
    let bytes = s.as_bytes();
    let n = bytes.len();
    // at[p]: the tokens so far can match s[..p]. Positions are byte offsets on char boundaries.
    let mut at = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    at[0] = true;
    for tok in toks {
        next.iter_mut().for_each(|b| *b = false);
        match tok {
            Tok::Lit(l) => step_literal(&at, &mut next, s, l),
            // `${account}` stands for whole segments: `my-org/app` in `${account}/*` reaches
            // `my-org/app/x`, which is its own; the pattern cannot glue it to more text.
            Tok::Account => {
                if account_ok {
                    step_literal(&at, &mut next, s, account)
                }
            }
            Tok::Star | Tok::DoubleStar => {
                let crosses = *tok == Tok::DoubleStar;
                let mut open = false;
                for p in 0..=n {
                    open |= at[p];
                    if open && s.is_char_boundary(p) {
                        next[p] = true;
                    }
                    if !crosses && p < n && bytes[p] == b'/' {
                        open = false;
                    }
                }
            }
        }
        std::mem::swap(&mut at, &mut next);
        if !at.contains(&true) {
            return false;
        }
    }
    at[n]
}

/// Marks `p + lit.len()` for every reachable `p` where `s[p..]` starts with `lit`.
fn step_literal(at: &[bool], next: &mut [bool], s: &str, lit: &str) {
    let bytes = s.as_bytes();
    let lit = lit.as_bytes();
    for (p, _) in at.iter().enumerate().filter(|(_, &on)| on) {
        if bytes.get(p..p + lit.len()) == Some(lit) {
            next[p + lit.len()] = true;
        }
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
            !own.matches("bob", "bob"),
            "only ${{account}}/** takes the account itself"
        );
        let any = Glob::compile_flat("*").expect("c");
        assert!(any.matches("ci/bot", "ci/bot"), "account '*' is any user");
    }

    #[test]
    fn many_stars_take_linear_time() {
        // A backtracking matcher takes about a second on this at 50 characters.
        let pattern = format!("{}b", "**a".repeat(84));
        let g = Glob::compile(&pattern).expect("c");
        let name = "a".repeat(255);
        let t = std::time::Instant::now();
        assert!(!g.matches(&name, "alice"));
        let flat = Glob::compile(&format!("{}b", "*a".repeat(60))).expect("c");
        assert!(!flat.matches(&name, "alice"));
        assert!(flat.matches(&format!("{}b", "a".repeat(200)), "alice"));
        // Well under a millisecond optimised; this crate's tests run unoptimised beside
        // bcrypt-heavy ones, so the bound is loose. Backtracking took seconds here.
        assert!(
            t.elapsed() < std::time::Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn stars_agree_with_a_reference() {
        // Every pattern over {a, /, *, **} up to 4 tokens against every name over {a, b, /}
        // up to 5 characters, against a plain recursive matcher.
        fn reference(p: &[&str], s: &str) -> bool {
            let Some((first, rest)) = p.split_first() else {
                return s.is_empty();
            };
            match *first {
                "**" => (0..=s.len()).any(|i| reference(rest, &s[i..])),
                "*" => {
                    let end = s.find('/').unwrap_or(s.len());
                    (0..=end).any(|i| reference(rest, &s[i..]))
                }
                lit => s.strip_prefix(lit).is_some_and(|r| reference(rest, r)),
            }
        }
        let pieces = ["a", "/", "*", "**", "ab"];
        let mut patterns: Vec<Vec<&str>> = vec![vec![]];
        for _ in 0..4 {
            let longer: Vec<Vec<&str>> = patterns
                .iter()
                .flat_map(|p| pieces.iter().map(move |x| [p.clone(), vec![*x]].concat()))
                .filter(|p| {
                    !p.windows(2)
                        .any(|w| w[0].starts_with('*') && w[1].starts_with('*'))
                })
                .collect();
            patterns.extend(longer);
        }
        let mut names = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| ["a", "b", "/"].iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        for p in &patterns {
            let g = Glob::compile(&p.concat()).expect("c");
            for n in &names {
                assert_eq!(
                    g.matches(n, "x"),
                    reference(p, n),
                    "{:?} on {n:?}",
                    p.concat()
                );
            }
        }
    }

    #[test]
    fn an_account_of_several_segments_owns_its_subtree_only() {
        let own = Glob::compile("${account}/**").expect("c");
        let job = "my-org/app";
        for name in ["my-org/app", "my-org/app/cache", "my-org/app/a/b"] {
            assert!(own.matches(name, job), "{name}");
        }
        for name in [
            "my-org/application",
            "my-org/app2",
            "my-org/other",
            "my-org",
            "my-org/ap",
        ] {
            assert!(!own.matches(name, job), "{name}");
        }
        let nested = Glob::compile("ci/${account}/*").expect("c");
        assert!(nested.matches("ci/my-org/app/x", job));
        assert!(!nested.matches("ci/my-org/app", job));
        assert!(!nested.matches("ci/my-org/app2/x", job));
        // Empty segments never substitute: `my-org/` is not `my-org/<anything>`'s owner.
        for bad in ["my-org/", "/app", "my-org//app"] {
            assert!(!own.matches("my-org/app/x", bad), "{bad}");
            assert!(!own.matches("my-org//app/x", bad), "{bad}");
        }
    }

    #[test]
    fn account_must_be_whole_segments() {
        for p in [
            "${account}-cache",
            "x${account}/*",
            "a/${account}x/b",
            "*${account}",
            "${account}*",
        ] {
            let err = Glob::compile(p).expect_err(p);
            assert!(err.contains("whole path segments"), "{err}");
        }
        for p in [
            "${account}",
            "${account}/**",
            "a/${account}",
            "a/${account}/b/*",
        ] {
            assert!(Glob::compile(p).is_ok(), "{p}");
        }
        // User and group globs have no segments: anything goes there.
        assert!(Glob::compile_flat("${account}-bots").is_ok());
    }

    #[test]
    fn covers_is_never_wrong_when_it_says_yes() {
        let c = |a: &str, b: &str| {
            Glob::compile(a)
                .expect(a)
                .covers(&Glob::compile(b).expect(b))
        };
        assert!(c("**", "team/${account}/**"));
        assert!(c("team/**", "team/x/*"));
        assert!(c("team/*", "team/app"));
        assert!(c("*", "app"));
        assert!(c("team/a", "team/a"));
        assert!(!c("team/*", "team/a/b"));
        assert!(!c("team/**", "team"));
        assert!(!c("team/*", "team/*/x"));
        assert!(!c("*", "team/app"));
        assert!(
            !c("${account}/**", "alice/x"),
            "depends on the caller: unsure"
        );
    }

    #[test]
    fn bad_patterns() {
        assert!(Glob::compile("a/***").is_err());
        assert!(Glob::compile("${user}/x").is_err());
    }
}
