//! `gen-token-auth-cert` and `keys rotate`: key material.

use std::path::Path;

use token_issuer::keys;

/// `gen-token-auth-cert`: a key and certificate as open-balena's tooling makes them, and the
/// seed's environment lines for them.
pub(crate) fn generate(
    issuer: &str,
    out_dir: &Path,
    days: u32,
    key_type: keys::generate::KeyType,
    force: bool,
) -> anyhow::Result<()> {
    let g = keys::generate::generate_typed(issuer, days, key_type)?;
    let w = keys::generate::write_files(out_dir, issuer, &g, force)?;
    eprintln!(
        "wrote {}, {}, {}, {} and {} (the public key alone)",
        w.cert.display(),
        w.key.display(),
        w.kid.display(),
        w.jwks.display(),
        w.public.display()
    );
    let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
    println!("REGISTRY_TOKEN_AUTH_CERT={}", b64(&g.cert_pem));
    println!("REGISTRY_TOKEN_AUTH_CERT_KEY={}", b64(&g.key_pem));
    println!("REGISTRY_TOKEN_AUTH_CERT_KID={}", b64(&g.kid));
    println!("REGISTRY_TOKEN_AUTH_CERT_ISSUER={issuer}");
    Ok(())
}
