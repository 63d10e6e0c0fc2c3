//! `gen-token-auth-cert`: a fresh key and self-signed certificate, in the shape of open-balena's
//! script (CN = issuer, CA extensions, SEC1 key for P-256) plus the JWKS its successor writes.
//! P-384 and RSA keys are written as PKCS#8 (`PRIVATE KEY`), which OpenSSL and Node read.

use std::io::Write;
use std::path::{Path, PathBuf};

use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, RsaKeySize,
    SerialNumber, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
};

use super::{jwk::Jwks, KeyMaterial};

pub struct Generated {
    pub cert_pem: String,
    /// The public key alone (SPKI PEM), for registries that take one public key.
    pub public_pem: String,
    pub key_pem: String,
    pub kid: String,
    pub jwks_json: String,
}

/// `--type`: the key type, which decides the tokens' algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyType {
    /// EC P-256: ES256 (what open-balena uses).
    #[default]
    P256,
    /// EC P-384: ES384.
    P384,
    /// RSA 2048: RS256.
    Rsa,
}

pub fn generate(issuer: &str, days: u32) -> anyhow::Result<Generated> {
    generate_typed(issuer, days, KeyType::P256)
}

pub fn generate_typed(issuer: &str, days: u32, key_type: KeyType) -> anyhow::Result<Generated> {
    let key_pair = match key_type {
        KeyType::P256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?,
        KeyType::P384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?,
        KeyType::Rsa => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048)?,
    };
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, issuer);
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(i64::from(days));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(uuid::Uuid::new_v4().as_bytes()));
    let cert = params.self_signed(&key_pair)?;

    let key_pem = if key_type == KeyType::P256 {
        let secret = p256::SecretKey::from_pkcs8_der(&key_pair.serialize_der())
            .map_err(|e| anyhow::anyhow!("re-encoding the generated key: {e}"))?;
        sec1_pem(&secret)?
    } else {
        key_pair.serialize_pem()
    };

    // Load it back through the same path `serve` uses, so what we write is what we accept.
    let material = KeyMaterial::load(cert.pem().as_bytes(), key_pem.as_bytes(), None)?;
    Ok(Generated {
        cert_pem: material.cert_pem.clone(),
        public_pem: material.public_pem.clone(),
        jwks_json: Jwks {
            keys: vec![material.jwk()],
        }
        .to_json(),
        kid: material.kid,
        key_pem,
    })
}

/// SEC1 "EC PRIVATE KEY" exactly as `openssl ecparam -name prime256v1 -genkey -noout` writes it:
/// version 1, the 32-byte secret, `[0]` the named curve, `[1]` the public point. The curve OID is
/// optional in SEC1, but OpenSSL 3 and Node.js refuse a key without it (and `p256`'s own
/// `to_sec1_pem` leaves it out), so it is written here by hand.
pub fn sec1_pem(secret: &p256::SecretKey) -> anyhow::Result<String> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::AssociatedOid;
    use sec1::der::Encode;
    let private_key = zeroize::Zeroizing::new(secret.to_bytes());
    let public_key = secret.public_key().to_encoded_point(false);
    let der = zeroize::Zeroizing::new(
        sec1::EcPrivateKey {
            private_key: &private_key,
            parameters: Some(sec1::EcParameters::NamedCurve(p256::NistP256::OID)),
            public_key: Some(public_key.as_bytes()),
        }
        .to_der()
        .map_err(|e| anyhow::anyhow!("encoding the generated key: {e}"))?,
    );
    Ok(super::pem_encode("EC PRIVATE KEY", &der))
}

pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub kid: PathBuf,
    pub jwks: PathBuf,
    pub public: PathBuf,
}

/// Writes `<issuer>.crt`, `.pem` (mode 0600), `.kid` (no newline), `.jwks.json` and `.pub` (the
/// public key alone) into `dir`.
pub fn write_files(
    dir: &Path,
    issuer: &str,
    g: &Generated,
    force: bool,
) -> anyhow::Result<Written> {
    if issuer.is_empty() || issuer.contains('/') || issuer.starts_with('.') {
        anyhow::bail!("issuer {issuer:?} cannot be used as a file name");
    }
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let w = Written {
        cert: dir.join(format!("{issuer}.crt")),
        key: dir.join(format!("{issuer}.pem")),
        kid: dir.join(format!("{issuer}.kid")),
        jwks: dir.join(format!("{issuer}.jwks.json")),
        public: dir.join(format!("{issuer}.pub")),
    };
    if !force {
        for p in [&w.cert, &w.key, &w.kid, &w.jwks, &w.public] {
            if p.exists() {
                anyhow::bail!("{} exists; pass --force to overwrite", p.display());
            }
        }
    }
    write_file(&w.cert, g.cert_pem.as_bytes(), 0o644)?;
    write_file(&w.key, g.key_pem.as_bytes(), 0o600)?;
    write_file(&w.kid, g.kid.as_bytes(), 0o644)?;
    write_file(&w.jwks, g.jwks_json.as_bytes(), 0o644)?;
    write_file(&w.public, g.public_pem.as_bytes(), 0o644)?;
    Ok(w)
}

/// Writes `bytes` to `path` with `mode`, also when the file exists already.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    // An existing file keeps its old mode on open: set it explicitly (matters for the key).
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_round_trips() {
        let g = generate("api.example.test", 730).expect("generate");
        assert!(g.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        // DER: SEQUENCE { INTEGER 1, OCTET STRING (32), [0] { OID prime256v1 }, [1] { BIT STRING } },
        // byte for byte the layout `openssl ecparam -name prime256v1 -genkey -noout` writes.
        let b64: String = g
            .key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let der = data_encoding::BASE64
            .decode(b64.as_bytes())
            .expect("base64");
        assert_eq!(der.len(), 121);
        assert_eq!(&der[..7], &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20]);
        assert_eq!(
            &der[39..51],
            &[0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        assert_eq!(&der[51..56], &[0xa1, 0x44, 0x03, 0x42, 0x00]);
        assert_eq!(der[56], 0x04);
        let m = KeyMaterial::load(g.cert_pem.as_bytes(), g.key_pem.as_bytes(), Some(&g.kid))
            .expect("loads");
        assert_eq!(m.kid.len(), 59);
        let jwks: Jwks = serde_json::from_str(&g.jwks_json).expect("jwks");
        assert_eq!(jwks.keys[0].kid, g.kid);
        assert_eq!(jwks.keys[0].public_key().as_ref(), Some(&m.public));
        // Two runs give two different keys.
        assert_ne!(generate("api.example.test", 730).expect("again").kid, g.kid);
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().expect("tmp");
        let g = generate("iss", 1).expect("generate");
        let w = write_files(dir.path(), "iss", &g, false).expect("first write");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&w.key)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&w.kid).expect("kid"), g.kid);
        assert!(write_files(dir.path(), "iss", &g, false).is_err());
        assert!(write_files(dir.path(), "iss", &g, true).is_ok());
    }
}
