//! `keys rotate`: writes the next signing key for the configured issuer and prints the steps
//! of the rotation (README, "Rotating the signing key").

use std::path::Path;

use token_issuer::{config::Config, keys};

/// `keys rotate`: the next key, named by date so that its name stays true after it signs.
pub fn rotate(
    config: Option<&Path>,
    out_dir: &Path,
    days: u32,
    key_type: keys::generate::KeyType,
) -> anyhow::Result<()> {
    let cfg = Config::load(config, &[])?;
    let issuer = cfg.issuer()?;
    let date: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect();
    let base = format!("{issuer}-{date}");
    let g = keys::generate::generate_typed(issuer, days, key_type)?;
    let w = keys::generate::write_files(out_dir, &base, &g, false)?;
    let b64 = |s: &str| data_encoding::BASE64.encode(s.as_bytes());
    eprintln!(
        "wrote the next key for {issuer} (kid {}): {}, {}, {}, {}

1. Publish it: add \"{cert}\" to [keys] published_files (or its base64 to
   TOKEN_ISSUER_KEYS__PUBLISHED, below) and restart the issuer. Nothing signs with it yet;
   /v1/registry/certs and /.well-known/jwks.json now list both keys.
2. Give every registry the new bundle (/v1/registry/certs) or JWKS and restart it: registries
   read them only at start. Do not go on until every registry has restarted.
3. Sign with it: set keys.cert_file and keys.key_file to the new files (or the env lines below),
   move the old certificate into published_files, restart the issuer.
4. After token.ttl_seconds ({ttl} s) + 60 s every token of the old key has expired: drop the old
   certificate from published_files and from the registries' bundle or JWKS.",
        g.kid,
        w.cert.display(),
        w.key.display(),
        w.kid.display(),
        w.jwks.display(),
        cert = w.cert.display(),
        ttl = cfg.token.ttl_seconds,
    );
    println!("TOKEN_ISSUER_KEYS__PUBLISHED=[\"{}\"]", b64(&g.cert_pem));
    println!("REGISTRY_TOKEN_AUTH_CERT={}", b64(&g.cert_pem));
    println!("REGISTRY_TOKEN_AUTH_CERT_KEY={}", b64(&g.key_pem));
    println!("REGISTRY_TOKEN_AUTH_CERT_KID={}", b64(&g.kid));
    Ok(())
}
