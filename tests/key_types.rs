//! RSA and P-384 signing keys: `gen-token-auth-cert --type rsa|p384`, keys OpenSSL reads, the
//! algorithm the key decides (RS256, ES384) in every token and the JWKS, and skopeo pushing and
//! pulling (bytes identical) through distribution 2.8 (bundle), 3.1.1 (bundle + JWKS) and the
//! built-in registry; and without `x5c`, through 2.8 (the kid in the bundle) and 3.1.1 (the JWKS
//! alone). P-256 (ES256) runs through every other test.

use std::path::Path;
use std::process::Command;

use common::*;

const ISSUER: &str = "issuer.test";
const SERVICE: &str = "registry.test";

fn config(registry_port: u16) -> String {
    ConfigBuilder::new(ISSUER, SERVICE)
        .allow("alice", "**", &["*"])
        .registry(registry_port, "builtin")
        .build()
}

/// Push, then pull into a fresh layout: the layer's bytes come back.
fn round_trip(dir: &Path, host: &str, label: &str) {
    let layout = dir.join(format!("image-{label}"));
    let layer_hex = oci_layout(&layout, "latest", format!("hello {label}").as_bytes());
    let dest = format!("docker://{host}/org/app:latest");
    assert!(
        push(dir, &layout, &dest, "alice:alice-pw").status.success(),
        "{label}: push"
    );
    let pulled = dir.join(format!("pulled-{label}"));
    assert!(
        pull(dir, &dest, &pulled, "alice:alice-pw").status.success(),
        "{label}: pull"
    );
    let layer = std::fs::read(pulled.join("blobs/sha256").join(&layer_hex)).expect("layer");
    assert_eq!(sha256_hex(&layer), layer_hex, "{label}");
}

/// `round_trip` through distribution 3.1.1 trusting `trust` (required in CI; reported as not
/// run without its binary elsewhere).
async fn v3_round_trip(dir: &Path, issuer: &Issuer, trust: &Trust<'_>, label: &str) {
    match Registry::start_with(
        Distribution::V3_1_1,
        dir,
        &issuer.realm(),
        SERVICE,
        ISSUER,
        trust,
    )
    .await
    {
        Ok(r) => round_trip(dir, &r.host(), label),
        Err(why) if !Distribution::v3_required() => eprintln!("{why}"),
        Err(why) => panic!("{why}"),
    }
}

async fn through_every_registry(key_type: &str, alg: &str, kty: &str) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let out = Command::new(bin())
        .args([
            "gen-token-auth-cert",
            ISSUER,
            "--type",
            key_type,
            "--out-dir",
        ])
        .arg(dir)
        .output()
        .expect("gen-token-auth-cert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = dir.join(format!("{ISSUER}.pem"));
    let pkey = Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(&key)
        .status()
        .expect("openssl");
    assert!(pkey.success(), "{key_type}: OpenSSL reads the key");
    write_users(dir, &[("alice", "alice-pw")]);
    let builtin = free_port();
    let issuer = Issuer::start(dir, &config(builtin), &[]).await;

    // The key's type decides the algorithm, in tokens and in the JWKS.
    let token = token_at(
        &format!("{}?service={SERVICE}", issuer.realm()),
        "alice",
        "alice-pw",
    )
    .await;
    let h = jwt_header(&token);
    let kid = std::fs::read_to_string(dir.join(format!("{ISSUER}.kid"))).expect("kid");
    assert_eq!(h["alg"], alg, "{h}");
    assert_eq!(h["kid"], kid.as_str());
    let jwks: serde_json::Value = reqwest::get(format!("{}/.well-known/jwks.json", issuer.url()))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"][0]["kty"], kty, "{jwks}");
    assert_eq!(jwks["keys"][0]["alg"], alg);
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());

    round_trip(
        dir,
        &format!("127.0.0.1:{builtin}"),
        &format!("{key_type} built-in"),
    );
    let cert = dir.join(format!("{ISSUER}.crt"));
    let jwks_file = dir.join(format!("{ISSUER}.jwks.json"));
    let r28 = Registry::start(dir, &issuer.realm(), SERVICE, ISSUER, &cert).await;
    round_trip(dir, &r28.host(), &format!("{key_type} 2.8"));
    let trust = Trust {
        bundle: Some(&cert),
        jwks: Some(&jwks_file),
    };
    v3_round_trip(dir, &issuer, &trust, &format!("{key_type} 3.1.1")).await;
    drop(issuer);

    // Tokens without x5c: the registries find the key by its libtrust kid, which must be the
    // one they compute (2.8 from the bundle's certificate, 3.1.1 from the JWKS).
    let issuer = Issuer::start(
        dir,
        &config(free_port()),
        &[("TOKEN_ISSUER_TOKEN__X5C", "never")],
    )
    .await;
    let r28 = Registry::start(dir, &issuer.realm(), SERVICE, ISSUER, &cert).await;
    round_trip(dir, &r28.host(), &format!("{key_type} 2.8 by kid"));
    let trust = Trust {
        bundle: None,
        jwks: Some(&jwks_file),
    };
    v3_round_trip(dir, &issuer, &trust, &format!("{key_type} 3.1.1 by kid")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rsa_keys_sign_rs256() {
    through_every_registry("rsa", "RS256", "RSA").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn p384_keys_sign_es384() {
    through_every_registry("p384", "ES384", "EC").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_algorithm_setting_must_agree_with_the_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let out = Command::new(bin())
        .args(["gen-token-auth-cert", ISSUER, "--type", "rsa", "--out-dir"])
        .arg(dir)
        .output()
        .expect("gen-token-auth-cert");
    assert!(out.status.success());
    write_users(dir, &[("alice", "alice-pw")]);
    let mut issuer = Issuer::spawn(
        dir,
        &config(free_port()),
        &[("REGISTRY_TOKEN_AUTH_JWT_ALGO", "ES256")],
    );
    let (status, log) = issuer.proc.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains("REGISTRY_TOKEN_AUTH_JWT_ALGO (token.algorithm) is ES256")
            && log.contains("an RSA key, which signs RS256"),
        "{log}"
    );
    let ok = Issuer::start(
        dir,
        &config(free_port()),
        &[("REGISTRY_TOKEN_AUTH_JWT_ALGO", "RS256")],
    )
    .await;
    drop(ok);
}
