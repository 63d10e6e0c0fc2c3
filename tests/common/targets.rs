//! The three registries every client is tried against: the built-in registry (`serve` with a
//! `[registry]` section), distribution 2.8 trusting the bundle, and distribution 3.1.1 trusting
//! the bundle and the JWKS. Each has its own issuer with two users: `admin` (everything) and
//! `reader` (pull on `org/*`), and a store for refresh tokens.

use std::path::{Path, PathBuf};

use super::*;

pub const SERVICE: &str = "registry.test";
pub const ISSUER: &str = "issuer.test";
pub const ADMIN: (&str, &str) = ("admin", "admin-pw");
pub const READER: (&str, &str) = ("reader", "reader-pw");

pub struct Target {
    /// Names the registry in failures.
    pub label: &'static str,
    pub dir: PathBuf,
    /// host:port, as clients write it in image references.
    pub host: String,
    pub issuer: Issuer,
    _registry: Option<Registry>,
}

impl Target {
    /// Lines the issuer has logged so far.
    pub fn issuer_log(&self) -> String {
        self.issuer.proc.log_text()
    }
}

fn config(dir: &Path, registry: Option<u16>, extra: &str) -> String {
    write_users(dir, &[ADMIN, READER]);
    std::fs::write(
        dir.join("pepper"),
        "targets-pepper-0123456789abcdefghijklmnopqrstuvwxyz",
    )
    .expect("pepper");
    let mut c = format!(
        r#"
[token]
issuer = "{ISSUER}"
service = "{SERVICE}"
[keys]
cert_file = "{ISSUER}.crt"
key_file = "{ISSUER}.pem"
[identity]
htpasswd = "users.htpasswd"
# A store, so that docker login is given a refresh token (docker then keeps it instead of the
# password, and every later pull trades it for access tokens).
[store]
url = "sqlite://store.db"
pepper_files = ["pepper"]
[[acl]]
account = "admin"
name = "**"
actions = ["*"]
[[acl]]
account = "reader"
name = "org/*"
actions = ["pull"]
"#
    );
    if let Some(port) = registry {
        c.push_str(&format!(
            "[registry]\nlisten = \"127.0.0.1:{port}\"\nstorage = \"registry\"\n"
        ));
    }
    c.push_str(extra);
    c
}

/// Starts all three (3.1.1 only when its binary is there; it must be under `CI`), each in a
/// folder of its own under `tmp`.
pub async fn every_registry(tmp: &Path) -> Vec<Target> {
    every_registry_with(tmp, "").await
}

/// As [`every_registry`], each issuer's config ending with `extra`.
pub async fn every_registry_with(tmp: &Path, extra: &str) -> Vec<Target> {
    let mut targets = Vec::new();

    let dir = tmp.join("builtin");
    std::fs::create_dir_all(&dir).expect("dir");
    gen_cert(&dir, ISSUER);
    let (issuer, reg_port) = on_free_port("token-issuer", async |port| {
        let reg_port = free_port();
        let mut issuer = Issuer::spawn_on(port, &dir, &config(&dir, Some(reg_port), extra), &[]);
        // `serve` binds every listener before any says it listens (see `start_dev`).
        let listening = format!("registry listening listen=127.0.0.1:{reg_port} ");
        let (a, b) = (lost(port), lost(reg_port));
        if !issuer.proc.wait_listening(&listening, &[&a, &b]).await {
            return None;
        }
        let v2 = format!("http://127.0.0.1:{reg_port}/v2/");
        issuer.proc.wait_http(&v2, 401).await;
        Some((issuer, reg_port))
    })
    .await;
    targets.push(Target {
        label: "built-in registry",
        dir,
        host: format!("127.0.0.1:{reg_port}"),
        issuer,
        _registry: None,
    });

    for version in [Distribution::V2_8, Distribution::V3_1_1] {
        let dir = tmp.join(format!("{version:?}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, _) = gen_cert(&dir, ISSUER);
        let jwks = dir.join(format!("{ISSUER}.jwks.json"));
        let issuer = Issuer::start(&dir, &config(&dir, None, extra), &[]).await;
        let trust = Trust {
            bundle: Some(&cert),
            jwks: (version != Distribution::V2_8).then_some(jwks.as_path()),
        };
        match Registry::start_with(version, &dir, &issuer.realm(), SERVICE, ISSUER, &trust).await {
            Ok(registry) => targets.push(Target {
                label: version.name(),
                dir,
                host: registry.host(),
                issuer,
                _registry: Some(registry),
            }),
            Err(why) if !Distribution::v3_required() => eprintln!("{why}"),
            Err(why) => panic!("{why}"),
        }
    }
    targets
}

/// Pushes a one-layer image to `host/repo:latest` with skopeo as `admin`; returns the layer's
/// digest hex.
pub fn seed_image(target: &Target, repo: &str, content: &[u8]) -> String {
    let layout = target.dir.join(format!("seed-{}", repo.replace('/', "-")));
    let layer = oci_layout(&layout, "latest", content);
    let out = push(
        &target.dir,
        &layout,
        &format!("docker://{}/{repo}:latest", target.host),
        &format!("{}:{}", ADMIN.0, ADMIN.1),
    );
    assert!(out.status.success(), "{}: seeding {repo}", target.label);
    layer
}
