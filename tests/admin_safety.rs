//! What an attacker's review of the admin API and the store found, each held shut: concurrent
//! PATCHes that lost updates, cross-site requests with a browser's kept credentials, the last
//! admin demoting themselves, look-alike names, failed admin logins without a trace, and
//! files created readable by everyone. PostgreSQL's half of the PATCH race is in
//! tests/store_postgres.rs.

use std::os::unix::fs::PermissionsExt;

use common::store_api::*;
use common::Issuer;
use serde_json::{json, Value};

/// An issuer with a SQLite store under `data/` (a directory that does not exist yet), an audit
/// log, and `boss` as its first admin.
async fn issuer(dir: &std::path::Path) -> Issuer {
    let (env, _) = keys(dir);
    let config = config("sqlite://data/store/token-issuer.db", 5)
        + "[audit]\nenabled = true\npath = \"audit.log\"\n";
    std::fs::create_dir_all(dir).expect("dir");
    common::write_users(dir, &[("alice", "alice-pw")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let issuer = Issuer::start(dir, &config, &env).await;
    add_boss(&dir.join("issuer.toml"));
    issuer
}

async fn user(issuer: &Issuer, name: &str) -> Value {
    let (s, u) = api(issuer, "GET", &format!("/users/{name}"), Some(BOSS), None).await;
    assert_eq!(s, 200, "{u}");
    u
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_of_different_fields_all_land_on_sqlite() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path()).await;
    concurrent_patches_lose_nothing(&issuer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_requests_are_refused_and_browsers_are_not_invited_to_prompt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path()).await;
    let url = format!("{}/admin/v1/users", issuer.url());
    let http = reqwest::Client::new();
    let body = r#"{"name":"mallory","password":"x","admin":true}"#;

    // A form post from another site: text/plain, so the browser sends it without asking.
    let r = http
        .post(&url)
        .basic_auth(BOSS.0, Some(BOSS.1))
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 415);
    let text = r.text().await.expect("body");
    assert!(text.contains("application/json"), "{text}");

    // JSON, but from a page elsewhere: by its Origin, or by Sec-Fetch-Site.
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        let r = http
            .post(&url)
            .basic_auth(BOSS.0, Some(BOSS.1))
            .header("content-type", "application/json")
            .header(name, value)
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 403, "{name}: {value}");
        let text = r.text().await.expect("body");
        assert!(text.contains("cross-site"), "{text}");
    }
    let (s, _) = api(&issuer, "GET", "/users/mallory", Some(BOSS), None).await;
    assert_eq!(s, 404, "no request above created the user");

    // The same host's own origin, and API clients that send none, are served.
    let r = http
        .post(&url)
        .basic_auth(BOSS.0, Some(BOSS.1))
        .header("content-type", "application/json; charset=utf-8")
        .header("origin", issuer.url())
        .header("sec-fetch-site", "same-origin")
        .body(r#"{"name":"carol","password":"carol-pw"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);

    // No Basic challenge: a browser would prompt, keep the password and replay it.
    let r = http.get(&url).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 401);
    assert!(
        !r.headers().contains_key("www-authenticate"),
        "{:?}",
        r.headers()
    );
    // The realm still challenges (docker needs it there).
    let r = http.get(issuer.realm()).send().await.expect("get");
    assert!(r.headers().contains_key("www-authenticate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_enabled_admin_cannot_demote_or_disable_themselves() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path()).await;
    for patch in [
        json!({"admin": false}),
        json!({"disabled": true}),
        json!({"expires_at": "2000-01-01T00:00:00Z"}),
    ] {
        let (s, e) = api(&issuer, "PATCH", "/users/boss", Some(BOSS), Some(patch)).await;
        assert_eq!(s, 409, "{e}");
        assert!(e.to_string().contains("last enabled admin"), "{e}");
    }
    let b = user(&issuer, "boss").await;
    assert_eq!(
        (b["admin"].clone(), b["disabled"].clone()),
        (json!(true), json!(false))
    );

    // With a second admin, the first may step down.
    add_deputy(&issuer).await;
    let (s, e) = api(
        &issuer,
        "PATCH",
        "/users/boss",
        Some(BOSS),
        Some(json!({"admin": false})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let deputy = Some(("deputy", "deputy-pw"));
    let (s, e) = api(
        &issuer,
        "PATCH",
        "/users/deputy",
        deputy,
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(s, 409, "deputy is now the last: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn look_alike_and_invisible_names_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path()).await;
    let add = |name: &str| {
        let body = json!({"name": name, "password": "pw-123456"});
        let issuer = &issuer;
        async move { api(issuer, "POST", "/users", Some(BOSS), Some(body)).await }
    };
    assert_eq!(add("ci-bot").await.0, 201);
    for twin in ["CI-Bot", "ｃｉ-ｂｏｔ"] {
        let (s, e) = add(twin).await;
        assert_eq!(s, 409, "{twin}: {e}");
        assert!(e.to_string().contains("ci-bot"), "names the other: {e}");
    }
    for hidden in ["ci\u{200b}-bot", "ci\u{202e}tob-", "\u{feff}root"] {
        let (s, e) = add(hidden).await;
        assert_eq!(s, 400, "{hidden:?}: {e}");
        assert!(!e.to_string().contains('\u{202e}'), "escaped: {e}");
    }
    // Kept in NFC: "e" and a combining accent become "é".
    let (s, u) = add("rene\u{301}").await;
    assert_eq!((s, u["name"].as_str()), (201, Some("ren\u{e9}")), "{u}");
    // Groups share the rule; grant names refuse control and format characters.
    let (s, _) = api(
        &issuer,
        "POST",
        "/groups",
        Some(BOSS),
        Some(json!({"name": "Team"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = api(
        &issuer,
        "POST",
        "/groups",
        Some(BOSS),
        Some(json!({"name": "team"})),
    )
    .await;
    assert_eq!(s, 409);
    let grant =
        json!({"group": "Team", "type": "repository", "name": "a\u{2066}/**", "actions": ["pull"]});
    let (s, e) = api(&issuer, "POST", "/grants", Some(BOSS), Some(grant)).await;
    assert_eq!(s, 400, "{e}");

    // The CLI prints names escaped and states the rule it enforces.
    let cfg = tmp.path().join("issuer.toml");
    let help = ok(&cli(&["users", "add", "--help"], ""));
    assert!(help.contains("format (zero-width, bidi)"), "{help}");
    let out = cli(
        &[
            "users",
            "add",
            "x\u{1b}[2J",
            "--config",
            cfg.to_str().expect("utf8"),
        ],
        "pw\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}') && err.contains("\\u{1b}"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_admin_logins_are_logged_without_the_password() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = issuer(tmp.path()).await;
    let (s, _) = api(&issuer, "GET", "/users", Some(("boss", "guess-42")), None).await;
    assert_eq!(s, 401);
    let log = issuer.proc.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("admin API login refused"))
        .unwrap_or_else(|| panic!("no line for the failed login:\n{log}"));
    assert!(
        line.contains("boss") && line.contains("127.0.0.1"),
        "{line}"
    );
    assert!(!log.contains("guess-42"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_and_the_audit_log_are_created_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let issuer = issuer(dir).await;
    // A request, so the audit file has a line.
    let _ = token(&issuer, ("alice", "alice-pw"), &[]).await;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    // `data/store` did not exist: it was made, this user's alone.
    assert_eq!(mode(&dir.join("data/store")), 0o700);
    assert_eq!(mode(&dir.join("data/store/token-issuer.db")), 0o600);
    assert_eq!(mode(&dir.join("audit.log")), 0o600);
}
