//! Refresh tokens through the realm, with the exact requests docker and containerd send: the
//! password login that asks for one, the OAuth2 refresh grant, containerd's GET fallback; the
//! identity checked again on each use (htpasswd, store and upstream users, the upstream one
//! against a real HTTP API); revocation by CLI and admin API; nothing secret in the store or
//! the log. docker's own login and pulls with the token: tests/clients.rs.

use std::path::Path;
use std::time::Duration;

use common::fake_api::FakeApi;
use common::store_api::{api, cli, keys, ok, BOSS, SERVICE};
use common::*;
use serde_json::{json, Value};

const ALICE: (&str, &str) = ("alice", "alice-pw");
const API_KEY: &str = "platform-api-key-0123456789";

fn config(api: &FakeApi) -> String {
    ConfigBuilder::keys_from_env(SERVICE)
        .section("[store]\nurl = \"sqlite://store.db\"\ncache_ttl_seconds = 1")
        .section(&format!(
            "[upstream]\nurl = {:?}\nusername_pointer = \"/data/slug\"\ncache_ttl_seconds = 1\n\
             [upstream.repository]\nurl = {:?}",
            api.url("/api/v2/whoami"),
            api.url("/api/v2/slug/{name}")
        ))
        .allow("alice", "**", &["pull"])
        .allow("dev", "fleet/**", &["upstream"])
        .build()
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

/// An issuer with every kind of user: alice in the htpasswd file, the store's admin and `ci`,
/// and `dev`, whose API key the upstream API (a real HTTP server) resolves.
struct Fixture {
    tmp: tempfile::TempDir,
    fake: FakeApi,
    issuer: Issuer,
}

impl Fixture {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let (env, _) = keys(dir);
        let fake = FakeApi::start().await;
        fake.state.add(API_KEY, "dev", &[], &["fleet/app"]);
        write_users(dir, &[ALICE]);
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("TOKEN_ISSUER_LOG", "debug"));
        let issuer = Issuer::start(dir, &config(&fake), &env).await;
        run(dir, &["users", "add", BOSS.0, "--admin"], "boss-pw\n");
        run(dir, &["users", "add", "ci"], "ci-pw\n");
        Self { tmp, fake, issuer }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// alice's docker login: her refresh token.
    async fn alice(&self) -> String {
        let (s, login) = docker_login(&self.issuer, ALICE.0, ALICE.1).await;
        assert_eq!(s, 200, "{login}");
        refresh_token_of(&login)
    }

    /// The store user ci, by the OAuth2 password grant with access_type=offline (as
    /// containerd's client): the answer, with its refresh token.
    async fn ci(&self) -> Value {
        let (s, body) = send(reqwest::Client::new().post(self.issuer.realm()).form(&[
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
        body
    }

    /// dev's docker login with the API key: the refresh token.
    async fn dev(&self) -> String {
        let (s, body) = docker_login(&self.issuer, "dev", API_KEY).await;
        assert_eq!(s, 200, "{body}");
        refresh_token_of(&body)
    }

    /// The ids of `user`'s refresh tokens through the admin API, newest first.
    async fn token_ids(&self, user: &str) -> Vec<String> {
        let path = format!("/tokens?user={user}");
        let (_, list) = api(&self.issuer, "GET", &path, Some(BOSS), None).await;
        list["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_string())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_offline_access_the_answer_is_unchanged() {
    let f = Fixture::start().await;
    let url = format!("{}?service={SERVICE}&client_id=docker", f.issuer.realm());
    let (s, plain) = send(
        reqwest::Client::new()
            .get(url)
            .basic_auth(ALICE.0, Some(ALICE.1)),
    )
    .await;
    assert_eq!(s, 200, "{plain}");
    assert_eq!(
        fields(&plain),
        ["access_token", "expires_in", "issued_at", "token"]
    );
    // Nor the OAuth2 password grant without access_type=offline.
    let (s, plain) = send(reqwest::Client::new().post(f.issuer.realm()).form(&[
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
}

#[tokio::test(flavor = "multi_thread")]
async fn the_refresh_grant_applies_the_policy_and_never_rotates() {
    let f = Fixture::start().await;
    // docker login: a refresh token, opaque, 256 bits.
    let alice_rt = f.alice().await;
    assert!(
        alice_rt.starts_with("tirt_") && alice_rt.len() == 48,
        "{alice_rt}"
    );
    let (s, body) = refresh(
        &f.issuer,
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
    assert_eq!(refresh(&f.issuer, &alice_rt, "docker", "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn another_client_id_is_refused_and_containerd_s_get_fallback_accepted() {
    let f = Fixture::start().await;
    let alice_rt = f.alice().await;
    let scope = "repository:org/app:pull";
    let (s, body) = refresh(&f.issuer, &alice_rt, "containerd-client", scope).await;
    assert_eq!(s, 401, "{body}");
    assert!(
        message(&body).contains("issued to client \"docker\""),
        "{body}"
    );
    // containerd falls back to GET with Basic `:<refresh token>` and no client_id.
    let (s, body) = send(
        reqwest::Client::new()
            .get(format!(
                "{}?scope=repository%3Aorg%2Fapp%3Apull&service={SERVICE}",
                f.issuer.realm()
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
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_refresh_requests_say_what_is_wrong() {
    let f = Fixture::start().await;
    let (s, body) = send(
        reqwest::Client::new()
            .post(f.issuer.realm())
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
                f.issuer.realm(),
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
    let (s, body) = refresh(&f.issuer, &forged, "docker", "").await;
    assert_eq!(s, 401, "{body}");
    assert!(message(&body).contains("log in again"), "{body}");
    assert_eq!(refresh(&f.issuer, "nonsense", "docker", "").await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_user_s_token_follows_its_grants_and_ends_with_its_password() {
    let f = Fixture::start().await;
    let body = f.ci().await;
    assert_eq!(body["scope"], "", "ci has no grant yet");
    let ci_rt = refresh_token_of(&body);
    let grant = json!({"user": "ci", "name": "ci/**", "actions": ["pull", "push"]});
    let (s, _) = api(&f.issuer, "POST", "/grants", Some(BOSS), Some(grant)).await;
    assert_eq!(s, 201);
    // Rules as they are now: the new grant applies to the old refresh token.
    let scope = "repository:ci/app:push";
    let (s, body) = refresh(&f.issuer, &ci_rt, "containerd-client", scope).await;
    assert_eq!(
        (s, body["scope"].as_str()),
        (200, Some("repository:ci/app:push")),
        "{body}"
    );
    // A new password revokes the user's refresh tokens (the CLI says how many).
    run(f.dir(), &["users", "passwd", "ci"], "ci-new-pw\n");
    let why = refused_within(&f.issuer, &ci_rt, "containerd-client", "changed password").await;
    assert!(why.contains("log in again"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_identity_is_asked_again_and_the_api_decides_repositories() {
    let f = Fixture::start().await;
    let dev_rt = f.dev().await;
    let scopes = "repository:fleet/app:pull,push repository:fleet/other:pull";
    let (s, body) = refresh(&f.issuer, &dev_rt, "docker", scopes).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["scope"], "repository:fleet/app:pull,push",
        "the API decided"
    );
    assert_eq!(claims(&body)["sub"], "dev");
    // The platform revokes the API key: the refresh token loses its power within the TTL.
    f.fake.state.users.lock().expect("lock").clear();
    let why = refused_within(&f.issuer, &dev_rt, "docker", "revoked API key").await;
    assert!(why.contains("no longer accepts the credential"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_listed_without_the_token_and_to_admins_only() {
    let f = Fixture::start().await;
    f.alice().await;
    let dev_rt = f.dev().await;
    let listed = run(f.dir(), &["tokens", "list", "alice"], "");
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.contains("local") && listed.contains("client \"docker\""),
        "{listed}"
    );
    let (s, list) = api(&f.issuer, "GET", "/tokens?user=dev", Some(BOSS), None).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["tokens"][0]["source"], "upstream");
    assert_eq!(list["tokens"][0]["client_id"], "docker");
    assert!(!list.to_string().contains(&dev_rt));
    let ci = Some(("ci", "ci-pw"));
    let (s, _) = api(&f.issuer, "GET", "/tokens?user=dev", ci, None).await;
    assert_eq!(s, 403, "admins only");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_by_the_admin_api_at_once_and_the_others_stay() {
    let f = Fixture::start().await;
    let first = f.alice().await;
    let second = f.alice().await;
    let ids = f.token_ids("alice").await;
    assert_eq!(ids.len(), 2, "{ids:?}");
    let path = format!("/tokens/{}", ids[0]);
    let (s, _) = api(&f.issuer, "DELETE", &path, Some(BOSS), None).await;
    assert_eq!(s, 204);
    // The two were made within a second, so which one the id named is not known here: one is
    // refused at once, the other stays.
    let mut statuses = vec![
        refresh(&f.issuer, &first, "docker", "").await.0,
        refresh(&f.issuer, &second, "docker", "").await.0,
    ];
    statuses.sort();
    assert_eq!(statuses, [200, 401], "revoked here takes effect at once");
    assert_eq!(f.token_ids("alice").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_refused_saying_when() {
    let f = Fixture::start().await;
    let alice_rt = f.alice().await;
    // The store's expiry is checked on each use.
    let url = format!("sqlite://{}", f.dir().join("store.db").display());
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.expect("open store");
    sqlx::query("UPDATE refresh_tokens SET expires_at = 1000 WHERE user_name = 'alice'")
        .execute(&pool)
        .await
        .expect("update");
    let why = refused_within(&f.issuer, &alice_rt, "docker", "expired").await;
    assert!(why.contains("expired at 1970-01-01T00:16:40Z"), "{why}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_by_the_cli() {
    let f = Fixture::start().await;
    let token = f.alice().await;
    let args = store_args(f.dir());
    let mut all = vec!["tokens", "revoke", "--user", "alice"];
    all.extend(args.iter().map(String::as_str));
    let out = cli(&all, "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revoked 1 refresh token(s) of alice"),
        "{out:?}"
    );
    refused_within(&f.issuer, &token, "docker", "revoked by the CLI").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_secret_is_in_the_database_or_the_log() {
    let f = Fixture::start().await;
    let mut secrets: Vec<String> = vec![ALICE.1.into(), API_KEY.into(), "ci-pw".into()];
    secrets.push(f.alice().await);
    secrets.push(refresh_token_of(&f.ci().await));
    secrets.push(f.dev().await);
    assert_eq!(refresh(&f.issuer, "nonsense", "docker", "").await.0, 401);
    let db = sqlite_bytes(&f.dir().join("store.db"));
    // What was written during the test is among the bytes read (the refresh tokens' client).
    assert!(
        db.windows(6).any(|w| w == b"docker"),
        "the refresh tokens' rows"
    );
    for s in &secrets {
        assert!(
            !db.windows(s.len()).any(|w| w == s.as_bytes()),
            "the store holds a secret"
        );
    }
    // The log (at debug) names users and clients, never a secret.
    let log = f.issuer.proc.log_text();
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
