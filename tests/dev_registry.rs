//! The built-in development registry as a process: `dev` with skopeo, restarts and the storage
//! lock, `serve` with `[registry]`, and the `gc` command. The API itself: registry_api.rs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use reqwest::{Client, Method, StatusCode};

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn terminate(proc: &mut Proc) -> std::process::ExitStatus {
    proc.terminate().0
}

struct Dev {
    proc: Proc,
    issuer: u16,
    registry: u16,
}

async fn start_dev(dir: &Path, password: &str) -> Dev {
    let (proc, issuer, registry) = common::start_dev(dir, &dir.join("data"), password).await;
    Dev {
        proc,
        issuer,
        registry,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_mode_with_skopeo_and_a_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut dev = start_dev(dir, "first-pw").await;
    let log = dev.proc.log_text();
    assert!(
        log.contains("docker login 127.0.0.1:") && log.contains("docker import"),
        "no hints:\n{log}"
    );
    // The skopeo lines work as pasted, in the directory dev was started in: sample-image
    // writes an image, skopeo pushes it and lists its tag.
    // stdout and the log share the file, and the listeners log from their own tasks, so a
    // log line (it starts with its timestamp) can land between the hint lines.
    let hints: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("Try, with skopeo"))
        .skip(1)
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    assert_eq!(hints.len(), 3, "{log}");
    let out = Command::new("bash")
        .arg("-ec")
        .arg(hints.join("\n"))
        .current_dir(dir)
        .env("REGISTRY_AUTH_FILE", dir.join("hints-auth.json"))
        .output()
        .expect("bash");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(r#""latest""#),
        "the printed lines failed:\n{}\n{said}\n{}",
        hints.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let pw_file = dir.join("data/admin-password");
    assert_eq!(
        std::fs::metadata(&pw_file)
            .expect("pw")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The directory (key, password, store) and the store itself: this user's alone, whatever
    // the umask.
    let mode = |p: &str| {
        std::fs::metadata(dir.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!((mode("data"), mode("data/token-issuer.db")), (0o700, 0o600));
    assert_eq!(mode("data/pepper"), 0o600);
    assert_eq!(std::fs::read_to_string(&pw_file).expect("pw"), "first-pw");
    // dev makes a pepper, so generated secrets work at once, from the CLI as from the API.
    let made = Command::new(bin())
        .args(["users", "add", "robot", "--generate", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("users add");
    assert!(made.status.success(), "{made:?}");
    let secret = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert!(secret.starts_with("tis_"), "{secret}");
    let realm = format!("http://127.0.0.1:{}/v1/registry", dev.issuer);
    let r = reqwest::Client::new()
        .get(&realm)
        .basic_auth("robot", Some(&secret))
        .send()
        .await
        .expect("realm");
    assert_eq!(r.status(), 200);

    let host = format!("127.0.0.1:{}", dev.registry);
    let layout = dir.join("image");
    let layer = oci_layout(&layout, "latest", b"dev registry layer");
    let dest = format!("docker://{host}/org/app:v1");
    assert!(
        push(dir, &layout, &dest, "admin:first-pw").status.success(),
        "push:\n{}",
        dev.proc.log_text()
    );
    // A second repository from the first (skopeo asks to mount the blobs across).
    let out = skopeo(
        dir,
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            "--src-creds",
            "admin:first-pw",
            "--dest-creds",
            "admin:first-pw",
            &dest,
            &format!("docker://{host}/org/copy:v1"),
        ],
    );
    assert!(out.status.success());
    let pulled = dir.join("pulled");
    assert!(pull(dir, &dest, &pulled, "admin:first-pw").status.success());
    assert_eq!(
        std::fs::read(pulled.join("blobs/sha256").join(&layer)).expect("pulled"),
        std::fs::read(layout.join("blobs/sha256").join(&layer)).expect("orig")
    );
    let out = skopeo(
        dir,
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "admin:first-pw",
            &dest,
        ],
    );
    assert!(out.status.success());
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect json");
    assert_eq!(inspect["RepoTags"], serde_json::json!(["v1"]));
    assert_eq!(inspect["Layers"][0], format!("sha256:{layer}"));
    let list_tags = |repo: &str| {
        let out = skopeo(
            dir,
            &[
                "list-tags",
                "--tls-verify=false",
                "--creds",
                "admin:first-pw",
                &format!("docker://{host}/{repo}"),
            ],
        );
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("tags")["Tags"].clone()
    };
    assert_eq!(list_tags("org/copy"), serde_json::json!(["v1"]));
    assert!(skopeo(
        dir,
        &[
            "delete",
            "--tls-verify=false",
            "--creds",
            "admin:first-pw",
            &format!("docker://{host}/org/copy:v1")
        ]
    )
    .status
    .success());
    assert_eq!(list_tags("org/copy"), serde_json::json!([]));
    assert!(!pull(dir, &dest, &dir.join("nope"), "admin:wrong")
        .status
        .success());

    // SIGTERM stops both cleanly; a second run reuses the key, the user and the images.
    assert!(
        terminate(&mut dev.proc).success(),
        "unclean exit:\n{}",
        dev.proc.log_text()
    );
    let kid = std::fs::read_to_string(dir.join("data/token-issuer-dev.kid")).expect("kid");
    let dev = start_dev(dir, "second-pw").await;
    assert_eq!(
        std::fs::read_to_string(dir.join("data/token-issuer-dev.kid")).expect("kid"),
        kid
    );
    assert!(dev
        .proc
        .log_text()
        .contains("TOKEN_ISSUER_DEV_PASSWORD is ignored"));
    let dest = format!("docker://127.0.0.1:{}/org/app:v1", dev.registry);
    assert!(
        pull(dir, &dest, &dir.join("again"), "admin:first-pw")
            .status
            .success(),
        "data lost across restart"
    );
    assert!(dir.join("again/blobs/sha256").join(&layer).exists());
    let _ = dev.issuer;
}

// ---- `serve` with [registry], then `gc` (the API itself is tested in process: registry_api.rs)

struct Env {
    _issuer: Issuer,
    registry: String,
    realm: String,
    client: Client,
    storage: std::path::PathBuf,
}

impl Env {
    async fn start(dir: &Path) -> Self {
        gen_cert(dir, ISSUER);
        write_users(dir, &[("admin", "admin-pw")]);
        let port = free_port();
        let config = ConfigBuilder::new(ISSUER, SERVICE)
            .allow("admin", "**", &["*"])
            .registry(port, "storage")
            .build();
        let mut issuer = Issuer::start(dir, &config, &[]).await;
        let registry = format!("http://127.0.0.1:{port}");
        issuer.proc.wait_http(&format!("{registry}/v2/"), 401).await;
        let realm = issuer.realm();
        Env {
            _issuer: issuer,
            registry,
            realm,
            client: Client::new(),
            storage: dir.join("storage"),
        }
    }

    async fn token(&self, user: &str, scopes: &[&str]) -> String {
        let mut q = vec![("service", SERVICE)];
        q.extend(scopes.iter().map(|s| ("scope", *s)));
        let r = self
            .client
            .get(&self.realm)
            .query(&q)
            .basic_auth(user, Some(format!("{user}-pw")))
            .send()
            .await
            .expect("realm");
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.expect("json")["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// With the Accept header real clients send (every manifest type).
    fn req(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.req_raw(method, path, token)
            .header("Accept", ALL_MANIFESTS)
    }

    fn req_raw(&self, method: Method, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.registry))
            .bearer_auth(token)
    }
}

/// `token-issuer gc --config DIR/issuer.toml ARGS`.
fn run_gc(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("gc")
        .arg("--config")
        .arg(dir.join("issuer.toml"))
        .args(args)
        .output()
        .expect("gc")
}

fn blob_stored(storage: &Path, d: &str) -> bool {
    let hex = d.trim_start_matches("sha256:");
    storage
        .join("blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .exists()
}

async fn monolithic(env: &Env, token: &str, repo: &str, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let r = env
        .req(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            token,
        )
        .body(bytes.to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    d
}

async fn put_manifest(
    env: &Env,
    token: &str,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    env.req(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{reference}"),
        token,
    )
    .header("Content-Type", media_type)
    .body(body.to_string())
    .send()
    .await
    .expect("put manifest")
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[tokio::test(flavor = "multi_thread")]
async fn gc_removes_exactly_the_unreferenced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let env = Env::start(tmp.path()).await;
    let admin = env
        .token("admin", &["repository:org/a:pull,push,delete"])
        .await;
    let config_d = monolithic(&env, &admin, "org/a", b"{\"c\":1}").await;
    let layer_d = monolithic(&env, &admin, "org/a", b"tagged layer").await;
    let untagged_layer = monolithic(&env, &admin, "org/a", b"untagged layer").await;
    let orphan = monolithic(&env, &admin, "org/a", b"orphan blob").await;
    let tagged = image_manifest(&config_d, 7, &layer_d, 12);
    assert_eq!(
        put_manifest(&env, &admin, "org/a", "v1", OCI_MANIFEST, &tagged)
            .await
            .status(),
        201
    );
    let untagged = image_manifest(&config_d, 7, &untagged_layer, 14);
    let untagged_d = digest(untagged.to_string().as_bytes());
    assert_eq!(
        put_manifest(&env, &admin, "org/a", &untagged_d, OCI_MANIFEST, &untagged)
            .await
            .status(),
        201
    );
    drop(env._issuer);

    let gc = |args: &[&str]| {
        let out = run_gc(tmp.path(), args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf8")
    };
    let blob_exists = |d: &str| blob_stored(&env.storage, d);
    // Dry run: names the orphan only, removes nothing.
    let out = gc(&["--dry-run"]);
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("would remove blob"))
            .collect::<Vec<_>>(),
        vec![format!("would remove blob {orphan}")]
    );
    assert!(blob_exists(&orphan));
    // For real: the orphan goes, everything a manifest references stays.
    let out = gc(&[]);
    assert!(
        out.contains(&format!("removed blob {orphan}"))
            && out.contains("removed 0 manifest(s), 1 blob(s)"),
        "{out}"
    );
    assert!(!blob_exists(&orphan));
    for d in [&config_d, &layer_d, &untagged_layer, &untagged_d] {
        assert!(blob_exists(d), "{d} was removed");
    }
    // With --delete-untagged: the untagged manifest and the layer only it used.
    let out = gc(&["--delete-untagged"]);
    assert!(
        out.contains(&format!("removed manifest org/a@{untagged_d}")),
        "{out}"
    );
    assert!(out.contains("removed 1 manifest(s), 2 blob(s)"), "{out}");
    assert!(!blob_exists(&untagged_layer) && !blob_exists(&untagged_d));
    assert!(blob_exists(&config_d) && blob_exists(&layer_d));
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_refuses_to_run_under_a_live_registry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let env = Env::start(tmp.path()).await;
    let out = run_gc(tmp.path(), &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by a running registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(env);
}

/// A restart that overlaps the old process's shutdown (a supervisor restarting `dev` while the
/// old one still drains connections) waits for the storage lock instead of failing; and a
/// restart right after SIGTERM comes up.
#[tokio::test(flavor = "multi_thread")]
async fn dev_restart_waits_for_the_storage_lock() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut first = start_dev(dir, "pw").await;
    assert!(terminate(&mut first.proc).success());

    // Stand in for a stopping registry: hold the lock ourselves.
    let lock = std::fs::File::options()
        .write(true)
        .open(dir.join("data/registry/.lock"))
        .expect("lock file");
    lock.try_lock().expect("lock");
    let (issuer, registry) = (free_port(), free_port());
    let mut cmd = Command::new(bin());
    cmd.args(["dev", "--data-dir"]).arg(dir.join("data")).args([
        "--listen",
        &format!("127.0.0.1:{issuer}"),
        "--registry-listen",
        &format!("127.0.0.1:{registry}"),
    ]);
    let mut second = Proc::spawn("token-issuer dev", cmd, dir.join("dev-second.log"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !second.log_text().contains("waiting up to 15 s") {
        assert!(
            second.child.try_wait().expect("wait").is_none(),
            "dev gave up instead of waiting:\n{}",
            second.log_text()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            second.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(lock);
    second
        .wait_said(&format!("registry listening listen=127.0.0.1:{registry} "))
        .await;
    second
        .wait_http(&format!("http://127.0.0.1:{registry}/v2/"), 401)
        .await;

    // SIGTERM, then at once a new process on the same storage: it comes up.
    second.signal("-TERM");
    let mut third = start_dev(dir, "pw").await;
    assert!(second.wait_exit().0.success());
    assert!(terminate(&mut third.proc).success());
}

/// A taken registry port: `dev` exits naming the address, without printing hints that cannot
/// work (it binds both ports before it prints them).
#[tokio::test(flavor = "multi_thread")]
async fn dev_with_a_taken_port_says_so_before_any_hint() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let mut cmd = Command::new(bin());
    cmd.args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--registry-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir);
    let mut dev = Proc::spawn("token-issuer dev", cmd, dir.join("dev.log"));
    let (status, log) = dev.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains(&format!("registry: cannot listen on 127.0.0.1:{port}")),
        "{log}"
    );
    assert!(
        !log.contains("Try,"),
        "hints printed before binding:\n{log}"
    );
}
