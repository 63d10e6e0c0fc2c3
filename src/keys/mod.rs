//! Key material: loading the signing certificate and key, checking they belong together,
//! computing the `kid`, and publishing the public half as a JWKS.

mod chain;
pub mod generate;
pub mod jwk;
pub mod kid;

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};

pub use chain::pem_encode;
use chain::{chain_pem, parse_chain};
pub use kid::{Alg, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the certificate is not usable: {0}")]
    Cert(String),
    #[error("the private key is not usable: {0}")]
    Key(String),
    #[error(
        "the private key does not belong to the certificate (key's kid {key_kid}, certificate's kid {cert_kid})"
    )]
    Mismatch { key_kid: String, cert_kid: String },
    #[error(
        "the given kid {given} differs from the kid computed from the certificate, {computed}"
    )]
    Kid { given: String, computed: String },
}

/// The private half: ECDSA (P-256, P-384) or RSA (PKCS#1 v1.5 with SHA-256).
pub enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl SigningKey {
    /// The JWS signature of `message`: ECDSA's fixed `r || s`, or RSA's modulus-sized block.
    pub fn sign(&self, rng: &SystemRandom, message: &[u8]) -> Option<Vec<u8>> {
        match self {
            Self::Ecdsa(k) => k.sign(rng, message).ok().map(|s| s.as_ref().to_vec()),
            Self::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, rng, message, &mut sig).ok()?;
                Some(sig)
            }
        }
    }
}

/// A loaded, verified signing identity: the certificate (and the chain above it), its key and
/// its libtrust kid.
pub struct KeyMaterial {
    pub signing_key: Arc<SigningKey>,
    pub public: PublicKey,
    pub kid: String,
    /// The signing (leaf) certificate.
    pub cert_der: Vec<u8>,
    /// Every certificate of the file, leaf first: what a token's `x5c` carries.
    pub chain_der: Vec<Vec<u8>>,
    /// The same chain as PEM: what a registry's `rootcertbundle` should hold.
    pub cert_pem: String,
    /// The signing key's public half alone, as a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC
    /// KEY-----`, what `openssl x509 -pubkey -noout` prints): for registries configured with
    /// one public key rather than a bundle or a JWKS.
    pub public_pem: String,
    /// When the whole chain is valid, in Unix seconds: the latest `notBefore` and the earliest
    /// `notAfter` of its certificates (a registry checks every one of them on the `x5c` path).
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KeyMaterial {
    /// `cert_pem` may be a chain: the first certificate is the signing one, then the
    /// intermediates (and, optionally, the CA) that issued it.
    pub fn load(
        cert_pem: &[u8],
        key_pem: &[u8],
        given_kid: Option<&str>,
    ) -> Result<Self, KeyError> {
        let chain = parse_chain(cert_pem).map_err(KeyError::Cert)?;
        let cert_public = chain.leaf_public;
        let (signing_key, key_public) = parse_key(key_pem)?;
        if key_public != cert_public {
            return Err(KeyError::Mismatch {
                key_kid: key_public.libtrust_kid(),
                cert_kid: cert_public.libtrust_kid(),
            });
        }
        let kid = cert_public.libtrust_kid();
        if let Some(given) = given_kid {
            if given != kid {
                return Err(KeyError::Kid {
                    given: given.to_string(),
                    computed: kid,
                });
            }
        }
        Ok(Self {
            signing_key: Arc::new(signing_key),
            public: cert_public,
            kid,
            cert_pem: chain_pem(&chain.der),
            public_pem: pem_encode("PUBLIC KEY", &chain.leaf_spki),
            cert_der: chain.der[0].clone(),
            chain_der: chain.der,
            not_before: chain.not_before,
            not_after: chain.not_after,
        })
    }

    pub fn jwk(&self) -> jwk::Jwk {
        jwk::Jwk::new(&self.public, &self.kid, Some(&self.cert_der))
    }

    /// The algorithm the key's type decides.
    pub fn alg(&self) -> Alg {
        self.public.alg
    }

    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.not_after < now_unix
    }

    /// Whether every certificate of the chain is valid throughout `from..=until` (Unix seconds).
    pub fn chain_valid(&self, from: i64, until: i64) -> bool {
        self.not_before <= from && until <= self.not_after
    }
}

/// A key that is published but does not sign: the next key (trusted by registries before it
/// signs) or the previous one (until the tokens it signed have expired). Only its certificate
/// is needed.
#[derive(Debug, Clone)]
pub struct PublishedKey {
    pub kid: String,
    pub public: PublicKey,
    pub cert_der: Vec<u8>,
    /// Its certificates as PEM, for the bundle.
    pub cert_pem: String,
    pub not_after: i64,
}

impl PublishedKey {
    pub fn load(cert_pem: &[u8]) -> Result<Self, KeyError> {
        let chain = parse_chain(cert_pem).map_err(KeyError::Cert)?;
        Ok(Self {
            kid: chain.leaf_public.libtrust_kid(),
            public: chain.leaf_public,
            cert_pem: chain_pem(&chain.der),
            cert_der: chain.der[0].clone(),
            not_after: chain.not_after,
        })
    }

    pub fn jwk(&self) -> jwk::Jwk {
        jwk::Jwk::new(&self.public, &self.kid, Some(&self.cert_der))
    }
}

/// Accepts SEC1 (`EC PRIVATE KEY`, what open-balena's tooling writes; P-256 or P-384),
/// PKCS#8 (`PRIVATE KEY`: EC or RSA) and PKCS#1 (`RSA PRIVATE KEY`). RSA keys need 2048 bits.
fn parse_key(pem: &[u8]) -> Result<(SigningKey, PublicKey), KeyError> {
    let text = std::str::from_utf8(pem).map_err(|_| KeyError::Key("not PEM text".into()))?;
    let block = |label: &str| -> Option<Result<Vec<u8>, KeyError>> {
        let b = pem_block(text, label)?;
        Some(
            x509_parser::pem::parse_x509_pem(b.as_bytes())
                .map(|(_, p)| p.contents)
                .map_err(|_| KeyError::Key(format!("the {label} block is not readable PEM"))),
        )
    };
    let ec = |pair: EcdsaKeyPair, alg: Alg| {
        let public = PublicKey::from_raw(alg, pair.public_key().as_ref());
        (SigningKey::Ecdsa(pair), public)
    };
    let rsa = |pair: RsaKeyPair| {
        let bits = pair.public_modulus_len() * 8;
        if bits < 2048 {
            return Err(KeyError::Key(format!(
                "the RSA key has {bits} bits; 2048 or more are needed"
            )));
        }
        let public = PublicKey::from_raw(Alg::RS256, pair.public_key().as_ref());
        Ok((SigningKey::Rsa(pair), public))
    };
    if let Some(b) = pem_block(text, "EC PRIVATE KEY") {
        // `openssl ecparam -genkey` without -noout writes an EC PARAMETERS block first.
        if let Ok(secret) = p256::SecretKey::from_sec1_pem(b) {
            return p256_pair(&secret).map(|p| ec(p, Alg::ES256));
        }
        let der = block("EC PRIVATE KEY").transpose()?.unwrap_or_default();
        return EcdsaKeyPair::from_private_key_der(&ECDSA_P384_SHA384_FIXED_SIGNING, &der)
            .map(|p| ec(p, Alg::ES384))
            .map_err(|_| {
                KeyError::Key("the EC PRIVATE KEY block is not a P-256 or P-384 key".into())
            });
    }
    if let Some(der) = block("PRIVATE KEY").transpose()? {
        if let Ok(secret) = p256::SecretKey::from_pkcs8_der(&der) {
            return p256_pair(&secret).map(|p| ec(p, Alg::ES256));
        }
        if let Ok(p) = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &der) {
            return Ok(ec(p, Alg::ES384));
        }
        return RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| {
                KeyError::Key("the PRIVATE KEY block is not an EC P-256, P-384 or RSA key".into())
            })
            .and_then(rsa);
    }
    if let Some(der) = block("RSA PRIVATE KEY").transpose()? {
        return RsaKeyPair::from_der(&der)
            .map_err(|_| KeyError::Key("the RSA PRIVATE KEY block is not usable".into()))
            .and_then(rsa);
    }
    Err(KeyError::Key(
        "expected a PEM block 'EC PRIVATE KEY', 'PRIVATE KEY' or 'RSA PRIVATE KEY'".into(),
    ))
}

/// A P-256 secret (which `p256` reads in every SEC1 shape) as aws-lc-rs's signer.
fn p256_pair(secret: &p256::SecretKey) -> Result<EcdsaKeyPair, KeyError> {
    let pkcs8 = secret
        .to_pkcs8_der()
        .map_err(|_| KeyError::Key("cannot re-encode as PKCS#8".into()))?;
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_bytes())
        .map_err(|_| KeyError::Key("rejected by the signer".into()))
}

/// The first `label` block of a PEM text, BEGIN and END lines included.
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Seed 003's development pair (base64 of the PEM files, as in its .env).
    pub(crate) const SEED_CERT_B64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJqVENDQVRPZ0F3SUJBZ0lVVjVRZ2xNSDRuK2wrZGF6eE1PZG1vQldqTFhJd0NnWUlLb1pJemowRUF3SXcKSERFYU1CZ0dBMVVFQXd3UllYQnBMbXg1TG1acGMyZ3ViRzlqWVd3d0hoY05NakF4TVRJMk1UY3pNalEwV2hjTgpNakl4TVRJMk1UY3pNalEwV2pBY01Sb3dHQVlEVlFRRERCRmhjR2t1YkhrdVptbHphQzVzYjJOaGJEQlpNQk1HCkJ5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEEwSUFCRE5IUkNWYmthZlpZaWxGY3dXd2F0bkN6bEt1VHlEZmdLTVoKZ3BhbUJVR08vRlNIMGhjTU9CYTE5V3p2eFJXN05GOWNwRmVIZSszQndWdnB4OGIxOTZTalV6QlJNQjBHQTFVZApEZ1FXQkJRelc5SDJab3VDa2NsaVJrRHYwRnJUQSthbmtUQWZCZ05WSFNNRUdEQVdnQlF6VzlIMlpvdUNrY2xpClJrRHYwRnJUQSthbmtUQVBCZ05WSFJNQkFmOEVCVEFEQVFIL01Bb0dDQ3FHU000OUJBTUNBMGdBTUVVQ0lHRWQKTXF1UGJtcTNoV1hRbkowTUpieHc1RWJLMEFWQndhem9GR2F6RFVxTkFpRUF4MzFqdEpPUUEveWNPQlIyZDEyTgpQZ3dacjdZWTN3TUJ4RWtaS2VXR3FuQT0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
    pub(crate) const SEED_KEY_B64: &str = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUtYdzQxTDFBdFRGK01kMzJ1Rnd1NnpKWExNRktaTzBBRGNEWEh1bEZFNk5vQW9HQ0NxR1NNNDkKQXdFSG9VUURRZ0FFTTBkRUpWdVJwOWxpS1VWekJiQnEyY0xPVXE1UElOK0FveG1DbHFZRlFZNzhWSWZTRnd3NApGclgxYk8vRkZiczBYMXlrVjRkNzdjSEJXK25IeHZYM3BBPT0KLS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo=";
    pub(crate) const SEED_KID: &str = "PF3H:26FR:LYS3:TIYU:2JUI:A2HE:7ZXT:G3B5:HX74:5UEB:SNU2:B5JL";

    pub(crate) fn seed_material() -> KeyMaterial {
        let cert = data_encoding::BASE64
            .decode(SEED_CERT_B64.as_bytes())
            .expect("cert b64");
        let key = data_encoding::BASE64
            .decode(SEED_KEY_B64.as_bytes())
            .expect("key b64");
        KeyMaterial::load(&cert, &key, Some(SEED_KID)).expect("seed key loads")
    }

    #[test]
    fn seed_pair_loads_and_its_kid_is_computed() {
        let m = seed_material();
        assert_eq!(m.kid, SEED_KID);
        // Valid 2020-11-26 to 2022-11-26: expired, which only a warning reports.
        assert!(m.is_expired(1_700_000_000));
        assert!(!m.is_expired(1_650_000_000));
    }

    #[test]
    fn wrong_kid_names_both_values() {
        let cert = data_encoding::BASE64
            .decode(SEED_CERT_B64.as_bytes())
            .expect("b64");
        let key = data_encoding::BASE64
            .decode(SEED_KEY_B64.as_bytes())
            .expect("b64");
        let err = KeyMaterial::load(&cert, &key, Some("AAAA:BBBB")).expect_err("mismatch");
        let msg = err.to_string();
        assert!(msg.contains("AAAA:BBBB") && msg.contains(SEED_KID), "{msg}");
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let other = generate::generate("other.example", 30).expect("generate");
        let cert = data_encoding::BASE64
            .decode(SEED_CERT_B64.as_bytes())
            .expect("b64");
        let err = KeyMaterial::load(&cert, other.key_pem.as_bytes(), None).expect_err("mismatch");
        assert!(matches!(err, KeyError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn key_after_an_ec_parameters_block() {
        let cert = data_encoding::BASE64
            .decode(SEED_CERT_B64.as_bytes())
            .expect("b64");
        let key = String::from_utf8(
            data_encoding::BASE64
                .decode(SEED_KEY_B64.as_bytes())
                .expect("b64"),
        )
        .expect("utf8");
        let with_params = format!(
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{key}"
        );
        assert_eq!(
            KeyMaterial::load(&cert, with_params.as_bytes(), None)
                .expect("loads")
                .kid,
            SEED_KID
        );
    }

    /// SEC1 without the optional curve OID (what `p256`'s `to_sec1_pem` and older tooling
    /// write) still loads: only our own writer had to change.
    #[test]
    fn sec1_key_without_parameters_loads() {
        let g = generate::generate("iss", 30).expect("generate");
        let secret = p256::SecretKey::from_sec1_pem(&g.key_pem).expect("sec1");
        let bare = secret
            .to_sec1_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem")
            .to_string();
        assert_ne!(bare, g.key_pem, "this key has no [0] parameters");
        let m = KeyMaterial::load(g.cert_pem.as_bytes(), bare.as_bytes(), None).expect("loads");
        assert_eq!(m.kid, g.kid);
    }

    #[test]
    fn a_chain_is_kept_leaf_first_with_its_validity_window() {
        // A 10-day CA that issued a 30-day leaf.
        let days = |n| time::OffsetDateTime::now_utc() + time::Duration::days(n);
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "ca");
        let ca_until = days(10);
        ca_params.not_after = ca_until;
        let ca = ca_params.self_signed(&ca_key).expect("ca cert");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("leaf");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "leaf");
        leaf_params.not_after = days(30);
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca, &ca_key)
            .expect("leaf cert");
        let chain = format!("{}{}", leaf.pem(), ca.pem());
        let key_pem = leaf_key.serialize_pem();
        let m = KeyMaterial::load(chain.as_bytes(), key_pem.as_bytes(), None).expect("loads");
        let alone = KeyMaterial::load(leaf.pem().as_bytes(), key_pem.as_bytes(), None)
            .expect("the leaf alone");
        assert_eq!(m.kid, alone.kid, "the first certificate signs");
        assert_eq!(m.chain_der.len(), 2);
        assert_eq!(m.cert_pem, chain, "the bundle served holds the whole chain");
        // The 10-day CA bounds the chain.
        assert_eq!(m.not_after, ca_until.unix_timestamp());
        // Two certificates that did not issue each other are not a chain.
        let g = generate::generate("leaf", 30).expect("leaf");
        let other = generate::generate("leaf", 30).expect("other");
        let bundle = format!("{}{}", g.cert_pem, other.cert_pem);
        let err =
            KeyMaterial::load(bundle.as_bytes(), g.key_pem.as_bytes(), None).expect_err("a bundle");
        assert!(
            err.to_string().contains("did not issue certificate 1"),
            "{err}"
        );
        let leaf_pem = g.key_pem.clone();
        let too_many = chain.repeat(chain::MAX_CHAIN);
        let err = KeyMaterial::load(too_many.as_bytes(), leaf_pem.as_bytes(), None)
            .expect_err("too many");
        assert!(
            err.to_string().contains("more than 8 certificates"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = KeyMaterial::load(b"hello", b"world", None).expect_err("garbage");
        assert!(
            err.to_string().starts_with("the certificate is not usable"),
            "{err}"
        );
    }
}
