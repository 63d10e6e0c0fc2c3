//! Registries that trust one plain public key (a SubjectPublicKeyInfo PEM, as the Deno OCI
//! registry's `REGISTRY_AUTH_TOKEN_PUBLICKEY` takes): `gen-token-auth-cert` writes it as
//! `<issuer>.pub`, `/v1/registry/public.pem` serves the same bytes, and a verifier that reads
//! only that file accepts the realm's tokens, for every key type: OpenSSL (`openssl dgst
//! -verify`, the JOSE signature turned into DER) and Node's `crypto`.

use std::path::Path;
use std::process::Command;

use common::*;

const ISSUER: &str = "pub.test";
const SERVICE: &str = "registry.test";

/// A verifier holding only the public key file, as a small registry in Node would.
const NODE_VERIFY: &str = r#"
const crypto = require("crypto"), fs = require("fs");
const [pubFile, token] = process.argv.slice(1);
const key = crypto.createPublicKey(fs.readFileSync(pubFile));
const [h, p, s] = token.split(".");
const alg = JSON.parse(Buffer.from(h, "base64url")).alg;
const hash = { ES256: "sha256", ES384: "sha384", RS256: "sha256" }[alg];
const ok = crypto.verify(hash, Buffer.from(h + "." + p), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(s, "base64url"));
console.log(ok ? "valid " + key.asymmetricKeyType : "invalid");
"#;

/// An ECDSA signature in JOSE form (r || s, each half the length) as DER, for OpenSSL.
fn jose_to_der(sig: &[u8]) -> Vec<u8> {
    let int = |half: &[u8]| {
        let trimmed: Vec<u8> = half.iter().copied().skip_while(|b| *b == 0).collect();
        let mut v = if trimmed.first().is_some_and(|b| b & 0x80 != 0) || trimmed.is_empty() {
            vec![0]
        } else {
            vec![]
        };
        v.extend(trimmed);
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    };
    let (r, s) = sig.split_at(sig.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30];
    if body.len() >= 0x80 {
        out.push(0x81);
    }
    out.push(body.len() as u8);
    out.extend(body);
    out
}

async fn token(issuer: &Issuer) -> String {
    let url = format!(
        "{}?service={SERVICE}&scope=repository:org/app:pull",
        issuer.realm()
    );
    token_at(&url, "alice", "alice-pw").await
}

async fn check(dir: &Path, key_type: &str, alg: &str, digest: &str) {
    run(Command::new(bin())
        .args([
            "gen-token-auth-cert",
            ISSUER,
            "--type",
            key_type,
            "--out-dir",
        ])
        .arg(dir));
    let pub_file = dir.join(format!("{ISSUER}.pub"));
    let pem = std::fs::read_to_string(&pub_file).expect(".pub written");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    // What OpenSSL derives from the certificate is the same key.
    let from_cert = run(Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(dir.join(format!("{ISSUER}.crt"))));
    assert_eq!(from_cert, pem);

    write_users(dir, &[("alice", "alice-pw")]);
    let config = ConfigBuilder::new(ISSUER, SERVICE)
        .allow("alice", "**", &["pull"])
        .build();
    let issuer = Issuer::start(dir, &config, &[]).await;
    let served = reqwest::get(format!("{}/v1/registry/public.pem", issuer.url()))
        .await
        .expect("public.pem")
        .text()
        .await
        .expect("text");
    assert_eq!(served, pem, "the endpoint serves the file's bytes");

    let jwt = token(&issuer).await;
    let head = jwt_header(&jwt);
    assert_eq!(head["alg"], alg);

    // OpenSSL with only the .pub file.
    let (signed, sig) = jwt.rsplit_once('.').expect("three parts");
    let sig = data_encoding::BASE64URL_NOPAD
        .decode(sig.as_bytes())
        .expect("sig");
    let sig = if alg.starts_with("ES") {
        jose_to_der(&sig)
    } else {
        sig
    };
    std::fs::write(dir.join("input"), signed).expect("input");
    std::fs::write(dir.join("sig.der"), &sig).expect("sig");
    let out = run(Command::new("openssl")
        .args(["dgst", digest, "-verify"])
        .arg(&pub_file)
        .arg("-signature")
        .arg(dir.join("sig.der"))
        .arg(dir.join("input")));
    assert_eq!(out.trim(), "Verified OK");
    // A token changed by one byte is refused by the same command.
    std::fs::write(dir.join("input"), format!("{signed}x")).expect("input");
    let bad = Command::new("openssl")
        .args(["dgst", digest, "-verify"])
        .arg(&pub_file)
        .arg("-signature")
        .arg(dir.join("sig.der"))
        .arg(dir.join("input"))
        .output()
        .expect("openssl");
    assert!(!bad.status.success());

    // Node with only the .pub file.
    let out = run(Command::new("node")
        .arg("-e")
        .arg(NODE_VERIFY)
        .arg("--")
        .arg(&pub_file)
        .arg(&jwt));
    let said = out;
    assert!(said.starts_with("valid"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_p256_public_key_alone_verifies_the_realms_tokens() {
    let tmp = tempfile::tempdir().expect("tmp");
    check(tmp.path(), "p256", "ES256", "-sha256").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_p384_public_key_alone_verifies_the_realms_tokens() {
    let tmp = tempfile::tempdir().expect("tmp");
    check(tmp.path(), "p384", "ES384", "-sha384").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_rsa_public_key_alone_verifies_the_realms_tokens() {
    let tmp = tempfile::tempdir().expect("tmp");
    check(tmp.path(), "rsa", "RS256", "-sha256").await;
}
