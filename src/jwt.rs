//! The one JWT verification, for every token this process checks: the built-in registry's
//! (tokens this issuer signed, `token::TrustedKeys`) and the OIDC providers' ID tokens. The
//! security-critical steps live here once:
//!
//! 1. [`parse`]: three base64url parts; a JSON header whose `alg` is ES256, ES384 or RS256
//!    (never `none`, never HMAC, whose "key" would be a public key anyone has).
//! 2. The caller finds the key by the header's `kid` (a list, or a provider's key set).
//! 3. [`Parsed::verify`]: the key decides the algorithm, never the token (no RS256 signature
//!    checked against an EC key's bytes); the signature over the first two parts; only then
//!    the claims, as a JSON object.
//! 4. [`check_audience`] and [`check_times`]: `aud` (a string or an array), `exp` (required),
//!    `nbf` and `iat` as NumericDates (numbers, fractions allowed; anything else refuses the
//!    token), each with the caller's leeway.

use aws_lc_rs::signature::UnparsedPublicKey;
use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::{Alg, PublicKey};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JwtError {
    /// Not three base64url parts.
    Malformed,
    /// The header is not the JSON a JWT's is.
    Header,
    /// `alg` is not ES256, ES384 or RS256 (cut to 16 characters).
    Algorithm(String),
    /// The key found for the `kid` is of another algorithm than the header says.
    KeyAlgorithm,
    /// The signature is not base64url.
    SignatureEncoding,
    /// The signature does not verify.
    Signature,
    /// The payload is not a JSON object.
    Payload,
    /// `aud` is none of the accepted audiences.
    Audience,
    /// No `exp`.
    NoExp,
    Expired,
    NotYetValid,
    /// A date claim that is not a number.
    NotNumericDate(&'static str),
}

/// A token whose header was read, not yet verified.
pub(crate) struct Parsed<'a> {
    pub(crate) alg: Alg,
    pub(crate) kid: String,
    signed: &'a str,
    payload: &'a str,
    signature: &'a str,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Step 1: the parts and the header.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    let (signed, signature) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
    let (head, payload) = signed.split_once('.').ok_or(JwtError::Malformed)?;
    let head: Header = BASE64URL_NOPAD
        .decode(head.as_bytes())
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(JwtError::Header)?;
    let alg = Alg::from_name(&head.alg)
        .ok_or_else(|| JwtError::Algorithm(head.alg.chars().take(16).collect()))?;
    Ok(Parsed {
        alg,
        kid: head.kid.unwrap_or_default(),
        signed,
        payload,
        signature,
    })
}

impl Parsed<'_> {
    /// Step 3: the signature with `key`, then the claims.
    pub(crate) fn verify(&self, key: &PublicKey) -> Result<Map<String, Value>, JwtError> {
        if key.alg != self.alg {
            return Err(JwtError::KeyAlgorithm);
        }
        let signature = BASE64URL_NOPAD
            .decode(self.signature.as_bytes())
            .map_err(|_| JwtError::SignatureEncoding)?;
        UnparsedPublicKey::new(key.alg.verification(), key.raw())
            .verify(self.signed.as_bytes(), &signature)
            .map_err(|_| JwtError::Signature)?;
        BASE64URL_NOPAD
            .decode(self.payload.as_bytes())
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or(JwtError::Payload)
    }
}

/// `aud` holds one of `accepted`: a string equal to one, or an array with one.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    accepted: &[&str],
) -> Result<(), JwtError> {
    let ok = match claims.get("aud") {
        Some(Value::String(a)) => accepted.contains(&a.as_str()),
        Some(Value::Array(list)) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| accepted.contains(&a))),
        _ => false,
    };
    ok.then_some(()).ok_or(JwtError::Audience)
}

/// `exp`, `nbf` and `iat` against `now` (Unix seconds). The token is accepted until `exp` +
/// `exp_grace` seconds inclusive (`-1`: until the second before `exp`, for a token the access
/// token may not outlive), and from `nbf` - `nbf_leeway`. `iat` is not held to the clock, only
/// to being a number. Returns `exp`, a fraction of a second dropped.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    now: u64,
    exp_grace: i64,
    nbf_leeway: u64,
) -> Result<u64, JwtError> {
    let exp = numeric_date(claims, "exp")?.ok_or(JwtError::NoExp)?.floor();
    if now as f64 > exp + exp_grace as f64 {
        return Err(JwtError::Expired);
    }
    if numeric_date(claims, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(nbf_leeway) as f64) {
        return Err(JwtError::NotYetValid);
    }
    numeric_date(claims, "iat")?;
    Ok(exp as u64)
}

/// A NumericDate claim: a JSON number of seconds since the epoch, fractions included. One
/// that is present but not a number (a string, say) refuses the token: reading it as absent
/// would skip an `nbf` the signer meant.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map(Some)
            .ok_or(JwtError::NotNumericDate(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::seed_material;

    fn b64(v: &serde_json::Value) -> String {
        BASE64URL_NOPAD.encode(v.to_string().as_bytes())
    }

    /// A token signed by the seed key with `head` and `claims`.
    fn signed(head: serde_json::Value, claims: serde_json::Value) -> String {
        let keys = seed_material();
        let input = format!("{}.{}", b64(&head), b64(&claims));
        let sig = keys
            .signing_key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", BASE64URL_NOPAD.encode(&sig))
    }

    const NOW: u64 = 1_800_000_000;

    fn claims(extra: serde_json::Value) -> serde_json::Value {
        let mut c = serde_json::json!({"iss": "i", "aud": "svc", "exp": NOW + 60, "iat": NOW});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    }

    fn verify(token: &str) -> Result<u64, JwtError> {
        let key = seed_material().public;
        let parsed = parse(token)?;
        let c = parsed.verify(&key)?;
        check_audience(&c, &["svc"])?;
        check_times(&c, NOW, 0, 60)
    }

    #[test]
    fn a_good_token_verifies() {
        let t = signed(
            serde_json::json!({"alg": "ES256", "kid": "k"}),
            claims(serde_json::json!({})),
        );
        assert_eq!(verify(&t), Ok(NOW + 60));
        assert_eq!(parse(&t).map(|p| p.kid), Ok("k".to_string()));
    }

    #[test]
    fn the_known_bad_tokens_are_refused() {
        let good = claims(serde_json::json!({}));
        // alg none, and HMAC with the public key's bytes as its secret.
        let none = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "none"})),
            b64(&good)
        );
        assert_eq!(verify(&none), Err(JwtError::Algorithm("none".into())));
        let hs = signed(serde_json::json!({"alg": "HS256"}), good.clone());
        assert_eq!(verify(&hs), Err(JwtError::Algorithm("HS256".into())));
        // A header naming another algorithm than the key's.
        let rs = signed(serde_json::json!({"alg": "RS256"}), good.clone());
        assert_eq!(verify(&rs), Err(JwtError::KeyAlgorithm));
        // A changed payload.
        let t = signed(serde_json::json!({"alg": "ES256"}), good.clone());
        let (head, rest) = t.split_once('.').expect("parts");
        let (_, sig) = rest.split_once('.').expect("parts");
        let forged = format!(
            "{head}.{}.{sig}",
            b64(&claims(serde_json::json!({"aud": "svc", "sub": "root"})))
        );
        assert_eq!(verify(&forged), Err(JwtError::Signature));
        for (extra, want) in [
            (serde_json::json!({"aud": "other"}), JwtError::Audience),
            (serde_json::json!({"exp": NOW - 1}), JwtError::Expired),
            (
                serde_json::json!({"exp": null}),
                JwtError::NotNumericDate("exp"),
            ),
            (serde_json::json!({"nbf": NOW + 61}), JwtError::NotYetValid),
            (
                serde_json::json!({"nbf": format!("{NOW}")}),
                JwtError::NotNumericDate("nbf"),
            ),
            (
                serde_json::json!({"iat": "yesterday"}),
                JwtError::NotNumericDate("iat"),
            ),
        ] {
            let t = signed(serde_json::json!({"alg": "ES256"}), claims(extra.clone()));
            assert_eq!(verify(&t), Err(want), "{extra}");
        }
        let t = signed(
            serde_json::json!({"alg": "ES256"}),
            claims(serde_json::json!({"aud": ["a", "svc"]})),
        );
        assert_eq!(
            verify(&t),
            Ok(NOW + 60),
            "an array holding the audience is accepted"
        );
        assert_eq!(
            verify("e30.e30.c2ln"),
            Err(JwtError::Header),
            "a header without alg"
        );
        assert_eq!(verify("a.b"), Err(JwtError::Malformed));
        assert_eq!(verify("nodots"), Err(JwtError::Malformed));
    }

    #[test]
    fn grace_and_fractions() {
        let mut c = Map::new();
        c.insert("exp".into(), serde_json::json!(NOW as f64 + 0.5));
        assert_eq!(check_times(&c, NOW, 0, 0), Ok(NOW), "a fraction is dropped");
        assert_eq!(
            check_times(&c, NOW, -1, 0),
            Err(JwtError::Expired),
            "strict"
        );
        assert_eq!(
            check_times(&c, NOW + 60, 60, 0),
            Ok(NOW),
            "distribution's leeway"
        );
        assert_eq!(check_times(&c, NOW + 61, 60, 0), Err(JwtError::Expired));
    }
}
