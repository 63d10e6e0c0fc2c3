//! token-issuer standing in for open-balena-api's token endpoint (`upstream.profile =
//! "open-balena"`), against a fake open-balena-api answering in the shapes of its source
//! (tests/common/fake_balena.rs): each actor type's `sub`, the builder's token, images decided
//! as the API answers (multistage names, `<org>/<app>` resolved to its image, the base images for
//! everyone), `/auth/v1/token`, the registry host as `aud` whatever the service, 4 h tokens; and
//! distribution 3.0.0 (what open-balena-registry ships) accepting a user's push, a device's
//! pull and the builder's push, and refusing a device's push.

use std::sync::Arc;

use common::fake_balena::{self, Actor, Image, State};
use common::*;
use serde_json::Value;

const ISSUER: &str = "api.balena.test";
const HOST: &str = "registry.balena.test";
const DEVICE: &str = "0123456789abcdef0123456789abcdef";
const OTHER_DEVICE: &str = "fedcba9876543210fedcba9876543210";

struct Fixture {
    tmp: tempfile::TempDir,
    api: Arc<State>,
    issuer: Issuer,
    _api_task: tokio::task::JoinHandle<()>,
}

impl Fixture {
    /// alice (a user key) sees and may push `my-org/app`'s image `v2/aaa`; the device sees it;
    /// nobody but the service key can look images up by location; `v2/bbb` is nobody's.
    async fn start() -> Self {
        let api = Arc::new(State::default());
        {
            let mut keys = api.keys.lock().expect("lock");
            keys.insert("alice-key", Actor::User("alice"));
            keys.insert("app-key", Actor::Application("my-org/app"));
            keys.insert("device-key", Actor::Device(DEVICE));
            keys.insert("other-device-key", Actor::Device(OTHER_DEVICE));
        }
        *api.root.lock().expect("lock") = Some("service-key");
        *api.images.lock().expect("lock") = vec![
            Image {
                id: 7,
                location: format!("{HOST}/v2/aaa"),
                app: "my-org/app",
                commit: "c0ffee",
                running: true,
                readers: vec!["alice-key", "device-key", "app-key"],
                pushers: vec!["alice-key"],
            },
            Image {
                id: 8,
                location: format!("{HOST}/v2/bbb"),
                app: "their-org/app",
                commit: "beef",
                running: true,
                readers: vec![],
                pushers: vec![],
            },
        ];
        let (port, task) = fake_balena::start(api.clone()).await;
        let tmp = tempfile::tempdir().expect("tmp");
        gen_cert(tmp.path(), ISSUER);
        write_users(tmp.path(), &[("local", "local-pw")]);
        let cfg = ConfigBuilder::new(ISSUER, HOST)
            .token(&format!("audience = {HOST:?}"))
            .section(&format!(
                "[upstream]\nprofile = \"open-balena\"\nurl = \"http://127.0.0.1:{port}\""
            ))
            .build();
        let env = [
            ("TOKEN_ISSUER_UPSTREAM__SERVICE_API_KEY", "service-key"),
            ("TOKEN_AUTH_BUILDER_TOKEN", "builder-secret"),
            ("TOKEN_ISSUER_IDENTITY__ANONYMOUS", "true"),
        ];
        let issuer = Issuer::start(tmp.path(), &cfg, &env).await;
        Self {
            tmp,
            api,
            issuer,
            _api_task: task,
        }
    }

    /// open-balena-registry's realm: `/auth/v1/token`, with the service distribution sends.
    async fn token(&self, creds: Option<(&str, &str)>, scopes: &[&str]) -> (u16, Value) {
        let mut q: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", *s)).collect();
        q.push(("service", "some-other-service"));
        let mut req = reqwest::Client::new()
            .get(format!("{}/auth/v1/token", self.issuer.url()))
            .query(&q);
        if let Some((u, p)) = creds {
            req = req.basic_auth(u, Some(p));
        }
        let r = req.send().await.expect("realm");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        match body["token"].as_str() {
            Some(t) => (status, jwt_claims(t)),
            None => (status, body),
        }
    }

    /// The access the token grants, as (name, actions) pairs.
    async fn access(&self, creds: Option<(&str, &str)>, scope: &str) -> Vec<(String, Vec<String>)> {
        let (status, claims) = self.token(creds, &[scope]).await;
        assert_eq!(status, 200, "{scope}: {claims}");
        claims["access"]
            .as_array()
            .expect("access")
            .iter()
            .map(|a| {
                (
                    a["name"].as_str().expect("name").to_string(),
                    serde_json::from_value(a["actions"].clone()).expect("actions"),
                )
            })
            .collect()
    }
}

fn granted(name: &str, actions: &[&str]) -> Vec<(String, Vec<String>)> {
    vec![(name.into(), actions.iter().map(|a| a.to_string()).collect())]
}

const ALICE: Option<(&str, &str)> = Some(("alice", "alice-key"));
const THE_DEVICE: Option<(&str, &str)> = Some(("d_0123456789abcdef0123456789abcdef", "device-key"));
const BUILDER: Option<(&str, &str)> = Some(("builder", "builder-secret"));

#[tokio::test(flavor = "multi_thread")]
async fn each_actor_type_gets_the_sub_open_balena_api_would_give() {
    let f = Fixture::start().await;
    for (creds, sub) in [
        (ALICE, "alice"),
        (THE_DEVICE, "d_0123456789abcdef0123456789abcdef"),
        (Some((DEVICE, "device-key")), DEVICE),
        (Some(("anything", "app-key")), ""),
        (BUILDER, ""),
    ] {
        let (status, claims) = f.token(creds, &[]).await;
        assert_eq!(
            (status, claims["sub"].as_str()),
            (200, Some(sub)),
            "{creds:?}"
        );
        // The registry host whatever service was named; 4 h (`nbf`/`iat` 10 s back).
        assert_eq!(claims["aud"], HOST);
        let life = claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat");
        assert_eq!(life, 14_400 + 10);
    }
    for refused in [
        Some(("d_fedcba9876543210fedcba9876543210", "device-key")),
        Some(("alice", "wrong-key")),
        Some(("builder", "builder-secre")),
    ] {
        let (status, body) = f.token(refused, &[]).await;
        assert_eq!(status, 401, "{refused:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn images_are_decided_as_the_api_answers_each_caller() {
    let f = Fixture::start().await;
    let both = "repository:v2/aaa:pull,push";
    assert_eq!(
        f.access(ALICE, both).await,
        granted("v2/aaa", &["pull", "push"])
    );
    assert_eq!(
        f.access(THE_DEVICE, both).await,
        granted("v2/aaa", &["pull"])
    );
    assert_eq!(f.access(THE_DEVICE, "repository:v2/bbb:pull").await, vec![]);
    // A multistage build's cache image is checked as its image.
    assert_eq!(
        f.access(ALICE, "repository:v2/aaa-2:pull,push").await,
        granted("v2/aaa-2", &["pull", "push"])
    );
    // The lookups: the image by location with the service key, then the caller's own key.
    let asked = f.api.asked();
    assert!(
        asked.iter().any(
            |(q, key)| q == "endswith(is_stored_at__image_location,'v2/aaa')"
                && key == "service-key"
        ),
        "{asked:?}"
    );
    assert!(
        asked.iter().any(|(q, key)| q
            == "owns__release/any(r:r/release_image/any(ri:ri/image eq 7))"
            && key == "device-key"),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|(q, key)| q == "image(7)/canAccess {\"action\":\"push\"}" && key == "alice-key"),
        "{asked:?}"
    );
    assert!(
        !asked.iter().any(|(q, _)| q.contains("'v2/aaa-2'")),
        "the multistage suffix is dropped: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_name_resolves_to_its_image_and_base_images_are_for_everyone() {
    let f = Fixture::start().await;
    assert_eq!(
        f.access(THE_DEVICE, "repository:my-org/app:pull,push")
            .await,
        granted("v2/aaa", &["pull"])
    );
    assert_eq!(
        f.access(ALICE, "repository:my-org/app/c0ffee:pull").await,
        granted("v2/aaa", &["pull"])
    );
    assert_eq!(
        f.access(ALICE, "repository:my-org/app/0ther:pull").await,
        vec![]
    );
    assert_eq!(
        f.access(ALICE, "repository:their-org/app:pull").await,
        vec![]
    );
    for base in ["resin/resinos", "resin/aarch64-supervisor"] {
        let scope = format!("repository:{base}:pull,push");
        assert_eq!(
            f.access(None, &scope).await,
            granted(base, &["pull"]),
            "anonymous"
        );
        assert_eq!(
            f.access(BUILDER, &scope).await,
            granted(base, &["pull"]),
            "builder"
        );
    }
    assert_eq!(
        f.access(BUILDER, "repository:v2/new:pull,push").await,
        granted("v2/new", &["pull", "push"])
    );
    assert_eq!(
        f.access(ALICE, "repository:not/a/balena/name:pull").await,
        vec![]
    );
}

/// Distribution 3.0.0 (open-balena-registry's) for `HOST`, trusting the issuer's certificate.
async fn registry(f: &Fixture) -> Option<Registry> {
    let dir = f.tmp.path().join("registry");
    std::fs::create_dir_all(&dir).expect("dir");
    let bundle = f.tmp.path().join(format!("{ISSUER}.crt"));
    let realm = format!("{}/auth/v1/token", f.issuer.url());
    match Registry::start_with(
        Distribution::V3_0_0,
        &dir,
        &realm,
        HOST,
        ISSUER,
        &Trust::bundle(&bundle),
    )
    .await
    {
        Ok(r) => Some(r),
        Err(why) if !Distribution::v3_required() => {
            eprintln!("{why}");
            None
        }
        Err(why) => panic!("{why}"),
    }
}

fn creds((user, key): (&str, &str)) -> String {
    format!("{user}:{key}")
}

#[tokio::test(flavor = "multi_thread")]
async fn distribution_3_0_0_takes_a_user_push_a_device_pull_and_a_builder_push() {
    let f = Fixture::start().await;
    let Some(reg) = registry(&f).await else {
        return;
    };
    let dir = f.tmp.path();
    let layout = dir.join("layout");
    oci_layout(&layout, "latest", b"an open-balena release");
    let at = |name: &str| format!("docker://{}/{name}:latest", reg.host());
    ok(&push(
        dir,
        &layout,
        &at("v2/aaa"),
        &creds(ALICE.expect("alice")),
    ));
    let pulled = dir.join("pulled");
    ok(&pull(
        dir,
        &at("v2/aaa"),
        &pulled,
        &creds(THE_DEVICE.expect("device")),
    ));
    let refused = push(
        dir,
        &layout,
        &at("v2/aaa"),
        &creds(THE_DEVICE.expect("device")),
    );
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        !refused.status.success() && (said.contains("denied") || said.contains("unauthorized")),
        "a device may not push: {said}"
    );
    ok(&push(
        dir,
        &layout,
        &at("v2/built"),
        &creds(BUILDER.expect("builder")),
    ));
}

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
