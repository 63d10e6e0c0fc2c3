//! Tokens read from outside: JWT headers (OIDC ID tokens, refresh-token-shaped passwords).

use proptest::prelude::*;

use super::{linear, text};
use crate::identity::refresh::looks_like;
use crate::jwt;

proptest! {
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
