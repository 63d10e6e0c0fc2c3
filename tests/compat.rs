//! The compatibility matrix: every distribution version a deployment runs (Debian's 2.8, 3.0.0
//! as open-balena-registry pins it, 3.1.1 as `registry:3` runs it) × how it trusts the issuer
//! (bundle only, bundle + JWKS, JWKS only) × the keys users have (a fresh `gen-token-auth-cert`
//! key, one made with openssl as open-balena's script makes it, seed 003's expired development
//! key, a leaf issued by a CA whose certificate alone is the bundle). Each combination that
//! should work pushes and pulls with skopeo, bytes identical; each that cannot is refused, for
//! the reason the README gives, which the registry's log must show.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const SERVICE: &str = "registry.test";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TrustKind {
    Bundle,
    BundleJwks,
    Jwks,
}

/// The key files an issuer signs with, and what a registry is given to trust it.
struct KeySet {
    issuer: &'static str,
    cert: PathBuf,
    key: PathBuf,
    /// What `rootcertbundle` holds: the issuer's certificate, or only the CA that issued it.
    bundle: PathBuf,
    /// Whether the certificate is valid now (tokens then carry `x5c` by default).
    valid: bool,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fresh_key(dir: &Path) -> KeySet {
    let (cert, _) = gen_cert(dir, "fresh.test");
    KeySet {
        issuer: "fresh.test",
        key: dir.join("fresh.test.pem"),
        bundle: cert.clone(),
        cert,
        valid: true,
    }
}

/// As open-balena's script: `ecparam -genkey -noout` and a self-signed `req -x509`, 730 days.
fn openssl_key(dir: &Path) -> KeySet {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ob.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-days",
            "730",
            "-subj",
            "/CN=ob.test",
            "-key",
            "ob.pem",
            "-out",
            "ob.crt",
        ],
    );
    KeySet {
        issuer: "ob.test",
        cert: dir.join("ob.crt"),
        key: dir.join("ob.pem"),
        bundle: dir.join("ob.crt"),
        valid: true,
    }
}

/// Seed 003's development pair: valid 2020-11-26 to 2022-11-26.
fn seed_key(dir: &Path) -> KeySet {
    let b64 = |s: &str| data_encoding::BASE64.decode(s.as_bytes()).expect("base64");
    std::fs::write(dir.join("seed.crt"), b64(SEED_CERT_B64)).expect("cert");
    std::fs::write(dir.join("seed.pem"), b64(SEED_KEY_B64)).expect("key");
    KeySet {
        issuer: "api.ly.fish.local",
        cert: dir.join("seed.crt"),
        key: dir.join("seed.pem"),
        bundle: dir.join("seed.crt"),
        valid: false,
    }
}

/// A CA, and a signing certificate it issued: the issuer's cert file holds the chain (leaf,
/// CA), the registry's bundle only the CA. This is how keys rotate without touching registries.
fn ca_leaf_key(dir: &Path) -> KeySet {
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=Test Signing CA",
            "-key",
            "ca.pem",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "leaf.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "leaf.pem",
            "-subj",
            "/CN=leaf.test",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.pem",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ],
    );
    let chain = [
        std::fs::read_to_string(dir.join("leaf.crt")).expect("leaf"),
        std::fs::read_to_string(dir.join("ca.crt")).expect("ca"),
    ]
    .concat();
    std::fs::write(dir.join("chain.crt"), chain).expect("chain");
    KeySet {
        issuer: "leaf.test",
        cert: dir.join("chain.crt"),
        key: dir.join("leaf.pem"),
        bundle: dir.join("ca.crt"),
        valid: true,
    }
}

// Seed 003's pair, as base64 of the PEM files (its .env).
const SEED_CERT_B64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJqVENDQVRPZ0F3SUJBZ0lVVjVRZ2xNSDRuK2wrZGF6eE1PZG1vQldqTFhJd0NnWUlLb1pJemowRUF3SXcKSERFYU1CZ0dBMVVFQXd3UllYQnBMbXg1TG1acGMyZ3ViRzlqWVd3d0hoY05NakF4TVRJMk1UY3pNalEwV2hjTgpNakl4TVRJMk1UY3pNalEwV2pBY01Sb3dHQVlEVlFRRERCRmhjR2t1YkhrdVptbHphQzVzYjJOaGJEQlpNQk1HCkJ5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEEwSUFCRE5IUkNWYmthZlpZaWxGY3dXd2F0bkN6bEt1VHlEZmdLTVoKZ3BhbUJVR08vRlNIMGhjTU9CYTE5V3p2eFJXN05GOWNwRmVIZSszQndWdnB4OGIxOTZTalV6QlJNQjBHQTFVZApEZ1FXQkJRelc5SDJab3VDa2NsaVJrRHYwRnJUQSthbmtUQWZCZ05WSFNNRUdEQVdnQlF6VzlIMlpvdUNrY2xpClJrRHYwRnJUQSthbmtUQVBCZ05WSFJNQkFmOEVCVEFEQVFIL01Bb0dDQ3FHU000OUJBTUNBMGdBTUVVQ0lHRWQKTXF1UGJtcTNoV1hRbkowTUpieHc1RWJLMEFWQndhem9GR2F6RFVxTkFpRUF4MzFqdEpPUUEveWNPQlIyZDEyTgpQZ3dacjdZWTN3TUJ4RWtaS2VXR3FuQT0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
const SEED_KEY_B64: &str = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUtYdzQxTDFBdFRGK01kMzJ1Rnd1NnpKWExNRktaTzBBRGNEWEh1bEZFNk5vQW9HQ0NxR1NNNDkKQXdFSG9VUURRZ0FFTTBkRUpWdVJwOWxpS1VWekJiQnEyY0xPVXE1UElOK0FveG1DbHFZRlFZNzhWSWZTRnd3NApGclgxYk8vRkZiczBYMXlrVjRkNzdjSEJXK25IeHZYM3BBPT0KLS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo=";

/// Why a combination cannot work: the phrase the registry logs when it refuses the token.
/// None: it works.
fn expected(
    version: Distribution,
    trust: TrustKind,
    keys: &KeySet,
    x5c: &str,
) -> Option<&'static str> {
    let carries_x5c = match x5c {
        "never" => false,
        _ => keys.valid,
    };
    match (carries_x5c, version, trust) {
        // A chain is verified against the bundle; with no bundle there is nothing to verify
        // it against, and no registry falls back to kid when x5c fails.
        (true, _, TrustKind::Jwks) => Some("certificate signed by unknown authority"),
        (true, _, _) => None,
        // kid alone: 2.x finds it among the bundle's certificates (dates unchecked) ...
        (false, Distribution::V2_8, _) => {
            // ... when the bundle holds the signing certificate itself, not only its CA.
            (keys.bundle != keys.cert).then_some("token signed by untrusted key")
        }
        // ... 3.x only in the JWKS: it keys bundle certificates by their RFC 7638 thumbprint.
        (false, _, TrustKind::Bundle) => Some("token signed by untrusted key"),
        (false, _, _) => None,
    }
}

async fn run_matrix(make: fn(&Path) -> KeySet) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let keys = make(dir);
    write_users(dir, &[("admin", "admin-pw")]);
    let layout = dir.join("image");
    let layer_hex = oci_layout(
        &layout,
        "latest",
        format!("matrix {}", keys.issuer).as_bytes(),
    );

    let mut rows = Vec::new();
    let mut not_run = Vec::new();
    for x5c in ["auto", "never"] {
        let idir = dir.join(format!("issuer-{x5c}"));
        std::fs::create_dir_all(&idir).expect("dir");
        let config = format!(
            "[token]\nissuer = \"{}\"\nservice = \"{SERVICE}\"\nx5c = \"{x5c}\"\n[keys]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             [identity]\nhtpasswd = \"{}\"\n[[acl]]\naccount = \"admin\"\nname = \"**\"\nactions = [\"*\"]\n",
            keys.issuer,
            keys.cert.display(),
            keys.key.display(),
            dir.join("users.htpasswd").display()
        );
        let issuer = Issuer::start(&idir, &config, &[]).await;
        // What a registry is given: the JWKS the issuer publishes.
        let jwks_path = idir.join("jwks.json");
        let jwks = reqwest::get(format!("{}/.well-known/jwks.json", issuer.url()))
            .await
            .expect("jwks")
            .text()
            .await
            .expect("jwks body");
        std::fs::write(&jwks_path, jwks).expect("jwks file");
        for version in Distribution::ALL {
            for trust in [TrustKind::Bundle, TrustKind::BundleJwks, TrustKind::Jwks] {
                // 2.8 has no `jwks` option; `never` only matters where kid is the only way.
                if (version == Distribution::V2_8 && trust == TrustKind::Jwks)
                    || (x5c == "never" && !(keys.valid && trust == TrustKind::Jwks))
                {
                    continue;
                }
                let rdir = idir.join(format!("{version:?}-{trust:?}"));
                std::fs::create_dir_all(&rdir).expect("dir");
                let t = Trust {
                    bundle: (trust != TrustKind::Jwks).then_some(keys.bundle.as_path()),
                    jwks: (trust != TrustKind::Bundle).then_some(jwks_path.as_path()),
                };
                let registry = match Registry::start_with(
                    version,
                    &rdir,
                    &issuer.realm(),
                    SERVICE,
                    keys.issuer,
                    &t,
                )
                .await
                {
                    Ok(r) => r,
                    Err(why) if !Distribution::v3_required() => {
                        not_run.push(why);
                        continue;
                    }
                    Err(why) => panic!("{why}"),
                };
                let row = format!("{} {:?} x5c={x5c} {}", keys.issuer, trust, version.name());
                let dest = format!("docker://{}/org/app:latest", registry.host());
                let pushed = push(&rdir, &layout, &dest, "admin:admin-pw");
                match expected(version, trust, &keys, x5c) {
                    None => {
                        assert!(
                            pushed.status.success(),
                            "{row}: push failed; registry log:\n{}",
                            registry.proc.log_text()
                        );
                        let pulled = rdir.join("pulled");
                        let out = pull(&rdir, &dest, &pulled, "admin:admin-pw");
                        assert!(out.status.success(), "{row}: pull failed");
                        let layer = std::fs::read(pulled.join("blobs/sha256").join(&layer_hex))
                            .expect("pulled layer");
                        assert_eq!(sha256_hex(&layer), layer_hex, "{row}");
                        rows.push(format!("{row}: works"));
                    }
                    Some(reason) => {
                        assert!(!pushed.status.success(), "{row}: push should be refused");
                        let log = registry.proc.log_text();
                        assert!(
                            log.contains(reason),
                            "{row}: the registry did not refuse for the expected reason ({reason}):\n{log}"
                        );
                        rows.push(format!("{row}: refused ({reason})"));
                    }
                }
            }
        }
    }
    eprintln!("{}", rows.join("\n"));
    for why in not_run {
        eprintln!("{why}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_fresh_key() {
    run_matrix(fresh_key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_openssl_key() {
    run_matrix(openssl_key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_expired_seed_key() {
    run_matrix(seed_key).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn matrix_ca_issued_leaf() {
    run_matrix(ca_leaf_key).await;
}
