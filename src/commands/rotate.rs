//! `keys rotate`: writes the next signing key for the configured issuer and prints the steps
//! of the rotation, numbered as docs/operating.md's "Rotating the signing key" numbers them, with the
//! exact lines to change for this config.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use token_issuer::{config::Config, keys};

pub struct Args<'a> {
    pub config: Option<&'a Path>,
    pub out_dir: &'a Path,
    pub days: u32,
    pub key_type: keys::generate::KeyType,
    pub force: bool,
}

/// `keys rotate`: the next key, named by date so that its name stays true after it signs.
pub fn rotate(a: Args) -> anyhow::Result<()> {
    let cfg = Config::load(a.config, &[])?;
    let issuer = cfg.issuer()?;
    let date: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .take(10)
        .filter(char::is_ascii_digit)
        .collect();
    let base = format!("{issuer}-{date}");
    let g = keys::generate::generate_typed(issuer, a.days, a.key_type)?;
    let w = keys::generate::write_files(a.out_dir, &base, &g, a.force).map_err(|e| {
        anyhow::anyhow!("{e} (a key rotated earlier today has this name: replace it only while nothing signs with it)")
    })?;
    let k = &cfg.keys;
    // Under systemd the issuer runs as its own user and `keys rotate` is often run as root:
    // the new files take the owner, group and mode of the files they replace, so the issuer
    // can read them at step 4.
    let owners = [
        (&w.key, k.key_file.as_ref()),
        (&w.cert, k.cert_file.as_ref()),
        (&w.kid, k.kid_file.as_ref().or(k.cert_file.as_ref())),
        (&w.jwks, k.cert_file.as_ref()),
        (&w.public, k.cert_file.as_ref()),
    ];
    for (new, old) in owners {
        if let Some(old) = old {
            // The key is written either way: say what to do rather than stop before the steps.
            if let Err(e) = follow_owner(new, &old.relative()) {
                eprintln!("warning: {e:#}");
            }
        }
    }

    // Paths as the config file gives them: relative to its directory.
    let config_dir = a
        .config
        .and_then(Path::parent)
        .map(absolute)
        .unwrap_or_else(|| absolute(Path::new(".")));
    let shown = |p: &Path| {
        let p = absolute(p);
        p.strip_prefix(&config_dir)
            .map(Path::to_path_buf)
            .unwrap_or(p)
            .display()
            .to_string()
    };
    let (cert, key, kid) = (shown(&w.cert), shown(&w.key), shown(&w.kid));
    let old_cert = k.cert_file.as_ref().map(|f| shown(&f.relative()));
    let mut sign = format!("   keys.cert_file = \"{cert}\"\n   keys.key_file = \"{key}\"\n");
    if k.kid_file.is_some() {
        sign.push_str(&format!("   keys.kid_file = \"{kid}\"\n"));
    } else if k.kid.is_some() {
        sign.push_str("   keys.kid (REGISTRY_TOKEN_AUTH_CERT_KID): the new kid, below, or unset\n");
    }
    let published_old = match &old_cert {
        Some(c) => format!("   keys.published_files = [\"{c}\"]\n"),
        None => "   TOKEN_ISSUER_KEYS__PUBLISHED: the old certificate (below)\n".into(),
    };
    eprintln!(
        "wrote the next key for {issuer} (kid {kid_value}): {}, {}, {}, {}, {}
(paths below are relative to the config file's directory, as the config gives them)

1. Done: the next key.
2. Publish it: in [keys], published_files = [\"{cert}\"] (or the step-2 line below); the
   issuer reloads (or send SIGHUP). Nothing signs with it yet; /v1/registry/certs and
   /.well-known/jwks.json now list both keys.
3. Give every registry both keys: fetch /v1/registry/certs into the file its
   auth.token.rootcertbundle names and /.well-known/jwks.json into its auth.token.jwks, and
   restart it: registries read them only at start. Do not go on until every registry has
   restarted.
4. Sign with it, in one write of the config (or the step-4 lines below):
{sign}{published_old}   the issuer reloads. Tokens of the old key stay valid: it is still published. A registry
   that takes one public key instead of a bundle gets the new {pubkey} now and a restart.
5. After token.ttl_seconds + 60 s ({wait} s) every token of the old key has expired: drop the
   old certificate from published_files, fetch the bundle and JWKS for the registries again,
   and restart them at leisure.",
        w.cert.display(),
        w.key.display(),
        w.kid.display(),
        w.jwks.display(),
        w.public.display(),
        kid_value = g.kid,
        pubkey = shown(&w.public),
        wait = cfg.token.ttl_seconds + 60,
    );
    // For an issuer configured by environment: each step's lines apart, never to be pasted
    // together (step 4's sign with a key no registry trusts before step 3).
    let b64 = |s: &[u8]| data_encoding::BASE64.encode(s);
    println!("# step 2 only (publish the next key):");
    println!(
        "TOKEN_ISSUER_KEYS__PUBLISHED=[\"{}\"]",
        b64(g.cert_pem.as_bytes())
    );
    println!(
        "# step 4 only (after every registry trusts it): sign with it, keep the old one published"
    );
    println!("REGISTRY_TOKEN_AUTH_CERT={}", b64(g.cert_pem.as_bytes()));
    println!("REGISTRY_TOKEN_AUTH_CERT_KEY={}", b64(g.key_pem.as_bytes()));
    println!("REGISTRY_TOKEN_AUTH_CERT_KID={}", b64(g.kid.as_bytes()));
    match cfg.key_sources() {
        Ok(current) => println!("TOKEN_ISSUER_KEYS__PUBLISHED=[\"{}\"]", b64(&current.cert)),
        Err(e) => {
            println!("# TOKEN_ISSUER_KEYS__PUBLISHED: the old certificate's base64 (not read: {e})")
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Gives `new` the owner and group of `old` (when they differ and this user may), and the
/// group read bit `old` has; a private key stays without any bit for others.
fn follow_owner(new: &Path, old: &Path) -> anyhow::Result<()> {
    let (Ok(o), Ok(n)) = (std::fs::metadata(old), std::fs::metadata(new)) else {
        return Ok(());
    };
    if (o.uid(), o.gid()) != (n.uid(), n.gid()) {
        std::os::unix::fs::chown(new, Some(o.uid()), Some(o.gid())).map_err(|e| {
            anyhow::anyhow!(
                "{} could not be given the owner of {} (uid {}, gid {}): {e}; run keys rotate as \
                 that user or as root, or chown the new files before step 4",
                new.display(),
                old.display(),
                o.uid(),
                o.gid()
            )
        })?;
    }
    let mode = n.permissions().mode() & 0o777;
    // Public files (certificate, kid, JWKS) stay readable by all; the key gains only the
    // group-read bit the old key had.
    if mode & 0o004 == 0 {
        let private = (mode & 0o600) | (o.permissions().mode() & 0o040);
        std::fs::set_permissions(new, std::fs::Permissions::from_mode(private))?;
    }
    Ok(())
}
