//! Tokens read from outside: JWT headers (OIDC ID tokens, refresh-token-shaped passwords) and
//! the claims every verified token is held to (audience and times).

use proptest::prelude::*;

use super::{linear, text};
use crate::identity::refresh::looks_like;
use crate::jwt;

/// A claim's value of any JSON shape that times and audiences come in, and some they do not.
fn claim() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        (0u64..4_000_000_000).prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
        proptest::collection::vec("(registry.test|other|)", 0..4).prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
    ]
}

/// A time claim: an offset from now (mostly), or any claim value.
fn time() -> impl Strategy<Value = Result<i64, serde_json::Value>> {
    prop_oneof![
        3 => (-300i64..300).prop_map(Ok),
        1 => claim().prop_map(Err),
    ]
}

proptest! {
    /// Any `exp`, `nbf`, `iat` and `aud`: no panic; a token accepted has an `exp`, and is
    /// accepted no later than it (plus the grace) nor earlier than its `nbf` (less the leeway).
    #[test]
    fn prop_claims_never_panic_and_hold_the_times(
        exp in proptest::option::of(time()),
        nbf in proptest::option::of(time()),
        iat in proptest::option::of(time()),
        aud in proptest::option::of(claim()),
        now in 1_000_000u64..4_000_000_000,
        grace in -1i64..120,
        leeway in 0u64..120,
    ) {
        // Times mostly within minutes of `now`, where the comparisons decide.
        let at = |t: Result<i64, serde_json::Value>| match t {
            Ok(offset) => serde_json::Value::from(now as i64 + offset),
            Err(v) => v,
        };
        let mut claims = serde_json::Map::new();
        let (exp, nbf, iat) = (exp.map(at), nbf.map(at), iat.map(at));
        for (k, v) in [("exp", exp), ("nbf", nbf), ("iat", iat), ("aud", aud)] {
            if let Some(v) = v {
                claims.insert(k.into(), v);
            }
        }
        let _ = jwt::check_audience(&claims, &["registry.test"]);
        if let Ok(until) = jwt::check_times(&claims, now, grace, leeway) {
            let exp = claims["exp"].as_f64();
            prop_assert!(exp.is_some_and(|e| now as f64 <= e + grace as f64 && until as f64 <= e));
            if let Some(nbf) = claims.get("nbf").and_then(|v| v.as_f64()) {
                prop_assert!(nbf <= (now + leeway) as f64);
            }
        }
    }

    #[test]
    fn prop_jwt_never_panics(token in text(400)) {
        let _ = jwt::parse(&token);
        let _ = looks_like(&token);
    }

    /// A header with a known algorithm and any `kid` reads back as written.
    #[test]
    fn prop_jwt_header_round_trips(alg in "(ES256|RS256|ES384)", kid in "\\PC{0,40}") {
        let head = serde_json::json!({"alg": alg, "kid": kid, "typ": "JWT"});
        let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
        let token = format!("{}.{}.{}", b64(head.to_string().as_bytes()), b64(b"{}"), b64(b"sig"));
        match jwt::parse(&token) {
            Ok(p) => prop_assert_eq!(p.kid, kid),
            Err(e) => prop_assert!(false, "{alg}: {e:?}"),
        }
    }
}

#[test]
fn jwt_parsing_is_linear() {
    linear("eyJhbGciOi", |s| {
        let _ = jwt::parse(&format!("{s}.{s}.{s}"));
    });
}
