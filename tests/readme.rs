//! The README's Quick start, run as written: each fenced block marked `<!-- readme-test: NAME -->`
//! is extracted and run with bash in an empty directory, with `token-issuer` on `PATH` and the
//! README's fixed ports (8080, 5000) replaced by free ones. A block's last line that starts a
//! server runs in the background until the test is done with it. So the README cannot drift
//! from what works. The key rotation's blocks (docs/operating.md) run the same way, from the
//! Quick start's state.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// The body of the fenced block after `<!-- readme-test: name -->`.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in README.md"))
        + marker.len()..];
    let start = after.find("```sh\n").expect("a sh block after the marker") + 6;
    let end = after[start..].find("\n```").expect("the block's end") + start;
    after[start..end].to_string()
}

/// A directory holding only a `token-issuer` link to the binary under test, for `PATH`.
fn bin_dir(dir: &Path) -> String {
    let d = dir.join("bin");
    std::fs::create_dir_all(&d).expect("bin dir");
    std::os::unix::fs::symlink(bin(), d.join("token-issuer")).expect("link");
    format!(
        "{}:{}",
        d.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn bash(dir: &Path, path: &str, script: &str) -> std::process::Output {
    let out = Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("REGISTRY_AUTH_FILE", dir.join("skopeo-auth.json"))
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "README block failed:\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs all of `script` but its last line, then the last line (a server) in the background.
fn with_server(dir: &Path, path: &str, script: &str, name: &str) -> Proc {
    let (setup, server) = script.trim_end().rsplit_once('\n').unwrap_or(("", script));
    if !setup.trim().is_empty() {
        bash(dir, path, setup);
    }
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(server).current_dir(dir).env("PATH", path);
    // The README's default log level, whatever this shell's: the tests wait for info lines.
    cmd.env_remove("TOKEN_ISSUER_LOG").env_remove("RUST_LOG");
    Proc::spawn(name, cmd, dir.join(format!("{name}.log")))
}

#[tokio::test(flavor = "multi_thread")]
async fn quick_start_works_as_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let path = bin_dir(dir);
    let (issuer_port, registry_port) = (free_port(), free_port());
    let storage = dir.join("registry-storage");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{issuer_port}"))
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{registry_port}"))
        .replace(
            "/tmp/token-issuer-quick-start-registry",
            &storage.to_string_lossy(),
        );
    let health = format!("http://127.0.0.1:{issuer_port}/healthz");
    // Each server's own word that it has its port (docs/testing.md, "Ports").
    let issuer_listening = format!("listening listen=127.0.0.1:{issuer_port} ");
    let registry_listening = format!("msg=\"listening on 127.0.0.1:{registry_port}\"");

    let mut issuer = with_server(dir, &path, &block(&readme, "issuer"), "issuer");
    issuer.wait_said(&issuer_listening).await;
    issuer.wait_http(&health, 200).await;
    use std::os::unix::fs::PermissionsExt;
    for secret in ["keys/env", "keys/api.example.test.pem"] {
        let mode = std::fs::metadata(dir.join(secret))
            .expect(secret)
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{secret} is readable by others: {mode:o}");
    }

    let out = bash(dir, &path, &block(&readme, "token"));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON token answer");
    let token = body["token"].as_str().expect("token");
    let claims: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(token.split('.').nth(1).expect("claims").as_bytes())
            .expect("base64url"),
    )
    .expect("claims json");
    assert_eq!(
        claims["access"],
        serde_json::json!([{"type": "repository", "name": "org/app", "actions": ["pull"]}])
    );
    drop(issuer);

    // The environment variant, on the same port once the first is gone.
    let mut issuer = with_server(dir, &path, &block(&readme, "issuer-env"), "issuer-env");
    issuer.wait_said(&issuer_listening).await;
    issuer.wait_http(&health, 200).await;

    let mut registry = with_server(dir, &path, &block(&readme, "registry"), "registry");
    registry.wait_said(&registry_listening).await;
    registry
        .wait_http(&format!("http://127.0.0.1:{registry_port}/v2/"), 401)
        .await;
    bash(dir, &path, &block(&readme, "push"));
    assert!(
        dir.join("pulled/index.json").is_file(),
        "the reader's pull wrote nothing"
    );
    let pulled = std::fs::read_to_string(dir.join("pulled/index.json")).expect("pulled");
    let pushed = std::fs::read_to_string(dir.join("sample/index.json")).expect("sample");
    let digest = |index: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(index).expect("index");
        v["manifests"][0]["digest"]
            .as_str()
            .expect("digest")
            .to_string()
    };
    assert_eq!(digest(&pulled), digest(&pushed), "pulled another image");
    drop(registry);
    drop(issuer);
}

/// contrib/token-issuer.service is a valid unit (systemd's own checker), hardened, and starts
/// the binary with the config path docs/operating.md names.
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/token-issuer.service"
    ))
    .expect("unit");
    for line in [
        "ExecStart=/usr/local/bin/token-issuer serve --config /etc/token-issuer/token-issuer.toml",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "User=token-issuer",
        "StateDirectory=token-issuer",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md"))
        .expect("docs/operating.md");
    assert!(doc.contains("/etc/token-issuer/token-issuer.toml"));
    // Verified with the binary under test in place of /usr/local/bin/token-issuer.
    let tmp = tempfile::tempdir().expect("tmp");
    let path = tmp.path().join("token-issuer.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/token-issuer", bin())).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd; scripts/test installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// docs/operating.md's rotation, block by block, from the Quick start's directory against
/// distribution 3.1.1 configured as the Quick start says, with a skopeo push and pull after
/// every step; old-key tokens refused at the end.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_works_as_written() {
    rotation_as_written(false).await;
}

/// The same with the key files owned by the issuer's own user (it runs as `nobody` here, as
/// under systemd it runs as `token-issuer`) while `keys rotate` runs as root.
#[tokio::test(flavor = "multi_thread")]
async fn key_rotation_works_as_written_with_the_issuer_as_another_user() {
    assert!(
        Command::new("id").arg("-u").output().expect("id").stdout == b"0\n",
        "this test runs as root (scripts/test does): it starts the issuer as another user"
    );
    rotation_as_written(true).await;
}

async fn rotation_as_written(issuer_as_nobody: bool) {
    use std::os::unix::fs::MetadataExt;
    let registry_program = match Distribution::V3_1_1.program() {
        Ok(p) => p,
        Err(why) if !Distribution::v3_required() => return eprintln!("{why}"),
        Err(why) => panic!("{why}"),
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let path = bin_dir(dir);
    let (issuer_port, registry_port) = (free_port(), free_port());
    // The Quick start's blocks from the README, the rotation's from docs/operating.md.
    let readme = ["README.md", "docs/operating.md"]
        .map(|f| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(f)).expect(f))
        .concat()
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{issuer_port}"))
        .replace("127.0.0.1:5000", &format!("127.0.0.1:{registry_port}"))
        .replace(
            "/tmp/token-issuer-quick-start-registry",
            &dir.join("registry-storage").to_string_lossy(),
        );
    let issuer_url = format!("http://127.0.0.1:{issuer_port}");

    // The Quick start's issuer (its config has kid_file), as this user or as `nobody`.
    let (setup, server) = block(&readme, "issuer")
        .trim_end()
        .rsplit_once('\n')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("a server line");
    bash(dir, &path, &setup);
    let mut cmd = Command::new(if issuer_as_nobody { "setpriv" } else { "bash" });
    if issuer_as_nobody {
        let chown = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(chown.success());
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
    }
    cmd.arg("-c")
        .arg(&server)
        .current_dir(dir)
        .env("PATH", &path)
        .env_remove("TOKEN_ISSUER_LOG")
        .env_remove("RUST_LOG");
    let mut issuer = Proc::spawn("issuer", cmd, dir.join("issuer.log"));
    // Each server's own word that it has its port (docs/testing.md, "Ports").
    issuer
        .wait_said(&format!("listening listen=127.0.0.1:{issuer_port} "))
        .await;
    issuer
        .wait_http(&format!("{issuer_url}/healthz"), 200)
        .await;

    // The Quick start's registry, 3.1.1 in place of Debian's 2.8.
    let registry_block = block(&readme, "registry");
    let (registry_setup, _) = registry_block.trim_end().rsplit_once('\n').expect("lines");
    bash(dir, &path, registry_setup);
    let start_registry = || {
        let mut cmd = Command::new(&registry_program);
        cmd.args(["serve", "registry.yml"])
            .current_dir(dir)
            .env("OTEL_TRACES_EXPORTER", "none");
        Proc::spawn("registry", cmd, dir.join("registry.log"))
    };
    let registry_listening = format!("msg=\"listening on 127.0.0.1:{registry_port}\"");
    let v2 = format!("http://127.0.0.1:{registry_port}/v2/");
    let mut registry = start_registry();
    registry.wait_said(&registry_listening).await;
    registry.wait_http(&v2, 401).await;
    bash(dir, &path, "token-issuer sample-image sample");
    let host = format!("127.0.0.1:{registry_port}");
    let push_and_pull = |step: &str| {
        let tag = format!("docker://{host}/org/app:{step}");
        let sample = format!("oci:{}:latest", dir.join("sample").display());
        let out = skopeo(
            dir,
            &[
                "copy",
                "--dest-tls-verify=false",
                "--dest-creds",
                "admin:s3cret",
                &sample,
                &tag,
            ],
        );
        assert!(
            out.status.success(),
            "push {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let into = format!(
            "oci:{}:latest",
            dir.join(format!("pulled-{step}")).display()
        );
        let out = skopeo(
            dir,
            &[
                "copy",
                "--src-tls-verify=false",
                "--src-creds",
                "reader:r3ader",
                &tag,
                &into,
            ],
        );
        assert!(
            out.status.success(),
            "pull {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let http = reqwest::Client::new();
    let token_kid = || async {
        let token = token_at(
            &format!("{issuer_url}/v1/registry?service=registry.example.test&scope=repository:org/app:pull"),
            "reader",
            "r3ader",
        )
        .await;
        let kid = jwt_header(&token)["kid"].as_str().expect("kid").to_string();
        (kid, token)
    };
    let certs_listed = || async {
        http.get(format!("{issuer_url}/v1/registry/certs"))
            .send()
            .await
            .expect("certs")
            .text()
            .await
            .expect("text")
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    push_and_pull("before");
    let (old_kid, old_token) = token_kid().await;

    // 1. The next key: the files take the owner of the key files they will replace.
    bash(dir, &path, &block(&readme, "rotate-1"));
    let date = String::from_utf8(
        Command::new("date")
            .args(["-u", "+%Y%m%d"])
            .output()
            .expect("date")
            .stdout,
    )
    .expect("utf8");
    let next = |ext: &str| dir.join(format!("keys/api.example.test-{}.{ext}", date.trim()));
    let old_key = std::fs::metadata(dir.join("keys/api.example.test.pem")).expect("old key");
    let new_key = std::fs::metadata(next("pem")).expect("new key");
    assert_eq!(
        (new_key.uid(), new_key.gid()),
        (old_key.uid(), old_key.gid())
    );
    assert_eq!(new_key.mode() & 0o077, 0, "the new key is private");
    let new_kid = std::fs::read_to_string(next("kid")).expect("kid");
    push_and_pull("step1");

    // 2. Published: the block waits until the bundle lists both.
    bash(dir, &path, &block(&readme, "rotate-2"));
    assert_eq!(certs_listed().await, 2);
    assert_eq!(token_kid().await.0, old_kid, "published, not signing");
    push_and_pull("step2");

    // 3. The registry trusts both, after its restart.
    bash(dir, &path, &block(&readme, "rotate-3"));
    drop(registry);
    registry = start_registry();
    registry.wait_said(&registry_listening).await;
    registry.wait_http(&v2, 401).await;
    push_and_pull("step3");

    // 4. Signing with the new key: the kid of the tokens changes once the issuer reloaded.
    bash(dir, &path, &block(&readme, "rotate-4"));
    store_api::within(
        Duration::from_secs(10),
        "signing with the new key",
        || async { token_kid().await.0 == new_kid },
    )
    .await;
    push_and_pull("step4");
    let pull_with = |token: String| {
        let url = format!("{v2}org/app/manifests/before");
        let http = http.clone();
        async move {
            http.get(url)
                .bearer_auth(token)
                .header("accept", "application/vnd.oci.image.manifest.v1+json")
                .send()
                .await
                .expect("manifest")
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        pull_with(old_token.clone()).await,
        200,
        "old tokens still valid"
    );

    // 5. The old key dropped (the block waits for the reload): after the registry's restart
    // its tokens are refused.
    bash(dir, &path, &block(&readme, "rotate-5"));
    assert_eq!(certs_listed().await, 1);
    drop(registry);
    registry = start_registry();
    registry.wait_said(&registry_listening).await;
    registry.wait_http(&v2, 401).await;
    push_and_pull("step5");
    assert_eq!(
        pull_with(old_token).await,
        401,
        "old-key tokens are refused"
    );
    let log = issuer.log_text();
    assert!(!log.contains("reload (file changed) failed"), "{log}");
    drop(registry);
    drop(issuer);
}
