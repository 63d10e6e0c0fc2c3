//! The built-in registry's API, in process: poem's test client drives `registry::routes` over a
//! storage directory of its own, with tokens minted by the issuer's `Signer`. One behaviour per
//! test; the end-to-end tests (skopeo, docker, distribution) stay the compatibility layer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use figment::providers::{Format, Toml};
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderMap, Method};
use poem::test::TestClient;
use poem::EndpointExt;
use token_issuer::config::{RegistryConfig, X5cMode};
use token_issuer::keys::KeyMaterial;
use token_issuer::registry::auth::TokenAuth;
use token_issuer::registry::{self, Registry};
use token_issuer::scope::Scope;
use token_issuer::token::{Signer, TrustedKeys};

use common::{digest, image_manifest};

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";
const REALM: &str = "https://issuer.test/v1/registry";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A registry over a fresh storage directory, and the key its tokens are signed with.
struct Fx {
    cli: TestClient<BoxEndpoint<'static>>,
    keys: KeyMaterial,
    signer: Signer,
    storage: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A response read whole, so a test can look at it more than once.
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header (status {})", self.status))
            .to_str()
            .expect("ascii header")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
    /// The first error code of a registry error body.
    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Fx {
    async fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let generated = token_issuer::keys::generate::generate(ISSUER, 1).expect("generate");
        let keys = KeyMaterial::load(
            generated.cert_pem.as_bytes(),
            generated.key_pem.as_bytes(),
            None,
        )
        .expect("keys");
        let storage = tmp.path().join("storage");
        let rc: RegistryConfig = figment::Figment::from(Toml::string(&format!(
            "storage = {:?}\n[gc]\ninterval = \"off\"\n",
            storage.display().to_string()
        )))
        .extract()
        .expect("registry config");
        let mut trusted = TrustedKeys::default();
        trusted.add(&keys.kid, keys.public.clone());
        let auth = TokenAuth {
            trusted: arc_swap::ArcSwap::from_pointee(trusted),
            issuer: ISSUER.into(),
            service: SERVICE.into(),
            realm: REALM.into(),
        };
        let reg: Arc<Registry> = Registry::open(&rc, auth).expect("open registry");
        let signer = Signer::new(
            &keys,
            ISSUER,
            SERVICE,
            Duration::from_secs(300),
            X5cMode::Never,
        );
        Fx {
            cli: TestClient::new(registry::routes(reg).boxed()),
            keys,
            signer,
            storage,
            _tmp: tmp,
        }
    }

    /// A token granting `scopes` (`repository:org/a:pull,push`), as the issuer would sign it.
    fn token(&self, scopes: &[&str]) -> String {
        let access = scopes
            .iter()
            .map(|s| Scope::parse(s).expect("scope"))
            .collect();
        self.signer
            .issue("tester", access, SystemTime::now())
            .expect("sign")
            .token
    }

    /// Everything on org/a and org/b, and the catalog.
    fn admin(&self) -> String {
        self.token(&[
            "repository:org/a:pull,push,delete",
            "repository:org/b:pull,push",
            "registry:catalog:*",
        ])
    }

    /// With the Accept header real clients send (every manifest type) unless `headers` has one.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Resp {
        let mut rb = self.cli.request(method, path);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            rb = rb.header("Accept", ALL_MANIFESTS);
        }
        if let Some(t) = token {
            rb = rb.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.body(body).send().await.0;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().into_vec().await.expect("body");
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), &[], Vec::new())
            .await
    }

    async fn head(&self, path: &str, token: &str) -> Resp {
        self.send(Method::HEAD, path, Some(token), &[], Vec::new())
            .await
    }

    /// A monolithic upload (`POST ?digest=`); returns the digest.
    async fn upload(&self, token: &str, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let r = self
            .send(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                Some(token),
                &[],
                bytes.to_vec(),
            )
            .await;
        assert_eq!(r.status, 201, "monolithic upload");
        assert_eq!(r.header("docker-content-digest"), d);
        d
    }

    async fn put_manifest(
        &self,
        token: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &serde_json::Value,
    ) -> Resp {
        self.send(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(token),
            &[("Content-Type", media_type)],
            body.to_string().into_bytes(),
        )
        .await
    }

    /// A config and one layer uploaded to `repo`, and an image manifest naming them under `tag`.
    async fn push_image(&self, token: &str, repo: &str, tag: &str) -> Image {
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer = layer_bytes();
        let config_d = self.upload(token, repo, config).await;
        let layer_d = self.upload(token, repo, &layer).await;
        let manifest = image_manifest(&config_d, config.len(), &layer_d, layer.len());
        let r = self
            .put_manifest(token, repo, tag, OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(r.status, 201, "manifest put");
        Image {
            manifest_d: r.header("docker-content-digest").to_string(),
            manifest,
            config_d,
            layer_d,
        }
    }

    fn stored_blobs(&self) -> usize {
        walk(&self.storage.join("blobs"))
    }
}

struct Image {
    manifest: serde_json::Value,
    manifest_d: String,
    config_d: String,
    layer_d: String,
}

fn layer_bytes() -> Vec<u8> {
    (0..100_000u32).map(|i| (i % 251) as u8).collect()
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

fn challenge(scope: &str, error: &str) -> String {
    format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\",scope=\"{scope}\",error=\"{error}\"")
}

#[tokio::test]
async fn base_without_a_token_is_a_bare_challenge_and_with_one_is_200() {
    let fx = Fx::new().await;
    let r = fx.send(Method::GET, "/v2/", None, &[], Vec::new()).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")
    );
    let r = fx.get("/v2/", &fx.admin()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
}

#[tokio::test]
async fn monolithic_upload_then_head_gives_the_length() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let d = fx.upload(&admin, "org/a", config).await;
    let r = fx.head(&format!("/v2/org/a/blobs/{d}"), &admin).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), config.len().to_string());
    assert!(r.body.is_empty(), "HEAD sent a body");
}

#[tokio::test]
async fn chunked_upload_checks_each_offset_and_reports_progress() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let layer = layer_bytes();
    let layer_d = digest(&layer);
    let r = fx
        .send(
            Method::POST,
            "/v2/org/a/blobs/uploads/",
            Some(&admin),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.header("range"), "0-0");
    let location = r.header("location").to_string();
    let patch = |range: &str, bytes: Vec<u8>| {
        let range = range.to_string();
        let (fx, location, admin) = (&fx, &location, &admin);
        async move {
            fx.send(
                Method::PATCH,
                location,
                Some(admin),
                &[("Content-Range", &range)],
                bytes,
            )
            .await
        }
    };
    let r = patch("0-59999", layer[..60_000].to_vec()).await;
    assert_eq!((r.status, r.header("range")), (202, "0-59999"));
    let r = patch("10-20", vec![0u8; 11]).await;
    assert_eq!(r.status, 416, "a chunk at the wrong offset was taken");
    let r = patch("60000-99999", layer[60_000..].to_vec()).await;
    assert_eq!(r.status, 202);
    let r = fx.get(&location, &admin).await;
    assert_eq!((r.status, r.header("range")), (204, "0-99999"));
    let r = fx
        .send(
            Method::PUT,
            &format!("{location}?digest={layer_d}"),
            Some(&admin),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), format!("/v2/org/a/blobs/{layer_d}"));
    let r = fx.get(&format!("/v2/org/a/blobs/{layer_d}"), &admin).await;
    assert_eq!(r.body, layer, "the chunks were not joined in order");
}

#[tokio::test]
async fn range_reads_return_exactly_the_slice() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let layer = layer_bytes();
    let d = fx.upload(&admin, "org/a", &layer).await;
    let r = fx
        .send(
            Method::GET,
            &format!("/v2/org/a/blobs/{d}"),
            Some(&admin),
            &[("Range", "bytes=10-19")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), "bytes 10-19/100000");
    assert_eq!(r.body, layer[10..20].to_vec());
}

#[tokio::test]
async fn a_digest_mismatch_is_refused_and_leaves_nothing_behind() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    // A streamed PATCH (no Content-Range), then a PUT claiming other bytes.
    let r = fx
        .send(
            Method::POST,
            "/v2/org/a/blobs/uploads/",
            Some(&admin),
            &[],
            Vec::new(),
        )
        .await;
    let location = r.header("location").to_string();
    let r = fx
        .send(
            Method::PATCH,
            &location,
            Some(&admin),
            &[],
            b"some bytes".to_vec(),
        )
        .await;
    assert_eq!(r.status, 202);
    let claimed = digest(b"other bytes");
    let r = fx
        .send(
            Method::PUT,
            &format!("{location}?digest={claimed}"),
            Some(&admin),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = fx.head(&format!("/v2/org/a/blobs/{claimed}"), &admin).await;
    assert_eq!(r.status, 404);
    // And monolithic.
    let r = fx
        .send(
            Method::POST,
            &format!("/v2/org/a/blobs/uploads/?digest={claimed}"),
            Some(&admin),
            &[],
            b"not it".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(fx.stored_blobs(), 0, "a mismatched upload left a blob");
    assert_eq!(
        walk(&fx.storage.join("uploads")),
        0,
        "a mismatched upload left its session"
    );
}

#[tokio::test]
async fn a_mount_with_pull_on_the_source_links_the_blob() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let d = fx.upload(&admin, "org/a", &layer_bytes()).await;
    let r = fx.head(&format!("/v2/org/b/blobs/{d}"), &admin).await;
    assert_eq!(r.status, 404, "org/b has the blob before the mount");
    let r = fx
        .send(
            Method::POST,
            &format!("/v2/org/b/blobs/uploads/?mount={d}&from=org/a"),
            Some(&admin),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = fx.head(&format!("/v2/org/b/blobs/{d}"), &admin).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_mount_without_pull_on_the_source_asks_for_both_scopes() {
    let fx = Fx::new().await;
    let d = fx.upload(&fx.admin(), "org/a", &layer_bytes()).await;
    let only_c = fx.token(&["repository:org/c:pull,push"]);
    let r = fx
        .send(
            Method::POST,
            &format!("/v2/org/c/blobs/uploads/?mount={d}&from=org/a"),
            Some(&only_c),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 401, "mounted without pull on the source");
    assert_eq!(
        r.header("www-authenticate"),
        challenge(
            "repository:org/c:pull,push repository:org/a:pull",
            "insufficient_scope"
        )
    );
}

#[tokio::test]
async fn a_bad_mount_digest_or_a_blob_the_source_lacks_opens_a_plain_session() {
    let fx = Fx::new().await;
    fx.upload(&fx.admin(), "org/a", b"something").await;
    let c_and_a = fx.token(&["repository:org/c:pull,push", "repository:org/a:pull"]);
    for mount in ["sha256:bad".to_string(), digest(b"no repository has this")] {
        let r = fx
            .send(
                Method::POST,
                &format!("/v2/org/c/blobs/uploads/?mount={mount}&from=org/a"),
                Some(&c_and_a),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, 202, "{mount}");
        assert!(r.headers.contains_key("docker-upload-uuid"), "{mount}");
    }
}

#[tokio::test]
async fn a_manifest_naming_a_missing_blob_is_refused() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let config_d = fx.upload(&admin, "org/a", b"{}").await;
    let missing = digest(b"never uploaded");
    let r = fx
        .put_manifest(
            &admin,
            "org/a",
            "bad",
            OCI_MANIFEST,
            &image_manifest(&config_d, 2, &missing, 1),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = fx.get("/v2/org/a/manifests/bad", &admin).await;
    assert_eq!(r.status, 404, "the refused manifest was tagged");
}

#[tokio::test]
async fn a_manifest_reads_back_by_tag_and_by_digest_with_its_type() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let img = fx.push_image(&admin, "org/a", "v1").await;
    assert_eq!(img.manifest_d, digest(img.manifest.to_string().as_bytes()));
    for reference in ["v1", img.manifest_d.as_str()] {
        let r = fx
            .get(&format!("/v2/org/a/manifests/{reference}"), &admin)
            .await;
        assert_eq!(r.status, 200, "{reference}");
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), img.manifest_d);
        assert_eq!(r.body, img.manifest.to_string().into_bytes());
    }
}

#[tokio::test]
async fn an_unknown_manifest_is_404_and_a_put_under_the_wrong_digest_is_refused() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let img = fx.push_image(&admin, "org/a", "v1").await;
    let r = fx.get("/v2/org/a/manifests/nope", &admin).await;
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let wrong = digest(b"x");
    let r = fx
        .put_manifest(&admin, "org/a", &wrong, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
}

#[tokio::test]
async fn tags_paginate_with_link_headers() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let img = fx.push_image(&admin, "org/a", "v1").await;
    for t in ["t1", "t2", "t3", "t4"] {
        let r = fx
            .put_manifest(&admin, "org/a", t, OCI_MANIFEST, &img.manifest)
            .await;
        assert_eq!(r.status, 201, "{t}");
    }
    let r = fx.get("/v2/org/a/tags/list?n=2", &admin).await;
    assert_eq!(
        r.header("link"),
        "</v2/org/a/tags/list?last=t2&n=2>; rel=\"next\""
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "org/a", "tags": ["t1", "t2"]})
    );
    let r = fx.get("/v2/org/a/tags/list?last=t2&n=2", &admin).await;
    assert!(r.headers.contains_key("link"));
    assert_eq!(r.json()["tags"], serde_json::json!(["t3", "t4"]));
    let r = fx.get("/v2/org/a/tags/list?n=2&last=t4", &admin).await;
    assert!(!r.headers.contains_key("link"), "a link past the end");
    assert_eq!(r.json()["tags"], serde_json::json!(["v1"]));
}

#[tokio::test]
async fn the_tags_of_an_unknown_repository_are_name_unknown() {
    let fx = Fx::new().await;
    let t = fx.token(&["repository:org/nothing:pull"]);
    let r = fx.get("/v2/org/nothing/tags/list", &t).await;
    assert_eq!((r.status, r.code().as_str()), (404, "NAME_UNKNOWN"));
}

#[tokio::test]
async fn the_catalog_paginates_lists_only_repositories_with_content_and_needs_its_scope() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    fx.push_image(&admin, "org/a", "v1").await;
    fx.upload(&admin, "org/b", b"b").await;
    // org/c only ever had an upload session started: like distribution, no repository yet.
    let only_c = fx.token(&["repository:org/c:pull,push"]);
    let r = fx
        .send(
            Method::POST,
            "/v2/org/c/blobs/uploads/",
            Some(&only_c),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 202);
    let r = fx.get("/v2/_catalog?n=1", &admin).await;
    assert_eq!(
        r.header("link"),
        "</v2/_catalog?last=org%2Fa&n=1>; rel=\"next\""
    );
    assert_eq!(r.json()["repositories"], serde_json::json!(["org/a"]));
    let r = fx.get("/v2/_catalog", &admin).await;
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["org/a", "org/b"])
    );
    let r = fx.get("/v2/_catalog", &only_c).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        challenge("registry:catalog:*", "insufficient_scope")
    );
}

#[tokio::test]
async fn referrers_list_an_artifact_by_its_subject_and_filter_by_type() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let img = fx.push_image(&admin, "org/a", "v1").await;
    let empty_d = fx.upload(&admin, "org/a", b"{}").await;
    let sbom = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_d, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty_d, "size": 2}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": img.manifest_d, "size": img.manifest.to_string().len()},
        "annotations": {"org.example": "sbom"}
    });
    let sbom_d = digest(sbom.to_string().as_bytes());
    let r = fx
        .put_manifest(&admin, "org/a", &sbom_d, OCI_MANIFEST, &sbom)
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("oci-subject"), img.manifest_d);
    let r = fx
        .get(&format!("/v2/org/a/referrers/{}", img.manifest_d), &admin)
        .await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let index = r.json();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(index["manifests"][0]["digest"], sbom_d.as_str());
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
    assert_eq!(index["manifests"][0]["annotations"]["org.example"], "sbom");
    let r = fx
        .get(
            &format!(
                "/v2/org/a/referrers/{}?artifactType=application/other",
                img.manifest_d
            ),
            &admin,
        )
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
}

#[tokio::test]
async fn an_index_must_name_manifests_the_repository_has() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let img = fx.push_image(&admin, "org/a", "v1").await;
    let index = |child: &str| {
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 1}]})
    };
    let r = fx
        .put_manifest(
            &admin,
            "org/a",
            "idx",
            OCI_INDEX,
            &index(&digest(b"never pushed")),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "MANIFEST_BLOB_UNKNOWN")
    );
    let r = fx
        .put_manifest(&admin, "org/a", "idx", OCI_INDEX, &index(&img.manifest_d))
        .await;
    assert_eq!(r.status, 201, "an index of a present manifest was refused");
}

#[tokio::test]
async fn a_pull_only_token_pulls_and_a_push_is_insufficient_scope() {
    let fx = Fx::new().await;
    fx.push_image(&fx.admin(), "org/a", "v1").await;
    let reader = fx.token(&["repository:org/a:pull"]);
    let r = fx.get("/v2/org/a/manifests/v1", &reader).await;
    assert_eq!(r.status, 200);
    let r = fx
        .send(
            Method::POST,
            "/v2/org/a/blobs/uploads/",
            Some(&reader),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        challenge("repository:org/a:pull,push", "insufficient_scope")
    );
    assert_eq!(r.code(), "UNAUTHORIZED");
}

#[tokio::test]
async fn expired_foreign_forged_and_other_service_tokens_are_invalid_token() {
    let fx = Fx::new().await;
    fx.push_image(&fx.admin(), "org/a", "v1").await;
    let everything = vec![Scope::new("repository", "org/a", &["*"])];
    let old = fx
        .signer
        .issue(
            "tester",
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
    let sign_with = |keys: &KeyMaterial, service: &str| {
        Signer::new(
            keys,
            ISSUER,
            service,
            Duration::from_secs(600),
            X5cMode::Never,
        )
        .issue("tester", everything.clone(), SystemTime::now())
        .expect("sign")
        .token
    };
    let foreign = sign_with(&foreign_keys, SERVICE);
    let other_service = sign_with(&fx.keys, "elsewhere");
    // Signed by another key but naming ours: the signature check, not the kid lookup, refuses it.
    let forged = {
        use aws_lc_rs::rand::SystemRandom;
        let b64 = |b: &[u8]| data_encoding::BASE64URL_NOPAD.encode(b);
        let head = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": fx.keys.kid});
        let genuine = sign_with(&fx.keys, SERVICE);
        let payload = genuine.split('.').nth(1).expect("payload").to_string();
        let signed = format!("{}.{payload}", b64(head.to_string().as_bytes()));
        let sig = foreign_keys
            .signing_key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .expect("sign");
        format!("{signed}.{}", b64(sig.as_ref()))
    };
    let genuine = sign_with(&fx.keys, SERVICE);
    let r = fx.get("/v2/org/a/manifests/v1", &genuine).await;
    assert_eq!(r.status, 200, "the genuine token was refused");
    for (what, t) in [
        ("expired", old),
        ("foreign", foreign),
        ("forged under our kid", forged),
        ("other service", other_service),
    ] {
        let r = fx.get("/v2/org/a/manifests/v1", &t).await;
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            r.header("www-authenticate"),
            challenge("repository:org/a:pull", "invalid_token"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn deleting_a_manifest_by_digest_takes_its_tags_with_it() {
    let fx = Fx::new().await;
    let admin = fx.admin();
    let img = fx.push_image(&admin, "org/a", "v1").await;
    let keep = fx.push_image(&admin, "org/a", "other").await;
    assert_eq!(keep.manifest_d, img.manifest_d, "same image, same digest");
    let r = fx
        .send(
            Method::DELETE,
            &format!("/v2/org/a/manifests/{}", img.manifest_d),
            Some(&admin),
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 202);
    for reference in [img.manifest_d.as_str(), "v1", "other"] {
        let r = fx
            .get(&format!("/v2/org/a/manifests/{reference}"), &admin)
            .await;
        assert_eq!(r.status, 404, "{reference} still resolves");
    }
    // The blobs stay until garbage collection.
    for d in [&img.config_d, &img.layer_d] {
        assert_eq!(
            fx.head(&format!("/v2/org/a/blobs/{d}"), &admin)
                .await
                .status,
            200
        );
    }
}

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Two Docker images (amd64, arm64) under one Docker list tagged `multi`, and an OCI image
/// tagged `oci`, in org/m.
struct MultiArch {
    config_d: String,
    amd64_layer: String,
    arm_layer: String,
    amd64_d: String,
    arm64_d: String,
    list: serde_json::Value,
    list_d: String,
    oci: serde_json::Value,
    oci_d: String,
}

async fn push_multi_arch(fx: &Fx, token: &str) -> MultiArch {
    let config_d = fx.upload(token, "org/m", b"{\"os\":\"linux\"}").await;
    let amd64_layer = fx.upload(token, "org/m", b"amd64 layer").await;
    let arm_layer = fx.upload(token, "org/m", b"arm64 layer").await;
    let docker_image = |layer: &str| {
        serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_d, "size": 15},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 11}]
        })
    };
    let (amd64, arm64) = (docker_image(&amd64_layer), docker_image(&arm_layer));
    let (amd64_d, arm64_d) = (
        digest(amd64.to_string().as_bytes()),
        digest(arm64.to_string().as_bytes()),
    );
    for (m, d) in [(&amd64, &amd64_d), (&arm64, &arm64_d)] {
        let r = fx.put_manifest(token, "org/m", d, DOCKER_MANIFEST, m).await;
        assert_eq!(r.status, 201);
    }
    let list = serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [
            {"mediaType": DOCKER_MANIFEST, "digest": arm64_d, "size": arm64.to_string().len(), "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": DOCKER_MANIFEST, "digest": amd64_d, "size": amd64.to_string().len(), "platform": {"os": "linux", "architecture": "amd64"}}
        ]
    });
    let r = fx
        .put_manifest(token, "org/m", "multi", DOCKER_LIST, &list)
        .await;
    assert_eq!(r.status, 201);
    let oci = image_manifest(&config_d, 15, &amd64_layer, 11);
    let r = fx
        .put_manifest(token, "org/m", "oci", OCI_MANIFEST, &oci)
        .await;
    assert_eq!(r.status, 201);
    MultiArch {
        list_d: digest(list.to_string().as_bytes()),
        oci_d: digest(oci.to_string().as_bytes()),
        config_d,
        amd64_layer,
        arm_layer,
        amd64_d,
        arm64_d,
        list,
        oci,
    }
}

fn m_token(fx: &Fx) -> String {
    fx.token(&["repository:org/m:pull,push,delete"])
}

/// A GET with exactly this Accept header.
async fn get_accepting(fx: &Fx, path: &str, token: &str, accept: &str) -> Resp {
    fx.send(
        Method::GET,
        path,
        Some(token),
        &[("Accept", accept)],
        Vec::new(),
    )
    .await
}

#[tokio::test]
async fn a_client_that_takes_lists_gets_the_list_and_head_says_the_same() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    let m = push_multi_arch(&fx, &t).await;
    for method in [Method::GET, Method::HEAD] {
        let r = fx
            .send(
                method.clone(),
                "/v2/org/m/manifests/multi",
                Some(&t),
                &[],
                Vec::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.header("content-type"), DOCKER_LIST, "{method}");
        assert_eq!(r.header("docker-content-digest"), m.list_d, "{method}");
        // On the wire hyper writes a GET's length from its body; a HEAD must declare it.
        let len = if method == Method::HEAD {
            r.header("content-length").to_string()
        } else {
            r.body.len().to_string()
        };
        assert_eq!(len, m.list.to_string().len().to_string(), "{method}");
    }
}

#[tokio::test]
async fn a_client_without_lists_gets_the_linux_amd64_image_by_tag() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    let m = push_multi_arch(&fx, &t).await;
    let r = get_accepting(&fx, "/v2/org/m/manifests/multi", &t, DOCKER_MANIFEST).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), DOCKER_MANIFEST);
    assert_eq!(r.header("docker-content-digest"), m.amd64_d);
}

#[tokio::test]
async fn an_oci_manifest_goes_only_to_clients_that_accept_oci() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    push_multi_arch(&fx, &t).await;
    let r = get_accepting(&fx, "/v2/org/m/manifests/oci", &t, DOCKER_MANIFEST).await;
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    // In the message, which clients print (distribution's words), not only in the detail.
    assert_eq!(
        r.json()["errors"][0]["message"],
        "OCI manifest found, but accept header does not support OCI manifests"
    );
    let r = get_accepting(&fx, "/v2/org/m/manifests/oci", &t, OCI_MANIFEST).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn if_none_match_on_the_digest_is_304() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    let m = push_multi_arch(&fx, &t).await;
    let r = fx
        .send(
            Method::GET,
            "/v2/org/m/manifests/oci",
            Some(&t),
            &[("If-None-Match", &format!("\"{}\"", m.oci_d))],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 304);
    let r = fx
        .send(
            Method::GET,
            "/v2/org/m/manifests/oci",
            Some(&t),
            &[("If-None-Match", &format!("\"{}\"", m.list_d))],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 200, "another digest's ETag matched");
}

#[tokio::test]
async fn manifests_distribution_refuses_are_manifest_invalid() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    let m = push_multi_arch(&fx, &t).await;
    let mut bad_version = m.oci.clone();
    bad_version["schemaVersion"] = 1.into();
    let mut no_config = m.oci.clone();
    no_config.as_object_mut().expect("obj").remove("config");
    let mut urls = m.oci.clone();
    urls["layers"][0]["urls"] = serde_json::json!(["https://example.test/layer"]);
    for (what, body) in [
        ("schemaVersion", bad_version),
        ("no config", no_config),
        ("urls on a plain layer", urls),
    ] {
        let r = fx
            .put_manifest(&t, "org/m", "bad", OCI_MANIFEST, &body)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "MANIFEST_INVALID"),
            "{what}"
        );
    }
}

#[tokio::test]
async fn a_range_past_the_end_is_416_with_the_size() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    let m = push_multi_arch(&fx, &t).await;
    let r = fx
        .send(
            Method::GET,
            &format!("/v2/org/m/blobs/{}", m.amd64_layer),
            Some(&t),
            &[("Range", "bytes=100-200")],
            Vec::new(),
        )
        .await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), "bytes */11");
}

#[tokio::test]
async fn gc_of_untagged_keeps_what_an_index_reaches_and_the_referrers_of_kept_manifests() {
    let fx = Fx::new().await;
    let t = m_token(&fx);
    let m = push_multi_arch(&fx, &t).await;
    let sbom = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": m.config_d, "size": 15},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": m.oci_d, "size": m.oci.to_string().len()}
    });
    let sbom_d = digest(sbom.to_string().as_bytes());
    let r = fx
        .put_manifest(&t, "org/m", &sbom_d, OCI_MANIFEST, &sbom)
        .await;
    assert_eq!(r.status, 201);
    // And one that nothing reaches, so the run is seen to collect.
    let lone = image_manifest(&m.config_d, 15, &m.arm_layer, 11);
    let lone_d = digest(lone.to_string().as_bytes());
    let r = fx
        .put_manifest(&t, "org/m", &lone_d, OCI_MANIFEST, &lone)
        .await;
    assert_eq!(r.status, 201);
    let storage = token_issuer::registry::storage::Storage::open(&fx.storage).expect("storage");
    let report = token_issuer::registry::gc::collect(&storage, true, false, Duration::ZERO)
        .await
        .expect("gc");
    let removed: Vec<String> = report
        .manifests
        .iter()
        .map(|(_, d)| d.to_string())
        .collect();
    assert_eq!(removed, vec![lone_d], "removed the wrong manifests");
    assert!(report.blobs.len() <= 1, "{:?}", report.blobs);
    for d in [&m.amd64_d, &m.arm64_d, &sbom_d, &m.list_d, &m.oci_d] {
        let r = fx.head(&format!("/v2/org/m/manifests/{d}"), &t).await;
        assert_eq!(r.status, 200, "{d} was collected");
    }
    for d in [&m.amd64_layer, &m.arm_layer, &m.config_d] {
        let r = fx.head(&format!("/v2/org/m/blobs/{d}"), &t).await;
        assert_eq!(r.status, 200, "blob {d} was collected");
    }
}
