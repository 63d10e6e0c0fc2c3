//! The container image and the compose stack, for real: a Docker engine of the test's own (with
//! its default bridge networking: containers run), a `debian:bookworm-slim` made without any
//! image registry (Debian's minbase from debootstrap, which scripts/test makes once and names in
//! `CONTAINER_BASE_TAR`), the image built from the project's Dockerfile around the binary under
//! test (`--target prebuilt`: no second compile), its health check reaching `healthy`, and the
//! compose file's `distribution` profile brought up with a `registry:3` made from distribution
//! 3.1.1, docker pushing and pulling through it. open-balena-registry's image cannot be had
//! here: its service stays checked by `tests/compose_stack.rs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The base image's root file system as a tar, or why the test cannot run (it must under CI).
fn base_tar() -> Option<PathBuf> {
    match std::env::var_os("CONTAINER_BASE_TAR") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "CONTAINER_BASE_TAR is not set: run scripts/test, which makes it with debootstrap"
            )
        }
        None => {
            eprintln!("container: not run, CONTAINER_BASE_TAR is not set (scripts/test sets it)");
            None
        }
    }
}

/// A dockerd of the test's own, stopped with SIGTERM (so it removes its bridge and rules) when
/// dropped.
struct Engine {
    proc: Proc,
    sock: String,
    config: PathBuf,
}

impl Engine {
    fn start(dir: &Path) -> Self {
        let sock = format!("unix://{}", dir.join("docker.sock").display());
        let mut cmd = Command::new("dockerd");
        cmd.arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .args(["--host", &sock]);
        let mut proc = Proc::spawn("dockerd", cmd, dir.join("dockerd.log"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let engine = loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("dockerd exited with {status}:\n{}", proc.log_text());
            }
            let up = Command::new("docker")
                .args(["-H", &sock, "version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                break Self {
                    proc,
                    sock,
                    config: dir.join("docker-config"),
                };
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        std::fs::create_dir_all(&engine.config).expect("docker config dir");
        engine
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DOCKER_HOST", &self.sock)
            .env("DOCKER_CONFIG", &self.config)
            // The legacy builder builds only the stages up to --target.
            .env("DOCKER_BUILDKIT", "0");
        c
    }

    fn ok(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut c = self.cmd(program);
        c.args(args);
        let out = match stdin {
            None => c.output().expect(program),
            Some(bytes) => {
                use std::io::Write;
                let mut child = c
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect(program);
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(bytes)
                    .expect("write stdin");
                child.wait_with_output().expect(program)
            }
        };
        assert!(
            out.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ok("docker", args, None).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let pid = self.proc.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A build context holding `files` (name, source path) and `dockerfile`.
fn context(dir: &Path, name: &str, dockerfile: &str, files: &[(&str, &Path)]) -> PathBuf {
    let ctx = dir.join(name);
    std::fs::create_dir_all(&ctx).expect("context");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
    for (to, from) in files {
        std::fs::copy(from, ctx.join(to)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    ctx
}

#[tokio::test(flavor = "multi_thread")]
async fn image_and_compose_stack_with_docker() {
    let Some(base) = base_tar() else { return };
    let Ok(registry_bin) = Distribution::V3_1_1.program() else {
        assert!(
            !Distribution::v3_required(),
            "distribution 3.1.1 is missing"
        );
        eprintln!("container: not run, no distribution 3.1.1 binary (DISTRIBUTION_V3_DIR)");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let engine = Engine::start(dir);

    // The base image, made without any registry.
    let tar = std::fs::read(&base).expect("base tar");
    engine.ok(
        "docker",
        &["import", "-", "debian:bookworm-slim"],
        Some(&tar),
    );

    // The project's image around the binary under test; registry:3 around distribution 3.1.1.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let ctx = context(
        dir,
        "issuer-ctx",
        &dockerfile,
        &[("token-issuer", Path::new(bin()))],
    );
    engine.ok(
        "docker",
        &[
            "build",
            "-q",
            "--target",
            "prebuilt",
            "-t",
            "token-issuer:dev",
            &ctx.to_string_lossy(),
        ],
        None,
    );
    let ctx = context(
        dir,
        "registry-ctx",
        "FROM debian:bookworm-slim\nCOPY registry /bin/registry\n",
        &[("registry", &registry_bin)],
    );
    engine.ok(
        "docker",
        &["build", "-q", "-t", "registry:3", &ctx.to_string_lossy()],
        None,
    );
    assert_eq!(
        engine.text(&[
            "image",
            "inspect",
            "token-issuer:dev",
            "--format",
            "{{.Config.User}}"
        ]),
        "token-issuer"
    );

    // The stack from .env.example, on free ports, with the realm the host's docker can reach
    // (REGISTRY_TOKEN_AUTH_REALM feeds the issuer and both registries).
    let (issuer_port, registry_port) = (free_port(), free_port());
    let env = std::fs::read_to_string(repo().join(".env.example"))
        .expect(".env.example")
        .lines()
        .map(|l| match l.split_once('=') {
            Some(("REGISTRY_TOKEN_AUTH_REALM", _)) => {
                format!("REGISTRY_TOKEN_AUTH_REALM=http://127.0.0.1:{issuer_port}/v1/registry")
            }
            Some(("ISSUER_PORT", _)) => format!("ISSUER_PORT={issuer_port}"),
            Some(("REGISTRY_PORT", _)) => format!("REGISTRY_PORT={registry_port}"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let env_file = dir.join("stack.env");
    std::fs::write(&env_file, env).expect("env file");
    let project = format!("ti{issuer_port}");
    let compose = |args: &[&str]| {
        let mut all = vec![
            "-p",
            project.as_str(),
            "-f",
            "docker-compose.registry.yml",
            "--env-file",
        ];
        let env_path = env_file.to_string_lossy().to_string();
        let mut c = engine.cmd("docker-compose");
        all.push(&env_path);
        all.extend(["--profile", "distribution"]);
        all.extend(args);
        let out = c
            .args(&all)
            .current_dir(repo())
            .output()
            .expect("docker-compose");
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    compose(&[
        "up",
        "-d",
        "--no-build",
        "token-issuer",
        "registry-distribution",
    ]);

    // The image's health check reaches healthy.
    let issuer_container = format!("{project}_token-issuer_1");
    let started = Instant::now();
    loop {
        let health = engine.text(&[
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &issuer_container,
        ]);
        if health == "healthy" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{health} after {:?}:\n{}",
            started.elapsed(),
            engine.text(&["logs", &issuer_container])
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("healthy after {:?}", started.elapsed());
    let client = reqwest::Client::new();
    let v2 = format!("http://127.0.0.1:{registry_port}/v2/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&v2).send().await {
            if r.status() == 401 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the registry never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // docker login, push, rmi, pull through the stack (compose/users.htpasswd: admin/admin).
    let host = format!("127.0.0.1:{registry_port}");
    let image = format!("{host}/library/hello:v1");
    engine.ok(
        "docker",
        &["login", &host, "-u", "admin", "--password-stdin"],
        Some(b"admin"),
    );
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    layer
        .append_data(&mut header, "hello.txt", &b"hello\n"[..])
        .expect("tar");
    let layer = layer.into_inner().expect("tar");
    engine.ok("docker", &["import", "-", &image], Some(&layer));
    let id = engine.text(&["image", "inspect", "--format", "{{.Id}}", &image]);
    engine.ok("docker", &["push", &image], None);
    engine.ok("docker", &["rmi", &image], None);
    engine.ok("docker", &["pull", &image], None);
    assert_eq!(
        engine.text(&["image", "inspect", "--format", "{{.Id}}", &image]),
        id,
        "pulled another image"
    );

    // distribution 3 does not try to export traces (OTEL_TRACES_EXPORTER=none). The exporter's
    // error names its endpoint; a bare "4318" would also match a client's port (172.18.0.1:34318).
    let logs = engine.ok(
        "docker",
        &["logs", &format!("{project}_registry-distribution_1")],
        None,
    );
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
    assert!(
        !["localhost:4318", "/v1/traces", "traces export"]
            .iter()
            .any(|sign| logs.contains(sign)),
        "{logs}"
    );
    compose(&["down", "-v"]);

    // `dev`'s docker lines work as pasted, with this engine as the user's docker.
    let (issuer_port, registry_port) = (free_port(), free_port());
    let mut cmd = Command::new(bin());
    cmd.args(["dev", "--data-dir", "data"])
        .args(["--listen", &format!("127.0.0.1:{issuer_port}")])
        .args(["--registry-listen", &format!("127.0.0.1:{registry_port}")])
        .current_dir(dir);
    let mut dev = Proc::spawn("token-issuer dev", cmd, dir.join("dev.log"));
    // Its own word that it has the port (docs/testing.md, "Ports").
    dev.wait_said(&format!(
        "registry listening listen=127.0.0.1:{registry_port} "
    ))
    .await;
    dev.wait_http(&format!("http://127.0.0.1:{registry_port}/v2/"), 401)
        .await;
    let log = dev.log_text();
    let hints: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("or with docker:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(hints.len(), 3, "{log}");
    let out = engine
        .cmd("bash")
        .arg("-ec")
        .arg(hints.join("\n"))
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "the printed docker lines failed:\n{}\n{}",
        hints.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{issuer_port}/v1/registry"))
        .query(&[
            ("service", "token-issuer-dev"),
            ("scope", "repository:library/hello:pull"),
        ])
        .basic_auth(
            "admin",
            Some(std::fs::read_to_string(dir.join("data/admin-password")).expect("pw")),
        )
        .send()
        .await
        .expect("realm");
    let token = r.json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();
    let tags: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{registry_port}/v2/library/hello/tags/list"
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(tags["tags"], serde_json::json!(["docker"]), "{tags}");
}
