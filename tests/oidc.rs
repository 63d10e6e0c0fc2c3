//! OIDC ID tokens as passwords, against a real provider started here (tests/common/idp.rs):
//! GitHub-shaped (RS256) and Kubernetes-shaped (ES256) tokens, every refusal the provider's
//! rules call for, key rotation, and the provider going away.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::idp::{sign_raw, Idp};
use common::*;
use token_issuer::keys::generate::KeyType;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn config(dir: &Path, idp_issuer: &str, extra: &str) -> String {
    gen_cert(dir, ISSUER);
    write_users(dir, &[("alice", "alice-pw")]);
    ConfigBuilder::new(ISSUER, SERVICE)
        .section(&format!(
            r#"[[oidc]]
issuer = "{idp_issuer}"
audiences = ["{SERVICE}"]
username = "{{repository}}@{{ref}}"
groups = ["{{repository_owner}}"]
jwks_refetch_seconds = 1
[oidc.require]
repository_owner = "my-org"
ref = "refs/heads/*"
{extra}"#
        ))
        .section("[[acl]]\ngroup = \"my-org\"\nname = \"my-org/*\"\nactions = [\"pull\", \"push\"]")
        .build()
}

/// What GitHub Actions puts in an ID token for a push to main of my-org/app.
fn github_claims(issuer: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": issuer, "aud": SERVICE, "sub": "repo:my-org/app:ref:refs/heads/main",
        "repository": "my-org/app", "repository_owner": "my-org", "ref": "refs/heads/main",
        "iat": now(), "nbf": now() - 5, "exp": now() + 300, "jti": uuid()
    })
}

fn uuid() -> String {
    format!("{:x}", now() as u128 * 1_000_003 + rand_u32() as u128)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    aws_lc_rs::rand::fill(&mut b).expect("rand");
    u32::from_le_bytes(b)
}

struct Answer {
    status: u16,
    body: serde_json::Value,
}

async fn ask(issuer: &Issuer, password: &str, scopes: &[&str]) -> Answer {
    let mut q = vec![("service", SERVICE), ("offline_token", "true")];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&q)
        .basic_auth("oidc", Some(password))
        .send()
        .await
        .expect("realm");
    let status = r.status().as_u16();
    Answer {
        status,
        body: r.json().await.unwrap_or_default(),
    }
}

fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("b64"),
    )
    .expect("claims")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_github_token_gets_exactly_its_rules_scopes_and_pushes_through_distribution() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    let issuer = Issuer::start(dir, &config(dir, &idp.issuer(), ""), &[]).await;
    let mut claims = github_claims(&idp.issuer());
    claims["exp"] = (now() + 120).into();
    let id_token = idp.sign("rsa-1", &claims);

    let a = ask(
        &issuer,
        &id_token,
        &[
            "repository:my-org/app:pull,push,delete",
            "repository:other/x:pull",
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let access = claims_of(a.body["token"].as_str().expect("token"));
    assert_eq!(access["sub"], "my-org/app@refs/heads/main");
    assert_eq!(
        access["access"],
        serde_json::json!([{"type": "repository", "name": "my-org/app", "actions": ["pull", "push"]}])
    );
    // Never past the ID token's exp, and no refresh token that would outlive it.
    assert!(access["exp"].as_u64().expect("exp") <= now() + 120);
    assert!(a.body["expires_in"].as_u64().expect("expires_in") <= 120);
    assert!(a.body.get("refresh_token").is_none(), "{}", a.body);

    let registry = Registry::start(
        dir,
        &issuer.realm(),
        SERVICE,
        ISSUER,
        &dir.join(format!("{ISSUER}.crt")),
    )
    .await;
    let layout = dir.join("image");
    let layer = oci_layout(&layout, "latest", b"built by CI");
    let creds = format!("oidc:{id_token}");
    let dest = format!("docker://{}/my-org/app:latest", registry.host());
    let out = push(dir, &layout, &dest, &creds);
    assert!(
        out.status.success(),
        "push: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = dir.join("pulled");
    assert!(pull(dir, &dest, &pulled, &creds).status.success());
    assert!(pulled.join("blobs/sha256").join(&layer).exists());
    // The rules give other repositories nothing to push to.
    let out = push(
        dir,
        &layout,
        &format!("docker://{}/other/x:latest", registry.host()),
        &creds,
    );
    assert!(!out.status.success(), "pushed where no rule allows");
    let log = issuer.proc.log_text();
    assert!(!log.contains(&id_token), "the ID token is in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kubernetes_service_account_token_is_its_subject() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    gen_cert(dir, ISSUER);
    write_users(dir, &[("alice", "alice-pw")]);
    let cfg = ConfigBuilder::new(ISSUER, SERVICE)
        .section(&format!(
            "[[oidc]]\nissuer = \"{}\"\naudiences = [\"{SERVICE}\", \"other\"]\nusername = \"{{sub}}\"\n[oidc.require]\nsub = \"system:serviceaccount:ci:*\"\n",
            idp.issuer()
        ))
        .allow("system:serviceaccount:ci:*", "cluster/*", &["pull"])
        .build();
    let issuer = Issuer::start(dir, &cfg, &[]).await;
    let claims = serde_json::json!({
        "iss": idp.issuer(), "aud": ["other", SERVICE], "sub": "system:serviceaccount:ci:builder",
        "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "builder"}},
        "iat": now(), "nbf": now(), "exp": now() + 600
    });
    let a = ask(
        &issuer,
        &idp.sign("ec-1", &claims),
        &["repository:cluster/base:pull,push"],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let access = claims_of(a.body["token"].as_str().expect("token"));
    assert_eq!(access["sub"], "system:serviceaccount:ci:builder");
    assert_eq!(access["access"][0]["actions"], serde_json::json!(["pull"]));
    // Another namespace's account fails the rule.
    let mut other = claims.clone();
    other["sub"] = "system:serviceaccount:prod:builder".into();
    let a = ask(
        &issuer,
        &idp.sign("ec-1", &other),
        &["repository:cluster/base:pull"],
    )
    .await;
    assert_eq!(a.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_token_is_a_401_naming_why_with_no_token() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    let issuer = Issuer::start(dir, &config(dir, &idp.issuer(), ""), &[]).await;
    let good = github_claims(&idp.issuer());
    let with = |k: &str, v: serde_json::Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().expect("obj").remove(k);
        c
    };
    let rsa = idp.key("rsa-1");
    let hs256_with_public_key = sign_raw(
        &serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
        &good,
        |m| {
            let k =
                aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, rsa.cert_pem.as_bytes());
            aws_lc_rs::hmac::sign(&k, m).as_ref().to_vec()
        },
    );
    let alg_none = sign_raw(
        &serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}),
        &good,
        |_| Vec::new(),
    );
    let rs256_under_ec_kid = sign_raw(
        &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "ec-1"}),
        &good,
        |m| {
            rsa.signing_key
                .sign(&aws_lc_rs::rand::SystemRandom::new(), m)
                .expect("sign")
                .to_vec()
        },
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong audience",
            idp.sign("rsa-1", &with("aud", "elsewhere".into())),
            "audience",
        ),
        (
            "expired",
            idp.sign("rsa-1", &with("exp", (now() - 10).into())),
            "expired",
        ),
        (
            "not yet valid",
            idp.sign("rsa-1", &with("nbf", (now() + 600).into())),
            "not valid yet",
        ),
        ("alg none", alg_none, "alg \"none\""),
        (
            "HS256 with the public key",
            hs256_with_public_key,
            "alg \"HS256\"",
        ),
        (
            "RS256 under the EC key's kid",
            rs256_under_ec_kid,
            "alg does not match",
        ),
        (
            "a tag, not a branch",
            idp.sign("rsa-1", &with("ref", "refs/tags/v1".into())),
            "claim \"ref\"",
        ),
        (
            "another owner",
            idp.sign("rsa-1", &with("repository_owner", "evil".into())),
            "claim \"repository_owner\"",
        ),
        (
            "no repository claim",
            idp.sign("rsa-1", &without("repository")),
            "claim \"repository\" is missing",
        ),
        (
            "a number where a name goes",
            idp.sign("rsa-1", &with("repository", 42.into())),
            "claim \"repository\" is not a string",
        ),
        (
            "unknown kid",
            {
                idp.add_key("never-published", KeyType::Rsa, false);
                idp.sign("never-published", &good)
            },
            "kid",
        ),
        (
            "tampered claims",
            {
                let t = idp.sign("rsa-1", &good);
                let forged = idp.sign("rsa-1", &with("repository", "my-org/other".into()));
                let mut parts: Vec<&str> = t.split('.').collect();
                let forged_payload = forged.split('.').nth(1).expect("payload").to_string();
                parts[1] = &forged_payload;
                parts.join(".")
            },
            "signature",
        ),
    ];
    for (what, token, why) in &cases {
        let a = ask(&issuer, token, &["repository:my-org/app:pull"]).await;
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        assert!(a.body.get("token").is_none(), "{what}: a token was issued");
        let message = a.body["errors"][0]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(why),
            "{what}: the client was told {message:?}"
        );
    }
    // A token of an issuer that is not configured is not an OIDC token: a wrong password.
    let foreign = idp.sign("rsa-1", &with("iss", "https://elsewhere.example".into()));
    let a = ask(&issuer, &foreign, &["repository:my-org/app:pull"]).await;
    assert_eq!(a.status, 401);
    assert_eq!(
        a.body["errors"][0]["message"],
        "invalid username or password"
    );
    // The log names each reason and holds none of the tokens.
    let log = issuer.proc.log_text();
    for (what, token, why) in &cases {
        assert!(log.contains(why), "{what}: the log does not say {why:?}");
        assert!(
            !log.contains(token.as_str()),
            "{what}: the token is in the log"
        );
    }
    // The genuine token still works after all that.
    let a = ask(
        &issuer,
        &idp.sign("rsa-1", &good),
        &["repository:my-org/app:pull"],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_is_fetched_once_and_cached_keys_outlive_the_provider() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    let issuer = Issuer::start(dir, &config(dir, &idp.issuer(), ""), &[]).await;
    let scope = ["repository:my-org/app:pull"];
    let a = ask(
        &issuer,
        &idp.sign("ec-1", &github_claims(&idp.issuer())),
        &scope,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let fetched = idp.fetches();

    // A new key the provider has not published yet: refused, and a flood of such tokens
    // fetches the key set at most once per second (jwks_refetch_seconds).
    idp.add_key("rsa-2", KeyType::Rsa, false);
    let started = Instant::now();
    for _ in 0..20 {
        let a = ask(
            &issuer,
            &idp.sign("rsa-2", &github_claims(&idp.issuer())),
            &scope,
        )
        .await;
        assert_eq!(a.status, 401);
    }
    let allowed = 1 + started.elapsed().as_secs() as usize;
    assert!(
        idp.fetches() - fetched <= allowed,
        "{} fetches for 20 unknown-kid tokens in {:?}",
        idp.fetches() - fetched,
        started.elapsed()
    );
    // Published: accepted as soon as the refetch interval allows.
    idp.publish("rsa-2");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let a = ask(
            &issuer,
            &idp.sign("rsa-2", &github_claims(&idp.issuer())),
            &scope,
        )
        .await;
        if a.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key was never fetched: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The provider goes away: tokens signed by keys already fetched still verify (new tokens,
    // so not answered from the cache of verified tokens).
    let (rsa1, ec1) = (
        idp.sign("rsa-1", &github_claims(&idp.issuer())),
        idp.sign("ec-1", &github_claims(&idp.issuer())),
    );
    let provider = idp.issuer();
    drop(idp);
    for t in [rsa1, ec1] {
        let a = ask(&issuer, &t, &scope).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert!(
        reqwest::get(format!("{provider}/keys")).await.is_err(),
        "the provider is still up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_never_reached_is_a_503() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    let token = idp.sign("rsa-1", &github_claims(&idp.issuer()));
    let provider = idp.issuer();
    drop(idp);
    let issuer = Issuer::start(dir, &config(dir, &provider, ""), &[]).await;
    let a = ask(&issuer, &token, &["repository:my-org/app:pull"]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let message = a.body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("not available"), "{message}");
    // Other identities are unaffected.
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&[
            ("service", SERVICE),
            ("scope", "repository:my-org/app:pull"),
        ])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("realm");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_name_the_setting() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    gen_cert(dir, ISSUER);
    write_users(dir, &[("alice", "alice-pw")]);
    for (oidc, says) in [
        ("issuer = \"http://idp.example\"\naudiences = [\"x\"]\nusername = \"{sub}\"", "oidc[0].issuer"),
        ("issuer = \"https://idp.example\"\naudiences = []\nusername = \"{sub}\"", "oidc[0].audiences"),
        ("issuer = \"https://idp.example\"\naudiences = [\"x\"]\nusername = \"sub\"", "oidc[0].username"),
        ("issuer = \"https://idp.example\"\naudiences = [\"x\"]\nusername = \"{sub}\"\nclaims = 1", "claims"),
    ] {
        let cfg = ConfigBuilder::new(ISSUER, SERVICE)
            .section(&format!("[[oidc]]\n{oidc}"))
            .build();
        let path = dir.join("bad.toml");
        std::fs::write(&path, cfg).expect("write");
        let out = std::process::Command::new(bin())
            .args(["serve", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .output()
            .expect("run");
        assert!(!out.status.success(), "{oidc}: started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{oidc}: {err}");
    }
}

/// With a store, the grants of the store's group named like the identity's group apply where
/// no ACL rule matches.
#[tokio::test(flavor = "multi_thread")]
async fn an_oidc_identitys_groups_get_their_store_grants() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    let cfg = config(dir, &idp.issuer(), "") + "[store]\nurl = \"sqlite://store.db\"\n";
    let path = dir.join("issuer.toml");
    std::fs::write(&path, &cfg).expect("write");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&path)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["groups", "add", "my-org"]);
    cli(&["grants", "add", "--group", "my-org", "shared/*", "pull"]);
    cli(&["groups", "add", "evil"]);
    cli(&["grants", "add", "--group", "evil", "**", "*"]);
    let issuer = Issuer::start(dir, &cfg, &[]).await;
    let token = idp.sign("rsa-1", &github_claims(&idp.issuer()));
    let a = ask(
        &issuer,
        &token,
        &[
            "repository:shared/base:pull,push",
            "repository:secret/x:pull",
        ],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let access = claims_of(a.body["token"].as_str().expect("token"));
    assert_eq!(
        access["access"],
        serde_json::json!([{"type": "repository", "name": "shared/base", "actions": ["pull"]}])
    );
}

/// Rules match names whatever their source: a name built from claims that is an htpasswd
/// user's is refused, so a template like `{actor}` never hands a CI job a person's rules.
#[tokio::test(flavor = "multi_thread")]
async fn a_name_built_from_claims_cannot_be_a_local_users() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let idp = Idp::start().await;
    gen_cert(dir, ISSUER);
    write_users(dir, &[("alice", "alice-pw")]);
    let cfg = ConfigBuilder::new(ISSUER, SERVICE)
        .section(&format!(
            "[[oidc]]\nissuer = \"{}\"\naudiences = [\"{SERVICE}\"]\nusername = \"{{actor}}\"\n",
            idp.issuer()
        ))
        .allow("alice", "**", &["*"])
        .allow("bot", "bot/*", &["pull"])
        .build();
    let issuer = Issuer::start(dir, &cfg, &[]).await;
    let token = |actor: &str| {
        idp.sign(
            "ec-1",
            &serde_json::json!({"iss": idp.issuer(), "aud": SERVICE, "actor": actor, "exp": now() + 300}),
        )
    };
    let a = ask(&issuer, &token("alice"), &["repository:org/app:pull"]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let message = a.body["errors"][0]["message"].as_str().unwrap_or("");
    assert!(message.contains("is another user's"), "{message}");
    // Nor a name below hers: rules read `alice/x` as inside `alice` (`${account}/**`).
    let a = ask(&issuer, &token("alice/x"), &["repository:org/app:pull"]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = ask(&issuer, &token("alicex/y"), &["repository:org/app:pull"]).await;
    assert_eq!(
        a.status, 200,
        "a name that only starts with hers is not hers: {}",
        a.body
    );
    let a = ask(&issuer, &token("bot"), &["repository:bot/x:pull"]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        claims_of(a.body["token"].as_str().expect("token"))["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
}
