//! Garbage collection inside the serving registry: a push loop while it collects every second,
//! and every pushed image pulls back intact, while the garbage around them does go.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::store_api::within;
use common::{free_port, gen_cert, sha256_hex, ConfigBuilder, Issuer};
use serde_json::{json, Value};

const ISSUER: &str = "gc-issuer";
const SERVICE: &str = "gc-registry";
const REPO: &str = "gc/app";

struct Client {
    http: reqwest::Client,
    reg: String,
    bearer: String,
}

impl Client {
    fn url(&self, path: &str) -> String {
        format!("{}/v2/{REPO}/{path}", self.reg)
    }

    async fn has_blob(&self, digest: &str) -> bool {
        let r = self
            .http
            .head(self.url(&format!("blobs/{digest}")))
            .bearer_auth(&self.bearer)
            .send()
            .await
            .expect("head");
        r.status().as_u16() == 200
    }

    /// A monolithic upload (POST with the digest and the body); returns the digest.
    async fn upload(&self, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let r = self
            .http
            .post(self.url(&format!("blobs/uploads/?digest={digest}")))
            .bearer_auth(&self.bearer)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("upload");
        assert_eq!(r.status().as_u16(), 201, "upload {digest}");
        digest
    }

    /// Uploads unless the registry says it has it (what clients do).
    async fn ensure(&self, bytes: &[u8]) -> (String, bool) {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        if self.has_blob(&digest).await {
            return (digest, false);
        }
        (self.upload(bytes).await, true)
    }

    async fn put_manifest(&self, reference: &str, manifest: &Value) -> u16 {
        let r = self
            .http
            .put(self.url(&format!("manifests/{reference}")))
            .bearer_auth(&self.bearer)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string())
            .send()
            .await
            .expect("put manifest");
        let status = r.status().as_u16();
        if status != 201 {
            eprintln!(
                "PUT manifests/{reference}: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        status
    }

    async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.bearer)
            .header("Accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .expect("get");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("body").to_vec())
    }
}

fn manifest(config: &(String, usize), layers: &[(String, usize)]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, n)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n
        })).collect::<Vec<_>>(),
    })
}

async fn gc_runs(issuer: &Issuer) -> f64 {
    issuer
        .metric("token_issuer_registry_gc_runs_total")
        .await
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_survive_collection_every_second() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    gen_cert(dir, ISSUER);
    common::write_users(dir, &[("pusher", "pusher-pw")]);
    let port = free_port();
    let config = ConfigBuilder::new(ISSUER, SERVICE)
        .allow("pusher", "**", &["*"])
        .registry(port, "storage")
        .section("[registry.gc]\ninterval = \"1s\"\ndelete_untagged = true\ngrace_seconds = 2")
        .build();
    let issuer = Issuer::start(dir, &config, &[]).await;
    let http = reqwest::Client::new();
    let token: Value = http
        .get(issuer.realm())
        .query(&[
            ("service", SERVICE),
            ("scope", &format!("repository:{REPO}:pull,push,delete")),
        ])
        .basic_auth("pusher", Some("pusher-pw"))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let c = Client {
        http,
        reg: format!("http://127.0.0.1:{port}"),
        bearer: token["token"].as_str().expect("token").to_string(),
    };

    let shared = b"a layer every tagged image has".to_vec();
    let mut tagged: Vec<(String, Value)> = Vec::new();
    let mut orphans: Vec<(Vec<u8>, String)> = Vec::new(); // (orphan layer, orphan manifest digest)
    let mut abandoned: Vec<String> = Vec::new();
    let mut born: Vec<Instant> = Vec::new(); // when each orphan layer was uploaded
    let (mut reused_present, mut reused_gone, mut reused_late) = (0, 0, 0);
    let runs_before = gc_runs(&issuer).await;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut i = 0usize;
    while started.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        let config_blob = format!("{{\"i\":{i}}}").into_bytes();
        let unique = format!("layer of image {i}").into_bytes();
        let (s, _) = c.ensure(&shared).await;
        let cfg = c.ensure(&config_blob).await.0;
        let u = c.ensure(&unique).await.0;
        let m = manifest(
            &(cfg.clone(), config_blob.len()),
            &[(s.clone(), shared.len()), (u, unique.len())],
        );
        assert_eq!(
            c.put_manifest(&format!("t{i}"), &m).await,
            201,
            "image t{i}"
        );
        tagged.push((format!("t{i}"), m));

        // Garbage: an untagged manifest with a layer of its own, and a blob nobody names.
        let orphan_layer = format!("orphan layer {i}").into_bytes();
        let o = c.upload(&orphan_layer).await;
        born.push(Instant::now());
        let om = manifest(&(cfg, config_blob.len()), &[(o, orphan_layer.len())]);
        assert_eq!(
            c.put_manifest(
                &format!("sha256:{}", sha256_hex(om.to_string().as_bytes())),
                &om
            )
            .await,
            201
        );
        orphans.push((
            orphan_layer,
            format!("sha256:{}", sha256_hex(om.to_string().as_bytes())),
        ));
        abandoned.push(c.upload(format!("abandoned {i}").as_bytes()).await);

        // The race, as a client with several layers runs it: HEAD says a layer is there (one
        // that became garbage past the grace), the client uploads its other layers meanwhile,
        // and names the layer in its manifest only after a collection has run in between.
        if i >= 60 && i.is_multiple_of(10) {
            // The newest orphan layer past the grace (2 s) by a little: often not swept yet.
            let Some(k) = born
                .iter()
                .rposition(|t| t.elapsed() >= Duration::from_millis(2200))
            else {
                i += 1;
                continue;
            };
            let (old, _) = &orphans[k];
            let asked = Instant::now();
            let (digest, uploaded) = c.ensure(old).await;
            if uploaded {
                reused_gone += 1;
            } else {
                reused_present += 1;
                let seen = gc_runs(&issuer).await;
                within(
                    Duration::from_secs(10),
                    "a collection between HEAD and PUT",
                    || async { gc_runs(&issuer).await > seen },
                )
                .await;
            }
            let rcfg = c.ensure(format!("{{\"reuse\":{i}}}").as_bytes()).await.0;
            let rm = manifest(
                &(rcfg, format!("{{\"reuse\":{i}}}").len()),
                &[(digest, old.len())],
            );
            let mut status = c.put_manifest(&format!("r{i}"), &rm).await;
            if status == 400 && !uploaded {
                // The collection the client waited for came more than the grace after its
                // HEAD (a loaded machine): the layer was swept and the PUT says so, as it
                // must; a client uploads it again. Never within the grace of the HEAD.
                assert!(
                    asked.elapsed() >= Duration::from_secs(2),
                    "image r{i}: its layer was swept {:?} after the HEAD that found it",
                    asked.elapsed()
                );
                reused_late += 1;
                c.upload(old).await;
                status = c.put_manifest(&format!("r{i}"), &rm).await;
            }
            assert_eq!(status, 201, "image r{i}");
            tagged.push((format!("r{i}"), rm));
        }
        i += 1;
    }
    let runs = gc_runs(&issuer).await - runs_before;
    assert!(
        runs >= 15.0,
        "collected about every second: {runs} runs in 30 s"
    );
    assert!(
        reused_present > 0,
        "the race ran: a layer found present past its grace, named after a collection"
    );
    // One more collection after the last push's grace, then everything is checked.
    let now = gc_runs(&issuer).await;
    within(Duration::from_secs(10), "two more collections", || async {
        gc_runs(&issuer).await >= now + 3.0
    })
    .await;

    let mut blobs_checked: HashMap<String, ()> = HashMap::new();
    for (tag, m) in &tagged {
        let (status, body) = c.get(&format!("manifests/{tag}")).await;
        assert_eq!(status, 200, "manifest {tag}");
        let got: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(&got, m, "manifest {tag} as pushed");
        let mut digests = vec![m["config"]["digest"].as_str().expect("d").to_string()];
        for l in m["layers"].as_array().expect("layers") {
            digests.push(l["digest"].as_str().expect("d").to_string());
        }
        for d in digests {
            if blobs_checked.insert(d.clone(), ()).is_some() {
                continue;
            }
            let (status, bytes) = c.get(&format!("blobs/{d}")).await;
            assert_eq!(status, 200, "blob {d} of {tag}");
            assert_eq!(
                format!("sha256:{}", sha256_hex(&bytes)),
                d,
                "blob {d} intact"
            );
        }
    }
    // The garbage went: abandoned blobs and untagged manifests of the early iterations.
    for d in &abandoned[..abandoned.len() / 2] {
        assert!(!c.has_blob(d).await, "abandoned blob {d} collected");
    }
    for (_, md) in &orphans[..orphans.len() / 2] {
        assert_eq!(
            c.get(&format!("manifests/{md}")).await.0,
            404,
            "orphan {md} collected"
        );
    }
    println!(
        "{i} iterations, {} tagged images intact, {runs} collections; reused layers found present {reused_present} (swept past the grace before the PUT {reused_late}), already collected {reused_gone}",
        tagged.len()
    );
}
