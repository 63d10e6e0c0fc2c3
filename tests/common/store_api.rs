//! The store tests' parts: an issuer with `[store]`, the CLI, token and admin API calls.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{bin, gen_cert, write_users, ConfigBuilder, Issuer};

pub const SERVICE: &str = "registry.test";
pub const ISSUER: &str = "issuer.test";

/// The key env lines of a fresh `gen-token-auth-cert` in `dir`, and the certificate.
pub fn keys(dir: &Path) -> (Vec<(String, String)>, std::path::PathBuf) {
    let (cert, lines) = gen_cert(dir, ISSUER);
    let env = lines
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.into(), v.into())))
        .collect();
    (env, cert)
}

/// The store tests' issuer: `[store]` at `url`, keys from the environment ([`keys`]), alice
/// in the htpasswd file with pull on everything.
pub fn config(url: &str, ttl: u64) -> String {
    ConfigBuilder::keys_from_env(SERVICE)
        .section(&format!(
            "[store]\nurl = {url:?}\ncache_ttl_seconds = {ttl}"
        ))
        .allow("alice", "**", &["pull"])
        .build()
}

pub async fn start(dir: &Path, url: &str, ttl: u64, env: &[(String, String)]) -> Issuer {
    std::fs::create_dir_all(dir).expect("dir");
    write_users(dir, &[("alice", "alice-pw")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Issuer::start(dir, &config(url, ttl), &env).await
}

/// `token-issuer ARGS` with `stdin`.
pub fn cli(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run token-issuer");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A token request: the status, and the granted access (or the error message).
pub async fn token(issuer: &Issuer, creds: (&str, &str), scopes: &[&str]) -> (u16, Value) {
    let mut url = format!("{}?service={SERVICE}", issuer.realm());
    for s in scopes {
        url.push_str("&scope=");
        url.push_str(&form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>());
    }
    let r = reqwest::Client::new()
        .get(url)
        .basic_auth(creds.0, Some(creds.1))
        .send()
        .await
        .expect("token request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    if status != 200 {
        return (status, body["errors"][0]["message"].clone());
    }
    let payload = body["token"]
        .as_str()
        .and_then(|t| t.split('.').nth(1))
        .expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("base64url"),
    )
    .expect("claims");
    (status, claims["access"].clone())
}

/// An admin API call: the status and the JSON body (Null when empty).
pub async fn api(
    issuer: &Issuer,
    method: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = format!("{}/admin/v1{path}", issuer.url());
    let mut req = reqwest::Client::new().request(method.parse().expect("method"), url);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("admin request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn access(entries: &[(&str, &str, &[&str])]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|(t, n, a)| json!({"type": t, "name": n, "actions": a}))
            .collect(),
    )
}

/// Polls `check` until it is true; returns how long that took (panics past `limit`).
pub async fn within<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub const BOSS: (&str, &str) = ("boss", "boss-pw");

/// A second admin, `deputy` (password `deputy-pw`), added by [`BOSS`] through the admin API.
pub async fn add_deputy(issuer: &Issuer) {
    let (s, e) = api(
        issuer,
        "POST",
        "/users",
        Some(BOSS),
        Some(json!({"name": "deputy", "password": "deputy-pw", "admin": true})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
}

/// The first admin, [`BOSS`], added with the CLI against the store `config` names.
pub fn add_boss(config: &Path) {
    ok(&cli(
        &[
            "users",
            "add",
            BOSS.0,
            "--admin",
            "--config",
            config.to_str().expect("utf8"),
        ],
        "boss-pw\n",
    ));
}
pub const CI: (&str, &str) = ("ci", "ci-pw");

/// 40 rounds of four PATCHes of one user sent at once, each changing another field (disable,
/// demote, clear the expiry twice): every change must land. A read, patch and write-back of
/// the whole row lost one in about half the rounds.
pub async fn concurrent_patches_lose_nothing(issuer: &Issuer) {
    let (s, e) = api(
        issuer,
        "POST",
        "/users",
        Some(BOSS),
        Some(json!({"name": "target", "password": "target-pw"})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    for round in 0..40 {
        let reset = json!({"disabled": false, "admin": true, "expires_at": "2031-01-01T00:00:00Z"});
        let (s, e) = api(issuer, "PATCH", "/users/target", Some(BOSS), Some(reset)).await;
        assert_eq!(s, 200, "{e}");
        let patches = [
            json!({"disabled": true}),
            json!({"admin": false}),
            json!({"expires_at": null}),
            json!({"expires_at": null}),
        ];
        let sent = patches
            .into_iter()
            .map(|p| api(issuer, "PATCH", "/users/target", Some(BOSS), Some(p)));
        for (s, e) in futures::future::join_all(sent).await {
            assert_eq!(s, 200, "{e}");
        }
        let (_, u) = api(issuer, "GET", "/users/target", Some(BOSS), None).await;
        assert_eq!(
            (&u["disabled"], &u["admin"], &u["expires_at"]),
            (&json!(true), &json!(false), &Value::Null),
            "round {round}: a change was lost: {u}"
        );
    }
}
