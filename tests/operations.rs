//! Running it in production: `/metrics`, the audit log (and that no secret reaches it or the
//! log), hot reload under load (SIGHUP and watched files), and SIGTERM under load.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::store_api::within;
use common::{free_port, gen_cert, htpasswd_line, metrics, ConfigBuilder, Issuer};
use data_encoding::BASE64URL_NOPAD;
use serde_json::Value;

const ISSUER: &str = "ops-issuer";
const SERVICE: &str = "ops-registry";
const ALICE: (&str, &str) = ("alice", "alice-secret-pw-1");
const BOB: (&str, &str) = ("bob", "bob-secret-pw-2");

fn config(dir: &Path, acl: &str, extra: &str) -> String {
    if !dir.join(format!("{ISSUER}.crt")).exists() {
        gen_cert(dir, ISSUER);
    }
    ConfigBuilder::new(ISSUER, SERVICE)
        .section(extra)
        .section(acl)
        .build()
}

const ALL: &str = "[[acl]]\naccount = \"*\"\nname = \"**\"\nactions = [\"*\"]\n";

/// A token request with Basic credentials: (status, body, X-Request-Id).
async fn token(
    client: &reqwest::Client,
    issuer: &Issuer,
    creds: Option<(&str, &str)>,
    scopes: &[String],
) -> Result<(u16, Value, String), reqwest::Error> {
    let mut query = vec![("service", SERVICE.to_string())];
    for s in scopes {
        query.push(("scope", s.clone()));
    }
    let mut req = client.get(issuer.realm()).query(&query);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.json().await.unwrap_or(Value::Null);
    Ok((status, body, id))
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&BASE64URL_NOPAD.decode(payload.as_bytes()).expect("b64")).expect("json")
}

/// The granted scopes of a token, as `type:name:actions` strings.
fn granted(token: &str) -> Vec<String> {
    claims(token)["access"]
        .as_array()
        .expect("access")
        .iter()
        .map(|a| {
            let actions: Vec<&str> = a["actions"]
                .as_array()
                .expect("actions")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{}:{}:{}",
                a["type"].as_str().unwrap_or(""),
                a["name"].as_str().unwrap_or(""),
                actions.join(",")
            )
        })
        .collect()
}

fn m(all: &HashMap<String, f64>, key: &str) -> f64 {
    *all.get(key)
        .unwrap_or_else(|| panic!("{key} is not in /metrics: {:?}", all.keys()))
}

fn scope(name: &str) -> String {
    format!("repository:{name}:pull,push")
}

/// An issuer with an audit file, a store (refresh tokens) and an upstream that is not there,
/// after one of each decision: issued ×3 (one cold, two warm), unauthorized ×2 (the second from
/// memory), bad_request, too_large, unavailable; `after` is /metrics then. Then a docker-style
/// login with a refresh token and the refresh grant: 10 decisions in all.
struct Decisions {
    tmp: tempfile::TempDir,
    issuer: Issuer,
    client: reqwest::Client,
    asks: [String; 3],
    tokens: Vec<String>,
    ids: Vec<String>,
    refresh_token: String,
    before: HashMap<String, f64>,
    after: HashMap<String, f64>,
}

impl Decisions {
    async fn make() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        std::fs::write(
            dir.join("users.htpasswd"),
            htpasswd_line(ALICE.0, ALICE.1) + &htpasswd_line(BOB.0, BOB.1),
        )
        .expect("htpasswd");
        // Unknown names go to an upstream that is not there: the 503 case.
        let dead = free_port();
        let acl =
            "[[acl]]\naccount = \"alice\"\nname = \"team/**\"\nactions = [\"pull\", \"push\"]\n\
                   [[acl]]\naccount = \"*\"\nname = \"public/*\"\nactions = [\"pull\"]\n";
        let extra = format!(
            "[http]\nmax_scopes = 4\n[audit]\nenabled = true\npath = \"audit.log\"\n\
             [store]\nurl = \"sqlite://store.db\"\n\
             [upstream]\nurl = \"http://127.0.0.1:{dead}/api/v2/whoami\"\nusername_pointer = \"/slug\"\ntimeout_ms = 500\n"
        );
        let issuer = Issuer::start(dir, &config(dir, acl, &extra), &[]).await;
        let c = reqwest::Client::new();
        let before = metrics(&issuer.url()).await;
        let asks = [scope("team/app"), scope("public/x"), scope("other")];
        let mut tokens = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (status, body, id) = token(&c, &issuer, Some(ALICE), &asks).await.expect("token");
            assert_eq!(status, 200, "{body}");
            tokens.push(body["token"].as_str().expect("token").to_string());
            ids.push(id);
        }
        for _ in 0..2 {
            let (status, ..) = token(&c, &issuer, Some((ALICE.0, "wrong-guess-pw")), &asks)
                .await
                .expect("token");
            assert_eq!(status, 401);
        }
        let bad = ["repository:bad name:pull".to_string()];
        let (status, ..) = token(&c, &issuer, Some(ALICE), &bad).await.expect("token");
        assert_eq!(status, 400);
        let five: Vec<String> = (0..5).map(|i| scope(&format!("r{i}"))).collect();
        let (status, ..) = token(&c, &issuer, Some(ALICE), &five).await.expect("token");
        assert_eq!(status, 400);
        let (status, ..) = token(&c, &issuer, Some(("nobody", "nobody-secret-pw-3")), &asks)
            .await
            .expect("token");
        assert_eq!(status, 503);
        let after = metrics(&issuer.url()).await;

        let login: Value = c
            .get(format!(
                "{}?service={SERVICE}&client_id=docker&offline_token=true",
                issuer.realm()
            ))
            .basic_auth(ALICE.0, Some(ALICE.1))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let refresh_token = login["refresh_token"]
            .as_str()
            .expect("refresh token")
            .to_string();
        let refreshed: Value = c
            .post(issuer.realm())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
                ("client_id", "docker"),
                ("service", SERVICE),
                ("scope", "repository:team/app:pull"),
            ])
            .send()
            .await
            .expect("refresh")
            .json()
            .await
            .expect("json");
        tokens.push(
            refreshed["access_token"]
                .as_str()
                .expect("token")
                .to_string(),
        );
        Self {
            tmp,
            issuer,
            client: c,
            asks,
            tokens,
            ids,
            refresh_token,
            before,
            after,
        }
    }

    fn delta(&self, key: &str) -> f64 {
        m(&self.after, key) - self.before.get(key).copied().unwrap_or(0.0)
    }

    fn audit_path(&self) -> std::path::PathBuf {
        self.tmp.path().join("audit.log")
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect()
    }

    /// The audit once the writer has caught up with all 10 decisions.
    async fn all_audit_lines(&self) -> Vec<Value> {
        within(Duration::from_secs(5), "10 audit lines", || async {
            self.audit().len() == 10
        })
        .await;
        self.audit()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_every_outcome_and_what_each_request_cost() {
    let d = Decisions::make().await;
    assert_eq!(
        granted(&d.tokens[0]),
        ["repository:team/app:pull,push", "repository:public/x:pull"]
    );
    for (outcome, n) in [
        ("issued", 3.0),
        ("unauthorized", 2.0),
        ("bad_request", 1.0),
        ("too_large", 1.0),
        ("unavailable", 1.0),
        ("damped", 0.0),
    ] {
        let key = format!("token_issuer_token_requests_total{{outcome=\"{outcome}\"}}");
        assert_eq!(d.delta(&key), n, "{outcome}");
    }
    assert_eq!(
        d.delta("token_issuer_token_request_duration_seconds_count"),
        8.0
    );
    // 3 × 3 issued + 2 × 3 refused + 3 for the 503 (the 400s never parsed theirs).
    assert_eq!(
        d.delta("token_issuer_scopes_requested_total"),
        9.0 + 6.0 + 3.0
    );
    assert_eq!(d.delta("token_issuer_scopes_granted_total"), 6.0);
    assert_eq!(
        d.delta("token_issuer_bcrypt_verifications_total{result=\"match\"}"),
        1.0
    );
    assert_eq!(
        d.delta("token_issuer_bcrypt_verifications_total{result=\"mismatch\"}"),
        1.0,
        "the repeated wrong password is answered from memory"
    );
    assert_eq!(
        d.delta("token_issuer_identity_cache_total{result=\"hit\"}"),
        2.0,
        "the two warm logins"
    );
    assert_eq!(
        d.delta("token_issuer_identity_cache_total{result=\"miss\"}"),
        3.0,
        "the cold login, the first wrong password, the unknown name"
    );
    assert_eq!(
        d.delta("token_issuer_upstream_requests_total{endpoint=\"identity\",outcome=\"error\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_the_key_s_expiry_and_the_build() {
    let d = Decisions::make().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    assert!(
        m(&d.after, "token_issuer_signing_key_not_after_seconds") > (now + 300 * 86_400) as f64
    );
    let build = format!(
        "token_issuer_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m(&d.after, &build), 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_has_one_line_per_decision() {
    let d = Decisions::make().await;
    let lines = d.all_audit_lines().await;
    let first = &lines[0];
    let jti = claims(&d.tokens[0])["jti"].clone();
    assert_eq!(first["outcome"], "issued");
    assert_eq!(first["user"], "alice");
    assert_eq!(first["source"], "htpasswd");
    assert_eq!(first["grant"], "password");
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert_eq!(first["request_id"], d.ids[0].as_str());
    assert_eq!(first["jti"], jti);
    assert_eq!(first["exp"], claims(&d.tokens[0])["exp"]);
    assert_eq!(
        first["requested"],
        serde_json::json!([
            "repository:team/app:pull,push",
            "repository:public/x:pull,push",
            "repository:other:pull,push"
        ])
    );
    assert_eq!(
        first["granted"],
        serde_json::json!(["repository:team/app:pull,push", "repository:public/x:pull"])
    );
    assert_eq!(
        first["decided_by"],
        serde_json::json!(["acl[0]", "acl[1]", "no-rule"])
    );
    let refused = &lines[3];
    assert_eq!(refused["outcome"], "unauthorized");
    assert_eq!(refused["user"], "", "not identified");
    assert_eq!(refused["reason"], "invalid username or password");
    assert_eq!(refused["jti"], "");
    assert_eq!(lines[5]["outcome"], "bad_request");
    assert_eq!(lines[6]["outcome"], "too_large");
    assert_eq!(lines[7]["outcome"], "unavailable");
    assert_eq!(lines[8]["refresh_token_issued"], true);
    assert_eq!(lines[8]["client_id"], "docker");
    assert_eq!(lines[9]["grant"], "refresh_token");
    assert_eq!(lines[9]["user"], "alice");
    assert_eq!(
        lines[9]["granted"],
        serde_json::json!(["repository:team/app:pull"])
    );
    let time = first["time"].as_str().expect("time");
    assert!(
        time.ends_with('Z') && time.len() == 24,
        "RFC 3339 with ms: {time}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_audit_the_log_or_the_metrics() {
    let d = Decisions::make().await;
    d.all_audit_lines().await;
    // Passwords, tokens, their signatures, the refresh token, the key.
    let key_pem = std::fs::read_to_string(d.tmp.path().join(format!("{ISSUER}.pem"))).expect("key");
    let key_body: Vec<&str> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    let audit_text = std::fs::read_to_string(d.audit_path()).expect("audit");
    let log = d.issuer.proc.log_text();
    let metrics_text = format!("{:?}", d.after);
    let mut secrets: Vec<&str> = vec![ALICE.1, BOB.1, "wrong-guess-pw", "nobody-secret-pw-3"];
    secrets.extend(d.tokens.iter().map(String::as_str));
    secrets.push(&d.refresh_token);
    secrets.extend(
        d.tokens
            .iter()
            .map(|t| t.rsplit('.').next().expect("signature")),
    );
    secrets.extend(key_body);
    for s in &secrets {
        for (what, text) in [
            ("audit", &audit_text),
            ("log", &log),
            ("metrics", &metrics_text),
        ] {
            assert!(!text.contains(s), "the {what} holds a secret");
        }
    }
    for name in ["alice", "team/app", "127.0.0.1"] {
        assert!(
            !metrics_text.contains(name),
            "a metric label holds {name:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moved_audit_file_is_reopened_on_sighup() {
    let d = Decisions::make().await;
    d.all_audit_lines().await;
    // logrotate's way: move the file, SIGHUP, and the next line goes to a new file.
    let moved = d.tmp.path().join("audit.log.moved");
    std::fs::rename(d.audit_path(), &moved).expect("move");
    let reloads = metrics(&d.issuer.url()).await;
    d.issuer.proc.signal("-HUP");
    within(Duration::from_secs(5), "the SIGHUP reload", || async {
        let now = metrics(&d.issuer.url()).await;
        m(&now, "token_issuer_reloads_total{result=\"ok\"}")
            > m(&reloads, "token_issuer_reloads_total{result=\"ok\"}")
    })
    .await;
    let (status, ..) = token(&d.client, &d.issuer, Some(ALICE), &d.asks)
        .await
        .expect("token");
    assert_eq!(status, 200);
    within(
        Duration::from_secs(5),
        "the line in the reopened file",
        || async { d.audit().len() == 1 },
    )
    .await;
    let kept = std::fs::read_to_string(&moved).expect("moved");
    assert_eq!(kept.lines().count(), 10, "the moved file kept its lines");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_on_their_own_listener() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    common::write_users(dir, &[ALICE]);
    let port = free_port();
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let issuer = Issuer::start(dir, &config(dir, ALL, &extra), &[]).await;
    let main = reqwest::get(format!("{}/metrics", issuer.url()))
        .await
        .expect("main");
    assert_eq!(main.status().as_u16(), 404, "not on the public port");
    let own = metrics(&format!("http://127.0.0.1:{port}")).await;
    assert!(own.contains_key("token_issuer_token_requests_total{outcome=\"issued\"}"));
}

/// The ACL of version `v`: alice may pull `v{v}` and nothing else.
fn acl_version(v: usize) -> String {
    format!("[[acl]]\naccount = \"alice\"\nname = \"v{v}\"\nactions = [\"pull\"]\n")
}

/// Three kinds of broken file: bad TOML, a bad rule, an unknown key.
fn broken(i: usize) -> String {
    match i % 3 {
        0 => "[[acl]\naccount = \"alice\"\n".into(),
        1 => "[[acl]]\naccount = \"alice\"\nname = \"v1\"\nactions = [\"pul\"]\n".into(),
        _ => "[[acl]]\nacount = \"alice\"\nname = \"v1\"\nactions = [\"pull\"]\n".into(),
    }
}

/// Replaces the file as editors and config management do: a new file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_never_mixes_or_drops() {
    const VERSIONS: usize = 25;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    common::write_users(dir, &[ALICE]);
    let issuer = Issuer::start(dir, &config(dir, &acl_version(0), ""), &[]).await;
    let path = dir.join("issuer.toml");
    let scopes: Arc<Vec<String>> = Arc::new(
        (0..=VERSIONS)
            .map(|v| format!("repository:v{v}:pull"))
            .collect(),
    );
    // Versions written so far (a token may show any of them, never a later one).
    let written = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let url = issuer.realm();
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (scopes, written, stop, url) =
            (scopes.clone(), written.clone(), stop.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let (mut seen, mut count) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                let newest = written.load(Ordering::SeqCst);
                let mut q = vec![("service", SERVICE.to_string())];
                q.extend(scopes.iter().map(|s| ("scope", s.clone())));
                let resp = c
                    .get(&url)
                    .query(&q)
                    .basic_auth(ALICE.0, Some(ALICE.1))
                    .send()
                    .await
                    .expect("no request fails");
                assert_eq!(resp.status().as_u16(), 200, "every request is answered");
                let body: Value = resp.json().await.expect("json");
                let g = granted(body["token"].as_str().expect("token"));
                assert_eq!(g.len(), 1, "exactly one version's rule, never a mix: {g:?}");
                let v: usize = g[0]
                    .strip_prefix("repository:v")
                    .and_then(|r| r.strip_suffix(":pull"))
                    .and_then(|n| n.parse().ok())
                    .expect("a version");
                assert!(
                    v <= newest.max(written.load(Ordering::SeqCst)),
                    "v{v} not written yet"
                );
                assert!(v >= seen, "went back from v{seen} to v{v}");
                seen = v;
                count += 1;
            }
            count
        }));
    }
    let reloads = |all: &HashMap<String, f64>| {
        (
            m(all, "token_issuer_reloads_total{result=\"ok\"}"),
            m(all, "token_issuer_reloads_total{result=\"failed\"}"),
        )
    };
    let (mut ok, mut failed) = reloads(&metrics(&issuer.url()).await);
    let mut slowest = Duration::ZERO;
    for i in 0..2 * VERSIONS {
        let valid = i % 2 == 0;
        if valid {
            let v = i / 2 + 1;
            written.store(v, Ordering::SeqCst);
            replace(&path, &config(dir, &acl_version(v), ""));
        } else {
            replace(&path, &config(dir, &broken(i), ""));
        }
        // Each write is one reload, counted once the new state is in force (or refused).
        let (want_ok, want_failed) = if valid {
            (ok + 1.0, failed)
        } else {
            (ok, failed + 1.0)
        };
        let took = within(
            Duration::from_secs(5),
            &format!("reload #{i} counted"),
            || async {
                let now = reloads(&metrics(&issuer.url()).await);
                now == (want_ok, want_failed)
            },
        )
        .await;
        if valid {
            slowest = slowest.max(took);
        }
        (ok, failed) = (want_ok, want_failed);
    }
    // A change is applied 0.1 s after the last event and once two reads 0.5 s apart agree.
    assert!(
        slowest < Duration::from_secs(2),
        "every valid write was in force within 2 s; the slowest took {slowest:?}"
    );
    // The last write was broken: the last valid rules are the ones in force.
    let c = reqwest::Client::new();
    let (_, body, _) = token(&c, &issuer, Some(ALICE), &scopes)
        .await
        .expect("token");
    assert_eq!(
        granted(body["token"].as_str().expect("token")),
        [format!("repository:v{VERSIONS}:pull")]
    );
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("a client failed");
    }
    assert!(
        total > 16 * 25,
        "the clients kept asking throughout: {total}"
    );
    let log = issuer.proc.log_text();
    assert!(
        log.contains("acl[0].actions: unknown action \"pul\""),
        "the log says what is wrong:\n{log}"
    );
    assert!(log.contains("still running the previous configuration"));
    println!(
        "{total} tokens during 50 rewrites; the slowest valid write was in force after {slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_users_and_keys_and_names_restart_only_settings() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    common::write_users(dir, &[ALICE]);
    let no_watch = "[reload]\nwatch = false\n";
    let issuer = Issuer::start(dir, &config(dir, ALL, no_watch), &[]).await;
    let c = reqwest::Client::new();
    let s = [scope("a")];
    assert_eq!(token(&c, &issuer, Some(BOB), &s).await.expect("t").0, 401);
    let first = token(&c, &issuer, Some(ALICE), &s).await.expect("t").1;
    let old_kid = jwt_kid(first["token"].as_str().expect("token"));

    // A new user, a new key, and a restart-only change, with no watch: nothing until SIGHUP.
    common::write_users(dir, &[ALICE, BOB]);
    let other = dir.join("next");
    std::fs::create_dir_all(&other).expect("dir");
    gen_cert(&other, ISSUER);
    for ext in ["crt", "pem"] {
        std::fs::copy(
            other.join(format!("{ISSUER}.{ext}")),
            dir.join(format!("{ISSUER}.{ext}")),
        )
        .expect("copy key");
    }
    replace(
        &dir.join("issuer.toml"),
        &config(
            dir,
            ALL,
            &format!("{no_watch}[http]\nmax_connections = 77\n"),
        ),
    );
    assert_eq!(token(&c, &issuer, Some(BOB), &s).await.expect("t").0, 401);
    let before = metrics(&issuer.url()).await;
    issuer.proc.signal("-HUP");
    within(Duration::from_secs(5), "bob works after SIGHUP", || async {
        token(&c, &issuer, Some(BOB), &s).await.expect("t").0 == 200
    })
    .await;
    // The state is swapped before the reload is counted: wait for the count, then check it
    // is exactly one (no reload happened before the SIGHUP, with watching off).
    let ok = |all: &HashMap<String, f64>| m(all, "token_issuer_reloads_total{result=\"ok\"}");
    within(Duration::from_secs(5), "the reload counted", || async {
        ok(&metrics(&issuer.url()).await) > ok(&before)
    })
    .await;
    let after = metrics(&issuer.url()).await;
    assert_eq!(ok(&after) - ok(&before), 1.0);
    let body = token(&c, &issuer, Some(ALICE), &s).await.expect("t").1;
    let new_kid = jwt_kid(body["token"].as_str().expect("token"));
    assert_ne!(new_kid, old_kid, "signed with the new key");
    let jwks: Value = reqwest::get(format!("{}/.well-known/jwks.json", issuer.url()))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"][0]["kid"], new_kid.as_str());
    let log = issuer.proc.log_text();
    assert!(
        log.contains("[http] changed; it takes effect at the next restart"),
        "{log}"
    );
}

fn jwt_kid(token: &str) -> String {
    let header = token.split('.').next().expect("header");
    let v: Value = serde_json::from_slice(&BASE64URL_NOPAD.decode(header.as_bytes()).expect("b64"))
        .expect("json");
    v["kid"].as_str().expect("kid").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_finishes_what_is_in_flight_and_exits_0() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    // 16 cold logins at bcrypt cost 11 (~140 ms each, one per core at a time): in flight
    // together for about a second.
    let mut lines = htpasswd_line(ALICE.0, ALICE.1);
    let users: Vec<(String, String)> = (0..16)
        .map(|i| (format!("user{i}"), format!("user{i}-secret")))
        .collect();
    for (u, p) in &users {
        lines.push_str(&format!("{u}:{}\n", bcrypt::hash(p, 11).expect("bcrypt")));
    }
    std::fs::write(dir.join("users.htpasswd"), lines).expect("htpasswd");
    let mut issuer = Issuer::start(dir, &config(dir, ALL, ""), &[]).await;
    let s = vec![scope("a")];
    let c = reqwest::Client::new();
    assert_eq!(token(&c, &issuer, Some(ALICE), &s).await.expect("t").0, 200);
    let miss = "token_issuer_identity_cache_total{result=\"miss\"}";
    let matched = "token_issuer_bcrypt_verifications_total{result=\"match\"}";
    let before = metrics(&issuer.url()).await;
    // Warm load beside it: alice in a loop on 4 connections.
    let stop = Arc::new(AtomicBool::new(false));
    let mut warm = Vec::new();
    for _ in 0..4 {
        let (url, stop, s) = (issuer.realm(), stop.clone(), s.clone());
        warm.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut answered = 0;
            while !stop.load(Ordering::SeqCst) {
                match c
                    .get(&url)
                    .query(&[("service", SERVICE), ("scope", s[0].as_str())])
                    .basic_auth(ALICE.0, Some(ALICE.1))
                    .send()
                    .await
                {
                    // An answer is always a token, before and during the shutdown.
                    Ok(r) => {
                        assert_eq!(r.status().as_u16(), 200);
                        answered += 1;
                    }
                    // After it, connections are refused or closed.
                    Err(_) => break,
                }
            }
            answered
        }));
    }
    let mut cold = Vec::new();
    for (u, p) in users.clone() {
        let (url, s) = (issuer.realm(), s.clone());
        cold.push(tokio::spawn(async move {
            reqwest::Client::new()
                .get(&url)
                .query(&[("service", SERVICE), ("scope", s[0].as_str())])
                .basic_auth(u, Some(p))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // SIGTERM once all 16 cold logins are being answered (each has missed the cache) and
    // some are still waiting for bcrypt.
    let deadline = Instant::now() + Duration::from_secs(10);
    let at_kill = loop {
        let now = metrics(&issuer.url()).await;
        if m(&now, miss) - m(&before, miss) >= 16.0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "16 logins in flight: not within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    issuer.proc.signal("-TERM");
    let done_before = m(&at_kill, matched) - m(&before, matched);
    assert!(
        done_before < 16.0,
        "some logins were still in flight at SIGTERM"
    );
    let started = Instant::now();
    for c in cold {
        assert_eq!(
            c.await
                .expect("task")
                .expect("an in-flight login is answered"),
            200
        );
    }
    let (status, log) = issuer.proc.wait_exit();
    assert!(status.success(), "exit 0 after SIGTERM: {status}\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "within the grace period"
    );
    stop.store(true, Ordering::SeqCst);
    let mut answered = 0;
    for w in warm {
        answered += w.await.expect("warm client");
    }
    assert!(answered > 0, "the warm clients were served");
    let refused = reqwest::get(issuer.realm()).await;
    assert!(refused.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_registry_is_counted_by_route_and_status() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    common::write_users(dir, &[ALICE]);
    let port = free_port();
    let extra = format!("[registry]\nlisten = \"127.0.0.1:{port}\"\nstorage = \"storage\"\n");
    let issuer = Issuer::start(dir, &config(dir, ALL, &extra), &[]).await;
    let reg = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let (_, body, _) = token(&c, &issuer, Some(ALICE), &[scope("ops/app")])
        .await
        .expect("token");
    let bearer = body["token"].as_str().expect("token").to_string();
    let before = metrics(&issuer.url()).await;
    let delta = |after: &HashMap<String, f64>, k: &str| {
        after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0)
    };

    // An open upload is counted until it finishes.
    let start = c
        .post(format!("{reg}/v2/ops/app/blobs/uploads/"))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("post");
    assert_eq!(start.status().as_u16(), 202);
    let location = start.headers()["location"]
        .to_str()
        .expect("loc")
        .to_string();
    let open = metrics(&issuer.url()).await;
    assert_eq!(m(&open, "token_issuer_registry_uploads_in_progress"), 1.0);
    let blob = vec![7u8; 100_000];
    let digest = format!("sha256:{}", common::sha256_hex(&blob));
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = if location.starts_with("http") {
        location.clone()
    } else {
        format!("{reg}{location}")
    };
    let put = c
        .put(format!("{url}{sep}digest={digest}"))
        .bearer_auth(&bearer)
        .body(blob.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 201);
    let got = c
        .get(format!("{reg}/v2/ops/app/blobs/{digest}"))
        .bearer_auth(&bearer)
        .send()
        .await
        .expect("get");
    assert_eq!(got.bytes().await.expect("body").len(), blob.len());
    let unauthenticated = c
        .get(format!("{reg}/v2/ops/app/blobs/{digest}"))
        .send()
        .await
        .expect("get");
    assert_eq!(unauthenticated.status().as_u16(), 401);

    let after = metrics(&issuer.url()).await;
    assert_eq!(m(&after, "token_issuer_registry_uploads_in_progress"), 0.0);
    for (route, method, status) in [
        ("uploads", "POST", 202),
        ("uploads", "PUT", 201),
        ("blobs", "GET", 200),
        ("blobs", "GET", 401),
    ] {
        let key = format!(
            "token_issuer_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}}"
        );
        assert_eq!(delta(&after, &key), 1.0, "{key}");
    }
    assert_eq!(
        delta(&after, "token_issuer_registry_received_bytes_total"),
        100_000.0
    );
    // The blob, plus the 401's small JSON error body.
    let sent = delta(&after, "token_issuer_registry_sent_bytes_total");
    assert!((100_000.0..101_000.0).contains(&sent), "sent {sent}");
    let text = format!("{after:?}");
    assert!(!text.contains("ops/app"), "no repository in a label");

    // A new signing key by reload: the registry trusts it at once.
    let next = dir.join("next");
    std::fs::create_dir_all(&next).expect("dir");
    gen_cert(&next, ISSUER);
    for ext in ["crt", "pem"] {
        let from = next.join(format!("{ISSUER}.{ext}"));
        replace(
            &dir.join(format!("{ISSUER}.{ext}")),
            &std::fs::read_to_string(from).expect("key"),
        );
    }
    let old_kid = jwt_kid(&bearer);
    let fresh = within(
        Duration::from_secs(5),
        "tokens from the new key",
        || async {
            let (_, body, _) = token(&c, &issuer, Some(ALICE), &[scope("ops/app")])
                .await
                .expect("token");
            jwt_kid(body["token"].as_str().expect("token")) != old_kid
        },
    )
    .await;
    let (_, body, _) = token(&c, &issuer, Some(ALICE), &[scope("ops/app")])
        .await
        .expect("token");
    let got = c
        .get(format!("{reg}/v2/ops/app/blobs/{digest}"))
        .bearer_auth(body["token"].as_str().expect("token"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status().as_u16(), 200, "after {fresh:?}");
}
