//! Text in and out of the directory: filters filled with escaped values, attribute values
//! read ignoring the case of their names, DNs compared and group names taken from them.

use ldap3::SearchEntry;

/// A login name as a directory compares it (`caseIgnoreMatch`: case and surrounding spaces
/// ignored), for counting attempts.
pub(super) fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

/// A DN compared as text: lower case, no spaces around `,` and `=`.
pub(super) fn canonical_dn(dn: &str) -> String {
    let parts: Vec<String> = dn
        .split(',')
        .map(|rdn| {
            let (k, v) = rdn.split_once('=').unwrap_or((rdn, ""));
            format!("{}={}", k.trim(), v.trim()).to_lowercase()
        })
        .collect();
    parts.join(",")
}

/// Fills a filter's holes with values escaped for a filter (RFC 4515), in one pass: a value
/// that holds a hole's name is never filled again.
pub(super) fn fill(template: &str, holes: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    'scan: while !rest.is_empty() {
        for (hole, value) in holes {
            if let Some(after) = rest.strip_prefix(hole) {
                out.push_str(&ldap3::ldap_escape(*value));
                rest = after;
                continue 'scan;
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// An attribute's values, its name matched ignoring case (servers answer in their own case).
pub(super) fn values<'e>(entry: &'e SearchEntry, attribute: &str) -> &'e [String] {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attribute))
        .map_or(&[], |(_, v)| v.as_slice())
}

pub(super) fn first<'e>(entry: &'e SearchEntry, attribute: &str) -> Option<&'e str> {
    values(entry, attribute)
        .first()
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A group's name from its DN in `memberOf`: the first RDN's value (`cn=dev\2Cops,ou=groups`
/// → `dev,ops`), its escapes (RFC 4514) undone.
pub(super) fn first_rdn(dn: &str) -> Option<String> {
    let (_, value) = dn.split_once('=')?;
    let mut out = Vec::new();
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' | b'+' => break,
            b'\\' => {
                let Some(next) = bytes.next() else { break };
                let hex = |c: u8| (c as char).to_digit(16);
                match hex(next) {
                    Some(hi) => {
                        let lo = bytes.next().and_then(hex)?;
                        out.push((hi * 16 + lo) as u8);
                    }
                    None => out.push(next),
                }
            }
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_in_one_pass() {
        let f = "(&(uid={username})(x={dn}))";
        assert_eq!(
            fill(f, &[("{username}", "*)(|(uid=*"), ("{dn}", "{username}")]),
            "(&(uid=\\2a\\29\\28|\\28uid=\\2a)(x={username}))"
        );
        assert_eq!(
            fill("(uid={username})", &[("{username}", "a\0b\\")]),
            "(uid=a\\00b\\5c)"
        );
    }

    #[test]
    fn dns_compare_without_case_or_spaces() {
        assert_eq!(
            canonical_dn("CN=Pushers, OU=Groups ,DC=corp"),
            "cn=pushers,ou=groups,dc=corp"
        );
        assert_eq!(fold("  Alice "), "alice");
    }

    #[test]
    fn group_names_come_from_the_first_rdn() {
        assert_eq!(first_rdn("cn=devs,ou=groups,dc=x").as_deref(), Some("devs"));
        assert_eq!(first_rdn("CN=dev\\2Cops,OU=g").as_deref(), Some("dev,ops"));
        assert_eq!(first_rdn("cn=a\\,b+uid=c,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn("cn=,dc=x"), None);
        assert_eq!(first_rdn("nodn"), None);
        assert_eq!(first_rdn("cn=bad\\2"), None);
    }
}
