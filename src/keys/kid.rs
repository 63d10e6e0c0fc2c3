//! Key identifiers: the libtrust `kid` that distribution 2.x matches against its
//! `rootcertbundle`, and the RFC 7638 thumbprint that distribution 3.1+ computes.

use aws_lc_rs::digest;
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};

/// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// A P-256 public key as its uncompressed SEC1 point (`04 || x || y`).
#[derive(Clone, PartialEq, Eq)]
pub struct P256PublicKey {
    point: [u8; 65],
}

impl std::fmt::Debug for P256PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P256PublicKey({})", self.libtrust_kid())
    }
}

impl P256PublicKey {
    /// Accepts an uncompressed SEC1 point; anything else (compressed, other curves) is `None`.
    pub fn from_uncompressed(bytes: &[u8]) -> Option<Self> {
        let point: [u8; 65] = bytes.try_into().ok()?;
        (point[0] == 0x04).then_some(Self { point })
    }

    pub fn from_xy(x: &[u8], y: &[u8]) -> Option<Self> {
        if x.len() != 32 || y.len() != 32 {
            return None;
        }
        let mut point = [0u8; 65];
        point[0] = 0x04;
        point[1..33].copy_from_slice(x);
        point[33..].copy_from_slice(y);
        Some(Self { point })
    }

    pub fn uncompressed(&self) -> &[u8; 65] {
        &self.point
    }

    pub fn x(&self) -> &[u8] {
        &self.point[1..33]
    }

    pub fn y(&self) -> &[u8] {
        &self.point[33..]
    }

    /// The SubjectPublicKeyInfo DER (91 bytes), exactly what Go's `x509.MarshalPKIXPublicKey` writes.
    pub fn spki_der(&self) -> Vec<u8> {
        let mut der = Vec::with_capacity(91);
        der.extend_from_slice(&P256_SPKI_PREFIX);
        der.extend_from_slice(&self.point);
        der
    }

    /// libtrust key id: SHA-256 of the SPKI DER, first 30 bytes, base32, in 12 groups of 4.
    pub fn libtrust_kid(&self) -> String {
        let hash = digest::digest(&digest::SHA256, &self.spki_der());
        let b32 = BASE32_NOPAD.encode(&hash.as_ref()[..30]);
        let groups: Vec<&str> = (0..12).map(|i| &b32[i * 4..i * 4 + 4]).collect();
        groups.join(":")
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url): members in lexical order, no spaces.
    pub fn jwk_thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            BASE64URL_NOPAD.encode(self.x()),
            BASE64URL_NOPAD.encode(self.y())
        );
        BASE64URL_NOPAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(x: &str, y: &str) -> P256PublicKey {
        let x = BASE64URL_NOPAD.decode(x.as_bytes()).expect("x");
        let y = BASE64URL_NOPAD.decode(y.as_bytes()).expect("y");
        P256PublicKey::from_xy(&x, &y).expect("point")
    }

    // protocol-notes §4: the development key of seed 003.
    #[test]
    fn seed_003_development_key_vectors() {
        let k = key(
            "M0dEJVuRp9liKUVzBbBq2cLOUq5PIN-AoxmClqYFQY4",
            "_FSH0hcMOBa19WzvxRW7NF9cpFeHe-3BwVvpx8b196Q",
        );
        assert_eq!(k.spki_der().len(), 91);
        assert_eq!(
            k.libtrust_kid(),
            "PF3H:26FR:LYS3:TIYU:2JUI:A2HE:7ZXT:G3B5:HX74:5UEB:SNU2:B5JL"
        );
        assert_eq!(
            k.jwk_thumbprint(),
            "-I78-Do6Qpz1kdOEZ4z5o66I35bX4XqDz6E-VEWeGXU"
        );
    }

    // protocol-notes §4: the distribution spec's example JWK.
    #[test]
    fn distribution_spec_example_jwk_vectors() {
        let k = key(
            "m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q",
            "dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc",
        );
        assert_eq!(
            k.libtrust_kid(),
            "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6"
        );
        assert_eq!(
            k.jwk_thumbprint(),
            "8qjioA3ZA7ti2JIE7c-U8smBFuZolQZvhSHDPU3hhB8"
        );
    }

    #[test]
    fn rejects_compressed_and_short_points() {
        assert!(P256PublicKey::from_uncompressed(&[0x02; 33]).is_none());
        let mut p = [0u8; 65];
        assert!(P256PublicKey::from_uncompressed(&p).is_none());
        p[0] = 4;
        assert!(P256PublicKey::from_uncompressed(&p).is_some());
    }
}
