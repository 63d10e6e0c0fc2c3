//! Names people read: users, groups and grants. A name that looks like another is how an
//! attacker hides (a zero-width space inside `admin`, a right-to-left override that prints
//! `ci-bot` for another name, `Admin` beside `admin`): names are kept in Unicode NFC, may not
//! hold format characters (zero-width, bidi controls) or control characters, and two names
//! that differ only in case or in compatibility forms (`ﬁ` and `fi`, full-width letters)
//! cannot both exist. Letters of different scripts that look alike (Latin and Cyrillic `a`)
//! are different names: telling them apart needs Unicode's confusables table, not a rule.
//! The rule, as the CLI's help and the docs state it: 1–128 bytes, no ':', '/', control or
//! format characters, no surrounding spaces, not equal to an existing name ignoring case and
//! compatibility forms.

use unicode_normalization::UnicodeNormalization;

use super::StoreError;

/// The rule in one line, for errors and the CLI's help.
pub const RULE: &str = "1-128 bytes, no ':', '/', control or format (zero-width, bidi) \
                        characters, no surrounding spaces, and not the same as an existing \
                        name ignoring case and look-alike compatibility forms";

/// Unicode's format characters (general category Cf): invisible, or reordering what follows.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{890}'..='\u{891}'
        | '\u{8e2}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}'
        | '\u{110bd}' | '\u{110cd}' | '\u{13430}'..='\u{1343f}' | '\u{1bca0}'..='\u{1bca3}'
        | '\u{1d173}'..='\u{1d17a}' | '\u{e0001}' | '\u{e0020}'..='\u{e007f}')
}

/// Whether the store could hold `name` (cheap: the request path's filter before a query).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.trim() == name
        && !name
            .chars()
            .any(|c| c.is_control() || c == ':' || c == '/' || is_format(c))
}

/// The name as stored (NFC), or why it cannot be one.
pub(super) fn checked(what: &str, name: &str) -> Result<String, StoreError> {
    let nfc: String = name.nfc().collect();
    if !valid_name(&nfc) {
        return Err(StoreError::Invalid(format!(
            "{what} name {}: {RULE}",
            shown_quoted(name)
        )));
    }
    Ok(nfc)
}

/// What two names must not share: NFKC of the lower case, so `Alice`, `ALICE` and `ａｌｉｃｅ`
/// are one name.
pub fn fold(name: &str) -> String {
    let lower: String = name.nfkc().collect::<String>().to_lowercase();
    lower.nfkc().collect()
}

/// A name for a terminal or a log: control and format characters escaped (`\u{202e}`), so a
/// name cannot rewrite the line it is printed on.
pub fn shown(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_control() || is_format(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

fn shown_quoted(name: &str) -> String {
    format!("{:?}", shown(name).chars().take(140).collect::<String>())
}

/// A grant's name glob: no control or format characters (the rest is the glob's grammar).
pub(super) fn check_grant_name(name: &str) -> Result<(), StoreError> {
    if name.chars().any(|c| c.is_control() || is_format(c)) {
        return Err(StoreError::Invalid(format!(
            "name {}: no control or format (zero-width, bidi) characters",
            shown_quoted(name)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_reordering_characters_are_refused() {
        for bad in [
            "ad\u{200b}min",
            "ci\u{202e}nimda",
            "\u{feff}bob",
            "a\u{2066}b",
            "a\nb",
        ] {
            assert!(checked("user", bad).is_err(), "{bad:?}");
        }
        assert!(checked("user", "ci-bot@example.org").is_ok());
        assert!(checked("user", "zoë").is_ok());
    }

    #[test]
    fn names_are_kept_in_nfc_and_folded_for_comparison() {
        // "e" + combining acute is stored as the one character é.
        assert_eq!(checked("user", "cafe\u{301}").expect("ok"), "café");
        assert_eq!(fold("Alice"), fold("alice"));
        assert_eq!(fold("ＡＬＩＣＥ"), fold("alice"));
        assert_eq!(fold("ﬁle"), fold("file"));
        assert_ne!(fold("alice"), fold("alicia"));
    }

    #[test]
    fn shown_escapes_what_a_terminal_would_obey() {
        assert_eq!(shown("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(shown("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(shown("plain"), "plain");
    }
}
