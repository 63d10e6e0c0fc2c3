//! The public half of the signing key as a JWK / JWKS, as distribution 3.x reads it
//! (`auth.token.jwks`) and as open-balena's tooling writes `<issuer>.jwks.json`.

use aws_lc_rs::digest;
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};

use super::{Alg, PublicKey};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    /// EC keys: the curve and the point.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub y: Option<String>,
    /// RSA keys: modulus and exponent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub e: Option<String>,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
    pub kid: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub x5t: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// `x5t` is the base64url SHA-1 of the certificate DER (RFC 7517 §4.8).
    pub fn new(public: &PublicKey, kid: &str, cert_der: Option<&[u8]>) -> Self {
        let b64 = |b: &[u8]| Some(BASE64URL_NOPAD.encode(b));
        let (mut crv, mut x, mut y, mut n, mut e) = (None, None, None, None, None);
        if let Some((px, py)) = public.ec_xy() {
            crv = Some(
                if public.alg == Alg::ES384 {
                    "P-384"
                } else {
                    "P-256"
                }
                .to_string(),
            );
            (x, y) = (b64(px), b64(py));
        } else if let Some((rn, re)) = public.rsa_ne() {
            (n, e) = (b64(&rn), b64(&re));
        }
        Self {
            kty: if public.alg == Alg::RS256 {
                "RSA"
            } else {
                "EC"
            }
            .into(),
            crv,
            x,
            y,
            n,
            e,
            use_: "sig".into(),
            alg: public.alg.name().into(),
            kid: kid.into(),
            x5t: cert_der.map(|der| {
                BASE64URL_NOPAD
                    .encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
            }),
        }
    }

    /// The key this JWK describes (EC P-256, P-384 or RSA), if it is one of those.
    pub fn public_key(&self) -> Option<PublicKey> {
        let d = |s: &Option<String>| BASE64URL_NOPAD.decode(s.as_ref()?.as_bytes()).ok();
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some(crv)) => {
                let (alg, size) = match crv {
                    "P-256" => (Alg::ES256, 32),
                    "P-384" => (Alg::ES384, 48),
                    _ => return None,
                };
                let (x, y) = (d(&self.x)?, d(&self.y)?);
                if x.len() != size || y.len() != size {
                    return None;
                }
                Some(PublicKey::from_raw(alg, &[&[4u8][..], &x, &y].concat()))
            }
            ("RSA", _) => Some(PublicKey::rsa(&d(&self.n)?, &d(&self.e)?)),
            _ => None,
        }
    }
}

impl Jwks {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{\"keys\":[]}".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::seed_material;

    #[test]
    fn seed_jwk_matches_protocol_notes() {
        let m = seed_material();
        let jwk = m.jwk();
        assert_eq!(
            jwk.x.as_deref(),
            Some("M0dEJVuRp9liKUVzBbBq2cLOUq5PIN-AoxmClqYFQY4")
        );
        assert_eq!(
            jwk.y.as_deref(),
            Some("_FSH0hcMOBa19WzvxRW7NF9cpFeHe-3BwVvpx8b196Q")
        );
        assert_eq!(jwk.kid, m.kid);
        assert_eq!(jwk.public_key().as_ref(), Some(&m.public));
        let json: serde_json::Value =
            serde_json::from_str(&Jwks { keys: vec![jwk] }.to_json()).expect("json");
        let k = &json["keys"][0];
        assert_eq!(k["use"], "sig");
        assert_eq!(k["alg"], "ES256");
        assert_eq!(
            k["x5t"].as_str().map(str::len),
            Some(27),
            "SHA-1 is 20 bytes"
        );
    }

    /// A point of the wrong size for its curve (compressed, short, another curve's) is no key.
    #[test]
    fn malformed_ec_points_are_refused() {
        let mut jwk = seed_material().jwk();
        let good = jwk.x.clone();
        jwk.x = Some(BASE64URL_NOPAD.encode(&[2u8; 31]));
        assert!(jwk.public_key().is_none(), "short x");
        jwk.x = good;
        jwk.y = None;
        assert!(jwk.public_key().is_none(), "no y (a compressed point)");
        let mut p384 = seed_material().jwk();
        p384.crv = Some("P-384".into());
        assert!(p384.public_key().is_none(), "P-256 coordinates under P-384");
    }
}
