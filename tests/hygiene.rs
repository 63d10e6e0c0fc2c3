//! Credential hygiene, each test on SQLite and on PostgreSQL: expiry that warns before it
//! breaks CI (the list, the gauge, the daily warning), a maximum lifetime for non-admin
//! accounts, rotation that keeps the expiry and revokes the refresh tokens of the old password,
//! and admin changes in the audit log.

use std::path::Path;

use common::hygiene::*;
use common::on_both;
use common::store_api::*;
use serde_json::{json, Value};

on_both!(accounts_expiring_soon_are_listed_counted_and_warned_about);

async fn accounts_expiring_soon_are_listed_counted_and_warned_about(kind: Kind, dir: &Path) {
    let db = Db::new(kind, dir).await;
    let cfg = db.config("");
    users_before_start(
        dir,
        &cfg,
        &[
            ("soon", Some("2d")),
            ("today", Some("5h")),
            ("later", Some("30d")),
            ("never", None),
        ],
    );
    let issuer = start_on(dir, &cfg).await;
    let (status, list) = api(
        &issuer,
        "GET",
        "/users?expiring_within=7d",
        Some(BOSS),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(names(&list), ["soon", "today"]);
    let (status, e) = api(
        &issuer,
        "GET",
        "/users?expiring_within=soon",
        Some(BOSS),
        None,
    )
    .await;
    assert_eq!(status, 400, "{e}");
    let config = dir.join("issuer.toml");
    let out = ok(&cli(
        &[
            "users",
            "list",
            "--expiring",
            "1d",
            "--config",
            config.to_str().expect("utf8"),
        ],
        "",
    ));
    assert!(
        out.starts_with("today\texpires ") && out.lines().count() == 1,
        "{out}"
    );
    let gauge = |within: &str| format!("token_issuer_accounts_expiring{{within=\"{within}\"}}");
    assert_eq!(issuer.metric(&gauge("7d")).await, Some(2.0));
    assert_eq!(issuer.metric(&gauge("1d")).await, Some(1.0));
    let log = issuer.proc.log_text();
    for name in ["soon", "today"] {
        assert!(
            log.contains(&format!("user=\"{name}\"")) && log.contains("expires within 7 days"),
            "{log}"
        );
    }
    assert!(!log.contains("user=\"later\""), "{log}");
}

on_both!(a_maximum_lifetime_refuses_accounts_that_would_outlive_it);

async fn a_maximum_lifetime_refuses_accounts_that_would_outlive_it(kind: Kind, dir: &Path) {
    let db = Db::new(kind, dir).await;
    // Made before the limit: reported at start-up, left as it is.
    users_before_start(dir, &db.config(""), &[("old-robot", None)]);
    let cfg = db.config("max_expiry_days = 30");
    std::fs::write(dir.join("issuer.toml"), &cfg).expect("config");
    let issuer = start_on(dir, &cfg).await;
    let log = issuer.proc.log_text();
    assert!(
        log.contains("accounts=1") && log.contains("store.max_expiry_days"),
        "{log}"
    );
    let in_days = |d: u64| {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(d * 86_400);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    for (body, status) in [
        (json!({"name": "r1", "password": "pw"}), 400),
        (
            json!({"name": "r2", "password": "pw", "expires_at": in_days(60)}),
            400,
        ),
        (
            json!({"name": "r3", "password": "pw", "expires_at": in_days(10)}),
            201,
        ),
        (json!({"name": "ops", "password": "pw", "admin": true}), 201),
    ] {
        let (s, answer) = api(&issuer, "POST", "/users", Some(BOSS), Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {answer}");
        if s == 400 {
            let message = answer["errors"][0]["message"].as_str().unwrap_or("");
            assert!(message.contains("store.max_expiry_days"), "{message}");
        }
    }
    let never = json!({"expires_at": null});
    let (s, e) = api(&issuer, "PATCH", "/users/r3", Some(BOSS), Some(never)).await;
    assert_eq!(s, 400, "extending past the limit: {e}");
    let config = dir.join("issuer.toml");
    let out = cli(
        &[
            "users",
            "add",
            "r4",
            "--config",
            config.to_str().expect("utf8"),
        ],
        "pw\n",
    );
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("store.max_expiry_days"),
        "{out:?}"
    );
}

on_both!(a_new_password_keeps_the_expiry_and_ends_the_old_refresh_tokens);

async fn a_new_password_keeps_the_expiry_and_ends_the_old_refresh_tokens(kind: Kind, dir: &Path) {
    let db = Db::new(kind, dir).await;
    let cfg = db.config("");
    users_before_start(dir, &cfg, &[("ci", Some("10d"))]);
    let issuer = start_on(dir, &cfg).await;
    let (_, before) = api(&issuer, "GET", "/users/ci", Some(BOSS), None).await;
    let (status, first) = login(&issuer, "ci", "ci-pw").await;
    assert_eq!(status, 200, "{first}");
    let refresh = first["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    let generate = json!({"generate": true});
    let (s, answer) = api(
        &issuer,
        "POST",
        "/users/ci/password",
        Some(BOSS),
        Some(generate),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["refresh_tokens_revoked"], 1);
    let fresh = answer["secret"].as_str().expect("the new secret, once");
    assert!(fresh.starts_with("tis_") && fresh.len() == 36, "{fresh}");
    assert_eq!(login(&issuer, "ci", fresh).await.0, 200);
    assert_eq!(login(&issuer, "ci", "ci-pw").await.0, 401);
    let (_, after) = api(&issuer, "GET", "/users/ci", Some(BOSS), None).await;
    assert_eq!(
        after["expires_at"], before["expires_at"],
        "the expiry stays"
    );
    let r = reqwest::Client::new()
        .post(issuer.realm())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", SERVICE),
            ("client_id", "ci"),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status().as_u16(), 401, "the old password's refresh token");
    // The CLI: the fresh password on standard output alone.
    let config = dir.join("issuer.toml");
    let out = ok(&cli(
        &[
            "users",
            "passwd",
            "ci",
            "--generate",
            "--config",
            config.to_str().expect("utf8"),
        ],
        "",
    ));
    let printed = out.trim();
    assert!(printed.starts_with("tis_") && printed != fresh, "{out}");
    // The CLI writes the database; a running issuer sees it within store.cache_ttl_seconds.
    within(
        std::time::Duration::from_secs(15),
        "the CLI's password accepted",
        || async { login(&issuer, "ci", printed).await.0 == 200 },
    )
    .await;
    let (s, e) = api(
        &issuer,
        "POST",
        "/users/ci/password",
        Some(BOSS),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400, "neither a password nor generate: {e}");
    // A PATCH of the password revokes them too: every password change goes one way.
    let (status, body) = login(&issuer, "ci", printed).await;
    assert_eq!(status, 200, "{body}");
    let held = |t: Value| t["tokens"].as_array().map_or(0, Vec::len);
    // This login's, and the one that saw the CLI's password take effect.
    let (_, tokens) = api(&issuer, "GET", "/tokens?user=ci", Some(BOSS), None).await;
    assert!(held(tokens) >= 1);
    let patch = json!({"password": "ci-pw-3"});
    let (s, _) = api(&issuer, "PATCH", "/users/ci", Some(BOSS), Some(patch)).await;
    assert_eq!(s, 200);
    let (_, tokens) = api(&issuer, "GET", "/tokens?user=ci", Some(BOSS), None).await;
    assert_eq!(held(tokens), 0);
}

/// The audit file's admin lines, once `n` of them are there.
async fn admin_lines(path: &Path, n: usize) -> Vec<Value> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["kind"] == "admin")
            .collect::<Vec<_>>()
    };
    within(
        std::time::Duration::from_secs(10),
        "the admin lines",
        || async { read().len() >= n },
    )
    .await;
    read()
}

on_both!(admin_changes_and_refused_admin_requests_are_audit_lines_without_secrets);

async fn admin_changes_and_refused_admin_requests_are_audit_lines_without_secrets(
    kind: Kind,
    dir: &Path,
) {
    let db = Db::new(kind, dir).await;
    let cfg = format!(
        "{}\n[audit]\nenabled = true\npath = \"audit.log\"",
        db.config("")
    );
    users_before_start(dir, &cfg, &[]);
    let issuer = start_on(dir, &cfg).await;
    let made = json!({"name": "ci", "password": "s3cret-ci-pw", "expires_at": null});
    let (s, _) = api(&issuer, "POST", "/users", Some(BOSS), Some(made)).await;
    assert_eq!(s, 201);
    let (s, _) = api(&issuer, "GET", "/users", Some(BOSS), None).await;
    assert_eq!(s, 200, "a read writes no line");
    let (s, _) = api(
        &issuer,
        "DELETE",
        "/users/ci",
        Some(("boss", "wrong-guess")),
        None,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _) = api(&issuer, "GET", "/users", Some(("ci", "s3cret-ci-pw")), None).await;
    assert_eq!(s, 403);
    let config = dir.join("issuer.toml");
    ok(&cli(
        &[
            "users",
            "disable",
            "ci",
            "--config",
            config.to_str().expect("utf8"),
        ],
        "",
    ));
    // The CLI's first admin (made before the issuer ran), then these; two processes write the
    // file, so the order between them is not fixed.
    let lines = admin_lines(&dir.join("audit.log"), 5).await;
    let mut brief: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
            (s("by"), s("action"), s("target"), s("outcome"))
        })
        .collect();
    brief.sort();
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let cli_by = format!("cli:{user}");
    let mut want: Vec<(String, String, String, String)> = [
        (cli_by.as_str(), "users add", "boss", "ok"),
        ("boss", "POST /admin/v1/users", "users", "ok"),
        ("boss", "DELETE /admin/v1/users/ci", "users/ci", "refused"),
        ("ci", "GET /admin/v1/users", "users", "refused"),
        (cli_by.as_str(), "users disable", "ci", "ok"),
    ]
    .iter()
    .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
    .collect();
    want.sort();
    assert_eq!(brief, want);
    let made = lines
        .iter()
        .find(|l| l["action"] == "POST /admin/v1/users")
        .expect("the user made");
    assert_eq!(made["status"], 201);
    assert_eq!(made["fields"]["name"], "ci");
    assert_eq!(made["fields"]["password_given"], true);
    let text = std::fs::read_to_string(dir.join("audit.log")).expect("audit");
    for secret in ["s3cret-ci-pw", "wrong-guess", "boss-pw", "$2"] {
        assert!(!text.contains(secret), "{secret} in the audit log");
    }
}

/// Wrong passwords at the admin API count as failed logins: past `damping.failures_per_minute`
/// the pair is slowed and, beyond `damping.max_waiting`, turned away with a 429; other
/// accounts from the same address are not held.
#[tokio::test(flavor = "multi_thread")]
async fn admin_logins_are_damped_like_any_login() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = Db::new(Kind::Sqlite, dir).await;
    let cfg = format!(
        "{}\n[damping]\nfailures_per_minute = 2\nmax_delay_seconds = 2\nmax_waiting = 1",
        db.config("")
    );
    users_before_start(dir, &cfg, &[]);
    let issuer = start_on(dir, &cfg).await;
    let guess = |n: usize| {
        let issuer = &issuer;
        async move {
            let wrong = format!("guess-{n}");
            api(
                issuer,
                "GET",
                "/users",
                Some(("boss", wrong.as_str())),
                None,
            )
            .await
            .0
        }
    };
    for n in 0..2 {
        assert_eq!(guess(n).await, 401);
    }
    let burst = futures::future::join_all((2..8).map(guess)).await;
    assert!(burst.iter().all(|s| [401, 429].contains(s)), "{burst:?}");
    assert!(burst.contains(&429), "past the threshold: {burst:?}");
    // The realm's alice, from the same address, is not held by boss's failures.
    assert_eq!(token(&issuer, ("alice", "alice-pw"), &[]).await.0, 200);
}
