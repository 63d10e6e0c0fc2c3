//! The README's Quick start, run as written: each fenced block marked `<!-- readme-test: NAME -->`
//! is extracted and run with bash in an empty directory, with `token-issuer` on `PATH` and the
//! README's fixed ports (8080, 5000) replaced by free ones. A block's last line that starts a
//! server runs in the background until the test is done with it. So the README cannot drift
//! from what works.

mod common;

use std::path::Path;
use std::process::Command;

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
    std::os::unix::fs::symlink(BIN, d.join("token-issuer")).expect("link");
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

    let mut issuer = with_server(dir, &path, &block(&readme, "issuer"), "issuer");
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
    issuer.wait_http(&health, 200).await;

    let mut registry = with_server(dir, &path, &block(&readme, "registry"), "registry");
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
    std::fs::write(&path, unit.replace("/usr/local/bin/token-issuer", BIN)).expect("write");
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
