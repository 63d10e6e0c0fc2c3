//! Key rotation as the README's runbook does it: `keys rotate` writes the next key; an issuer
//! signing with the old key publishes the new one; then the new key signs and the old one is
//! published; tokens of both are accepted by distribution 2.8 trusting a bundle of both
//! certificates (through `x5c` and through `kid`), by distribution 3.1.1 trusting a JWKS of
//! both, and by the built-in registry; once the old key is dropped from the registries, its
//! tokens are refused and the new key's accepted.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const ISSUER: &str = "issuer.test";
const SERVICE: &str = "registry.test";
const REPO_SCOPE: &str = "repository:org/app:pull";

/// The issuer config: `cert`/`key` sign, `published` are published; `x5c` as given.
fn config(
    cert: &Path,
    key: &Path,
    published: &[&Path],
    x5c: &str,
    registry: Option<u16>,
) -> String {
    let list: Vec<String> = published
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    let mut c = format!(
        r#"
[token]
issuer = "{ISSUER}"
service = "{SERVICE}"
x5c = "{x5c}"
[keys]
cert_file = "{}"
key_file = "{}"
published_files = [{}]
[identity]
htpasswd = "users.htpasswd"
[[acl]]
account = "alice"
name = "**"
actions = ["pull"]
"#,
        cert.display(),
        key.display(),
        list.join(", ")
    );
    if let Some(port) = registry {
        c.push_str(&format!(
            "[registry]\nlisten = \"127.0.0.1:{port}\"\nstorage = \"builtin-storage\"\n"
        ));
    }
    c
}

/// A token for alice from the issuer in `dir` started with `cfg` (then stopped).
async fn token_from(dir: &Path, cfg: &str) -> (String, Issuer) {
    let issuer = Issuer::start(dir, cfg, &[]).await;
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}?service={SERVICE}&scope={}",
            issuer.realm(),
            REPO_SCOPE
        ))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let token = body["token"].as_str().expect("a token").to_string();
    (token, issuer)
}

fn kid_of(token: &str) -> String {
    let head = token.split('.').next().expect("header");
    let h: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(head.as_bytes())
            .expect("b64"),
    )
    .expect("json");
    h["kid"].as_str().expect("kid").to_string()
}

/// What the registry at `host` answers a tag list with `token`: 401 when it refuses the token,
/// 404 (`NAME_UNKNOWN`, the repository is empty) when it accepts it.
async fn status(host: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{host}/v2/org/app/tags/list"))
        .bearer_auth(token)
        .send()
        .await
        .expect("registry request")
        .status()
        .as_u16()
}

async fn fetch(issuer: &Issuer, path: &str, file: &Path) -> String {
    let text = reqwest::get(format!("{}{path}", issuer.url()))
        .await
        .expect("fetch")
        .text()
        .await
        .expect("text");
    std::fs::write(file, &text).expect("write");
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_with_every_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    let (old_cert, _) = gen_cert(dir, ISSUER);
    let old_key = dir.join(format!("{ISSUER}.pem"));
    let old_kid = std::fs::read_to_string(dir.join(format!("{ISSUER}.kid"))).expect("kid");

    // 1. The next key, for the configured issuer.
    std::fs::write(
        dir.join("issuer.toml"),
        config(&old_cert, &old_key, &[], "auto", None),
    )
    .expect("config");
    let out = std::process::Command::new(BIN)
        .args(["keys", "rotate", "--config"])
        .arg(dir.join("issuer.toml"))
        .arg("--out-dir")
        .arg(dir.join("next"))
        .output()
        .expect("keys rotate");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let next: Vec<PathBuf> = std::fs::read_dir(dir.join("next"))
        .expect("next dir")
        .map(|e| e.expect("entry").path())
        .collect();
    let find = |ext: &str| {
        next.iter()
            .find(|p| p.to_string_lossy().ends_with(ext))
            .unwrap_or_else(|| panic!("no {ext} in {next:?}"))
            .clone()
    };
    let (new_cert, new_key) = (find(".crt"), find(".pem"));
    let new_kid = std::fs::read_to_string(find(".kid")).expect("kid");
    assert!(
        new_cert
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{ISSUER}-20"))),
        "{new_cert:?}"
    );
    assert!(
        said.contains(&new_kid) && said.contains("published_files"),
        "{said}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("TOKEN_ISSUER_KEYS__PUBLISHED=[\""),
        "env lines for the new key"
    );
    // Not twice on one day without noticing.
    let again = std::process::Command::new(BIN)
        .args(["keys", "rotate", "--config"])
        .arg(dir.join("issuer.toml"))
        .arg("--out-dir")
        .arg(dir.join("next"))
        .output()
        .expect("keys rotate");
    assert!(!again.status.success());

    // 2. Old key signs, new key published: both in the bundle and the JWKS.
    let (old_auto, a) = token_from(
        dir,
        &config(&old_cert, &old_key, &[&new_cert], "auto", None),
    )
    .await;
    let bundle_both = dir.join("bundle-both.pem");
    let jwks_both = dir.join("jwks-both.json");
    let pem = fetch(&a, "/v1/registry/certs", &bundle_both).await;
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "{pem}");
    let jwks: serde_json::Value =
        serde_json::from_str(&fetch(&a, "/.well-known/jwks.json", &jwks_both).await).expect("jwks");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid"))
        .collect();
    assert_eq!(
        kids,
        [old_kid.as_str(), new_kid.as_str()],
        "signing key first"
    );
    drop(a);
    let (old_never, a) = token_from(
        dir,
        &config(&old_cert, &old_key, &[&new_cert], "never", None),
    )
    .await;
    drop(a);
    assert_eq!(kid_of(&old_auto), old_kid);

    // 3. New key signs, old key published (and trusted by the built-in registry).
    let builtin = free_port();
    let (new_never, b) = token_from(
        dir,
        &config(&new_cert, &new_key, &[&old_cert], "never", Some(builtin)),
    )
    .await;
    assert_eq!(kid_of(&new_never), new_kid);
    let builtin_host = format!("127.0.0.1:{builtin}");
    assert_eq!(
        status(&builtin_host, &old_never).await,
        404,
        "built-in: old key"
    );
    assert_eq!(
        status(&builtin_host, &old_auto).await,
        404,
        "built-in: old key, x5c"
    );
    assert_eq!(
        status(&builtin_host, &new_never).await,
        404,
        "built-in: new key"
    );
    drop(b);
    let (new_auto, b) = token_from(
        dir,
        &config(&new_cert, &new_key, &[&old_cert], "auto", None),
    )
    .await;
    drop(b);

    // The new key alone, as the registries trust it at the end.
    let (_, c) = token_from(dir, &config(&new_cert, &new_key, &[], "auto", None)).await;
    let bundle_new = dir.join("bundle-new.pem");
    let jwks_new = dir.join("jwks-new.json");
    fetch(&c, "/v1/registry/certs", &bundle_new).await;
    fetch(&c, "/.well-known/jwks.json", &jwks_new).await;
    drop(c);

    let realm = "http://127.0.0.1:9/v1/registry";
    let start = |v: Distribution, trust: Trust<'static>| {
        let dir = dir.to_path_buf();
        async move { Registry::start_with(v, &dir, realm, SERVICE, ISSUER, &trust).await }
    };
    let leak = |p: &Path| -> &'static Path { Box::leak(p.to_path_buf().into_boxed_path()) };

    // distribution 2.8 with a bundle of both: x5c and kid tokens of both keys.
    let r = start(Distribution::V2_8, Trust::bundle(leak(&bundle_both)))
        .await
        .expect("docker-registry");
    for (t, what) in [
        (&old_auto, "old x5c"),
        (&old_never, "old kid"),
        (&new_auto, "new x5c"),
        (&new_never, "new kid"),
    ] {
        assert_eq!(status(&r.host(), t).await, 404, "2.8, both trusted: {what}");
    }
    drop(r);
    // ... then the new one alone: the old key's tokens refused.
    let r = start(Distribution::V2_8, Trust::bundle(leak(&bundle_new)))
        .await
        .expect("docker-registry");
    for (t, what, want) in [
        (&old_auto, "old x5c", 401),
        (&old_never, "old kid", 401),
        (&new_auto, "new x5c", 404),
        (&new_never, "new kid", 404),
    ] {
        assert_eq!(status(&r.host(), t).await, want, "2.8, new trusted: {what}");
    }
    drop(r);

    // distribution 3.1.1 with a JWKS of both (kid tokens), then of the new one.
    let jwks_only = |p: &Path| Trust {
        bundle: None,
        jwks: Some(leak(p)),
    };
    match start(Distribution::V3_1_1, jwks_only(&jwks_both)).await {
        Ok(r) => {
            assert_eq!(status(&r.host(), &old_never).await, 404, "3.1.1: old key");
            assert_eq!(status(&r.host(), &new_never).await, 404, "3.1.1: new key");
            drop(r);
            let r = start(Distribution::V3_1_1, jwks_only(&jwks_new))
                .await
                .expect("3.1.1");
            assert_eq!(
                status(&r.host(), &old_never).await,
                401,
                "3.1.1: old key dropped"
            );
            assert_eq!(status(&r.host(), &new_never).await, 404, "3.1.1: new key");
        }
        Err(why) if !Distribution::v3_required() => eprintln!("{why}"),
        Err(why) => panic!("{why}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn published_keys_are_checked_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    let (cert, _) = gen_cert(dir, ISSUER);
    let key = dir.join(format!("{ISSUER}.pem"));
    let mut issuer = Issuer::spawn(dir, &config(&cert, &key, &[&cert], "auto", None), &[]);
    let (status, log) = issuer.proc.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains("keys.published_files") && log.contains("signing key's certificate"),
        "{log}"
    );
    std::fs::write(dir.join("junk.crt"), "not a certificate").expect("junk");
    let mut issuer = Issuer::spawn(
        dir,
        &config(&cert, &key, &[&dir.join("junk.crt")], "auto", None),
        &[],
    );
    let (status, log) = issuer.proc.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains("junk.crt") && log.contains("the certificate is not usable"),
        "{log}"
    );
}
