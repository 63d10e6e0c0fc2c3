//! zot as a registry that verifies our tokens itself. zot cannot be built here (its Go modules
//! are out of reach), so its checks are written out below as read in its source: project-zot/zot
//! at 6d19b445fed1c86c23fb7b351fac07cfd4717402, `pkg/api/bearer.go`, `bearer_auth.go` and
//! `authn.go`, with golang-jwt v5.3.1's validator. The realm's tokens must pass them for every
//! key type, with the key as zot's `cert` setting reads it (the certificate, or the public key
//! PEM), on a zot whose clock trails ours.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use common::*;
use data_encoding::BASE64URL_NOPAD;
use serde_json::Value;

const ISSUER: &str = "zot-issuer.test";
const SERVICE: &str = "zot.test";

/// What zot holds: the public key from `http.auth.bearer.cert`. `loadPublicKeyFromBytes`
/// tries a one-key JWKS, a PEM certificate (its public key), then a PKIX public key.
struct Zot {
    /// The SubjectPublicKeyInfo's algorithm OID and its key bytes.
    algorithm: String,
    key: Vec<u8>,
}

impl Zot {
    fn with_cert_file(path: &Path) -> Self {
        let pem = std::fs::read(path).expect("cert");
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
        match pem.label.as_str() {
            "CERTIFICATE" => {
                let cert = pem.parse_x509().expect("a certificate");
                Self::from_spki(cert.public_key())
            }
            "PUBLIC KEY" => {
                use x509_parser::prelude::FromDer;
                let (_, spki) =
                    x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents).expect("SPKI");
                Self::from_spki(&spki)
            }
            other => panic!("zot reads no {other} block"),
        }
    }

    fn from_spki(spki: &x509_parser::x509::SubjectPublicKeyInfo) -> Self {
        Self {
            algorithm: spki.algorithm.algorithm.to_id_string(),
            key: spki.subject_public_key.data.to_vec(),
        }
    }

    /// zot's answer to `action` on repository `name` with `token` when its clock reads `now`
    /// (unix seconds): `Err` with golang-jwt's or zot's reason.
    fn allows(&self, token: &str, now: f64, name: &str, action: &str) -> Result<(), String> {
        let parts: Vec<&str> = token.split('.').collect();
        let [h, p, s] = parts.as_slice() else {
            return Err("token is malformed".into());
        };
        let header = decode(h)?;
        let claims = decode(p)?;
        // jwt.WithValidMethods: no HMAC, no none; the key function ignores kid and x5c.
        let alg = header["alg"].as_str().unwrap_or_default();
        let verify: &'static dyn signature::VerificationAlgorithm = match alg {
            "ES256" => &signature::ECDSA_P256_SHA256_FIXED,
            "ES384" => &signature::ECDSA_P384_SHA384_FIXED,
            "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
            other => return Err(format!("signing method {other} is invalid")),
        };
        let is_ec = self.algorithm == "1.2.840.10045.2.1";
        if is_ec != alg.starts_with("ES") {
            return Err("key is of invalid type".into());
        }
        let sig = BASE64URL_NOPAD
            .decode(s.as_bytes())
            .map_err(|e| e.to_string())?;
        UnparsedPublicKey::new(verify, &self.key)
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| "token signature is invalid".to_string())?;
        // golang-jwt v5 with no leeway: exp and nbf when present, iat because of
        // jwt.WithIssuedAt(). zot checks neither iss nor aud.
        let time = |c: &str| claims.get(c).and_then(Value::as_f64);
        if time("exp").is_some_and(|exp| now >= exp) {
            return Err("token is expired".into());
        }
        if time("nbf").is_some_and(|nbf| now < nbf) {
            return Err("token is not valid yet".into());
        }
        if time("iat").is_some_and(|iat| now < iat) {
            return Err("token used before issued".into());
        }
        // Exact type, name and action: no `*`, and push does not imply pull.
        let granted = claims["access"].as_array().into_iter().flatten().any(|a| {
            a["type"] == "repository"
                && a["name"] == name
                && a["actions"]
                    .as_array()
                    .is_some_and(|acts| acts.iter().any(|x| x == action))
        });
        match granted {
            true => Ok(()),
            false => Err("insufficient scope".into()),
        }
    }
}

fn decode(part: &str) -> Result<Value, String> {
    let bytes = BASE64URL_NOPAD
        .decode(part.as_bytes())
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// An issuer with a key of `kind` (`p256`, `p384`, `rsa`): alice may do anything under
/// `org/`, bob only push `org/app`.
async fn issuer(dir: &Path, kind: &str) -> Issuer {
    run(Command::new(bin())
        .args(["gen-token-auth-cert", ISSUER, "--type", kind, "--out-dir"])
        .arg(dir));
    write_users(dir, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    let cfg = ConfigBuilder::new(ISSUER, SERVICE)
        .allow("alice", "org/**", &["*"])
        .allow("bob", "org/app", &["push"])
        .build();
    Issuer::start(dir, &cfg, &[]).await
}

async fn token(issuer: &Issuer, user: &str, scope: &str) -> String {
    let scope: String = form_urlencoded::byte_serialize(scope.as_bytes()).collect();
    let url = format!("{}?service={SERVICE}&scope={scope}", issuer.realm());
    token_at(&url, user, &format!("{user}-pw")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_zot_whose_clock_trails_ours_accepts_a_fresh_token_for_every_key_type() {
    for kind in ["p256", "p384", "rsa"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let issuer = issuer(tmp.path(), kind).await;
        let public_pem = tmp.path().join("served.pem");
        let served = reqwest::get(format!("{}/v1/registry/public.pem", issuer.url()))
            .await
            .expect("public.pem")
            .bytes()
            .await
            .expect("body");
        std::fs::write(&public_pem, &served).expect("write");
        let asked_at = now();
        let t = token(&issuer, "alice", "repository:org/app:pull,push").await;
        // A second behind us: an iat of "now" would be in zot's future.
        let behind = asked_at - 1.0;
        for cert in [tmp.path().join(format!("{ISSUER}.crt")), public_pem.clone()] {
            let zot = Zot::with_cert_file(&cert);
            for action in ["pull", "push"] {
                assert_eq!(
                    zot.allows(&t, behind, "org/app", action),
                    Ok(()),
                    "{kind} {action}"
                );
            }
            assert_eq!(
                zot.allows(&t, behind, "org/other", "pull"),
                Err("insufficient scope".into())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_granted_star_is_written_out_as_the_actions_zot_names() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path(), "p256").await;
    let zot = Zot::with_cert_file(&tmp.path().join(format!("{ISSUER}.crt")));
    for scope in ["repository:org/app:*", "repository:org/app:pull,*"] {
        let t = token(&issuer, "alice", scope).await;
        assert_eq!(
            jwt_claims(&t)["access"][0]["actions"],
            serde_json::json!(["pull", "push", "delete"]),
            "{scope}"
        );
        for action in ["pull", "push", "delete"] {
            assert_eq!(zot.allows(&t, now(), "org/app", action), Ok(()), "{action}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn push_alone_does_not_let_zot_pull_and_an_expired_token_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path(), "p256").await;
    let zot = Zot::with_cert_file(&tmp.path().join(format!("{ISSUER}.crt")));
    let t = token(&issuer, "bob", "repository:org/app:pull,push").await;
    assert_eq!(zot.allows(&t, now(), "org/app", "push"), Ok(()));
    assert_eq!(
        zot.allows(&t, now(), "org/app", "pull"),
        Err("insufficient scope".into())
    );
    let claims = jwt_claims(&t);
    let exp = claims["exp"].as_f64().expect("exp");
    assert_eq!(
        zot.allows(&t, exp, "org/app", "push"),
        Err("token is expired".into())
    );
    // The verifier is strict on time: a clock before nbf (which is iat) refuses.
    let nbf = claims["nbf"].as_f64().expect("nbf");
    assert_eq!(claims["iat"].as_f64(), Some(nbf), "both backdated alike");
    assert_eq!(
        zot.allows(&t, nbf - 0.5, "org/app", "push"),
        Err("token is not valid yet".into())
    );
}
