//! The scope's parts matched byte by byte: the resource type, an action, and distribution's
//! repository name grammar (an optional `host[:port]/` included). Every token request parses
//! its scopes, and the three regexes these replace (one with captures) cost about half of that
//! parse (docs/speed.md); the tests below hold each function to its regex.

/// `[a-z0-9]+` with an optional `(class)`, `[a-zA-Z0-9]+`: the type without its class.
pub(super) fn resource_type(s: &str) -> Option<&str> {
    let (ty, class) = match s.split_once('(') {
        Some((ty, rest)) => (ty, Some(rest.strip_suffix(')')?)),
        None => (s, None),
    };
    let lower = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if ty.is_empty() || !ty.bytes().all(lower) {
        return None;
    }
    match class {
        Some(c) if c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric()) => None,
        _ => Some(ty),
    }
}

/// `*`, or `[a-z][a-z0-9_-]*`.
pub(super) fn is_action(a: &str) -> bool {
    match a.as_bytes().split_first() {
        Some((b'*', [])) => true,
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.iter().all(|&b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                })
        }
        None => false,
    }
}

/// distribution's repository name grammar (an optional `host[:port]/` prefix included), at most
/// 255 bytes.
pub fn is_repository_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let mut parts = name.as_bytes().split(|&b| b == b'/');
    let first = parts.next().unwrap_or_default();
    let more = name.contains('/');
    parts.all(is_component) && (is_component(first) || (more && is_domain(first)))
}

/// A path component: `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`.
fn is_component(c: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run = i;
        while i < c.len() && alnum(c[i]) {
            i += 1;
        }
        if i == run {
            return false;
        }
        if i == c.len() {
            return true;
        }
        let sep = i;
        while i < c.len() && !alnum(c[i]) {
            i += 1;
        }
        match &c[sep..i] {
            b"." | b"_" | b"__" => {}
            dashes if dashes.iter().all(|&b| b == b'-') => {}
            _ => return false,
        }
    }
}

/// The first component as a host: `localhost`, a name with a dot, or either with a `:port`.
fn is_domain(d: &[u8]) -> bool {
    if d == b"localhost" {
        return true;
    }
    let (host, port) = match d.iter().position(|&b| b == b':') {
        Some(i) => (&d[..i], Some(&d[i + 1..])),
        None => (d, None),
    };
    if port.is_some_and(|p| p.is_empty() || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    let mut labels = 0;
    for label in host.split(|&b| b == b'.') {
        if !is_host_label(label) {
            return false;
        }
        labels += 1;
    }
    labels >= 2 || port.is_some()
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_host_label(l: &[u8]) -> bool {
    match (l.first(), l.last()) {
        (Some(a), Some(z)) => {
            a.is_ascii_alphanumeric()
                && z.is_ascii_alphanumeric()
                && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;
    use std::sync::LazyLock;

    // The regexes these functions replace, as the scope parser used them.
    static RESOURCE_TYPE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^([a-z0-9]+)(?:\(([a-zA-Z0-9]+)\))?$").expect("regex"));
    static ACTION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(?:\*|[a-z][a-z0-9_-]*)$").expect("regex"));
    static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
        let component = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
        let dc = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"(?:{dc}(?:\.{dc})+(?::[0-9]+)?|{dc}:[0-9]+|localhost)");
        Regex::new(&format!(r"^(?:{domain}/)?{component}(?:/{component})*$")).expect("regex")
    });

    fn regex_type(s: &str) -> Option<&str> {
        Some(RESOURCE_TYPE.captures(s)?.get(1)?.as_str())
    }

    fn regex_repository(s: &str) -> bool {
        !s.is_empty() && s.len() <= 255 && REPOSITORY.is_match(s)
    }

    // Strings over the characters the grammars care about, so that near misses are common.
    const ALPHABET: &str = "[a-cA-C0-9._:/()*-]{0,24}|[a-z]{1,4}(\\.[a-z]{1,3})?(:[0-9]{1,4})?/[a-z0-9._-]{0,12}|localhost(:[0-9]{0,3})?/[a-z]{0,3}";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn repository_names_match_the_regex(s in ALPHABET) {
            prop_assert_eq!(is_repository_name(&s), regex_repository(&s), "{:?}", s);
        }

        #[test]
        fn resource_types_match_the_regex(s in "[a-cA-C0-9()*:-]{0,10}") {
            prop_assert_eq!(resource_type(&s), regex_type(&s), "{:?}", s);
        }

        #[test]
        fn actions_match_the_regex(s in "[a-cA-C0-9_*,-]{0,8}") {
            prop_assert_eq!(is_action(&s), ACTION.is_match(&s), "{:?}", s);
        }
    }

    #[test]
    fn names_at_the_edges_match_the_regex() {
        let long = "a".repeat(255);
        let too_long = "a".repeat(256);
        for s in [
            "",
            "a",
            "a/b",
            "a//b",
            "/a",
            "a/",
            "a__b",
            "a___b",
            "a--b",
            "a-_b",
            "a._b",
            "a.b",
            "A",
            "localhost/a",
            "localhost:5000/a",
            "localhost",
            "local-host/a",
            "host:5000/a",
            "host:/a",
            "host:50a/a",
            "a.b.c:1/x/y",
            "-a.b/c",
            "a-.b/c",
            "a.b-/c",
            "é/a",
            "a/é",
            "a.b/",
            "a.b",
            "ab:1",
            long.as_str(),
            too_long.as_str(),
        ] {
            assert_eq!(is_repository_name(s), regex_repository(s), "{s:?}");
        }
        for s in [
            "repository",
            "repository(plugin)",
            "a()",
            "a(b))",
            "a((b)",
            "(b)",
            "A",
        ] {
            assert_eq!(resource_type(s), regex_type(s), "{s:?}");
        }
    }
}
