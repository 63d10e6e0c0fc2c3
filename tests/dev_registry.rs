//! The built-in development registry: `dev` with skopeo, the API with a Rust client, `gc`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use reqwest::{Client, Method, StatusCode};
use token_issuer::config::X5cMode;
use token_issuer::keys::KeyMaterial;
use token_issuer::scope::Scope;
use token_issuer::token::Signer;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn terminate(proc: &mut Proc) -> std::process::ExitStatus {
    let pid = proc.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    proc.wait_exit().0
}

struct Dev {
    proc: Proc,
    issuer: u16,
    registry: u16,
}

async fn start_dev(dir: &Path, password: &str) -> Dev {
    let (issuer, registry) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["dev", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--listen",
            &format!("127.0.0.1:{issuer}"),
            "--registry-listen",
            &format!("127.0.0.1:{registry}"),
        ])
        .env("TOKEN_ISSUER_DEV_PASSWORD", password)
        .current_dir(dir);
    let mut proc = Proc::spawn(
        "token-issuer dev",
        cmd,
        dir.join(format!("dev-{issuer}.log")),
    );
    proc.wait_http(&format!("http://127.0.0.1:{issuer}/healthz"), 200)
        .await;
    proc.wait_http(&format!("http://127.0.0.1:{registry}/v2/"), 401)
        .await;
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
    let hints: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.starts_with("Try, with skopeo"))
        .skip(1)
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
    assert_eq!(std::fs::read_to_string(&pw_file).expect("pw"), "first-pw");

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

// ---- the API, with a Rust client against `serve` + [registry]

struct Env {
    _issuer: Issuer,
    registry: String,
    realm: String,
    keys: KeyMaterial,
    client: Client,
    storage: std::path::PathBuf,
}

impl Env {
    async fn start(dir: &Path) -> Self {
        gen_cert(dir, ISSUER);
        write_users(dir, &[("admin", "admin-pw"), ("reader", "reader-pw")]);
        let port = free_port();
        let config = format!(
            r#"
[token]
issuer = "{ISSUER}"
service = "{SERVICE}"
[keys]
cert_file = "{ISSUER}.crt"
key_file = "{ISSUER}.pem"
[identity]
htpasswd = "users.htpasswd"
[[acl]]
account = "admin"
name = "**"
actions = ["*"]
[[acl]]
account = "admin"
type = "registry"
name = "catalog"
actions = ["*"]
[[acl]]
account = "reader"
name = "**"
actions = ["pull"]
[registry]
listen = "127.0.0.1:{port}"
storage = "storage"
"#
        );
        let mut issuer = Issuer::start(dir, &config, &[]).await;
        let registry = format!("http://127.0.0.1:{port}");
        issuer.proc.wait_http(&format!("{registry}/v2/"), 401).await;
        let keys = KeyMaterial::load(
            &std::fs::read(dir.join(format!("{ISSUER}.crt"))).expect("crt"),
            &std::fs::read(dir.join(format!("{ISSUER}.pem"))).expect("pem"),
            None,
        )
        .expect("keys");
        let realm = issuer.realm();
        Env {
            _issuer: issuer,
            registry,
            realm,
            keys,
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

    fn stored_blobs(&self) -> usize {
        walk(&self.storage.join("blobs"))
    }
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// `token-issuer gc --config DIR/issuer.toml ARGS`.
fn run_gc(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
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

async fn error_code(r: reqwest::Response) -> String {
    r.json::<serde_json::Value>().await.expect("error json")["errors"][0]["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
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

fn image_manifest(
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

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[tokio::test(flavor = "multi_thread")]
async fn registry_api_uploads_manifests_listings_and_auth() {
    let tmp = tempfile::tempdir().expect("tmp");
    let env = Env::start(tmp.path()).await;
    let admin = env
        .token(
            "admin",
            &[
                "repository:org/a:pull,push,delete",
                "repository:org/b:pull,push",
                "registry:catalog:*",
            ],
        )
        .await;

    // /v2/: a challenge without a token (no error), 200 with one.
    let r = env
        .client
        .get(format!("{}/v2/", env.registry))
        .send()
        .await
        .expect("v2");
    assert_eq!(r.status(), 401);
    let ch = r.headers()["www-authenticate"]
        .to_str()
        .expect("h")
        .to_string();
    assert_eq!(
        ch,
        format!("Bearer realm=\"{}\",service=\"{SERVICE}\"", env.realm)
    );
    let r = env
        .req(Method::GET, "/v2/", &admin)
        .send()
        .await
        .expect("v2");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    // Monolithic upload, then HEAD.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let config_d = monolithic(&env, &admin, "org/a", config).await;
    let r = env
        .req(Method::HEAD, &format!("/v2/org/a/blobs/{config_d}"), &admin)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        config.len().to_string().as_str()
    );

    // Chunked upload: two PATCHes with Content-Range, a wrong offset refused, status, PUT.
    let layer: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let layer_d = digest(&layer);
    let r = env
        .req(Method::POST, "/v2/org/a/blobs/uploads/", &admin)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = r.headers()["location"].to_str().expect("loc").to_string();
    assert_eq!(r.headers()["range"], "0-0");
    let r = env
        .req(Method::PATCH, &location, &admin)
        .header("Content-Range", "0-59999")
        .body(layer[..60_000].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["range"], "0-59999");
    let r = env
        .req(Method::PATCH, &location, &admin)
        .header("Content-Range", "10-20")
        .body(vec![0u8; 11])
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = env
        .req(Method::PATCH, &location, &admin)
        .header("Content-Range", "60000-99999")
        .body(layer[60_000..].to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = env
        .req(Method::GET, &location, &admin)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], "0-99999");
    let r = env
        .req(Method::PUT, &format!("{location}?digest={layer_d}"), &admin)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.headers()["location"],
        format!("/v2/org/a/blobs/{layer_d}").as_str()
    );
    // Range reads.
    let r = env
        .req(Method::GET, &format!("/v2/org/a/blobs/{layer_d}"), &admin)
        .header("Range", "bytes=10-19")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100000");
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        layer[10..20].to_vec()
    );
    let r = env
        .req(Method::GET, &format!("/v2/org/a/blobs/{layer_d}"), &admin)
        .send()
        .await
        .expect("get");
    assert_eq!(r.bytes().await.expect("body").to_vec(), layer);

    // Streamed PATCH (no Content-Range), then a digest mismatch: refused, nothing stored.
    let before = env.stored_blobs();
    let r = env
        .req(Method::POST, "/v2/org/a/blobs/uploads/", &admin)
        .send()
        .await
        .expect("post");
    let location = r.headers()["location"].to_str().expect("loc").to_string();
    let r = env
        .req(Method::PATCH, &location, &admin)
        .body(b"some bytes".to_vec())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let claimed = digest(b"other bytes");
    let r = env
        .req(Method::PUT, &format!("{location}?digest={claimed}"), &admin)
        .send()
        .await
        .expect("put");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = env
        .req(Method::HEAD, &format!("/v2/org/a/blobs/{claimed}"), &admin)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 404);
    let r = env
        .req(
            Method::POST,
            &format!("/v2/org/a/blobs/uploads/?digest={claimed}"),
            &admin,
        )
        .body(b"not it".to_vec())
        .send()
        .await
        .expect("post");
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    assert_eq!(
        env.stored_blobs(),
        before,
        "a mismatched upload left a blob behind"
    );
    assert_eq!(
        walk(&env.storage.join("uploads")),
        0,
        "a mismatched upload left its session behind"
    );

    // Cross-repository mount: with pull on the source, 201; without it, a plain session.
    let r = env
        .req(
            Method::POST,
            &format!("/v2/org/b/blobs/uploads/?mount={layer_d}&from=org/a"),
            &admin,
        )
        .send()
        .await
        .expect("mount");
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = env
        .req(Method::HEAD, &format!("/v2/org/b/blobs/{layer_d}"), &admin)
        .send()
        .await
        .expect("head");
    assert_eq!(r.status(), 200);
    let only_c = env.token("admin", &["repository:org/c:pull,push"]).await;
    let r = env
        .req(
            Method::POST,
            &format!("/v2/org/c/blobs/uploads/?mount={layer_d}&from=org/a"),
            &only_c,
        )
        .send()
        .await
        .expect("mount");
    // Without pull on the source: distribution's 401, asking for both scopes.
    assert_eq!(r.status(), 401, "mounted without pull on the source");
    assert_eq!(
        r.headers()["www-authenticate"].to_str().expect("h"),
        format!(
            "Bearer realm=\"{}\",service=\"{SERVICE}\",scope=\"repository:org/c:pull,push repository:org/a:pull\",error=\"insufficient_scope\"",
            env.realm
        )
    );
    // A bad mount digest, or a blob the source lacks: a plain upload session.
    let c_and_a = env
        .token(
            "admin",
            &["repository:org/c:pull,push", "repository:org/a:pull"],
        )
        .await;
    for mount in ["sha256:bad".to_string(), digest(b"no repository has this")] {
        let r = env
            .req(
                Method::POST,
                &format!("/v2/org/c/blobs/uploads/?mount={mount}&from=org/a"),
                &c_and_a,
            )
            .send()
            .await
            .expect("mount");
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{mount}");
        assert!(r.headers().contains_key("docker-upload-uuid"));
    }

    // Manifests: a missing blob is refused; then by tag, by digest, content type kept.
    let missing = digest(b"never uploaded");
    let r = put_manifest(
        &env,
        &admin,
        "org/a",
        "bad",
        OCI_MANIFEST,
        &image_manifest(&config_d, config.len(), &missing, 1),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    let manifest = image_manifest(&config_d, config.len(), &layer_d, layer.len());
    let r = put_manifest(&env, &admin, "org/a", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest_d = r.headers()["docker-content-digest"]
        .to_str()
        .expect("d")
        .to_string();
    assert_eq!(manifest_d, digest(manifest.to_string().as_bytes()));
    for reference in ["v1", manifest_d.as_str()] {
        let r = env
            .req(
                Method::GET,
                &format!("/v2/org/a/manifests/{reference}"),
                &admin,
            )
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], OCI_MANIFEST);
        assert_eq!(r.headers()["docker-content-digest"], manifest_d.as_str());
        assert_eq!(
            r.bytes().await.expect("b").to_vec(),
            manifest.to_string().into_bytes()
        );
    }
    let r = env
        .req(Method::GET, "/v2/org/a/manifests/nope", &admin)
        .send()
        .await
        .expect("get");
    assert_eq!(
        (r.status().as_u16(), error_code(r).await.as_str()),
        (404, "MANIFEST_UNKNOWN")
    );
    let r = put_manifest(
        &env,
        &admin,
        "org/a",
        &digest(b"x"),
        OCI_MANIFEST,
        &manifest,
    )
    .await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    // Tags pagination with Link headers.
    for t in ["t1", "t2", "t3", "t4"] {
        assert_eq!(
            put_manifest(&env, &admin, "org/a", t, OCI_MANIFEST, &manifest)
                .await
                .status(),
            201
        );
    }
    let r = env
        .req(Method::GET, "/v2/org/a/tags/list?n=2", &admin)
        .send()
        .await
        .expect("tags");
    let link = r.headers()["link"].to_str().expect("link").to_string();
    assert_eq!(link, "</v2/org/a/tags/list?last=t2&n=2>; rel=\"next\"");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"name": "org/a", "tags": ["t1", "t2"]})
    );
    let next = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .expect("url")
        .to_string();
    let r = env
        .req(Method::GET, &next, &admin)
        .send()
        .await
        .expect("tags");
    assert!(r.headers().get("link").is_some());
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["tags"],
        serde_json::json!(["t3", "t4"])
    );
    let r = env
        .req(Method::GET, "/v2/org/a/tags/list?n=2&last=t4", &admin)
        .send()
        .await
        .expect("tags");
    assert!(r.headers().get("link").is_none());
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["tags"],
        serde_json::json!(["v1"])
    );
    let r = env
        .req(
            Method::GET,
            "/v2/org/nothing/tags/list",
            &env.token("admin", &["repository:org/nothing:pull"]).await,
        )
        .send()
        .await
        .expect("tags");
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");

    // Catalog, paginated, behind registry:catalog:*.
    let r = env
        .req(Method::GET, "/v2/_catalog?n=1", &admin)
        .send()
        .await
        .expect("catalog");
    assert_eq!(
        r.headers()["link"],
        "</v2/_catalog?last=org%2Fa&n=1>; rel=\"next\""
    );
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["repositories"],
        serde_json::json!(["org/a"])
    );
    // org/c only ever had an upload session started: like distribution, no repository yet.
    let r = env
        .req(Method::GET, "/v2/_catalog", &admin)
        .send()
        .await
        .expect("catalog");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["repositories"],
        serde_json::json!(["org/a", "org/b"])
    );
    let r = env
        .req(Method::GET, "/v2/_catalog", &only_c)
        .send()
        .await
        .expect("catalog");
    assert_eq!(r.status(), 401);

    // Referrers: an artifact whose subject is the image, with the artifactType filter.
    let empty = b"{}";
    let empty_d = monolithic(&env, &admin, "org/a", empty).await;
    let sbom = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_d, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_d, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": manifest_d, "size": manifest.to_string().len()},
        "annotations": {"org.example": "sbom"}
    });
    let sbom_d = digest(sbom.to_string().as_bytes());
    let r = put_manifest(&env, &admin, "org/a", &sbom_d, OCI_MANIFEST, &sbom).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["oci-subject"], manifest_d.as_str());
    let r = env
        .req(
            Method::GET,
            &format!("/v2/org/a/referrers/{manifest_d}"),
            &admin,
        )
        .send()
        .await
        .expect("referrers");
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let index: serde_json::Value = r.json().await.expect("json");
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(index["manifests"][0]["digest"], sbom_d.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
    assert_eq!(index["manifests"][0]["annotations"]["org.example"], "sbom");
    let r = env
        .req(
            Method::GET,
            &format!("/v2/org/a/referrers/{manifest_d}?artifactType=application/other"),
            &admin,
        )
        .send()
        .await
        .expect("referrers");
    assert_eq!(r.headers()["oci-filters-applied"], "artifactType");
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["manifests"],
        serde_json::json!([])
    );

    // An index must name manifests the repository has.
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": missing, "size": 1}]});
    let r = put_manifest(
        &env,
        &admin,
        "org/a",
        "idx",
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
    .await;
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");

    // A pull-only user: pulls, and a push is refused with distribution's insufficient_scope challenge.
    let reader = env.token("reader", &["repository:org/a:pull,push"]).await;
    let r = env
        .req(Method::GET, "/v2/org/a/manifests/v1", &reader)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let r = env
        .req(Method::POST, "/v2/org/a/blobs/uploads/", &reader)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"].to_str().expect("h"),
        format!("Bearer realm=\"{}\",service=\"{SERVICE}\",scope=\"repository:org/a:pull,push\",error=\"insufficient_scope\"", env.realm)
    );
    assert_eq!(error_code(r).await, "UNAUTHORIZED");

    // Expired and foreign-signed tokens: invalid_token.
    let signer = Signer::new(
        &env.keys,
        ISSUER,
        SERVICE,
        Duration::from_secs(60),
        X5cMode::Auto,
    );
    let everything = vec![Scope::new("repository", "org/a", &["*"])];
    let old = signer
        .issue(
            "admin",
            everything.clone(),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .expect("sign")
        .token;
    let foreign_keys = token_issuer::keys::generate::generate(ISSUER, 1).expect("gen");
    let foreign_keys = KeyMaterial::load(
        foreign_keys.cert_pem.as_bytes(),
        foreign_keys.key_pem.as_bytes(),
        None,
    )
    .expect("load");
    let foreign = Signer::new(
        &foreign_keys,
        ISSUER,
        SERVICE,
        Duration::from_secs(600),
        X5cMode::Auto,
    )
    .issue("admin", everything.clone(), SystemTime::now())
    .expect("sign")
    .token;
    let other_service = Signer::new(
        &env.keys,
        ISSUER,
        "elsewhere",
        Duration::from_secs(600),
        X5cMode::Auto,
    )
    .issue("admin", everything, SystemTime::now())
    .expect("sign")
    .token;
    // Signed by another key but naming ours: the signature check, not the kid lookup, refuses it.
    let forged = {
        use aws_lc_rs::rand::SystemRandom;
        let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
        let head = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": env.keys.kid});
        let genuine = signer
            .issue(
                "admin",
                vec![Scope::new("repository", "org/a", &["*"])],
                SystemTime::now(),
            )
            .expect("sign")
            .token;
        let payload = genuine.split('.').nth(1).expect("payload").to_string();
        let signed = format!("{}.{payload}", b64(head.to_string().as_bytes()));
        let sig = foreign_keys
            .signing_key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", b64(sig.as_ref()))
    };
    for (what, t) in [
        ("expired", old),
        ("foreign", foreign),
        ("forged under our kid", forged),
        ("other service", other_service),
    ] {
        let r = env
            .req(Method::GET, "/v2/org/a/manifests/v1", &t)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 401, "{what}");
        let ch = r.headers()["www-authenticate"]
            .to_str()
            .expect("h")
            .to_string();
        assert!(ch.ends_with("error=\"invalid_token\""), "{what}: {ch}");
        assert!(
            ch.contains("scope=\"repository:org/a:pull\""),
            "{what}: {ch}"
        );
    }

    // Delete a manifest by digest: its tags go with it.
    let r = env
        .req(
            Method::DELETE,
            &format!("/v2/org/a/manifests/{sbom_d}"),
            &admin,
        )
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = env
        .req(
            Method::GET,
            &format!("/v2/org/a/manifests/{sbom_d}"),
            &admin,
        )
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}

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
async fn manifest_types_accept_negotiation_and_conditional_gets() {
    let tmp = tempfile::tempdir().expect("tmp");
    let env = Env::start(tmp.path()).await;
    let admin = env
        .token("admin", &["repository:org/m:pull,push,delete"])
        .await;
    let config_d = monolithic(&env, &admin, "org/m", b"{\"os\":\"linux\"}").await;
    let amd64_layer = monolithic(&env, &admin, "org/m", b"amd64 layer").await;
    let arm_layer = monolithic(&env, &admin, "org/m", b"arm64 layer").await;
    let docker_image = |layer: &str, len: usize| {
        serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_d, "size": 15},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": len}]
        })
    };
    let (amd64, arm64) = (docker_image(&amd64_layer, 11), docker_image(&arm_layer, 11));
    let (amd64_d, arm64_d) = (
        digest(amd64.to_string().as_bytes()),
        digest(arm64.to_string().as_bytes()),
    );
    for (m, d) in [(&amd64, &amd64_d), (&arm64, &arm64_d)] {
        assert_eq!(
            put_manifest(&env, &admin, "org/m", d, DOCKER_MANIFEST, m)
                .await
                .status(),
            201
        );
    }
    let list = serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": arm64_d, "size": arm64.to_string().len(), "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": DOCKER_MANIFEST, "digest": amd64_d, "size": amd64.to_string().len(), "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    let list_d = digest(list.to_string().as_bytes());
    assert_eq!(
        put_manifest(&env, &admin, "org/m", "multi", DOCKER_LIST, &list)
            .await
            .status(),
        201
    );

    // A client that takes lists gets the list, with its type and digest; HEAD says the same.
    for method in [Method::GET, Method::HEAD] {
        let r = env
            .req(method.clone(), "/v2/org/m/manifests/multi", &admin)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], DOCKER_LIST);
        assert_eq!(r.headers()["docker-content-digest"], list_d.as_str());
        assert_eq!(
            r.headers()["content-length"],
            list.to_string().len().to_string().as_str()
        );
    }
    // One that does not, by tag: the linux/amd64 image instead (distribution's behaviour).
    let r = env
        .req_raw(Method::GET, "/v2/org/m/manifests/multi", &admin)
        .header("Accept", DOCKER_MANIFEST)
        .send()
        .await
        .expect("get");
    assert_eq!(r.headers()["content-type"], DOCKER_MANIFEST);
    assert_eq!(r.headers()["docker-content-digest"], amd64_d.as_str());
    // OCI manifests only for clients that list the OCI type.
    let oci = image_manifest(&config_d, 15, &amd64_layer, 11);
    assert_eq!(
        put_manifest(&env, &admin, "org/m", "oci", OCI_MANIFEST, &oci)
            .await
            .status(),
        201
    );
    let r = env
        .req_raw(Method::GET, "/v2/org/m/manifests/oci", &admin)
        .header("Accept", DOCKER_MANIFEST)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.expect("error json");
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    // In the message, which clients print (distribution's words), not only in the detail.
    assert_eq!(
        body["errors"][0]["message"],
        "OCI manifest found, but accept header does not support OCI manifests"
    );
    let r = env
        .req_raw(Method::GET, "/v2/org/m/manifests/oci", &admin)
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    // If-None-Match on the digest: 304.
    let oci_d = digest(oci.to_string().as_bytes());
    let r = env
        .req(Method::GET, "/v2/org/m/manifests/oci", &admin)
        .header("If-None-Match", format!("\"{oci_d}\""))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 304);

    // Manifests distribution refuses: wrong schemaVersion, no config, urls on a plain layer.
    let mut bad_version = oci.clone();
    bad_version["schemaVersion"] = 1.into();
    let mut no_config = oci.clone();
    no_config.as_object_mut().expect("obj").remove("config");
    let mut urls = oci.clone();
    urls["layers"][0]["urls"] = serde_json::json!(["https://example.test/layer"]);
    for (what, m) in [
        ("schemaVersion", bad_version),
        ("no config", no_config),
        ("urls", urls),
    ] {
        let r = put_manifest(&env, &admin, "org/m", "bad", OCI_MANIFEST, &m).await;
        assert_eq!(
            (r.status().as_u16(), error_code(r).await.as_str()),
            (400, "MANIFEST_INVALID"),
            "{what}"
        );
    }
    // A 416 says how large the blob is.
    let r = env
        .req(
            Method::GET,
            &format!("/v2/org/m/blobs/{amd64_layer}"),
            &admin,
        )
        .header("Range", "bytes=100-200")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */11");

    // gc --delete-untagged keeps what a tag reaches through an index, and referrers of kept ones.
    let sbom = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config_d, "size": 15},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": oci_d, "size": oci.to_string().len()}
    });
    let sbom_d = digest(sbom.to_string().as_bytes());
    assert_eq!(
        put_manifest(&env, &admin, "org/m", &sbom_d, OCI_MANIFEST, &sbom)
            .await
            .status(),
        201
    );
    let storage = env.storage.clone();
    drop(env);
    let out = run_gc(tmp.path(), &["--delete-untagged"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("removed 0 manifest(s), 0 blob(s)"),
        "{stdout}"
    );
    for d in [
        &amd64_d,
        &arm64_d,
        &sbom_d,
        &list_d,
        &amd64_layer,
        &arm_layer,
    ] {
        assert!(blob_stored(&storage, d), "{d} removed");
    }
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
    let mut cmd = Command::new(BIN);
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
        .wait_http(&format!("http://127.0.0.1:{registry}/v2/"), 401)
        .await;

    // SIGTERM, then at once a new process on the same storage: it comes up.
    let pid = second.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
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
    let mut cmd = Command::new(BIN);
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
