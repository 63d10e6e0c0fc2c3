//! Generated secrets for machines, on SQLite and PostgreSQL: made by the admin API and the
//! CLI (`tis_...`, returned once), stored as a keyed hash (`$tis1$`) while a person's password
//! stays bcrypt (`$2`), never in clear in the database, the log or the audit file; wrong ones
//! refused and damped; found by `find-secret`; a pepper rotation keeping them working until the
//! old pepper is removed.

use std::path::Path;

use common::hygiene::*;
use common::on_both;
use common::sqlite_bytes;
use common::store_api::*;
use serde_json::json;

const SCANNER: &str = "tis_[a-z2-7]{32}";

/// Whether `s` matches [`SCANNER`], the expression the docs give secret scanners.
fn scanner_matches(s: &str) -> bool {
    s.strip_prefix("tis_").is_some_and(|r| {
        r.len() == 32
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
    })
}

on_both!(generated_secrets_log_in_and_are_kept_only_as_a_keyed_hash);

async fn generated_secrets_log_in_and_are_kept_only_as_a_keyed_hash(kind: Kind, dir: &Path) {
    let db = Db::new(kind, dir).await;
    let cfg = format!(
        "{}\n[audit]\nenabled = true\npath = \"audit.log\"\n\
         [damping]\nfailures_per_minute = 2\nmax_delay_seconds = 2\nmax_waiting = 1",
        db.config("")
    );
    users_before_start(dir, &cfg, &[]);
    let cli_secret = cli_ok(dir, &["users", "add", "robot-cli", "--generate"], "");
    let cli_secret = cli_secret.trim().to_string();
    assert!(scanner_matches(&cli_secret), "{SCANNER}: {cli_secret}");
    let issuer = start_on(dir, &cfg).await;
    let made = json!({"name": "robot", "generate": true});
    let (s, answer) = api(&issuer, "POST", "/users", Some(BOSS), Some(made)).await;
    assert_eq!(s, 201, "{answer}");
    let secret = answer["secret"]
        .as_str()
        .expect("the secret, once")
        .to_string();
    assert!(scanner_matches(&secret), "{SCANNER}: {secret}");
    let (_, shown) = api(&issuer, "GET", "/users/robot", Some(BOSS), None).await;
    assert!(shown.get("secret").is_none(), "shown once: {shown}");

    assert_eq!(token(&issuer, ("robot", &secret), &[]).await.0, 200);
    assert_eq!(token(&issuer, ("robot-cli", &cli_secret), &[]).await.0, 200);
    assert_eq!(token(&issuer, ("robot", &cli_secret), &[]).await.0, 401);
    assert_eq!(token(&issuer, ("robot", "not-a-secret"), &[]).await.0, 401);
    // A password of a generated secret's shape is refused: it could never log in.
    let shaped = json!({"name": "person", "password": secret});
    let (s, e) = api(&issuer, "POST", "/users", Some(BOSS), Some(shaped)).await;
    assert_eq!(s, 400, "{e}");

    // Nor in an htpasswd file: that shape is only ever checked against keyed hashes.
    let refused = cli(&["htpasswd", "someone"], &format!("{secret}\n"));
    assert!(!refused.status.success(), "{refused:?}");

    // Stored as keyed hashes; the admin's chosen password as bcrypt.
    let hash_of = |name: &str| format!("SELECT password_hash FROM users WHERE name = '{name}'");
    assert!(db.text(dir, &hash_of("robot")).await.starts_with("$tis1$"));
    assert!(db
        .text(dir, &hash_of("robot-cli"))
        .await
        .starts_with("$tis1$"));
    assert!(db.text(dir, &hash_of("boss")).await.starts_with("$2"));

    // Misspelt fields are a 400, and their values stay out of the audit line too.
    for body in [
        json!({"name": "typo", "Secret": secret}),
        json!({"name": "typo", "pasword": "plain-typo-pw"}),
    ] {
        assert_eq!(
            api(&issuer, "POST", "/users", Some(BOSS), Some(body))
                .await
                .0,
            400
        );
    }

    // Whose is it: the admin API and the CLI.
    let (s, found) = api(
        &issuer,
        "POST",
        "/find-secret",
        Some(BOSS),
        Some(json!({"secret": secret})),
    )
    .await;
    assert_eq!((s, found["name"].as_str()), (200, Some("robot")), "{found}");
    let not_one = json!({"secret": "boss-pw"});
    assert_eq!(
        api(&issuer, "POST", "/find-secret", Some(BOSS), Some(not_one))
            .await
            .0,
        400
    );
    let unknown = json!({"secret": "tis_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"});
    assert_eq!(
        api(&issuer, "POST", "/find-secret", Some(BOSS), Some(unknown))
            .await
            .0,
        404
    );
    assert_eq!(
        cli_ok(dir, &["users", "find-secret"], &format!("{cli_secret}\n")),
        "robot-cli\n"
    );

    // Wrong secrets are failed logins like wrong passwords: damped past the threshold.
    let guesses = futures::future::join_all((0..8).map(|i| {
        let issuer = &issuer;
        async move {
            let guess = format!("tis_{}", "b".repeat(31) + &i.to_string());
            token(issuer, ("robot", &guess), &[]).await.0
        }
    }))
    .await;
    assert!(
        guesses.iter().all(|s| [401, 429].contains(s)),
        "{guesses:?}"
    );
    assert!(guesses.contains(&429), "{guesses:?}");

    // Never in clear: the log, the audit file, and (SQLite) the database file.
    let mut places = vec![issuer.proc.log_text()];
    places.push(std::fs::read_to_string(dir.join("audit.log")).expect("audit"));
    if matches!(kind, Kind::Sqlite) {
        let bytes = String::from_utf8_lossy(&sqlite_bytes(&dir.join("store.db"))).into_owned();
        // What was written while the issuer ran is among the bytes read: the robot made
        // through the admin API (not only robot-cli, made before the start).
        assert!(
            bytes
                .match_indices("robot")
                .any(|(i, _)| !bytes[i..].starts_with("robot-cli")),
            "the robot's row"
        );
        places.push(bytes);
    }
    for text in &places {
        for s in [&secret[4..], &cli_secret[4..], "plain-typo-pw"] {
            assert!(!text.contains(s), "a secret in clear");
        }
    }
}

/// `cfg` with `store.pepper_files` naming `files`.
fn with_peppers(cfg: &str, files: &[&str]) -> String {
    let was = format!("pepper_files = [{PEPPER:?}]");
    assert!(cfg.contains(&was));
    cfg.replace(&was, &format!("pepper_files = {files:?}"))
}

/// Sends SIGHUP and waits for the reload counter of `result` to move.
async fn reload(issuer: &common::Issuer, result: &str) {
    let series = format!("token_issuer_reloads_total{{result=\"{result}\"}}");
    let before = issuer.metric(&series).await.unwrap_or(0.0);
    issuer.proc.signal("-HUP");
    within(std::time::Duration::from_secs(10), "the reload", || async {
        issuer.metric(&series).await.unwrap_or(0.0) > before
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pepper_rotation_keeps_secrets_working_until_the_old_pepper_goes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = Db::new(Kind::Sqlite, dir).await;
    let cfg = db.config("");
    users_before_start(dir, &cfg, &[]);
    let made = |name: &str| {
        cli_ok(dir, &["users", "add", name, "--generate"], "")
            .trim()
            .to_string()
    };
    let (robot, behind, later) = (made("robot"), made("left-behind"), made("later"));
    std::fs::write(
        dir.join("new-pepper"),
        "another-pepper-0123456789abcdefghijklmnopqrstuvwxyz",
    )
    .expect("pepper");

    // Step 1: the new pepper first, the old one still listed: every secret still works.
    let issuer = start_on(dir, &with_peppers(&cfg, &["new-pepper", PEPPER])).await;
    assert_eq!(token(&issuer, ("robot", &robot), &[]).await.0, 200);
    assert_eq!(token(&issuer, ("left-behind", &behind), &[]).await.0, 200);
    // Step 2: new secrets, made under the new pepper.
    let (s, answer) = api(
        &issuer,
        "POST",
        "/users/robot/password",
        Some(BOSS),
        Some(json!({"generate": true})),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    let renewed = answer["secret"].as_str().expect("secret").to_string();
    assert_eq!(token(&issuer, ("robot", &renewed), &[]).await.0, 200);

    // A reload that drops the old pepper but fails (a broken rule) changes nothing: a secret
    // under the old pepper, never checked before, still works.
    let only_new = with_peppers(&cfg, &["new-pepper"]);
    let broken = format!("{only_new}\n[[acl]]\nname = \"${{account}}-x\"\nactions = [\"pull\"]\n");
    std::fs::write(dir.join("issuer.toml"), broken).expect("config");
    reload(&issuer, "failed").await;
    assert_eq!(token(&issuer, ("later", &later), &[]).await.0, 200);

    // Step 3: the old pepper removed, by a reload. The renewed secret works; one left under
    // the old pepper does not, and the log says how to mend it.
    std::fs::write(dir.join("issuer.toml"), &only_new).expect("config");
    reload(&issuer, "ok").await;
    assert_eq!(token(&issuer, ("robot", &renewed), &[]).await.0, 200);
    assert_eq!(token(&issuer, ("left-behind", &behind), &[]).await.0, 401);
    let log = issuer.proc.log_text();
    assert!(
        log.contains("not in store.pepper_files here")
            && log.contains("users passwd NAME --generate"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_or_missing_pepper_stops_start_up_naming_the_setting() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = Db::new(Kind::Sqlite, dir).await;
    std::fs::write(dir.join("short"), "too-short").expect("pepper");
    common::write_users(dir, &[("alice", "alice-pw")]);
    let (env, _) = keys(dir);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for files in [&["short"][..], &["missing"][..]] {
        let cfg = with_peppers(&db.config(""), files);
        let mut issuer = common::Issuer::spawn(dir, &cfg, &env);
        let (status, log) = issuer.proc.wait_exit();
        assert!(!status.success(), "{log}");
        assert!(log.contains("store.pepper_files"), "{log}");
    }
}
