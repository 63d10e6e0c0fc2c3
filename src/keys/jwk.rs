//! The public half of the signing key as a JWK / JWKS, as distribution 3.x reads it
//! (`auth.token.jwks`) and as open-balena's tooling writes `<issuer>.jwks.json`.

use aws_lc_rs::digest;
use data_encoding::BASE64URL_NOPAD;
use serde::{Deserialize, Serialize};

use super::P256PublicKey;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
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
    pub fn new(public: &P256PublicKey, kid: &str, cert_der: Option<&[u8]>) -> Self {
        Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: BASE64URL_NOPAD.encode(public.x()),
            y: BASE64URL_NOPAD.encode(public.y()),
            use_: "sig".into(),
            alg: "ES256".into(),
            kid: kid.into(),
            x5t: cert_der.map(|der| {
                BASE64URL_NOPAD
                    .encode(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref())
            }),
        }
    }

    pub fn public_key(&self) -> Option<P256PublicKey> {
        if self.kty != "EC" || self.crv != "P-256" {
            return None;
        }
        let x = BASE64URL_NOPAD.decode(self.x.as_bytes()).ok()?;
        let y = BASE64URL_NOPAD.decode(self.y.as_bytes()).ok()?;
        P256PublicKey::from_xy(&x, &y)
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
        assert_eq!(jwk.x, "M0dEJVuRp9liKUVzBbBq2cLOUq5PIN-AoxmClqYFQY4");
        assert_eq!(jwk.y, "_FSH0hcMOBa19WzvxRW7NF9cpFeHe-3BwVvpx8b196Q");
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
}
