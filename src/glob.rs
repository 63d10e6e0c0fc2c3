//! Name globs (repositories, users, groups, OIDC claims): `*` within one path segment, `**`
//! across segments, and `${account}` standing for the caller's name. Compiled once; matching
//! runs in time linear in the name for a given pattern (no regex, so a user name can never
//! inject pattern syntax).

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
    let account_ok = !account.is_empty() && !account.contains('/');
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
            // `${account}` stands for one path segment: a user name holding `/` would otherwise
            // reach into a deeper namespace (`alice/x` matching `${account}/*` on `alice/x/app`).
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
            !own.matches("alice/x/app", "alice/x"),
            "a '/' in a user name is not a segment"
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
    fn bad_patterns() {
        assert!(Glob::compile("a/***").is_err());
        assert!(Glob::compile("${user}/x").is_err());
    }
}
