//! A certificate file as a chain: the signing certificate first, then each certificate that
//! issued the one before it; its validity window; the leaf's public key.

use super::kid::PublicKey;

/// Certificates beyond this in one file are not a chain but a mistake (a CA bundle).
pub(super) const MAX_CHAIN: usize = 8;

pub(super) struct Chain {
    pub(super) der: Vec<Vec<u8>>,
    pub(super) leaf_public: PublicKey,
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub(super) leaf_spki: Vec<u8>,
    pub(super) not_before: i64,
    pub(super) not_after: i64,
}

/// A chain's certificates as PEM, leaf first: what a registry's `rootcertbundle` holds.
pub(super) fn chain_pem(der: &[Vec<u8>]) -> String {
    der.iter().map(|d| pem_encode("CERTIFICATE", d)).collect()
}

/// What the next certificate of a chain must match: it must be the one that issued this one.
struct Issuer {
    issuer: Vec<u8>,
    /// A self-signed certificate issued itself: nothing follows it in a chain.
    self_signed: bool,
    authority_key_id: Option<Vec<u8>>,
}

fn subject_key_id(cert: &x509_parser::certificate::X509Certificate) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn authority_key_id(cert: &x509_parser::certificate::X509Certificate) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
}

/// The chain in `pem`, or why it is not one (the caller names the file).
pub(super) fn parse_chain(pem: &[u8]) -> Result<Chain, String> {
    let mut der = Vec::new();
    let (mut not_before, mut not_after) = (i64::MIN, i64::MAX);
    let mut leaf_public = None;
    let mut leaf_spki = Vec::new();
    let mut previous_issuer: Option<Issuer> = None;
    // Counted before any is read as a chain, so too many says so, whatever they are.
    if x509_parser::pem::Pem::iter_from_buffer(pem).count() > MAX_CHAIN {
        return Err(format!(
            "more than {MAX_CHAIN} certificates: give the signing certificate and the chain above it"
        ));
    }
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| format!("PEM block {} is not readable ({e})", i + 1))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "PEM block {} is {:?}, expected CERTIFICATE",
                i + 1,
                block.label
            ));
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("certificate {} is not X.509 ({e})", i + 1))?;
        // Each certificate after the first must have issued the one before it: a bundle of
        // unrelated certificates (the registries' bundle from /v1/registry/certs, written over
        // the certificate file during a rotation) would otherwise ride along in every token's
        // x5c.
        if let Some(below) = &previous_issuer {
            // By name (byte for byte), or, where both say, by key identifier: a CA may encode
            // its name differently in the two places (PrintableString and UTF8String).
            let by_key = match (&below.authority_key_id, subject_key_id(&cert)) {
                (Some(aki), Some(ski)) => Some(*aki == ski),
                _ => None,
            };
            let by_name = cert.subject().as_raw() == below.issuer.as_slice();
            let issued = !below.self_signed && by_key.unwrap_or(by_name);
            if !issued {
                return Err(format!(
                    "certificate {} ({}) did not issue certificate {i}: the file holds more than \
                     one certificate and the chain above it (a bundle fetched from \
                     /v1/registry/certs belongs in the registries' rootcertbundle, not in the \
                     issuer's certificate files)",
                    i + 1,
                    cert.subject()
                ));
            }
        }
        previous_issuer = Some(Issuer {
            issuer: cert.issuer().as_raw().to_vec(),
            // Named as its own issuer, and (when it says) signed by its own key: a leaf that
            // shares its CA's name names the CA's key as its authority.
            self_signed: cert.issuer().as_raw() == cert.subject().as_raw()
                && match (authority_key_id(&cert), subject_key_id(&cert)) {
                    (Some(aki), Some(ski)) => aki == ski,
                    _ => true,
                },
            authority_key_id: authority_key_id(&cert),
        });
        not_before = not_before.max(cert.validity().not_before.timestamp());
        not_after = not_after.min(cert.validity().not_after.timestamp());
        if i == 0 {
            leaf_public = Some(PublicKey::from_spki(cert.public_key().raw)?);
            leaf_spki = cert.public_key().raw.to_vec();
        }
        der.push(block.contents.clone());
    }
    let leaf_public = leaf_public.ok_or_else(|| "no PEM CERTIFICATE block found".to_string())?;
    Ok(Chain {
        der,
        leaf_public,
        leaf_spki,
        not_before,
        not_after,
    })
}

/// DER as PEM with `label`, in 64-character lines.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = data_encoding::BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
