//! Last use of store accounts and refresh tokens: noted in memory, written once a minute and
//! at shutdown (not per token), shown by the admin API and the CLI, and the list of accounts
//! idle for a span; on SQLite and PostgreSQL, and by two replicas on one PostgreSQL.

use std::path::Path;

use common::hygiene::*;
use common::on_both;
use common::postgres::Postgres;
use common::store_api::*;
use common::Issuer;
use serde_json::Value;

const DAY: i64 = 86_400;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A user's `last_used_at` as the admin API shows it (Unix seconds), if any.
async fn last_used(issuer: &Issuer, user: &str) -> Option<i64> {
    let (s, u) = api(issuer, "GET", &format!("/users/{user}"), Some(BOSS), None).await;
    assert_eq!(s, 200, "{u}");
    seconds(&u["last_used_at"])
}

fn seconds(v: &Value) -> Option<i64> {
    let t = humantime::parse_rfc3339(v.as_str()?).expect("an RFC 3339 time");
    Some(
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64,
    )
}

/// Stops `issuer` with SIGTERM, as a service manager does, and checks it ended cleanly.
fn stop(mut issuer: Issuer) {
    let (status, log) = issuer.proc.terminate();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("ERROR") && !log.contains("not written"),
        "{log}"
    );
}

on_both!(last_use_is_written_at_shutdown_and_idle_accounts_are_listed);

async fn last_use_is_written_at_shutdown_and_idle_accounts_are_listed(kind: Kind, dir: &Path) {
    let db = Db::new(kind, dir).await;
    let cfg = db.config("");
    users_before_start(
        dir,
        &cfg,
        &[("used", None), ("refreshed", None), ("idle", None)],
    );
    // Made long ago: only a use since tells them apart.
    let long_ago = now() - 100 * DAY;
    db.execute(
        dir,
        &format!("UPDATE users SET created_at = {long_ago} WHERE name <> 'boss'"),
    )
    .await;
    // As after the upgrade that began recording last use: an old account may have been used
    // before it, so none counts as idle yet.
    assert_eq!(cli_ok(dir, &["users", "list", "--unused", "90d"], ""), "");
    // Recording began long ago too.
    db.execute(
        dir,
        &format!("UPDATE store_meta SET value = {long_ago} WHERE key = 'last_used_since'"),
    )
    .await;
    let issuer = start_on(dir, &cfg).await;
    let before = now();
    assert_eq!(login(&issuer, "used", "used-pw").await.0, 200);
    assert_eq!(login(&issuer, "used", "used-pw").await.0, 200);
    let (s, first) = login(&issuer, "refreshed", "refreshed-pw").await;
    assert_eq!(s, 200, "{first}");
    let refresh = first["refresh_token"].as_str().expect("a refresh token");
    assert_eq!(redeem(&issuer, refresh).await, 200);
    assert_eq!(login(&issuer, "idle", "wrong-pw").await.0, 401);
    // Noted, not yet written: no database write per token.
    assert_eq!(last_used(&issuer, "used").await, None);
    stop(issuer);

    let listed = cli_ok(dir, &["users", "list"], "");
    let line = |name: &str| {
        listed
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} in {listed}"))
            .to_string()
    };
    assert!(line("used").contains("last used 20"), "{listed}");
    assert!(line("refreshed").contains("last used 20"), "{listed}");
    assert!(line("idle").ends_with("never used"), "{listed}");
    assert_eq!(
        cli_ok(dir, &["users", "list", "--unused", "90d"], ""),
        "idle\tnever used\n"
    );
    let tokens = cli_ok(dir, &["tokens", "list", "refreshed"], "");
    assert!(tokens.contains("\tlast used 20"), "{tokens}");

    let issuer = start_on(dir, &cfg).await;
    let used = last_used(&issuer, "used")
        .await
        .expect("written at shutdown");
    assert!((before..=now()).contains(&used), "{used} not from this run");
    assert_eq!(
        last_used(&issuer, "idle").await,
        None,
        "a wrong password is no use"
    );
    let (s, idle) = api(&issuer, "GET", "/users?unused_for=90d", Some(BOSS), None).await;
    assert_eq!(s, 200, "{idle}");
    assert_eq!(names(&idle), ["idle"]);
    let (s, listed) = api(&issuer, "GET", "/tokens?user=refreshed", Some(BOSS), None).await;
    assert_eq!(s, 200, "{listed}");
    let token_used = seconds(&listed["tokens"][0]["last_used_at"]).expect("the token's last use");
    assert!(token_used >= before, "{listed}");
    let both = "/users?unused_for=90d&expiring_within=7d";
    let (s, e) = api(&issuer, "GET", both, Some(BOSS), None).await;
    assert_eq!(s, 400, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_postgres_both_write_and_the_latest_use_wins() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let pg = Postgres::start(dir).await;
    let (env, _) = keys(dir);
    let a = start(&dir.join("a"), &pg.url(), 1, &env).await;
    let b = start(&dir.join("b"), &pg.url(), 1, &env).await;
    add_boss(&dir.join("a/issuer.toml"));
    let a_dir = dir.join("a");
    for name in ["a-robot", "b-robot", "shared"] {
        cli_ok(&a_dir, &["users", "add", name], &format!("{name}-pw\n"));
    }
    let ok_on = |issuer: &Issuer, user: &'static str| {
        let issuer = issuer.url();
        async move {
            let r = reqwest::Client::new()
                .get(format!("{issuer}/v1/registry?service={SERVICE}"))
                .basic_auth(user, Some(format!("{user}-pw")))
                .send()
                .await
                .expect("realm");
            assert_eq!(r.status(), 200, "{user} at {issuer}");
        }
    };
    ok_on(&a, "a-robot").await;
    ok_on(&b, "b-robot").await;
    ok_on(&a, "shared").await;
    // Then on B in a later second: B's time is the later one.
    let first = now();
    within(
        std::time::Duration::from_secs(3),
        "the next second",
        || async { now() > first },
    )
    .await;
    let later = now();
    ok_on(&b, "shared").await;
    // B writes first, then A with its earlier time, which must not replace B's.
    stop(b);
    stop(a);
    let a = start(&dir.join("a"), &pg.url(), 1, &env).await;
    assert!(last_used(&a, "a-robot").await.is_some(), "A's use");
    assert!(last_used(&a, "b-robot").await.is_some(), "B's use");
    let shared = last_used(&a, "shared").await.expect("shared");
    assert!(shared >= later, "the latest use wins: {shared} < {later}");
}
