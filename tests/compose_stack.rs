//! The compose dev stack: the compose file's wiring (validated by docker-compose, no engine
//! needed), the same stack run natively by scripts/dev-stack with .env.example, gen-env, and the
//! image's health check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("env file")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .filter_map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn b64(s: &str) -> Vec<u8> {
    data_encoding::BASE64.decode(s.as_bytes()).expect("base64")
}

#[test]
fn compose_file_wiring() {
    let out = Command::new("docker-compose")
        .current_dir(repo())
        .args([
            "-f",
            "docker-compose.registry.yml",
            "--env-file",
            ".env.example",
            "config",
        ])
        .output()
        .expect("docker-compose is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc =
        &YamlLoader::load_from_str(&String::from_utf8(out.stdout).expect("utf8")).expect("yaml")[0];
    let env = env_file(&repo().join(".env.example"));
    let svc = |name: &str| doc["services"][name].clone();
    let var = |svc: &Yaml, key: &str| {
        svc["environment"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} unset"))
            .to_string()
    };
    let (issuer, registry, dist) = (
        svc("token-issuer"),
        svc("registry"),
        svc("registry-distribution"),
    );

    // The realm path is /v1/registry, on the issuer's host name, on all sides (and the realm
    // .env.example gives the issuer is the one the registries advertise).
    let realm = format!(
        "http://{}/v1/registry",
        env["REGISTRY_TOKEN_AUTH_CERT_ISSUER"]
    );
    assert_eq!(var(&issuer, "REGISTRY_TOKEN_AUTH_REALM"), realm);
    assert_eq!(var(&registry, "REGISTRY2_TOKEN_AUTH_REALM"), realm);
    assert_eq!(var(&dist, "REGISTRY_AUTH_TOKEN_REALM"), realm);
    // Issuer, service and key are the same on both sides.
    assert_eq!(
        var(&issuer, "REGISTRY_TOKEN_AUTH_CERT_ISSUER"),
        var(&registry, "REGISTRY2_TOKEN_AUTH_ISSUER")
    );
    assert_eq!(
        var(&issuer, "REGISTRY_HOST"),
        var(&registry, "REGISTRY2_HOST")
    );
    assert_eq!(
        var(&issuer, "REGISTRY_TOKEN_AUTH_CERT"),
        var(&registry, "API_TOKENAUTH_CRT")
    );
    assert_eq!(
        var(&issuer, "REGISTRY_TOKEN_AUTH_CERT_ISSUER"),
        var(&dist, "REGISTRY_AUTH_TOKEN_ISSUER")
    );
    assert_eq!(
        var(&issuer, "REGISTRY_HOST"),
        var(&dist, "REGISTRY_AUTH_TOKEN_SERVICE")
    );
    assert_eq!(
        var(&registry, "API_TOKENAUTH_JWKS"),
        var(&dist, "API_TOKENAUTH_JWKS")
    );
    assert_eq!(var(&registry, "REGISTRY2_CACHE_ENABLED"), "false");
    assert!(!var(&registry, "REGISTRY2_SECRETKEY").is_empty());
    // The key pair, the kid and the JWKS the registry gets all describe one key.
    let keys = token_issuer::keys::KeyMaterial::load(
        &b64(&var(&issuer, "REGISTRY_TOKEN_AUTH_CERT")),
        &b64(&var(&issuer, "REGISTRY_TOKEN_AUTH_CERT_KEY")),
        Some(
            std::str::from_utf8(&b64(&var(&issuer, "REGISTRY_TOKEN_AUTH_CERT_KID"))).expect("kid"),
        ),
    )
    .expect("the .env.example key loads and its kid matches");
    let jwks: token_issuer::keys::jwk::Jwks =
        serde_json::from_slice(&b64(&var(&registry, "API_TOKENAUTH_JWKS"))).expect("jwks");
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].kid, keys.kid);
    assert_eq!(jwks.keys[0].public_key().as_ref(), Some(&keys.public));
    // Network aliases: each service answers to its host name.
    let aliases = |s: &Yaml| {
        s["networks"]["default"]["aliases"]
            .as_vec()
            .cloned()
            .unwrap_or_default()
    };
    assert!(aliases(&issuer).contains(&Yaml::String(
        env["REGISTRY_TOKEN_AUTH_CERT_ISSUER"].clone()
    )));
    assert!(aliases(&registry).contains(&Yaml::String(env["REGISTRY_HOST"].clone())));
    assert_eq!(dist["profiles"][0].as_str(), Some("distribution"));
    // Every service comes back after a daemon restart; distribution 3 does not try to export
    // traces; ports are published on loopback only (the development key is public).
    for s in [&issuer, &registry, &dist] {
        assert_eq!(s["restart"].as_str(), Some("unless-stopped"));
        for p in s["ports"].as_vec().expect("ports") {
            let host_ip = p["host_ip"].as_str().map(str::to_string).or_else(|| {
                p.as_str()
                    .map(|p| p.split(':').next().unwrap_or("").to_string())
            });
            assert_eq!(host_ip.as_deref(), Some("127.0.0.1"), "{p:?}");
        }
    }
    assert_eq!(var(&dist, "OTEL_TRACES_EXPORTER"), "none");

    // Every ${VAR} of the compose file is in .env.example, and every .env.example variable is used.
    let text =
        std::fs::read_to_string(repo().join("docker-compose.registry.yml")).expect("compose file");
    let used: BTreeSet<String> = regex::Regex::new(r"\$\{([A-Z0-9_]+)")
        .expect("re")
        .captures_iter(&text)
        .map(|c| c[1].to_string())
        .collect();
    let defined: BTreeSet<String> = env.keys().cloned().collect();
    assert_eq!(used, defined, "compose variables vs .env.example");

    // The realm comes from REGISTRY_TOKEN_AUTH_REALM, on every side: an https realm for
    // production is one line of .env.
    let tmp = tempfile::tempdir().expect("tmp");
    let prod_env = std::fs::read_to_string(repo().join(".env.example"))
        .expect("env")
        .replace(
            "REGISTRY_TOKEN_AUTH_REALM=http://api.ly.fish.local/v1/registry",
            "REGISTRY_TOKEN_AUTH_REALM=https://auth.example.com/v1/registry",
        );
    std::fs::write(tmp.path().join("prod.env"), prod_env).expect("write");
    let out = Command::new("docker-compose")
        .current_dir(repo())
        .args(["-f", "docker-compose.registry.yml", "--env-file"])
        .arg(tmp.path().join("prod.env"))
        .arg("config")
        .output()
        .expect("docker-compose");
    assert!(out.status.success());
    let doc =
        &YamlLoader::load_from_str(&String::from_utf8(out.stdout).expect("utf8")).expect("yaml")[0];
    for (svc, key) in [
        ("token-issuer", "REGISTRY_TOKEN_AUTH_REALM"),
        ("registry", "REGISTRY2_TOKEN_AUTH_REALM"),
        ("registry-distribution", "REGISTRY_AUTH_TOKEN_REALM"),
    ] {
        assert_eq!(
            doc["services"][svc]["environment"][key].as_str(),
            Some("https://auth.example.com/v1/registry"),
            "{svc}"
        );
    }
}

#[test]
fn dockerfile_and_healthcheck() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(
        dockerfile.contains("HEALTHCHECK")
            && dockerfile.contains(r#"CMD ["token-issuer", "healthcheck"]"#)
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert_ne!(user.trim(), "root");
    assert!(dockerfile.matches("FROM ").count() >= 2, "multi-stage");
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == "data/"));

    // The health check itself: fails with nothing listening, passes once the issuer serves.
    let tmp = tempfile::tempdir().expect("tmp");
    gen_cert(tmp.path(), "hc.test");
    let cfg = "[token]\nissuer = \"hc.test\"\nservice = \"s\"\n[keys]\ncert_file = \"hc.test.crt\"\nkey_file = \"hc.test.pem\"\n[identity]\nanonymous = true\n";
    let path = tmp.path().join("hc.toml");
    std::fs::write(&path, cfg).expect("cfg");
    let healthcheck = |port: u16| {
        Command::new(bin())
            .arg("healthcheck")
            .env_clear()
            .env("TOKEN_ISSUER_LISTEN", format!("0.0.0.0:{port}"))
            .output()
            .expect("healthcheck")
    };
    let rt = tokio::runtime::Runtime::new().expect("rt");
    // Healthy at the end only if this test's issuer is what answers (docs/testing.md, "Ports").
    let _issuer = rt.block_on(on_free_port("token-issuer", async |port| {
        let said = healthcheck(port);
        let said_text = String::from_utf8_lossy(&said.stderr);
        assert!(!said.status.success(), "healthy with nothing listening");
        assert!(
            said_text.contains(&format!("127.0.0.1:{port}"))
                && said_text.contains("Connection refused"),
            "names the address and the refusal: {said_text}"
        );
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"])
            .arg(&path)
            .env("TOKEN_ISSUER_LOG", "info")
            .env("TOKEN_ISSUER_LISTEN", format!("0.0.0.0:{port}"));
        let log = tmp.path().join(format!("hc-{port}.log"));
        let mut proc = Proc::spawn("token-issuer", cmd, log);
        let listening = format!("listening listen=0.0.0.0:{port} ");
        let lost = format!("0.0.0.0:{port}: Address already in use");
        if !proc.wait_listening(&listening, &[&lost]).await {
            return None;
        }
        assert!(
            healthcheck(port).status.success(),
            "unhealthy while serving"
        );
        Some(proc)
    }));
}

#[test]
fn gen_env_writes_a_working_env_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().join(".env");
    let run = |extra: &[&str]| {
        Command::new(repo().join("scripts/gen-env"))
            .args([
                "api.example.test",
                "--registry-host",
                "registry.example.test",
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .env("ISSUER_BIN", bin())
            .output()
            .expect("gen-env")
    };
    let first_run = run(&[]);
    assert!(first_run.status.success());
    // It reports what it leaves, not the temporary files it made on the way.
    let report = String::from_utf8_lossy(&first_run.stderr);
    assert!(
        report.contains(&format!("wrote {}", out.display()))
            && report.lines().count() == 1
            && !report.contains(".pem"),
        "{report}"
    );
    let env = env_file(&out);
    let example = env_file(&repo().join(".env.example"));
    assert_eq!(
        env.keys().collect::<Vec<_>>(),
        example.keys().collect::<Vec<_>>(),
        "same variables as .env.example"
    );
    assert_eq!(env["REGISTRY_HOST"], "registry.example.test");
    assert_eq!(env["REGISTRY_TOKEN_AUTH_CERT_ISSUER"], "api.example.test");
    assert_eq!(
        env["REGISTRY_TOKEN_AUTH_REALM"],
        "http://api.example.test/v1/registry"
    );
    assert_ne!(
        env["REGISTRY_TOKEN_AUTH_CERT"], example["REGISTRY_TOKEN_AUTH_CERT"],
        "a new key"
    );
    let keys = token_issuer::keys::KeyMaterial::load(
        &b64(&env["REGISTRY_TOKEN_AUTH_CERT"]),
        &b64(&env["REGISTRY_TOKEN_AUTH_CERT_KEY"]),
        Some(std::str::from_utf8(&b64(&env["REGISTRY_TOKEN_AUTH_CERT_KID"])).expect("kid")),
    )
    .expect("the new key loads");
    let jwks: token_issuer::keys::jwk::Jwks =
        serde_json::from_slice(&b64(&env["REGISTRY_TOKEN_AUTH_JWKS"])).expect("jwks");
    assert_eq!(jwks.keys[0].kid, keys.kid);
    let first = std::fs::read(&out).expect("env");
    let again = run(&[]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(&out).expect("env"),
        first,
        "overwritten without --force"
    );
    assert!(run(&["--force"]).status.success());
    assert_ne!(std::fs::read(&out).expect("env"), first);
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_stack_with_env_example_push_and_pull() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (issuer_port, registry_port) = (free_port(), free_port());
    let mut cmd = Command::new(repo().join("scripts/dev-stack"));
    cmd.arg(".env.example")
        .env("ISSUER_BIN", bin())
        .env("DEV_STACK_ISSUER_PORT", issuer_port.to_string())
        .env("DEV_STACK_REGISTRY_PORT", registry_port.to_string())
        .env("DEV_STACK_DIR", dir.join("stack"));
    let mut stack = Proc::spawn("scripts/dev-stack", cmd, dir.join("dev-stack.log"));
    stack
        .wait_http(&format!("http://127.0.0.1:{issuer_port}/healthz"), 200)
        .await;
    stack
        .wait_http(&format!("http://127.0.0.1:{registry_port}/v2/"), 401)
        .await;

    let layout = dir.join("image");
    let layer = oci_layout(&layout, "latest", b"compose dev stack");
    let dest = format!("docker://127.0.0.1:{registry_port}/library/app:latest");
    assert!(
        push(dir, &layout, &dest, "admin:admin").status.success(),
        "push:\n{}",
        stack.log_text()
    );
    let pulled = dir.join("pulled");
    assert!(pull(dir, &dest, &pulled, "admin:admin").status.success());
    assert!(pulled.join("blobs/sha256").join(&layer).exists());
    // The rules of compose/token-issuer.toml: a wrong password gets nothing.
    assert!(!pull(dir, &dest, &dir.join("nope"), "admin:wrong")
        .status
        .success());
    // The registry really is distribution configured from the env file.
    let registry_yml =
        std::fs::read_to_string(dir.join("stack/registry.yml")).expect("registry.yml");
    let env = env_file(&repo().join(".env.example"));
    assert!(registry_yml.contains(&format!("service: {}", env["REGISTRY_HOST"])));
    assert!(registry_yml.contains(&format!(
        "issuer: {}",
        env["REGISTRY_TOKEN_AUTH_CERT_ISSUER"]
    )));
    // The registry got none of the env file: no key, no warnings about unknown variables.
    let registry_log = std::fs::read_to_string(dir.join("stack/registry.log")).expect("log");
    assert!(
        !registry_log.contains("unrecognized environment variable"),
        "{registry_log}"
    );

    // A second stack on the same ports: refused at once, saying why, never "ready".
    let t0 = std::time::Instant::now();
    let out = Command::new(repo().join("scripts/dev-stack"))
        .arg(".env.example")
        .env("ISSUER_BIN", bin())
        .env("DEV_STACK_ISSUER_PORT", free_port().to_string())
        .env("DEV_STACK_REGISTRY_PORT", registry_port.to_string())
        .env("DEV_STACK_DIR", dir.join("second"))
        .current_dir(repo())
        .output()
        .expect("dev-stack");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!("127.0.0.1:{registry_port} is already in use"))
            && !said.contains("dev-stack ready"),
        "{said}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
}
