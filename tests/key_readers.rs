//! The keys we write are read by what platforms really use (OpenSSL 3, Node.js's `crypto`, as
//! open-balena's API does with `REGISTRY_TOKEN_AUTH_CERT_KEY`), our tokens verify in Node against
//! the published JWKS, and the keys OpenSSL writes load here in every shape it writes them.

use std::path::Path;
use std::process::Command;

use common::*;
use token_issuer::keys::KeyMaterial;

/// What a Node platform API does with our files: read the key, pair it with the certificate.
const NODE_READ: &str = r#"
const crypto = require("crypto"), fs = require("fs");
const [keyFile, certFile] = process.argv.slice(1);
const key = crypto.createPrivateKey(fs.readFileSync(keyFile));
const cert = new crypto.X509Certificate(fs.readFileSync(certFile));
if (key.asymmetricKeyDetails.namedCurve !== "prime256v1") throw new Error("curve " + JSON.stringify(key.asymmetricKeyDetails));
if (!cert.checkPrivateKey(key)) throw new Error("the key does not belong to the certificate");
console.log("ok");
"#;

/// Verifies a token against the JWKS, as a Node service trusting our issuer would.
const NODE_VERIFY: &str = r#"
const crypto = require("crypto"), fs = require("fs");
const [jwksFile, token] = process.argv.slice(1);
const jwks = JSON.parse(fs.readFileSync(jwksFile));
const [h, p, s] = token.split(".");
const header = JSON.parse(Buffer.from(h, "base64url"));
const jwk = jwks.keys.find(k => k.kid === header.kid);
if (!jwk) throw new Error("no key " + header.kid);
const key = crypto.createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, format: "jwk" });
const ok = crypto.verify("sha256", Buffer.from(h + "." + p), { key, dsaEncoding: "ieee-p1363" }, Buffer.from(s, "base64url"));
console.log(ok ? "valid" : "invalid");
"#;

fn node(script: &str, args: &[&str]) -> String {
    run(Command::new("node")
        .arg("-e")
        .arg(script)
        .arg("--")
        .args(args))
    .trim()
    .to_string()
}

fn openssl_reads(key: &Path, cert: &Path) {
    run(Command::new("openssl")
        .args(["pkey", "-noout", "-in"])
        .arg(key));
    run(Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(cert));
    assert_eq!(
        node(
            NODE_READ,
            &[&key.to_string_lossy(), &cert.to_string_lossy()]
        ),
        "ok"
    );
}

fn env_value(text: &str, name: &str) -> Vec<u8> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} missing"));
    data_encoding::BASE64
        .decode(line.trim().as_bytes())
        .expect("base64")
}

#[test]
fn generated_keys_load_in_openssl_and_node() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (cert, _) = gen_cert(dir, "api.example.test");
    openssl_reads(&dir.join("api.example.test.pem"), &cert);

    // scripts/gen-env's .env, and the development .env.example: the base64 values decode to
    // files both read.
    let env_file = dir.join("gen.env");
    run(Command::new("scripts/gen-env")
        .args(["api.example.test", "--out"])
        .arg(&env_file)
        .env("ISSUER_BIN", bin()));
    let example = std::fs::read_to_string(".env.example").expect(".env.example");
    for (name, text) in [
        ("gen-env", std::fs::read_to_string(&env_file).expect("env")),
        (".env.example", example),
    ] {
        let key = dir.join(format!("{name}.pem"));
        let cert = dir.join(format!("{name}.crt"));
        std::fs::write(&key, env_value(&text, "REGISTRY_TOKEN_AUTH_CERT_KEY")).expect("key");
        std::fs::write(&cert, env_value(&text, "REGISTRY_TOKEN_AUTH_CERT")).expect("cert");
        openssl_reads(&key, &cert);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_verify_in_node_against_the_jwks() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    gen_cert(dir, "iss.test");
    write_users(dir, &[("alice", "alice-pw")]);
    let config = "[token]\nissuer = \"iss.test\"\nservice = \"svc.test\"\n[keys]\ncert_file = \"iss.test.crt\"\nkey_file = \"iss.test.pem\"\n\
                  [identity]\nhtpasswd = \"users.htpasswd\"\n[[acl]]\naccount = \"alice\"\nname = \"**\"\nactions = [\"pull\"]\n";
    let issuer = Issuer::start(dir, config, &[]).await;
    let jwks = reqwest::get(format!("{}/.well-known/jwks.json", issuer.url()))
        .await
        .expect("jwks")
        .text()
        .await
        .expect("body");
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks).expect("jwks");
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}?service=svc.test&scope=repository:org/app:pull",
            issuer.realm()
        ))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = body["token"].as_str().expect("token");
    let jwks_arg = jwks_file.to_string_lossy().to_string();
    assert_eq!(node(NODE_VERIFY, &[&jwks_arg, token]), "valid");
    // The same token with another subject: Node must refuse it, or the check above means nothing.
    let (head, rest) = token.split_once('.').expect("jwt");
    let (payload, sig) = rest.split_once('.').expect("jwt");
    let mut claims: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("payload"),
    )
    .expect("claims");
    claims["sub"] = "mallory".into();
    let forged = format!(
        "{head}.{}.{sig}",
        data_encoding::BASE64URL_NOPAD.encode(claims.to_string().as_bytes())
    );
    assert_eq!(node(NODE_VERIFY, &[&jwks_arg, &forged]), "invalid");
}

/// Every shape OpenSSL writes a P-256 key in loads, with the certificate `req -x509` made for it.
#[test]
fn openssl_keys_load_here() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    // open-balena's script: SEC1 with the curve OID.
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sec1.pem",
    ]);
    // Without -noout: an EC PARAMETERS block before the key.
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-out",
        "params.pem",
    ]);
    // PKCS#8, as `openssl genpkey` and most tooling write it.
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "pkcs8.pem",
    ]);
    for key in ["sec1.pem", "params.pem", "pkcs8.pem"] {
        let cert = format!("{key}.crt");
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-days",
            "730",
            "-subj",
            "/CN=ob.test",
            "-key",
            key,
            "-out",
            &cert,
        ]);
        let m = KeyMaterial::load(
            &std::fs::read(dir.join(&cert)).expect("cert"),
            &std::fs::read(dir.join(key)).expect("key"),
            None,
        )
        .unwrap_or_else(|e| panic!("{key}: {e}"));
        // The kid as the shell recipe computes it from the certificate.
        let der = run(Command::new("sh").current_dir(dir).arg("-c").arg(format!(
            "openssl x509 -in {cert} -pubkey -noout | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | head -c 30 | base32 -w0 | sed 's/..../&:/g; s/:$//'"
        )));
        assert_eq!(m.kid, der.trim(), "{key}");
    }
}
