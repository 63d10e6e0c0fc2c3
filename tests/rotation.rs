//! Key rotation as the README's runbook does it: `keys rotate` writes the next key; an issuer
//! signing with the old key publishes the new one; then the new key signs and the old one is
//! published; tokens of both are accepted by distribution 2.8 trusting a bundle of both
//! certificates (through `x5c` and through `kid`), by distribution 3.1.1 trusting a JWKS of
//! both, and by the built-in registry; once the old key is dropped from the registries, its
//! tokens are refused and the new key's accepted.

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
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let mut c = ConfigBuilder::new(ISSUER, SERVICE)
        .token(&format!("x5c = {x5c:?}"))
        .key_files(cert, key)
        .keys(&format!("published_files = [{}]", list.join(", ")))
        .allow("alice", "**", &["pull"]);
    if let Some(port) = registry {
        c = c.registry(port, "builtin-storage");
    }
    c.build()
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
    let out = std::process::Command::new(bin())
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
    // The environment's lines, labelled by step; step 4 publishes the old certificate.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("# step 2 only"), "{stdout}");
    assert!(
        lines[1].starts_with("TOKEN_ISSUER_KEYS__PUBLISHED=[\""),
        "{stdout}"
    );
    assert!(lines[2].starts_with("# step 4 only"), "{stdout}");
    let old_b64 = data_encoding::BASE64.encode(
        std::fs::read_to_string(&old_cert)
            .expect("cert")
            .trim_end()
            .as_bytes(),
    );
    assert_eq!(
        lines.last(),
        Some(&format!("TOKEN_ISSUER_KEYS__PUBLISHED=[\"{old_b64}\"]").as_str())
    );
    // Not twice on one day without noticing.
    let again = std::process::Command::new(bin())
        .args(["keys", "rotate", "--config"])
        .arg(dir.join("issuer.toml"))
        .arg("--out-dir")
        .arg(dir.join("next"))
        .output()
        .expect("keys rotate");
    assert!(!again.status.success());
    let said_again = String::from_utf8_lossy(&again.stderr);
    assert!(said_again.contains("--force"), "{said_again}");
    let forced = std::process::Command::new(bin())
        .args(["keys", "rotate", "--force", "--config"])
        .arg(dir.join("issuer.toml"))
        .arg("--out-dir")
        .arg(dir.join("forced"))
        .output()
        .expect("keys rotate --force");
    assert!(forced.status.success());

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
async fn key_errors_name_the_settings_used_and_what_to_change() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    let (old_cert, _) = gen_cert(dir, ISSUER);
    std::fs::create_dir_all(dir.join("next")).expect("next");
    let (new_cert, _) = gen_cert(&dir.join("next"), ISSUER);
    let new_key = dir.join(format!("next/{ISSUER}.pem"));
    // The rotation's step 4 with kid_file left at the old key.
    let stale_kid = config(&new_cert, &new_key, &[&old_cert], "auto", None).replace(
        "[keys]\n",
        &format!("[keys]\nkid_file = \"{ISSUER}.kid\"\n"),
    );
    let mut issuer = Issuer::spawn(dir, &stale_kid, &[]);
    let (status, log) = issuer.proc.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains(&format!(
            "keys.kid_file ({}",
            dir.join(format!("{ISSUER}.kid")).display()
        )) && log.contains(&format!("keys.cert_file ({})", new_cert.display()))
            && log.contains("point keys.kid_file at the new key's .kid file"),
        "{log}"
    );
    assert!(
        !log.contains("REGISTRY_TOKEN_AUTH"),
        "names only what was set: {log}"
    );
    // The registries' bundle (two unrelated certificates) written over the certificate file.
    let bundle = dir.join("bundle.pem");
    let both = std::fs::read_to_string(&new_cert).expect("new")
        + &std::fs::read_to_string(&old_cert).expect("old");
    std::fs::write(&bundle, both).expect("bundle");
    let mut issuer = Issuer::spawn(dir, &config(&bundle, &new_key, &[], "auto", None), &[]);
    let (status, log) = issuer.proc.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains("did not issue certificate 1") && log.contains("keys.cert_file"),
        "{log}"
    );
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
