//! The upstream identity API path, against a real HTTP API started in the test.

use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_api::{FakeApi, Mode};
use common::*;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";
/// Every issuer here logs at debug level, so the secrecy checks see every line a request can log.
const DEBUG: &[(&str, &str)] = &[("TOKEN_ISSUER_LOG", "debug")];

fn config(dir: &Path, api: &FakeApi, ttl: u64, extra: &str) -> String {
    if !dir.join(format!("{ISSUER}.crt")).exists() {
        gen_cert(dir, ISSUER);
    }
    write_users(dir, &[("ci", "ci-pw")]);
    ConfigBuilder::new(ISSUER, SERVICE)
        .section(&format!(
            "[upstream]\nurl = {:?}\ncredentials = \"bearer\"\nusername_pointer = \"/data/slug\"\n\
             match_username = true\ngroups_pointer = \"/data/data/groups\"\ntimeout_ms = 1000\n\
             cache_ttl_seconds = {ttl}\n[upstream.repository]\nurl = {:?}\nactions = [\"pull\", \"push\"]",
            api.url("/api/v2/whoami"),
            api.url("/api/v2/slug/{name}")
        ))
        .allow("ci", "**", &["pull"])
        .section("[[acl]]\ngroup = \"admins\"\nname = \"**\"\nactions = [\"*\"]")
        .section(extra)
        .allow("*", "fleet/**", &["upstream"])
        .build()
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: serde_json::Value,
}

impl Answer {
    fn access(&self) -> Vec<String> {
        let token = self.body["token"].as_str().expect("a token");
        let payload = token.split('.').nth(1).expect("payload");
        let claims: serde_json::Value = serde_json::from_slice(
            &data_encoding::BASE64URL_NOPAD
                .decode(payload.as_bytes())
                .expect("b64"),
        )
        .expect("json");
        claims["access"]
            .as_array()
            .expect("access")
            .iter()
            .map(|a| {
                format!(
                    "{}:{}:{}",
                    a["type"].as_str().unwrap_or(""),
                    a["name"].as_str().unwrap_or(""),
                    a["actions"]
                        .as_array()
                        .map(|v| v
                            .iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default()
                )
            })
            .collect()
    }

    fn error(&self) -> String {
        self.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn ask(issuer: &Issuer, user: &str, pass: &str, scope: &str) -> Answer {
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&[("service", SERVICE), ("scope", scope)])
        .basic_auth(user, Some(pass))
        .send()
        .await
        .expect("send");
    Answer {
        status: r.status().as_u16(),
        retry_after: r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_string()),
        body: r.json().await.expect("json body"),
    }
}

fn assert_unavailable(a: &Answer, what: &str) {
    assert_eq!(a.status, 503, "{what}: {:?}", a.body);
    assert!(a.retry_after.is_some(), "{what}: no Retry-After");
    assert!(a.body.get("token").is_none(), "{what}: a token on failure");
    assert!(
        a.error().contains("identity service unavailable"),
        "{what}: {}",
        a.error()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_groups_and_repositories() {
    let tmp = tempfile::tempdir().expect("tmp");
    let api = FakeApi::start().await;
    api.state
        .add("tok-alice", "alice", &["devs"], &["fleet/app"]);
    api.state.add("tok-root", "root", &["admins"], &[]);
    let issuer = Issuer::start(tmp.path(), &config(tmp.path(), &api, 60, ""), DEBUG).await;

    // Valid credential, per-repository grant and refusal in one request.
    let a = ask(
        &issuer,
        "alice",
        "tok-alice",
        "repository:fleet/app:pull,push repository:fleet/other:pull,push",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.access(), vec!["repository:fleet/app:pull,push"]);
    // `{name}` is one percent-encoded path segment.
    assert!(api
        .state
        .repo_paths
        .lock()
        .expect("lock")
        .contains(&"fleet%2Fapp".to_string()));
    // Outside fleet/** no rule defers to the API: nothing, and no call.
    let calls = api.state.repos();
    let a = ask(&issuer, "alice", "tok-alice", "repository:org/app:pull").await;
    assert_eq!(
        (a.status, a.access().len(), api.state.repos()),
        (200, 0, calls)
    );
    // Decisions are cached per (identity, repository).
    let a = ask(&issuer, "alice", "tok-alice", "repository:fleet/app:pull").await;
    assert_eq!(a.access(), vec!["repository:fleet/app:pull"]);
    assert_eq!(api.state.repos(), calls);

    // Groups drive a rule: admins get everything, without asking about the repository.
    let a = ask(
        &issuer,
        "root",
        "tok-root",
        "repository:fleet/app:pull,push,delete",
    )
    .await;
    assert_eq!(a.access(), vec!["repository:fleet/app:pull,push,delete"]);

    // Wrong credential; right credential under another user's name (Jellyfish's rule).
    assert_eq!(ask(&issuer, "alice", "tok-nope", "").await.status, 401);
    let a = ask(&issuer, "mallory", "tok-alice", "repository:fleet/app:pull").await;
    assert_eq!(a.status, 401);
    assert!(a.body.get("token").is_none());

    // Local users are tried first and never reach the API.
    let calls = api.state.whoami();
    assert_eq!(
        ask(&issuer, "ci", "ci-pw", "repository:fleet/app:pull")
            .await
            .access(),
        vec!["repository:fleet/app:pull"]
    );
    assert_eq!(ask(&issuer, "ci", "wrong", "").await.status, 401);
    assert_eq!(api.state.whoami(), calls);

    // One caller's repository decision is never another's: carol may not read fleet/app.
    api.state.add("tok-carol", "carol", &[], &[]);
    let a = ask(
        &issuer,
        "carol",
        "tok-carol",
        "repository:fleet/app:pull,push",
    )
    .await;
    assert_eq!((a.status, a.access().len()), (200, 0));
    // A refusal is remembered only briefly: once the API lets carol read it, she gets it
    // within seconds, not after the whole cache TTL (60 s here).
    api.state.add("tok-carol", "carol", &[], &["fleet/app"]);
    let a = ask(&issuer, "carol", "tok-carol", "repository:fleet/app:pull").await;
    assert_eq!(a.access().len(), 0, "the refusal is cached for a moment");
    let refused_at = Instant::now();
    loop {
        let a = ask(&issuer, "carol", "tok-carol", "repository:fleet/app:pull").await;
        if a.access() == vec!["repository:fleet/app:pull"] {
            break;
        }
        assert!(
            refused_at.elapsed() < Duration::from_secs(15),
            "the refusal stuck"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // No credential leaked into the log.
    let log = issuer.proc.log_text();
    assert!(
        !log.contains("tok-alice") && !log.contains("tok-root") && !log.contains("ci-pw"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn balena_shaped_api_with_basic_forwarding() {
    let tmp = tempfile::tempdir().expect("tmp");
    let api = FakeApi::start().await;
    api.state.add("key-42", "gh_dev", &[], &["fleet/app"]);
    api.state.add("key-ci", "ci", &[], &["fleet/app"]);
    api.state.add("key-empty", "", &[], &[]);
    let cfg = config(tmp.path(), &api, 60, "")
        .replace("/api/v2/whoami", "/actor/v1/whoami")
        .replace("\"/data/slug\"", "\"/username\"")
        .replace("match_username = true", "match_username = false")
        .replace("credentials = \"bearer\"", "credentials = \"basic\"")
        .replace("groups_pointer = \"/data/data/groups\"\n", "");
    let issuer = Issuer::start(tmp.path(), &cfg, DEBUG).await;
    // open-balena: the username is only a hint, the API key decides who it is.
    let a = ask(&issuer, "anything", "key-42", "").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let payload = a.body["token"]
        .as_str()
        .expect("token")
        .split('.')
        .nth(1)
        .expect("payload")
        .to_string();
    let claims: serde_json::Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(claims["sub"], "gh_dev");
    // The repository endpoint gets the Basic pair too (the fake refuses anything else).
    let a = ask(&issuer, "anything", "key-42", "repository:fleet/app:pull").await;
    assert_eq!(a.access(), vec!["repository:fleet/app:pull"]);
    // An API identity named like a local user (ci) would get ci's rules: refused.
    assert_eq!(ask(&issuer, "anything", "key-ci", "").await.status, 401);
    // An empty name would be the anonymous caller: a broken answer, not an identity.
    assert_unavailable(
        &ask(&issuer, "anything", "key-empty", "").await,
        "empty name",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_fail_closed_and_recover() {
    let tmp = tempfile::tempdir().expect("tmp");
    let api = FakeApi::start().await;
    api.state.add("tok-alice", "alice", &[], &["fleet/app"]);
    let issuer = Issuer::start(tmp.path(), &config(tmp.path(), &api, 60, ""), DEBUG).await;

    for (mode, what) in [
        (Mode::Status(500), "500"),
        (Mode::Status(502), "502"),
        (Mode::Hang, "timeout"),
        (Mode::Html, "HTML"),
        (Mode::Redirect, "redirect to a 200 login page"),
        (
            Mode::Status(404),
            "404: a wrong URL, not a wrong credential",
        ),
    ] {
        api.state.set_mode(mode);
        let started = Instant::now();
        let a = ask(&issuer, "alice", "tok-alice", "repository:fleet/app:pull").await;
        assert_unavailable(&a, what);
        if mode == Mode::Hang {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the timeout was not applied"
            );
            assert!(a.error().contains("timeout"), "{}", a.error());
        }
    }
    // Back to normal: the next request works (failures other than 401 are not cached).
    api.state.set_mode(Mode::Normal);
    let a = ask(&issuer, "alice", "tok-alice", "repository:fleet/app:pull").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.access(), vec!["repository:fleet/app:pull"]);
    let log = issuer.proc.log_text();
    assert!(
        log.contains("upstream identity API failed") && log.contains("500"),
        "{log}"
    );
    assert!(!log.contains("tok-alice"), "{log}");

    // The repository endpoint failing fails the whole request closed, too (whoami is cached
    // by now, so only the repository call can be the one failing).
    api.state.add("tok-bob", "bob", &[], &["fleet/app"]);
    assert_eq!(ask(&issuer, "bob", "tok-bob", "").await.status, 200);
    let whoami = api.state.whoami();
    // A 500, or a redirect to a login page answering 200: never taken for a grant.
    for mode in [Mode::Status(500), Mode::Redirect] {
        api.state.set_mode(mode);
        let a = ask(
            &issuer,
            "bob",
            "tok-bob",
            "repository:fleet/app:pull repository:org/x:pull",
        )
        .await;
        assert_unavailable(&a, &format!("repository endpoint {mode:?}"));
    }
    assert_eq!(api.state.whoami(), whoami);
    api.state.set_mode(Mode::Normal);
    let a = ask(&issuer, "bob", "tok-bob", "repository:fleet/app:pull").await;
    assert_eq!(a.access(), vec!["repository:fleet/app:pull"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_port_closed_then_started() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Learn a port, then close it: nothing listens there.
    let port = {
        let api = FakeApi::start().await;
        api.port
    };
    let fake_cfg = common::fake_api::State::default();
    fake_cfg.add("tok-alice", "alice", &[], &[]);
    let state = std::sync::Arc::new(fake_cfg);
    // A config pointing at the closed port (the fake's URLs, rebuilt for that port).
    let probe = FakeApi::start_on(0, state.clone()).await;
    let cfg = config(tmp.path(), &probe, 60, "")
        .replace(&format!(":{}/", probe.port), &format!(":{port}/"));
    drop(probe);
    let issuer = Issuer::start(tmp.path(), &cfg, DEBUG).await;
    let a = ask(&issuer, "alice", "tok-alice", "").await;
    assert_unavailable(&a, "port closed");
    assert!(a.error().contains("connection failed"), "{}", a.error());

    let _api = FakeApi::start_on(port, state).await;
    let a = ask(&issuer, "alice", "tok-alice", "").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn caching_expiry_failures_and_coalescing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let api = FakeApi::start().await;
    for i in 0..3 {
        api.state
            .add(&format!("tok-{i}"), &format!("user{i}"), &[], &[]);
    }
    let issuer = Issuer::start(tmp.path(), &config(tmp.path(), &api, 1, ""), DEBUG).await;

    // N identical requests, one upstream call.
    for _ in 0..5 {
        assert_eq!(ask(&issuer, "user0", "tok-0", "").await.status, 200);
    }
    assert_eq!(api.state.whoami(), 1);
    // After the TTL (1 s), another call: poll until it happens, and check it was not early.
    let cached_at = Instant::now();
    loop {
        assert_eq!(ask(&issuer, "user0", "tok-0", "").await.status, 200);
        if api.state.whoami() == 2 {
            break;
        }
        assert!(
            cached_at.elapsed() < Duration::from_secs(10),
            "the cache never expired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cached_at.elapsed() >= Duration::from_millis(900),
        "expired after {:?}",
        cached_at.elapsed()
    );

    // A rejected credential is remembered for a few seconds: repeats do not reach the API.
    let before = api.state.whoami();
    for _ in 0..4 {
        assert_eq!(ask(&issuer, "user1", "tok-wrong", "").await.status, 401);
    }
    assert_eq!(api.state.whoami(), before + 1);

    // Concurrent identical requests share one upstream call.
    *api.state.delay.lock().expect("lock") = Duration::from_millis(300);
    let before = api.state.whoami();
    let results =
        futures::future::join_all((0..10).map(|_| ask(&issuer, "user2", "tok-2", ""))).await;
    assert!(results.iter().all(|a| a.status == 200));
    assert_eq!(api.state.whoami(), before + 1);
}

/// skopeo through Debian's distribution registry with credentials only the API knows.
#[tokio::test(flavor = "multi_thread")]
async fn skopeo_with_upstream_credentials() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let api = FakeApi::start().await;
    api.state.add("session-dev", "dev", &[], &["fleet/app"]);
    let issuer = Issuer::start(dir, &config(dir, &api, 60, ""), DEBUG).await;
    let registry = Registry::start(
        dir,
        &issuer.realm(),
        SERVICE,
        ISSUER,
        &dir.join(format!("{ISSUER}.crt")),
    )
    .await;

    let layout = dir.join("image");
    let layer = oci_layout(&layout, "latest", b"upstream e2e");
    let dest = format!("docker://{}/fleet/app:latest", registry.host());
    assert!(
        push(dir, &layout, &dest, "dev:session-dev")
            .status
            .success(),
        "push: {}",
        registry.proc.log_text()
    );
    let pulled = dir.join("pulled");
    assert!(pull(dir, &dest, &pulled, "dev:session-dev")
        .status
        .success());
    assert!(pulled.join("blobs/sha256").join(&layer).exists());

    // The API does not let dev read fleet/private: push refused.
    let out = push(
        dir,
        &layout,
        &format!("docker://{}/fleet/private:latest", registry.host()),
        "dev:session-dev",
    );
    assert!(!out.status.success(), "pushed where the API refuses");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
