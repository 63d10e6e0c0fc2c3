//! The issuer under test as a process: `serve` with a config, `dev` with its registry, and the
//! key `gen-token-auth-cert` makes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{bin, free_port, on_free_port, Proc};

/// Runs `token-issuer gen-token-auth-cert` and returns (cert path, printed .env lines).
pub fn gen_cert(dir: &Path, issuer: &str) -> (PathBuf, String) {
    let out = Command::new(bin())
        .args(["gen-token-auth-cert", issuer, "--out-dir"])
        .arg(dir)
        .output()
        .expect("run gen-token-auth-cert");
    assert!(
        out.status.success(),
        "gen-token-auth-cert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        dir.join(format!("{issuer}.crt")),
        String::from_utf8(out.stdout).expect("utf8"),
    )
}

pub struct Issuer {
    pub proc: Proc,
    pub port: u16,
}

impl Issuer {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn realm(&self) -> String {
        format!("{}/v1/registry", self.url())
    }

    /// Writes `config` to DIR/issuer.toml and starts `serve` with `env`, on a fresh port.
    pub fn spawn(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn_on(free_port(), dir, config, env)
    }

    /// As [`Self::spawn`], on `port` (see [`on_free_port`]).
    pub fn spawn_on(port: u16, dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        let path = dir.join("issuer.toml");
        std::fs::write(&path, config).expect("write config");
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{port}")]);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            proc: Proc::spawn("token-issuer", cmd, dir.join(format!("issuer-{port}.log"))),
            port,
        }
    }

    /// One series of `/metrics` (`name{labels}` as exposed), if it is there.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metrics(&self.url()).await.remove(series)
    }

    /// Spawns and waits until this process serves: its own log says it listens on its port
    /// ([`on_free_port`]), and `/healthz` answers.
    pub async fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        on_free_port("token-issuer", async |port| {
            let mut issuer = Self::spawn_on(port, dir, config, env);
            let listening = format!("listening listen=127.0.0.1:{port} ");
            if !issuer.proc.wait_listening(&listening, &[&lost(port)]).await {
                return None;
            }
            let health = format!("{}/healthz", issuer.url());
            issuer.proc.wait_http(&health, 200).await;
            Some(issuer)
        })
        .await
    }
}

/// `token-issuer dev` with its data in `data` and `password`, run in `dir`, both ports picked
/// free: (process, issuer port, registry port).
pub async fn start_dev(dir: &Path, data: &Path, password: &str) -> (Proc, u16, u16) {
    on_free_port("token-issuer dev", async |issuer| {
        let registry = free_port();
        let mut cmd = Command::new(bin());
        cmd.args(["dev", "--data-dir"])
            .arg(data)
            .args([
                "--listen",
                &format!("127.0.0.1:{issuer}"),
                "--registry-listen",
                &format!("127.0.0.1:{registry}"),
            ])
            .env("TOKEN_ISSUER_DEV_PASSWORD", password)
            // The listening lines are at info, whatever the environment asks for.
            .env("TOKEN_ISSUER_LOG", "info")
            .current_dir(dir);
        let log = dir.join(format!("dev-{issuer}.log"));
        let mut proc = Proc::spawn("token-issuer dev", cmd, log);
        // `serve` binds every listener before any says it listens, so this line means both
        // ports are this process's.
        let listening = format!("registry listening listen=127.0.0.1:{registry} ");
        let (a, b) = (lost(issuer), lost(registry));
        if !proc.wait_listening(&listening, &[&a, &b]).await {
            return None;
        }
        proc.wait_http(&format!("http://127.0.0.1:{registry}/v2/"), 401)
            .await;
        Some((proc, issuer, registry))
    })
    .await
}

/// `/metrics` at `url` as a map from `name{labels}` to value.
pub async fn metrics(url: &str) -> HashMap<String, f64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// What the issuer says when `port`, picked for it, is taken (src/server/mod.rs `bind`).
pub fn lost(port: u16) -> String {
    format!("127.0.0.1:{port}: Address already in use")
}
