//! Names and the files and settings that hold them: globs, htpasswd lines, store names, times.

use proptest::prelude::*;

use super::{linear, text};
use crate::glob::Glob;
use crate::identity::htpasswd::Htpasswd;
use crate::store;

/// A path segment of a repository name.
const SEGMENT: &str = "[a-z0-9]{1,8}";

proptest! {
    #[test]
    fn prop_glob_never_panics(pattern in text(120), name in text(120), account in text(40)) {
        if let Ok(g) = Glob::compile(&pattern) {
            let _ = g.matches(&name, &account);
        }
        if let Ok(g) = Glob::compile_flat(&pattern) {
            let _ = g.matches(&name, &account);
        }
    }

    /// A glob built from a name, some segments made `*` and a tail made `**`, matches that
    /// name (and a literal glob matches only itself).
    #[test]
    fn prop_glob_matches_the_names_it_was_built_from(
        segments in proptest::collection::vec(SEGMENT, 1..6),
        stars in proptest::collection::vec(any::<bool>(), 6),
        tail in 0usize..3,
    ) {
        let name = segments.join("/");
        let literal = Glob::compile(&name).map_err(TestCaseError::fail)?;
        prop_assert!(literal.matches(&name, "x"));
        let longer = format!("{name}x");
        prop_assert!(!literal.matches(&longer, "x"));
        let keep = segments.len().saturating_sub(tail).max(1);
        let mut pattern: Vec<String> = segments[..keep]
            .iter()
            .zip(&stars)
            .map(|(s, star)| if *star { "*".to_string() } else { s.clone() })
            .collect();
        if keep < segments.len() {
            pattern.push("**".into());
        }
        let glob = Glob::compile(&pattern.join("/")).map_err(TestCaseError::fail)?;
        prop_assert!(glob.matches(&name, "x"), "{} against {}", pattern.join("/"), name);
    }

    #[test]
    fn prop_htpasswd_never_panics(file in text(400)) {
        let _ = Htpasswd::parse(&file);
    }

    #[test]
    fn prop_names_and_times_never_panic(s in text(200)) {
        let _ = store::valid_name(&s);
        let _ = store::fold(&s);
        let _ = store::shown(&s);
        let _ = store::parse_within(&s);
        let _ = store::parse_time(&s);
        let _ = store::looks_generated(&s);
    }
}

#[test]
fn globs_and_htpasswd_files_are_linear() {
    let star = Glob::compile("**/a*b*c/**").expect("glob");
    linear("a/ab/abc/", |s| {
        let _ = star.matches(s, "x");
    });
    linear("user:$2y$10$abcdefghijklmnopqrstuu\n", |s| {
        let _ = Htpasswd::parse(s);
    });
}
