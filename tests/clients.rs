//! Real clients beyond skopeo: the Docker engine (a `dockerd` started by the test, with its own
//! data root and socket, no containers run), podman and buildah (storage and auth file in the
//! test's directory), each against the built-in registry, distribution 2.8 and distribution 3.1.1.
//! Login, push, rmi, pull (the same image back), logout; and the exact text a user sees for each
//! refusal: no credentials, a wrong password, a pull-only user's push. Then a CI job's OIDC ID
//! token as the password (a provider from tests/common/idp.rs): login, push where its rule
//! allows, refused elsewhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::idp::Idp;
use common::slapd::{person, Slapd, Transport};
use common::targets::*;
use common::*;

/// A container CLI: docker talking to an engine of the test's own (killed, with its
/// containerd, when dropped), or podman with storage and auth file in the test's directory.
struct Docker {
    _proc: Option<Proc>,
    program: &'static str,
    base: Vec<String>,
    env: Vec<(String, PathBuf)>,
    /// podman needs `--tls-verify=false` on loopback; docker treats 127.0.0.0/8 as insecure.
    insecure: bool,
    words: Words,
}

/// What the client itself prints around the realm's and the registry's messages.
struct Words {
    wrong_password: &'static str,
    no_credentials: &'static str,
    denied: &'static str,
    login_ok: &'static str,
}

impl Docker {
    /// podman or buildah (containers/image and containers/storage, as skopeo): storage and
    /// auth file in `dir`. The two print the same words.
    fn containers(program: &'static str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("storage dir");
        let auth = dir.join("auth.json");
        std::fs::write(&auth, "{}").expect("auth file");
        let path = |p: &str| dir.join(p).to_string_lossy().to_string();
        let mut base = vec![
            "--root".into(),
            path("root"),
            "--runroot".into(),
            path("run"),
            "--storage-driver".into(),
            "vfs".into(),
        ];
        if program == "podman" {
            base.extend(
                ["--cgroup-manager", "cgroupfs", "--events-backend", "none"].map(String::from),
            );
        }
        Self {
            _proc: None,
            program,
            base,
            env: vec![("REGISTRY_AUTH_FILE".into(), auth)],
            insecure: true,
            words: Words {
                wrong_password: "Error: logging into \"{host}\": invalid username/password",
                no_credentials: "unable to retrieve auth token: invalid username/password: unauthorized: authentication required: no credentials were given; log in first (docker login <registry>)",
                denied: "requested access to the resource is denied",
                login_ok: "Login Succeeded!",
            },
        }
    }

    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("docker dir");
        let sock = dir.join("docker.sock");
        let mut cmd = Command::new("dockerd");
        cmd.args([
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
        ])
        .arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("docker.pid"))
        .arg("--host")
        .arg(format!("unix://{}", sock.display()));
        let mut proc = Proc::spawn("dockerd", cmd, dir.join("dockerd.log"));
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("docker config dir");
        let docker = |proc: Proc| {
            Self {
            _proc: Some(proc),
            program: "docker",
            base: vec!["-H".into(), format!("unix://{}", sock.display())],
            env: vec![("DOCKER_CONFIG".into(), config.clone())],
            insecure: false,
            words: Words {
                wrong_password: "Error response from daemon: Get \"http://{host}/v2/\": unauthorized: invalid username or password",
                no_credentials: "unauthorized: authentication required: no credentials were given; log in first (docker login <registry>)",
                denied: "denied: requested access to the resource is denied",
                login_ok: "Login Succeeded",
            },
        }
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                panic!("dockerd exited with {status}:\n{}", proc.log_text());
            }
            let ok = Command::new("docker")
                .arg("-H")
                .arg(format!("unix://{}", sock.display()))
                .args(["version", "--format", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return docker(proc);
            }
            assert!(
                Instant::now() < deadline,
                "dockerd not ready:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// docker's saved login for `host` (its config.json entry); `None` for the others, which
    /// keep their own auth files and ask for no refresh token.
    fn stored_login(&self, host: &str) -> Option<serde_json::Value> {
        if self.program != "docker" {
            return None;
        }
        let (_, dir) = self.env.iter().find(|(k, _)| k == "DOCKER_CONFIG")?;
        let text = std::fs::read_to_string(dir.join("config.json")).expect("docker config.json");
        let config: serde_json::Value = serde_json::from_str(&text).expect("json");
        Some(config["auths"][host].clone())
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut cmd = Command::new(self.program);
        cmd.args(&self.base).arg(args[0]);
        if self.insecure && ["login", "push", "pull"].contains(&args[0]) {
            cmd.arg("--tls-verify=false");
        }
        cmd.args(&args[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{} (scripts/test installs it): {e}", self.program));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        let out = child.wait_with_output().expect("docker");
        eprintln!(
            "{} {}: {}\n{}{}",
            self.program,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{} {args:?} failed", self.program);
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Fails, and returns what the user saw on stderr.
    fn refused(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            !out.status.success(),
            "{} {args:?} should fail",
            self.program
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// A one-file image named `reference`: `import` of the tarball, or for buildah (which
    /// has no `import`) a `scratch` container with the file copied in, committed.
    fn create_image(&self, tarball: &Path, file: &Path, reference: &str) {
        if self.program != "buildah" {
            self.ok(&["import", &tarball.to_string_lossy(), reference], None);
            return;
        }
        let container = self.ok(&["from", "scratch"], None);
        let container = container.trim();
        self.ok(&["copy", container, &file.to_string_lossy(), "/"], None);
        self.ok(&["commit", container, reference], None);
        self.ok(&["rm", container], None);
    }

    fn image_id(&self, reference: &str) -> String {
        let id = if self.program == "buildah" {
            let args = ["inspect", "--type", "image", "--format", "{{.FromImageID}}"];
            self.ok(&[&args[..], &[reference]].concat(), None)
        } else {
            self.ok(
                &["image", "inspect", "--format", "{{.Id}}", reference],
                None,
            )
        };
        id.trim().trim_start_matches("sha256:").to_string()
    }
}

/// The whole flow against one registry at `host`; `label` names it in failures.
fn docker_flow(docker: &Docker, dir: &Path, host: &str, label: &str, id_token: &str) {
    let image = format!("{host}/org/app:latest");
    let content = dir.join("rootfs");
    std::fs::create_dir_all(&content).expect("rootfs");
    std::fs::write(content.join("hello.txt"), format!("hello from {label}")).expect("file");
    let tarball = dir.join("rootfs.tar");
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&content)
        .arg("-cf")
        .arg(&tarball)
        .arg("hello.txt")
        .status()
        .expect("tar");
    assert!(tar.success());
    docker.create_image(&tarball, &content.join("hello.txt"), &image);
    let id = docker.image_id(&image);

    // No login: the push fails at once (docker retries a bare "unauthorized" for 50 s) and
    // says what to do.
    let t0 = Instant::now();
    let err = docker.refused(&["push", &image], None);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "{label}: push without login took {:?}",
        t0.elapsed()
    );
    assert!(err.contains(docker.words.no_credentials), "{label}: {err}");

    let err = docker.refused(
        &["login", "-u", "admin", "--password-stdin", host],
        Some("wrong"),
    );
    assert!(
        err.contains(&docker.words.wrong_password.replace("{host}", host)),
        "{label}: {err}"
    );

    let login = docker.run(
        &["login", "-u", "admin", "--password-stdin", host],
        Some("admin-pw"),
    );
    let (out, err) = (
        String::from_utf8_lossy(&login.stdout),
        String::from_utf8_lossy(&login.stderr),
    );
    assert!(login.status.success(), "{label}: {err}");
    assert!(out.contains(docker.words.login_ok), "{label}: {out}");
    // The issuer has a store, so docker keeps a refresh token instead of the password, and
    // every push and pull below trades it for access tokens (the OAuth2 refresh grant).
    if let Some(stored) = docker.stored_login(host) {
        assert!(
            stored["identitytoken"]
                .as_str()
                .is_some_and(|t| t.starts_with("tirt_")),
            "{label}: {stored}"
        );
        let auth = stored["auth"].as_str().unwrap_or_default();
        let auth = data_encoding::BASE64
            .decode(auth.as_bytes())
            .unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&auth).contains("admin-pw"),
            "{label}: the password is stored"
        );
        assert!(!err.contains("unencrypted"), "{label}: {err}");
    }
    docker.ok(&["push", &image], None);
    docker.ok(&["rmi", &image], None);
    docker.ok(&["pull", &image], None);
    assert_eq!(docker.image_id(&image), id, "{label}: pulled another image");
    docker.ok(&["logout", host], None);

    // A pull-only user: the pull works, the push is refused, at once.
    docker.ok(
        &["login", "-u", "reader", "--password-stdin", host],
        Some("reader-pw"),
    );
    docker.ok(&["rmi", &image], None);
    docker.ok(&["pull", &image], None);
    let other = format!("{host}/org/other:latest");
    docker.ok(&["tag", &image, &other], None);
    let t0 = Instant::now();
    let err = docker.refused(&["push", &other], None);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "{label}: refused push took {:?}",
        t0.elapsed()
    );
    // The client's own words for an insufficient_scope refusal, whatever the registry says.
    assert!(err.contains(docker.words.denied), "{label}: {err}");
    docker.ok(&["logout", host], None);

    if docker.program == "docker" {
        rotation_needs_a_new_login(docker, dir, host, label, &image);
    }

    // A CI job's OIDC ID token as the password: its rule lets it push org/ci.
    let ci = format!("{host}/org/ci:latest");
    docker.ok(&["tag", &image, &ci], None);
    let out = docker.ok(
        &["login", "-u", "oidc", "--password-stdin", host],
        Some(id_token),
    );
    assert!(out.contains(docker.words.login_ok), "{label}: {out}");
    docker.ok(&["push", &ci], None);
    let err = docker.refused(&["push", &other], None);
    assert!(err.contains(docker.words.denied), "{label}: {err}");
    docker.ok(&["logout", host], None);

    // A directory user (LDAP, its group's rule): login with the directory password, push, pull.
    let team = format!("{host}/team/app:latest");
    docker.ok(&["tag", &image, &team], None);
    let out = docker.ok(
        &["login", "-u", "dora", "--password-stdin", host],
        Some("dora-pw"),
    );
    assert!(out.contains(docker.words.login_ok), "{label}: {out}");
    docker.ok(&["push", &team], None);
    docker.ok(&["rmi", &team], None);
    docker.ok(&["pull", &team], None);
    let err = docker.refused(&["push", &other], None);
    assert!(err.contains(docker.words.denied), "{label}: {err}");
    docker.ok(&["logout", host], None);
    docker.ok(&["rmi", &image, &other, &ci, &team], None);
}

/// A store robot's password rotated (`users passwd --generate`): the refresh token docker
/// keeps for it stops working, and docker says to log in again; a login with the new password
/// works.
fn rotation_needs_a_new_login(docker: &Docker, dir: &Path, host: &str, label: &str, image: &str) {
    let config = dir.join("issuer.toml");
    let config = config.to_str().expect("utf8");
    let cli = |args: &[&str], stdin: &str| {
        let mut all = args.to_vec();
        all.extend(["--config", config]);
        store_api::ok(&store_api::cli(&all, stdin))
    };
    cli(&["users", "add", "robot"], "robot-pw\n");
    cli(&["grants", "add", "--user", "robot", "org/*", "pull"], "");
    docker.ok(
        &["login", "-u", "robot", "--password-stdin", host],
        Some("robot-pw"),
    );
    let stored = docker.stored_login(host).expect("docker's saved login");
    assert!(
        stored["identitytoken"]
            .as_str()
            .is_some_and(|t| t.starts_with("tirt_")),
        "{label}: {stored}"
    );
    docker.ok(&["pull", image], None);
    let fresh = cli(&["users", "passwd", "robot", "--generate"], "");
    // The CLI writes the database; the running issuer sees it within store.cache_ttl_seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        let out = docker.run(&["pull", image], None);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{label}: the old login still pulls"
        );
    };
    eprintln!(
        "{label}: after the rotation, docker pull says: {}",
        err.trim()
    );
    assert!(err.contains("log in again"), "{label}: {err}");
    docker.ok(
        &["login", "-u", "robot", "--password-stdin", host],
        Some(fresh.trim()),
    );
    docker.ok(&["pull", image], None);
    docker.ok(&["logout", host], None);
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_engine_against_every_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let docker = Docker::start(&tmp.path().join("docker"));
    against_every_registry(&docker, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn podman_against_every_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let podman = Docker::containers("podman", &tmp.path().join("podman"));
    against_every_registry(&podman, tmp.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn buildah_against_every_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let buildah = Docker::containers("buildah", &tmp.path().join("buildah"));
    against_every_registry(&buildah, tmp.path()).await;
}

async fn against_every_registry(docker: &Docker, tmp: &Path) {
    // A CI system's OIDC provider and a directory, trusted by every target's issuer.
    let idp = Idp::start().await;
    let directory = Slapd::start(
        tmp,
        &[person("dora", "dora-pw", &["team"])],
        Transport::Plain,
    )
    .await;
    let extra = format!(
        "[[oidc]]\nissuer = \"{}\"\naudiences = [\"{SERVICE}\"]\nusername = \"{{sub}}\"\n\
         [[acl]]\naccount = \"ci-bot\"\nname = \"org/ci\"\nactions = [\"pull\", \"push\"]\n\
         [[acl]]\ngroup = \"team\"\nname = \"team/*\"\nactions = [\"pull\", \"push\"]\n{}",
        idp.issuer(),
        directory.section(tmp)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let id_token = idp.sign(
        "ec-1",
        &serde_json::json!({"iss": idp.issuer(), "aud": SERVICE, "sub": "ci-bot", "iat": now, "exp": now + 900}),
    );
    for target in every_registry_with(tmp, &extra).await {
        docker_flow(docker, &target.dir, &target.host, target.label, &id_token);
    }
}
