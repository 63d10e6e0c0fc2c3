//! Refresh tokens through the realm, with the exact requests docker and containerd send: the
//! password login that asks for one, the OAuth2 refresh grant, containerd's GET fallback; the
//! identity checked again on each use (htpasswd, store and upstream users, the upstream one
//! against a real HTTP API); revocation by CLI and admin API; nothing secret in the store or
//! the log. docker's own login and pulls with the token: tests/clients.rs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fake_api::FakeApi;
use common::store_api::{api, cli, keys, ok, BOSS, SERVICE};
use common::*;
use serde_json::{json, Value};

const ALICE: (&str, &str) = ("alice", "alice-pw");
const API_KEY: &str = "platform-api-key-0123456789";

fn config(api: &FakeApi) -> String {
    format!(
        r#"
[token]
service = "{SERVICE}"
[identity]
htpasswd = "users.htpasswd"
[store]
url = "sqlite://store.db"
cache_ttl_seconds = 1
[upstream]
url = "{whoami}"
username_pointer = "/data/slug"
cache_ttl_seconds = 1
[upstream.repository]
url = "{repo}"
[[acl]]
account = "alice"
name = "**"
actions = ["pull"]
[[acl]]
account = "dev"
name = "fleet/**"
actions = ["upstream"]
"#,
        whoami = api.url("/api/v2/whoami"),
        repo = api.url("/api/v2/slug/{name}"),
    )
}

/// The realm's answer: status and JSON body.
async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("token request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

/// docker's login: GET with Basic, `offline_token=true`, `client_id=docker`.
async fn docker_login(issuer: &Issuer, user: &str, password: &str) -> (u16, Value) {
    send(
        reqwest::Client::new()
            .get(format!(
                "{}?account={user}&client_id=docker&offline_token=true&service={SERVICE}",
                issuer.realm()
            ))
            .basic_auth(user, Some(password)),
    )
    .await
}

/// The refresh grant as docker and containerd POST it.
async fn refresh(issuer: &Issuer, token: &str, client_id: &str, scope: &str) -> (u16, Value) {
    send(reqwest::Client::new().post(issuer.realm()).form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("service", SERVICE),
        ("client_id", client_id),
        ("scope", scope),
    ]))
    .await
}

/// The refresh token of a login's answer (there must be one).
fn refresh_token_of(body: &Value) -> String {
    body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token in {body}"))
        .to_string()
}

/// The answer's field names, sorted.
fn fields(body: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    names
}

fn claims(body: &Value) -> Value {
    let payload = body["access_token"]
        .as_str()
        .and_then(|t| t.split('.').nth(1))
        .expect("a JWT");
    serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("base64url"),
    )
    .expect("claims")
}

fn message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The refresh grant until it is refused (changes elsewhere take up to the cache TTL); the
/// refusal's message.
async fn refused_within(issuer: &Issuer, token: &str, client_id: &str, what: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let (s, body) = refresh(issuer, token, client_id, "repository:a/b:pull").await;
        if s == 401 {
            return message(&body);
        }
        assert_eq!(s, 200, "{what}: {body}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn store_args(dir: &Path) -> Vec<String> {
    vec![
        "--config".into(),
        dir.join("issuer.toml").to_string_lossy().into_owned(),
    ]
}

fn run(dir: &Path, args: &[&str], stdin: &str) -> String {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(store_args(dir));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    ok(&cli(&all, stdin))
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_for_every_identity_source() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (env, _) = keys(dir);
    let fake = FakeApi::start().await;
    fake.state.add(API_KEY, "dev", &[], &["fleet/app"]);
    write_users(dir, &[ALICE]);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("TOKEN_ISSUER_LOG", "debug"));
    let issuer = Issuer::start(dir, &config(&fake), &env).await;
    run(dir, &["users", "add", BOSS.0, "--admin"], "boss-pw\n");
    run(dir, &["users", "add", "ci"], "ci-pw\n");
    let mut secrets: Vec<String> = vec![ALICE.1.into(), API_KEY.into(), "ci-pw".into()];

    // Without offline_token the answer is what it always was.
    let (s, plain) = send(
        reqwest::Client::new()
            .get(format!(
                "{}?service={SERVICE}&client_id=docker",
                issuer.realm()
            ))
            .basic_auth(ALICE.0, Some(ALICE.1)),
    )
    .await;
    assert_eq!(s, 200, "{plain}");
    assert_eq!(
        fields(&plain),
        ["access_token", "expires_in", "issued_at", "token"]
    );
    // Nor the OAuth2 password grant without access_type=offline.
    let (s, plain) = send(reqwest::Client::new().post(issuer.realm()).form(&[
        ("grant_type", "password"),
        ("username", ALICE.0),
        ("password", ALICE.1),
        ("service", SERVICE),
        ("client_id", "docker"),
        ("scope", "repository:org/app:pull"),
    ]))
    .await;
    assert_eq!(s, 200, "{plain}");
    assert_eq!(
        fields(&plain),
        ["access_token", "expires_in", "issued_at", "token"]
    );

    // docker login: a refresh token, opaque, 256 bits.
    let (s, login) = docker_login(&issuer, ALICE.0, ALICE.1).await;
    assert_eq!(s, 200, "{login}");
    let alice_rt = refresh_token_of(&login);
    assert!(
        alice_rt.starts_with("tirt_") && alice_rt.len() == 48,
        "{alice_rt}"
    );
    secrets.push(alice_rt.clone());

    // The refresh grant: the policy as for a password login; never a new refresh token.
    let (s, body) = refresh(
        &issuer,
        &alice_rt,
        "docker",
        "repository:org/app:pull,push repository:other/x:pull",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["scope"], "repository:org/app:pull repository:other/x:pull",
        "the granted scopes"
    );
    assert!(body.get("refresh_token").is_none(), "never rotated: {body}");
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].is_u64() && body["issued_at"].is_string());
    let c = claims(&body);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(
        c["access"],
        json!([{"type": "repository", "name": "org/app", "actions": ["pull"]},
               {"type": "repository", "name": "other/x", "actions": ["pull"]}])
    );
    // The same token again: not rotated, still good.
    assert_eq!(refresh(&issuer, &alice_rt, "docker", "").await.0, 200);

    // Another client_id on POST is refused; containerd then falls back to GET with Basic
    // `:<refresh token>` and no client_id, which is accepted.
    let (s, body) = refresh(
        &issuer,
        &alice_rt,
        "containerd-client",
        "repository:org/app:pull",
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(
        message(&body).contains("issued to client \"docker\""),
        "{body}"
    );
    let (s, body) = send(
        reqwest::Client::new()
            .get(format!(
                "{}?scope=repository%3Aorg%2Fapp%3Apull&service={SERVICE}",
                issuer.realm()
            ))
            .basic_auth("", Some(&alice_rt)),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(claims(&body)["sub"], "alice");
    assert!(
        body.get("scope").is_none(),
        "GET answers keep the token spec's shape"
    );

    // Bad refresh requests.
    let (s, body) = send(
        reqwest::Client::new()
            .post(issuer.realm())
            .form(&[("grant_type", "refresh_token"), ("service", SERVICE)]),
    )
    .await;
    assert_eq!(
        (s, body["errors"][0]["code"].as_str()),
        (400, Some("INVALID_REQUEST"))
    );
    let (s, body) = send(
        reqwest::Client::new()
            .get(format!(
                "{}?client_id={}&offline_token=true&service={SERVICE}",
                issuer.realm(),
                "x".repeat(201)
            ))
            .basic_auth(ALICE.0, Some(ALICE.1)),
    )
    .await;
    assert_eq!(s, 400, "a client_id is a short name: {body}");
    assert!(
        message(&body).contains("client_id: at most 200 bytes"),
        "{body}"
    );
    let forged = format!("tirt_{}", "A".repeat(43));
    let (s, body) = refresh(&issuer, &forged, "docker", "").await;
    assert_eq!(s, 401, "{body}");
    assert!(message(&body).contains("log in again"), "{body}");
    assert_eq!(refresh(&issuer, "nonsense", "docker", "").await.0, 401);

    // A store user, by the OAuth2 password grant with access_type=offline.
    let (s, body) = send(reqwest::Client::new().post(issuer.realm()).form(&[
        ("grant_type", "password"),
        ("username", "ci"),
        ("password", "ci-pw"),
        ("service", SERVICE),
        ("client_id", "containerd-client"),
        ("access_type", "offline"),
        ("scope", "repository:ci/app:pull"),
    ]))
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["scope"], "", "ci has no grant yet");
    let ci_rt = refresh_token_of(&body);
    secrets.push(ci_rt.clone());
    let (s, _) = api(
        &issuer,
        "POST",
        "/grants",
        Some(BOSS),
        Some(json!({"user": "ci", "name": "ci/**", "actions": ["pull", "push"]})),
    )
    .await;
    assert_eq!(s, 201);
    // Rules as they are now: the new grant applies to the old refresh token.
    let (s, body) = refresh(
        &issuer,
        &ci_rt,
        "containerd-client",
        "repository:ci/app:push",
    )
    .await;
    assert_eq!(
        (s, body["scope"].as_str()),
        (200, Some("repository:ci/app:push")),
        "{body}"
    );

    // An upstream identity: its API key is checked again at most once per cache TTL, and
    // per-repository questions go to the API with it.
    let (s, body) = docker_login(&issuer, "dev", API_KEY).await;
    assert_eq!(s, 200, "{body}");
    let dev_rt = refresh_token_of(&body);
    secrets.push(dev_rt.clone());
    let (s, body) = refresh(
        &issuer,
        &dev_rt,
        "docker",
        "repository:fleet/app:pull,push repository:fleet/other:pull",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["scope"], "repository:fleet/app:pull,push",
        "the API decided"
    );
    assert_eq!(claims(&body)["sub"], "dev");

    // Nothing secret is in the database file: no token, no password, no API key.
    let db = std::fs::read(dir.join("store.db")).expect("store.db");
    for s in &secrets {
        assert!(
            !db.windows(s.len()).any(|w| w == s.as_bytes()),
            "the store holds a secret"
        );
    }

    // Listed by the CLI and the admin API, never showing the token.
    let listed = run(dir, &["tokens", "list", "alice"], "");
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.contains("local") && listed.contains("client \"docker\""),
        "{listed}"
    );
    let (s, list) = api(&issuer, "GET", "/tokens?user=dev", Some(BOSS), None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["tokens"][0]["source"], "upstream");
    assert_eq!(list["tokens"][0]["client_id"], "docker");
    assert!(!list.to_string().contains(&dev_rt));
    let (s, _) = api(
        &issuer,
        "GET",
        "/tokens?user=dev",
        Some(("ci", "ci-pw")),
        None,
    )
    .await;
    assert_eq!(s, 403, "admins only");

    // The platform revokes the API key: the refresh token loses its power within the TTL.
    fake.state.users.lock().expect("lock").clear();
    let why = refused_within(&issuer, &dev_rt, "docker", "revoked API key").await;
    assert!(why.contains("no longer accepts the credential"), "{why}");

    // A changed password ends the store user's refresh tokens.
    run(dir, &["users", "passwd", "ci"], "ci-new-pw\n");
    let why = refused_within(&issuer, &ci_rt, "containerd-client", "changed password").await;
    assert!(why.contains("password of ci changed"), "{why}");

    // Revoked by the admin API: at once on this issuer.
    let (_, body) = docker_login(&issuer, ALICE.0, ALICE.1).await;
    let second = refresh_token_of(&body);
    secrets.push(second.clone());
    let (_, list) = api(&issuer, "GET", "/tokens?user=alice", Some(BOSS), None).await;
    let ids: Vec<String> = list["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    // Newest first: the second login's token.
    let (s, _) = api(
        &issuer,
        "DELETE",
        &format!("/tokens/{}", ids[0]),
        Some(BOSS),
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, body) = refresh(&issuer, &second, "docker", "").await;
    assert_eq!(s, 401, "revoked here takes effect at once: {body}");
    assert_eq!(
        refresh(&issuer, &alice_rt, "docker", "").await.0,
        200,
        "the other stays"
    );

    // Expired: the store's expiry is checked on each use.
    let url = format!("sqlite://{}", dir.join("store.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("open store");
    sqlx::query("UPDATE refresh_tokens SET expires_at = 1000 WHERE user_name = 'alice'")
        .execute(&pool)
        .await
        .expect("update");
    let why = refused_within(&issuer, &alice_rt, "docker", "expired").await;
    assert!(why.contains("expired at 1970-01-01T00:16:40Z"), "{why}");

    // Revoked by the CLI.
    let (_, body) = docker_login(&issuer, ALICE.0, ALICE.1).await;
    let third = refresh_token_of(&body);
    secrets.push(third.clone());
    let out = cli(
        &[
            &["tokens", "revoke", "--user", "alice"][..],
            &store_args(dir)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        ]
        .concat(),
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked 1 refresh token(s) of alice"),
        "{out:?}"
    );
    refused_within(&issuer, &third, "docker", "revoked by the CLI").await;

    // The log (at debug) names users and clients, never a secret.
    let log = issuer.proc.log_text();
    assert!(log.contains("refresh refused"), "{log}");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret in the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_store_no_refresh_token_is_issued() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (env, _) = keys(dir);
    write_users(dir, &[ALICE]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cfg = format!(
        "[token]\nservice = \"{SERVICE}\"\n[identity]\nhtpasswd = \"users.htpasswd\"\n[[acl]]\naccount = \"alice\"\nname = \"**\"\nactions = [\"pull\"]\n"
    );
    let issuer = Issuer::start(dir, &cfg, &env).await;
    let (s, body) = docker_login(&issuer, ALICE.0, ALICE.1).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let (s, body) = refresh(&issuer, &format!("tirt_{}", "A".repeat(43)), "docker", "").await;
    assert_eq!(s, 401, "{body}");
    assert!(
        message(&body).contains("issues no refresh tokens"),
        "{body}"
    );
}
