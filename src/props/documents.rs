//! Documents read from outside: token requests (GET query and POST form), config files through
//! validation, JWKS documents, an identity API's answers, the admin API's bodies, and the
//! registry's and the admin API's pagination.

use poem::http::{header, Method};
use poem::{Body, Request};
use proptest::prelude::*;

use super::text;
use crate::config::Config;
use crate::http::admin::{grants::GrantIn, groups, page, users};
use crate::http::request::{parse_get, parse_post};
use crate::identity::sources::upstream::read_answer;
use crate::keys::jwk::Jwks;
use crate::registry::handlers::listings::paginate;
use crate::store::MAX_PAGE;

/// Any JSON value, a few levels deep, with the keys identity APIs and JWKS use.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        text(20).prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                "(data|slug|groups|keys|kty|crv|x|y|n|e|kid|alg|x5c|name|password|generate|\
                 admin|disabled|expires_at|user|group|service|type|actions|[a-z]{1,4})",
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A config file of known sections and keys with values of any shape: what an operator's
/// typing can produce.
fn config_toml() -> impl Strategy<Value = String> {
    let key = "(issuer|service|services|ttl_seconds|algorithm|x5c|cert_file|key_file|htpasswd|\
               cache_ttl_seconds|cache_capacity|url|account|group|name|actions|ip|type|listen|\
               max_scopes|trusted_proxies|table_capacity|enabled|path|[a-z_]{1,8})";
    let value = prop_oneof![
        "\"[a-z0-9:/.*${}-]{0,20}\"",
        "-?[0-9]{1,12}",
        "(true|false)",
        "\\[(\"[a-z0-9/*.:]{0,8}\", ?){0,3}\\]",
    ];
    let line = (key, value).prop_map(|(k, v)| format!("{k} = {v}\n"));
    let section = (
        "(\\[token\\]|\\[keys\\]|\\[identity\\]|\\[\\[acl\\]\\]|\\[http\\]|\\[damping\\]|\\[audit\\]|\\[store\\]|\\[upstream\\]|\\[\\[oidc\\]\\]|\\[ldap\\]|\\[registry\\])",
        proptest::collection::vec(line, 0..6),
    )
        .prop_map(|(h, lines)| format!("{h}\n{}", lines.concat()));
    proptest::collection::vec(section, 0..6).prop_map(|s| s.concat())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

proptest! {
    /// Any query a URI can carry (every `%` sequence, every separator) and any Authorization
    /// value, as a GET; the same text as a POST's form body.
    #[test]
    fn prop_token_requests_never_panic(
        query in "([A-Za-z0-9&=+:/,._~*$!'()-]|%[0-9A-Fa-f]{0,2}|scope=|service=|offline_token=true&){0,120}",
        auth in "(Basic |Bearer )?[ -~]{0,80}",
    ) {
        let get = Request::builder()
            .uri_str(format!("/v1/registry?{query}"))
            .header(header::AUTHORIZATION, auth.as_str())
            .finish();
        if let Ok(tr) = parse_get(&get, 16) {
            prop_assert!(tr.scopes.len() <= 16);
        }
        let post = Request::builder()
            .method(Method::POST)
            .uri_str("/v1/registry")
            .content_type("application/x-www-form-urlencoded")
            .finish();
        let body = Body::from_string(query);
        if let Ok(tr) = runtime().block_on(parse_post(&post, body, 16)) {
            prop_assert!(tr.scopes.len() <= 16);
        }
    }

    /// Any config of known sections either loads or is refused with a message: no panic.
    #[test]
    fn prop_config_files_never_panic(toml in config_toml()) {
        use figment::providers::{Format, Toml};
        if let Ok(cfg) = figment::Figment::from(Toml::string(&toml)).extract::<Config>() {
            let _ = cfg.validate();
        }
    }

    #[test]
    fn prop_jwks_documents_never_panic(doc in json(), raw in text(300)) {
        for text in [doc.to_string(), raw] {
            if let Ok(set) = serde_json::from_str::<Jwks>(&text) {
                for key in &set.keys {
                    let _ = key.public_key();
                }
            }
        }
    }

    /// An identity API's answer gives a non-empty name from where it was told to look, or
    /// a reason.
    #[test]
    fn prop_identity_answers_never_panic(
        body in json(),
        name_at in "(/data/slug|/slug|/data/[a-z]{1,3}|/[a-z0-9~/]{0,8})",
        groups_at in proptest::option::of("(/data/data/groups|/groups|/[a-z0-9~/]{0,8})"),
    ) {
        if let Ok((name, groups)) = read_answer(&body, &name_at, groups_at.as_deref()) {
            prop_assert!(!name.is_empty());
            prop_assert_eq!(body.pointer(&name_at).and_then(|v| v.as_str()), Some(name.as_str()));
            prop_assert!(groups.is_empty() || groups_at.is_some());
        }
    }

    /// A page holds at most `n` names, each after `last`, in order; a next link exactly when
    /// names were left out.
    #[test]
    fn prop_pagination_stays_within_its_bounds(
        mut names in proptest::collection::vec("[a-z/]{1,6}", 0..40),
        n in proptest::option::of("([0-9]{1,3}|-1|x|)"),
        last in proptest::option::of("[a-z/]{0,6}"),
    ) {
        names.sort();
        names.dedup();
        let mut q = Vec::new();
        if let Some(n) = &n {
            q.push(("n".to_string(), n.clone()));
        }
        if let Some(l) = &last {
            q.push(("last".to_string(), l.clone()));
        }
        let after: Vec<String> = names
            .iter()
            .filter(|x| last.as_ref().is_none_or(|l| x.as_str() > l.as_str()))
            .cloned()
            .collect();
        if let Ok((page, link)) = paginate(names, &q, "/v2/_catalog") {
            let limit = n.as_deref().and_then(|n| n.parse::<usize>().ok()).unwrap_or(usize::MAX);
            prop_assert!(page.len() <= limit);
            prop_assert_eq!(&page[..], &after[..page.len()]);
            // n=0 is an empty page with nothing to continue from, so no link.
            prop_assert_eq!(link.is_some(), !page.is_empty() && page.len() < after.len());
        }
    }

    /// Any JSON body for the admin API's writes is read or refused, no panic; a user patch
    /// tells `"expires_at": null` (never expires) from leaving it out (unchanged).
    #[test]
    fn prop_admin_bodies_never_panic(body in json(), expires in proptest::option::of("(null|\"7d\")")) {
        let text = body.to_string();
        let _ = serde_json::from_str::<users::NewUser>(&text);
        let _ = serde_json::from_str::<groups::NewGroup>(&text);
        let _ = serde_json::from_str::<groups::NewMember>(&text);
        let _ = serde_json::from_str::<GrantIn>(&text);
        let patch = match &expires {
            Some(e) => format!("{{\"admin\": true, \"expires_at\": {e}}}"),
            None => "{\"admin\": true}".to_string(),
        };
        let read = serde_json::from_str::<users::Patch>(&patch)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let want = expires.map(|e| (e != "null").then(|| "7d".to_string()));
        prop_assert_eq!(read.expires_at, want);
    }

    /// The admin lists' `after` and `limit`: a limit from 1 to the maximum, or a refusal.
    #[test]
    fn prop_admin_pages_stay_within_their_bounds(
        query in "([A-Za-z0-9&=+._~-]|%[0-9A-Fa-f]{0,2}|limit=|after=){0,60}",
    ) {
        let req = Request::builder().uri_str(format!("/admin/v1/users?{query}")).finish();
        if let Ok((_, limit)) = page(&req) {
            prop_assert!((1..=MAX_PAGE).contains(&limit));
        }
    }
}
