//! The realm's input: scopes, the Basic header, and the forwarding headers.

use poem::http::header;
use poem::Request;
use proptest::prelude::*;

use super::{linear, text};
use crate::http::client::{client_address, forwarded_for};
use crate::http::request::basic_credentials;
use crate::scope::Scope;

/// A scope the distribution spec's grammar allows: `repository:` a valid name, or another
/// type; actions distinct.
fn valid_scope() -> impl Strategy<Value = String> {
    // Within the grammar's 255 bytes: 3 components of at most 36.
    let component = "[a-z0-9]{1,8}(([._]|__|-{1,4})[a-z0-9]{1,8}){0,3}";
    let name = proptest::collection::vec(component, 1..4).prop_map(|c| c.join("/"));
    let actions = proptest::sample::subsequence(vec!["pull", "push", "delete", "*"], 1..4);
    ("(repository|registry|[a-z][a-z0-9]{0,6})", name, actions)
        .prop_map(|(t, n, a)| format!("{t}:{n}:{}", a.join(",")))
}

proptest! {
    #[test]
    fn prop_scope_never_panics(s in text(300)) {
        let _ = Scope::parse(&s);
        let _ = Scope::parse_all([s.as_str()], 64);
    }

    #[test]
    fn prop_scope_round_trips(s in valid_scope()) {
        let parsed = Scope::parse(&s).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed.to_string(), s);
    }

    #[test]
    fn prop_basic_header_never_panics_and_round_trips(
        value in "[ -~]{0,200}",
        user in "[^:\\p{C}]{1,40}",
        password in "\\PC{0,40}",
    ) {
        let req = Request::builder().header(header::AUTHORIZATION, value.as_str()).finish();
        let _ = basic_credentials(&req);
        let encoded = data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes());
        let req = Request::builder()
            .header(header::AUTHORIZATION, format!("Basic {encoded}"))
            .finish();
        let creds = basic_credentials(&req)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?
            .ok_or_else(|| TestCaseError::fail("no credentials"))?;
        prop_assert_eq!((creds.username, creds.password), (user, password));
    }

    #[test]
    fn prop_forwarded_for_never_panics_and_reads_addresses(
        element in text(200),
        ip in any::<std::net::IpAddr>(),
        port in any::<u16>(),
    ) {
        let _ = forwarded_for(&element);
        let written = match ip {
            std::net::IpAddr::V4(a) => format!("proto=https;for={a}:{port}"),
            std::net::IpAddr::V6(a) => format!("for=\"[{a}]:{port}\";by=x"),
        };
        prop_assert_eq!(forwarded_for(&written), Some(ip));
    }

    #[test]
    fn prop_client_address_never_panics(xff in "[ -~]{0,300}", fwd in "[ -~]{0,300}") {
        let trusted: Vec<ipnet::IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let req = Request::builder()
            .header("x-forwarded-for", xff.as_str())
            .header(header::FORWARDED, fwd.as_str())
            .finish();
        let _ = client_address(&req, &trusted);
    }
}

#[test]
fn scope_lists_and_forwarding_headers_parse_in_linear_time() {
    linear("repository:org/app:pull,push ", |s| {
        let _ = Scope::parse_all([s], usize::MAX);
    });
    linear("a:b:c:", |s| {
        let _ = Scope::parse(s);
    });
    linear("for=1.2.3.4;", |s| {
        let _ = forwarded_for(s);
    });
}
