//! End to end: token-issuer in front of Debian's distribution registry (2.8), driven by skopeo.

use std::path::Path;

use common::*;

const SERVICE: &str = "registry.test";

fn config(dir: &Path) -> String {
    write_users(dir, &[("admin", "admin-pw"), ("reader", "reader-pw")]);
    ConfigBuilder::keys_from_env(SERVICE)
        .allow("admin", "**", &["*"])
        .allow("reader", "org/*", &["pull"])
        .build()
}

/// Push as admin, pull as reader (bytes identical), reader refused a push, wrong password refused.
async fn round_trip(dir: &Path, registry: &Registry) {
    let layout = dir.join("image");
    let content = format!("hello from {}", dir.display());
    let layer_hex = oci_layout(&layout, "latest", content.as_bytes());
    let dest = format!("docker://{}/org/app:latest", registry.host());

    let out = push(dir, &layout, &dest, "admin:admin-pw");
    assert!(
        out.status.success(),
        "admin push failed; registry log:\n{}",
        registry.proc.log_text()
    );

    let pulled = dir.join("pulled");
    let out = pull(dir, &dest, &pulled, "reader:reader-pw");
    assert!(out.status.success(), "reader pull failed");
    let layer = std::fs::read(pulled.join("blobs/sha256").join(&layer_hex)).expect("pulled layer");
    assert_eq!(sha256_hex(&layer), layer_hex);
    assert_eq!(
        layer,
        std::fs::read(layout.join("blobs/sha256").join(&layer_hex)).expect("orig")
    );

    let out = push(
        dir,
        &layout,
        &format!("docker://{}/org/other:latest", registry.host()),
        "reader:reader-pw",
    );
    assert!(!out.status.success(), "a pull-only user pushed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("denied")
            || err.contains("unauthorized")
            || err.contains("authentication required"),
        "{err}"
    );
    // Nothing landed.
    let inspect = skopeo(
        dir,
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "admin:admin-pw",
            &format!("docker://{}/org/other:latest", registry.host()),
        ],
    );
    assert!(
        !inspect.status.success(),
        "org/other exists after a refused push"
    );

    let out = pull(dir, &dest, &dir.join("nope"), "reader:wrong-pw");
    assert!(!out.status.success(), "a wrong password pulled");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") || err.contains("unauthorized") || err.contains("invalid username"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_key_works_with_distribution_2_8() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (cert, env_lines) = gen_cert(dir, "issuer.test");
    for var in [
        "REGISTRY_TOKEN_AUTH_CERT=",
        "REGISTRY_TOKEN_AUTH_CERT_KEY=",
        "REGISTRY_TOKEN_AUTH_CERT_KID=",
        "REGISTRY_TOKEN_AUTH_CERT_ISSUER=issuer.test",
    ] {
        assert!(
            env_lines.lines().any(|l| l.starts_with(var)),
            "{var} missing from:\n{env_lines}"
        );
    }
    // The printed env lines configure the issuer exactly as an open-balena .env would.
    let env: Vec<(String, String)> = env_lines
        .lines()
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let issuer = Issuer::start(dir, &config(dir), &env_refs).await;
    let registry = Registry::start(dir, &issuer.realm(), SERVICE, "issuer.test", &cert).await;
    round_trip(dir, &registry).await;
}

/// Seed 003's development key: its certificate expired in 2022, and distribution 2.8 still
/// accepts the tokens on the kid path (it never checks the bundle's validity dates).
#[tokio::test(flavor = "multi_thread")]
async fn seed_development_key_works_with_distribution_2_8() {
    const CERT: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJqVENDQVRPZ0F3SUJBZ0lVVjVRZ2xNSDRuK2wrZGF6eE1PZG1vQldqTFhJd0NnWUlLb1pJemowRUF3SXcKSERFYU1CZ0dBMVVFQXd3UllYQnBMbXg1TG1acGMyZ3ViRzlqWVd3d0hoY05NakF4TVRJMk1UY3pNalEwV2hjTgpNakl4TVRJMk1UY3pNalEwV2pBY01Sb3dHQVlEVlFRRERCRmhjR2t1YkhrdVptbHphQzVzYjJOaGJEQlpNQk1HCkJ5cUdTTTQ5QWdFR0NDcUdTTTQ5QXdFSEEwSUFCRE5IUkNWYmthZlpZaWxGY3dXd2F0bkN6bEt1VHlEZmdLTVoKZ3BhbUJVR08vRlNIMGhjTU9CYTE5V3p2eFJXN05GOWNwRmVIZSszQndWdnB4OGIxOTZTalV6QlJNQjBHQTFVZApEZ1FXQkJRelc5SDJab3VDa2NsaVJrRHYwRnJUQSthbmtUQWZCZ05WSFNNRUdEQVdnQlF6VzlIMlpvdUNrY2xpClJrRHYwRnJUQSthbmtUQVBCZ05WSFJNQkFmOEVCVEFEQVFIL01Bb0dDQ3FHU000OUJBTUNBMGdBTUVVQ0lHRWQKTXF1UGJtcTNoV1hRbkowTUpieHc1RWJLMEFWQndhem9GR2F6RFVxTkFpRUF4MzFqdEpPUUEveWNPQlIyZDEyTgpQZ3dacjdZWTN3TUJ4RWtaS2VXR3FuQT0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=";
    const KEY: &str = "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUtYdzQxTDFBdFRGK01kMzJ1Rnd1NnpKWExNRktaTzBBRGNEWEh1bEZFNk5vQW9HQ0NxR1NNNDkKQXdFSG9VUURRZ0FFTTBkRUpWdVJwOWxpS1VWekJiQnEyY0xPVXE1UElOK0FveG1DbHFZRlFZNzhWSWZTRnd3NApGclgxYk8vRkZiczBYMXlrVjRkNzdjSEJXK25IeHZYM3BBPT0KLS0tLS1FTkQgRUMgUFJJVkFURSBLRVktLS0tLQo=";
    const KID: &str =
        "UEYzSDoyNkZSOkxZUzM6VElZVToySlVJOkEySEU6N1pYVDpHM0I1OkhYNzQ6NVVFQjpTTlUyOkI1Skw=";
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let issuer = Issuer::start(
        dir,
        &config(dir),
        &[
            ("REGISTRY_TOKEN_AUTH_CERT", CERT),
            ("REGISTRY_TOKEN_AUTH_CERT_KEY", KEY),
            ("REGISTRY_TOKEN_AUTH_CERT_KID", KID),
            ("REGISTRY_TOKEN_AUTH_CERT_ISSUER", "api.ly.fish.local"),
            ("REGISTRY_TOKEN_AUTH_JWT_ALGO", "ES256"),
        ],
    )
    .await;
    assert!(
        issuer.proc.log_text().contains("expired"),
        "no expiry warning:\n{}",
        issuer.proc.log_text()
    );
    // The registry trusts the bundle the issuer publishes.
    let bundle = reqwest::get(format!("{}/v1/registry/certs", issuer.url()))
        .await
        .expect("certs")
        .text()
        .await
        .expect("body");
    let cert_path = dir.join("bundle.crt");
    std::fs::write(&cert_path, &bundle).expect("bundle");
    let registry = Registry::start(
        dir,
        &issuer.realm(),
        SERVICE,
        "api.ly.fish.local",
        &cert_path,
    )
    .await;
    round_trip(dir, &registry).await;
}
