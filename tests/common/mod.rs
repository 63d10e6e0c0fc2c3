//! Test harness: real processes on loopback ports chosen at run time (the issuer binary, Debian's
//! distribution registry), a real client (skopeo), and OCI image layouts built on disk.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

pub mod config;
#[allow(unused_imports)]
pub use config::ConfigBuilder;
pub mod fake_api;
pub mod fake_balena;
pub mod hygiene;
pub mod idp;
pub mod load;
pub mod postgres;
pub mod slapd;
pub mod store_api;
pub mod targets;

pub const BIN: &str = env!("CARGO_BIN_EXE_token-issuer");

/// Serves `app` on 127.0.0.1:`port` (0: any free port); returns the port and the server task
/// (abort it to stop serving).
pub async fn serve_loopback(
    port: u16,
    app: impl poem::Endpoint + 'static,
) -> (u16, tokio::task::JoinHandle<()>) {
    serve_on(
        poem::listener::TcpListener::bind(format!("127.0.0.1:{port}")),
        app,
    )
    .await
}

/// Serves `app` on `listener` (plain TCP, or wrapped in TLS); returns the port it got and the
/// server task.
pub async fn serve_on(
    listener: impl poem::listener::Listener + 'static,
    app: impl poem::Endpoint + 'static,
) -> (u16, tokio::task::JoinHandle<()>) {
    use poem::listener::Acceptor;
    let acceptor = listener
        .into_acceptor()
        .await
        .expect("bind a loopback port");
    let port = acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("tcp")
        .port();
    let task = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (port, task)
}

/// A token from the realm at `url` (query included) for `user`:`password`; it must be issued.
pub async fn token_at(url: &str, user: &str, password: &str) -> String {
    let body: serde_json::Value = reqwest::Client::new()
        .get(url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("realm")
        .json()
        .await
        .expect("json");
    body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// A JWT's header, decoded.
pub fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

/// A JWT's claims, decoded (not verified).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

fn jwt_part(token: &str, i: usize) -> serde_json::Value {
    let part = token.split('.').nth(i).expect("a JWT part");
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(part.as_bytes())
            .expect("b64"),
    )
    .expect("json")
}

/// Runs `cmd`, which must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the program is installed");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// An OCI image manifest naming one config and one layer.
pub fn image_manifest(
    config: &str,
    config_len: usize,
    layer: &str,
    layer_len: usize,
) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}]
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts a server with `start` on a port from [`free_port`], which is free when picked but not
/// held: a parallel test's process may bind it before this server does. `start` gives `None`
/// when its server lost the port that way ([`Proc::wait_listening`]), and it is tried again on
/// another, three times in all.
pub async fn on_free_port<T>(what: &str, mut start: impl AsyncFnMut(u16) -> Option<T>) -> T {
    for _ in 0..3 {
        if let Some(server) = start(free_port()).await {
            return server;
        }
    }
    panic!("{what} lost its port to another process three times")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// A SQLite store's bytes as they stand on disk: the file and its write-ahead log, where writes
/// stay until a checkpoint copies them into the file (the issuer keeps the store in WAL mode).
pub fn sqlite_bytes(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).expect("the store's file");
    if let Ok(log) = std::fs::read(format!("{}-wal", db.display())) {
        bytes.extend(log);
    }
    bytes
}

pub fn htpasswd_line(user: &str, password: &str) -> String {
    format!("{user}:{}\n", bcrypt::hash(password, 4).expect("bcrypt"))
}

/// DIR/users.htpasswd with these (user, password) pairs.
pub fn write_users(dir: &Path, users: &[(&str, &str)]) {
    let lines: String = users.iter().map(|(u, p)| htpasswd_line(u, p)).collect();
    std::fs::write(dir.join("users.htpasswd"), lines).expect("users.htpasswd");
}

/// A process's resident memory (`VmRSS`), in KiB.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// A child process killed when the test ends; its output goes to a log file shown on failure.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    /// In a process group of its own, so that dropping it also ends whatever it started
    /// (scripts/dev-stack's docker-registry).
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self {
            child,
            log,
            name: name.into(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until this process's own log holds `line`, its word that it listens. Something
    /// answering on its port is not enough: that may be another test's process that took the
    /// port first (seen once in CI: a test talking to another test's issuer). Returns false when
    /// the process exited because its address was in use, so that [`on_free_port`] tries another
    /// port; any other exit, or no such line within 30 s, fails the test with the log.
    pub async fn wait_listening(&mut self, line: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log_text();
            if log.contains(line) {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    log.contains("in use"),
                    "{} exited with {status} before it was ready:\n{log}",
                    self.name
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "{} not listening (no {line:?} in its log):\n{log}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls `url` until it answers `want` (the process may still be binding its port).
    pub async fn wait_http(&mut self, url: &str, want: u16) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            if let Ok(r) = client.get(url).send().await {
                if r.status().as_u16() == want {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready at {url}:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Sends `signal` (`-HUP`, `-TERM`, `-KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success(), "kill {signal} {}", self.name);
    }

    /// Sends SIGTERM (a clean shutdown) and waits for the process to exit.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        self.wait_exit()
    }

    /// Waits for the process to exit by itself (start-up failures), returning status and log.
    pub fn wait_exit(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, self.log_text());
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        // Quietly: the group may have ended already.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `token-issuer gen-token-auth-cert` and returns (cert path, printed .env lines).
pub fn gen_cert(dir: &Path, issuer: &str) -> (PathBuf, String) {
    let out = Command::new(BIN)
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
        let mut cmd = Command::new(BIN);
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
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    /// Spawns and waits until this process serves: its own log says it listens on its port
    /// ([`on_free_port`]), and `/healthz` answers.
    pub async fn start(dir: &Path, config: &str, env: &[(&str, &str)]) -> Self {
        on_free_port("token-issuer", async |port| {
            let mut issuer = Self::spawn_on(port, dir, config, env);
            let listening = format!("listening listen=127.0.0.1:{port} ");
            if !issuer.proc.wait_listening(&listening).await {
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
        let mut cmd = Command::new(BIN);
        cmd.args(["dev", "--data-dir"])
            .arg(data)
            .args([
                "--listen",
                &format!("127.0.0.1:{issuer}"),
                "--registry-listen",
                &format!("127.0.0.1:{registry}"),
            ])
            .env("TOKEN_ISSUER_DEV_PASSWORD", password)
            .current_dir(dir);
        let log = dir.join(format!("dev-{issuer}.log"));
        let mut proc = Proc::spawn("token-issuer dev", cmd, log);
        // `serve` binds every listener before any says it listens, so this line means both
        // ports are this process's.
        let listening = format!("registry listening listen=127.0.0.1:{registry} ");
        if !proc.wait_listening(&listening).await {
            return None;
        }
        proc.wait_http(&format!("http://127.0.0.1:{registry}/v2/"), 401)
            .await;
        Some((proc, issuer, registry))
    })
    .await
}

/// Which distribution registry: Debian's 2.8, or a 3.x binary from `DISTRIBUTION_V3_DIR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    V2_8,
    V3_0_0,
    V3_1_1,
}

impl Distribution {
    pub const ALL: [Distribution; 3] = [Self::V2_8, Self::V3_0_0, Self::V3_1_1];

    pub fn name(self) -> &'static str {
        match self {
            Self::V2_8 => "distribution 2.8",
            Self::V3_0_0 => "distribution 3.0.0",
            Self::V3_1_1 => "distribution 3.1.1",
        }
    }

    /// The program to run, or why it is not available. 3.x binaries come from
    /// `DISTRIBUTION_V3_DIR` (scripts/test points it at ../shared/distribution).
    pub fn program(self) -> Result<PathBuf, String> {
        let file = match self {
            Self::V2_8 => return Ok(PathBuf::from("docker-registry")),
            Self::V3_0_0 => "registry-v3.0.0",
            Self::V3_1_1 => "registry-v3.1.1",
        };
        let dir = std::env::var_os("DISTRIBUTION_V3_DIR")
            .ok_or_else(|| format!("{}: not run, DISTRIBUTION_V3_DIR is not set", self.name()))?;
        let path = PathBuf::from(dir).join(file);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{}: not run, {} is missing (DISTRIBUTION_V3_DIR)",
                self.name(),
                path.display()
            ))
        }
    }

    /// Whether every 3.x row must run: in CI, and whenever scripts/test found the folder.
    pub fn v3_required() -> bool {
        std::env::var_os("CI").is_some() || std::env::var_os("DISTRIBUTION_V3_DIR").is_some()
    }
}

/// How a registry trusts the issuer: `auth.token.rootcertbundle` and/or (3.x) `auth.token.jwks`.
pub struct Trust<'a> {
    pub bundle: Option<&'a Path>,
    pub jwks: Option<&'a Path>,
}

impl<'a> Trust<'a> {
    pub fn bundle(path: &'a Path) -> Self {
        Self {
            bundle: Some(path),
            jwks: None,
        }
    }
}

/// A distribution registry with token auth pointing at the issuer.
pub struct Registry {
    pub proc: Proc,
    pub port: u16,
}

impl Registry {
    /// Debian's distribution 2.8 trusting `certbundle`.
    pub async fn start(
        dir: &Path,
        realm: &str,
        service: &str,
        issuer: &str,
        certbundle: &Path,
    ) -> Self {
        Self::start_with(
            Distribution::V2_8,
            dir,
            realm,
            service,
            issuer,
            &Trust::bundle(certbundle),
        )
        .await
        .expect("docker-registry is installed (scripts/test installs it)")
    }

    /// `version` with `trust`; Err (naming why) when its program is not available.
    pub async fn start_with(
        version: Distribution,
        dir: &Path,
        realm: &str,
        service: &str,
        issuer: &str,
        trust: &Trust<'_>,
    ) -> Result<Self, String> {
        let program = version.program()?;
        Ok(on_free_port(version.name(), async |port| {
            Self::start_on(port, &program, version, dir, realm, service, issuer, trust).await
        })
        .await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_on(
        port: u16,
        program: &Path,
        version: Distribution,
        dir: &Path,
        realm: &str,
        service: &str,
        issuer: &str,
        trust: &Trust<'_>,
    ) -> Option<Self> {
        let storage = dir.join(format!("registry-{port}"));
        let mut auth = format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n"
        );
        if let Some(b) = trust.bundle {
            auth.push_str(&format!("    rootcertbundle: {}\n", b.display()));
        }
        if let Some(j) = trust.jwks {
            auth.push_str(&format!("    jwks: {}\n", j.display()));
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n{auth}",
            storage.display(),
        );
        let cfg_path = dir.join(format!("registry-{port}.yml"));
        std::fs::write(&cfg_path, config).expect("registry config");
        let mut cmd = Command::new(program);
        cmd.arg("serve").arg(&cfg_path);
        // 3.x reports traces to an OTLP collector unless told not to.
        cmd.env("OTEL_TRACES_EXPORTER", "none");
        let mut proc = Proc::spawn(
            version.name(),
            cmd,
            dir.join(format!("registry-{port}.log")),
        );
        // 2.8 and 3.x alike log this once their listener is bound.
        if !proc
            .wait_listening(&format!("msg=\"listening on 127.0.0.1:{port}\""))
            .await
        {
            return None;
        }
        proc.wait_http(&format!("http://127.0.0.1:{port}/v2/"), 401)
            .await;
        Some(Self { proc, port })
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A one-layer OCI image layout at `dir` tagged `tag`; returns the layer's digest hex.
/// The layer is gzipped so that skopeo pushes it unchanged (it would compress a plain tar).
pub fn oci_layout(dir: &Path, tag: &str, file_content: &[u8]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout dir");
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).expect("blob");
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(file_content.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "hello.txt", file_content)
        .expect("tar");
    let tar_bytes = tar.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).expect("gzip");
    let layer = gz.finish().expect("gzip");
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&tar_bytes))]}
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).expect("index.json");
    layer_digest.trim_start_matches("sha256:").to_string()
}

/// Runs skopeo with an empty auth file, no TLS and no signature policy (loopback only).
pub fn skopeo(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .env("REGISTRY_AUTH_FILE", dir.join("skopeo-auth.json"))
        .output()
        .expect("skopeo is installed (scripts/test installs it)");
    eprintln!(
        "skopeo {}: {}\n{}",
        args.iter()
            .filter(|a| !a.contains(':') || a.starts_with("docker://") || a.starts_with("oci:"))
            .cloned()
            .collect::<Vec<_>>()
            .join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn push(dir: &Path, layout: &Path, dest: &str, creds: &str) -> Output {
    skopeo(
        dir,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            &format!("oci:{}:latest", layout.display()),
            dest,
        ],
    )
}

pub fn pull(dir: &Path, src: &str, layout: &Path, creds: &str) -> Output {
    skopeo(
        dir,
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            src,
            &format!("oci:{}:latest", layout.display()),
        ],
    )
}
