//! Key identifiers: the libtrust `kid` that distribution 2.x matches against its
//! `rootcertbundle`, and the RFC 7638 thumbprint that distribution 3.1+ computes.

use aws_lc_rs::digest;
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};

/// The signing algorithm a key's type decides: P-256 → ES256, P-384 → ES384, RSA → RS256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    ES256,
    ES384,
    RS256,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::RS256 => "RS256",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [Self::ES256, Self::ES384, Self::RS256]
            .into_iter()
            .find(|a| a.name() == name)
    }

    /// What the key is, for messages.
    pub fn key_type(self) -> &'static str {
        match self {
            Self::ES256 => "an EC P-256 key",
            Self::ES384 => "an EC P-384 key",
            Self::RS256 => "an RSA key",
        }
    }

    pub(crate) fn verification(self) -> &'static dyn aws_lc_rs::signature::VerificationAlgorithm {
        use aws_lc_rs::signature as sig;
        match self {
            Self::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Self::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            Self::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        }
    }
}

/// A public key of any supported type: its algorithm, the key as verifiers take it (the EC
/// point uncompressed, or RSA's PKCS#1 `RSAPublicKey` DER) and its SubjectPublicKeyInfo DER,
/// which the libtrust kid hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub alg: Alg,
    raw: Vec<u8>,
    spki: Vec<u8>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({}, {})", self.alg.name(), self.libtrust_kid())
    }
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER of a big-endian unsigned number.
fn der_uint(n: &[u8]) -> Vec<u8> {
    let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(n.len() + 1);
    if n.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(&n);
    der(0x02, &content)
}

impl PublicKey {
    /// From what verifiers take (see the type), building the SPKI as Go's
    /// `x509.MarshalPKIXPublicKey` writes it.
    pub fn from_raw(alg: Alg, raw: &[u8]) -> Self {
        let algorithm = match alg {
            Alg::ES256 => [der(0x06, OID_EC_PUBLIC_KEY), der(0x06, OID_P256)].concat(),
            Alg::ES384 => [der(0x06, OID_EC_PUBLIC_KEY), der(0x06, OID_P384)].concat(),
            Alg::RS256 => [der(0x06, OID_RSA), der(0x05, &[])].concat(),
        };
        let bits = [&[0u8][..], raw].concat();
        let spki = der(0x30, &[der(0x30, &algorithm), der(0x03, &bits)].concat());
        Self {
            alg,
            raw: raw.to_vec(),
            spki,
        }
    }

    /// From a SubjectPublicKeyInfo (a certificate's): EC P-256, EC P-384 or RSA of 2048 bits
    /// or more; anything else is an error saying what it is.
    pub fn from_spki(spki_der: &[u8]) -> Result<Self, String> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as Parsed;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| format!("its public key is unreadable ({e})"))?;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.as_bytes().to_vec());
        let alg = match spki.parsed() {
            Ok(Parsed::EC(_)) if curve.as_deref() == Some(OID_P256) => Alg::ES256,
            Ok(Parsed::EC(_)) if curve.as_deref() == Some(OID_P384) => Alg::ES384,
            Ok(Parsed::RSA(rsa)) => {
                let bits = rsa.key_size();
                if bits < 2048 {
                    return Err(format!(
                        "its RSA key has {bits} bits; registries and this issuer need 2048 or more"
                    ));
                }
                Alg::RS256
            }
            _ => {
                return Err(
                    "its public key is not EC P-256, EC P-384 or RSA (ES256, ES384, RS256)".into(),
                )
            }
        };
        Ok(Self {
            alg,
            raw: spki.subject_public_key.data.to_vec(),
            spki: spki_der.to_vec(),
        })
    }

    /// An RSA key from its JWK members (big-endian modulus and exponent).
    pub fn rsa(n: &[u8], e: &[u8]) -> Self {
        Self::from_raw(Alg::RS256, &der(0x30, &[der_uint(n), der_uint(e)].concat()))
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// libtrust key id: SHA-256 of the SPKI DER, first 30 bytes, base32, in 12 groups of 4.
    pub fn libtrust_kid(&self) -> String {
        let hash = digest::digest(&digest::SHA256, &self.spki);
        let b32 = BASE32_NOPAD.encode(&hash.as_ref()[..30]);
        let groups: Vec<&str> = (0..12).map(|i| &b32[i * 4..i * 4 + 4]).collect();
        groups.join(":")
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url) of any key type: the required members in
    /// lexical order, no spaces (what distribution 3.1+ keys bundle certificates by).
    pub fn jwk_thumbprint(&self) -> String {
        let b64 = |b: &[u8]| BASE64URL_NOPAD.encode(b);
        let canonical = match (self.ec_xy(), self.rsa_ne()) {
            (Some((x, y)), _) => format!(
                r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#,
                if self.alg == Alg::ES384 {
                    "P-384"
                } else {
                    "P-256"
                },
                b64(x),
                b64(y)
            ),
            (None, Some((n, e))) => {
                format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64(&e), b64(&n))
            }
            (None, None) => String::new(),
        };
        b64(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// An EC key's coordinates.
    pub fn ec_xy(&self) -> Option<(&[u8], &[u8])> {
        if self.alg == Alg::RS256 || self.raw.first() != Some(&0x04) {
            return None;
        }
        let half = (self.raw.len() - 1) / 2;
        Some((&self.raw[1..1 + half], &self.raw[1 + half..]))
    }

    /// An RSA key's modulus and exponent (big-endian, no leading zeros).
    pub fn rsa_ne(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        use x509_parser::prelude::FromDer;
        use x509_parser::public_key::PublicKey as Parsed;
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&self.spki).ok()?;
        match spki.parsed().ok()? {
            Parsed::RSA(rsa) => {
                let strip = |b: &[u8]| b.iter().copied().skip_while(|x| *x == 0).collect();
                Some((strip(rsa.modulus), strip(rsa.exponent)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER prefix of a P-256 SubjectPublicKeyInfo with an uncompressed point, as Go's
    /// `x509.MarshalPKIXPublicKey` writes it: SEQUENCE { SEQUENCE { id-ecPublicKey,
    /// prime256v1 }, BIT STRING (66 bytes) }.
    const P256_SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];

    fn key(x: &str, y: &str) -> PublicKey {
        let x = BASE64URL_NOPAD.decode(x.as_bytes()).expect("x");
        let y = BASE64URL_NOPAD.decode(y.as_bytes()).expect("y");
        PublicKey::from_raw(Alg::ES256, &[&[4u8][..], &x, &y].concat())
    }

    // protocol-notes §4: the development key of seed 003.
    #[test]
    fn seed_003_development_key_vectors() {
        let k = key(
            "M0dEJVuRp9liKUVzBbBq2cLOUq5PIN-AoxmClqYFQY4",
            "_FSH0hcMOBa19WzvxRW7NF9cpFeHe-3BwVvpx8b196Q",
        );
        assert_eq!(k.spki.len(), 91);
        assert_eq!(
            k.spki[..26],
            P256_SPKI_PREFIX,
            "Go's encoding, byte for byte"
        );
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

    /// The generic SPKI builder writes what the P-256 prefix does, and what certificates hold.
    #[test]
    fn public_keys_of_every_type_round_trip() {
        let k = key(
            "M0dEJVuRp9liKUVzBbBq2cLOUq5PIN-AoxmClqYFQY4",
            "_FSH0hcMOBa19WzvxRW7NF9cpFeHe-3BwVvpx8b196Q",
        );
        assert_eq!(PublicKey::from_spki(&k.spki), Ok(k));
        for t in [
            super::super::generate::KeyType::P384,
            super::super::generate::KeyType::Rsa,
        ] {
            let g = super::super::generate::generate_typed("iss", 30, t).expect("generate");
            let (_, pem) = x509_parser::pem::parse_x509_pem(g.cert_pem.as_bytes()).expect("pem");
            let cert = pem.parse_x509().expect("x509");
            let from_cert = PublicKey::from_spki(cert.public_key().raw).expect("spki");
            // Rebuilt from the raw key (or from n and e) it is the same SPKI, so the same kid.
            let rebuilt = match from_cert.rsa_ne() {
                Some((n, e)) => PublicKey::rsa(&n, &e),
                None => PublicKey::from_raw(from_cert.alg, from_cert.raw()),
            };
            assert_eq!(rebuilt, from_cert, "{t:?}");
            assert_eq!(from_cert.libtrust_kid(), g.kid);
        }
    }

    /// RFC 7638 §3.1's RSA example, and the P-256 vectors above through the generic type.
    #[test]
    fn thumbprints_of_every_type() {
        let n = BASE64URL_NOPAD
            .decode(
                concat!(
                    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tS",
                    "oc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65",
                    "YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyr",
                    "dkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzK",
                    "nqDKgw"
                )
                .as_bytes(),
            )
            .expect("n");
        let rsa = PublicKey::rsa(&n, &[1, 0, 1]);
        assert_eq!(
            rsa.jwk_thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let p256 = key(
            "M0dEJVuRp9liKUVzBbBq2cLOUq5PIN-AoxmClqYFQY4",
            "_FSH0hcMOBa19WzvxRW7NF9cpFeHe-3BwVvpx8b196Q",
        );
        assert_eq!(
            p256.jwk_thumbprint(),
            "-I78-Do6Qpz1kdOEZ4z5o66I35bX4XqDz6E-VEWeGXU"
        );
    }
}
