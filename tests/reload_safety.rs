//! What a reload must not get wrong: a watched file reached through a link into another
//! directory (stow, Nix, Ansible) is watched where it really lives; a config written in place
//! slowly is applied whole, never half; and an htpasswd user's refresh tokens die with the
//! password hash they were issued under, even if that hash comes back from a backup.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::store_api::{within, SERVICE};
use common::*;
use serde_json::Value;

const ISSUER: &str = "issuer.test";

/// `token_issuer_reloads_total{result="ok"}`.
async fn reloads(issuer: &Issuer) -> f64 {
    issuer
        .metric("token_issuer_reloads_total{result=\"ok\"}")
        .await
        .expect("the reload counter")
}

/// A token request's status and the names of the repositories granted.
async fn ask(issuer: &Issuer, creds: (&str, &str), scopes: &[&str]) -> (u16, Vec<String>) {
    let mut q = vec![("service", SERVICE)];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&q)
        .basic_auth(creds.0, Some(creds.1))
        .send()
        .await
        .expect("realm");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    let Some(token) = body["token"].as_str() else {
        return (status, Vec::new());
    };
    let payload = token.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .expect("b64"),
    )
    .expect("claims");
    let names = claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .filter_map(|a| a["name"].as_str().map(str::to_string))
        .collect();
    (status, names)
}

fn rule(name: &str) -> String {
    format!("[[acl]]\naccount = \"alice\"\nname = \"{name}\"\nactions = [\"pull\"]\n")
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_htpasswd_file_linked_from_another_directory_is_watched_there() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (conf, shared) = (tmp.path().join("conf"), tmp.path().join("shared"));
    std::fs::create_dir_all(&conf).expect("conf");
    std::fs::create_dir_all(&shared).expect("shared");
    let bob = ("bob", "bob-pw");
    write_users(&shared, &[("alice", "alice-pw"), bob]);
    std::os::unix::fs::symlink(shared.join("users.htpasswd"), conf.join("users.htpasswd"))
        .expect("link");
    gen_cert(&conf, ISSUER);
    let config = ConfigBuilder::new(ISSUER, SERVICE)
        .section(&rule("**"))
        .build();
    let issuer = Issuer::start(&conf, &config, &[]).await;
    assert_eq!(ask(&issuer, bob, &[]).await.0, 200);

    // bob is removed where the file really is; the link's own directory sees nothing.
    write_users(&shared, &[("alice", "alice-pw")]);
    within(
        Duration::from_secs(5),
        "bob refused after the change",
        || async { ask(&issuer, bob, &[]).await.0 == 401 },
    )
    .await;

    // The link pointed at another file: that file is watched from then on.
    std::fs::create_dir_all(tmp.path().join("other")).expect("other");
    write_users(&tmp.path().join("other"), &[("carol", "carol-pw")]);
    let before = reloads(&issuer).await;
    std::fs::remove_file(conf.join("users.htpasswd")).expect("unlink");
    std::os::unix::fs::symlink(
        tmp.path().join("other/users.htpasswd"),
        conf.join("users.htpasswd"),
    )
    .expect("relink");
    within(Duration::from_secs(5), "carol in", || async {
        ask(&issuer, ("carol", "carol-pw"), &[]).await.0 == 200
    })
    .await;
    assert!(reloads(&issuer).await > before);
    write_users(&tmp.path().join("other"), &[("dave", "dave-pw")]);
    within(
        Duration::from_secs(5),
        "dave in through the new target",
        || async { ask(&issuer, ("dave", "dave-pw"), &[]).await.0 == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_written_slowly_in_place_is_applied_whole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    gen_cert(dir, ISSUER);
    let base = ConfigBuilder::new(ISSUER, SERVICE).build();
    let issuer = Issuer::start(dir, &format!("{base}{}", rule("old")), &[]).await;
    let scopes = [
        "repository:old:pull",
        "repository:first:pull",
        "repository:second:pull",
    ];
    assert_eq!(
        ask(&issuer, ("alice", "alice-pw"), &scopes).await.1,
        ["old"]
    );
    let before = reloads(&issuer).await;

    // An in-place write in two parts with a pause between: the first part alone is valid
    // TOML (cut at a rule's boundary) that no one meant to apply.
    let path = dir.join("issuer.toml");
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        f.write_all(format!("{base}{}", rule("first")).as_bytes())
            .expect("first part");
        f.sync_all().expect("sync");
        // Longer than the watcher's 100 ms settling, as a slow writer is.
        std::thread::sleep(Duration::from_millis(200));
        f.write_all(rule("second").as_bytes()).expect("second part");
    });
    let start = Instant::now();
    loop {
        let (_, names) = ask(&issuer, ("alice", "alice-pw"), &scopes).await;
        assert_ne!(names, ["first"], "the half-written file was applied");
        if names == ["first", "second"] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never applied: {names:?}"
        );
    }
    writer.join().expect("writer");
    // The state is swapped just before the reload is counted: wait for the count, then it
    // must be exactly one (the half-written file was never a reload of its own).
    within(Duration::from_secs(5), "the reload counted", || async {
        reloads(&issuer).await >= before + 1.0
    })
    .await;
    assert_eq!(
        reloads(&issuer).await,
        before + 1.0,
        "one reload, of the whole file"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_tokens_of_an_htpasswd_user_do_not_come_back_with_an_old_hash() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    let first = std::fs::read_to_string(dir.join("users.htpasswd")).expect("read");
    gen_cert(dir, ISSUER);
    let config = ConfigBuilder::new(ISSUER, SERVICE)
        .section("[store]\nurl = \"sqlite://store.db\"")
        .section(&rule("**"))
        .build();
    let issuer = Issuer::start(dir, &config, &[]).await;
    let login: Value = reqwest::Client::new()
        .get(format!(
            "{}?client_id=docker&offline_token=true&service={SERVICE}",
            issuer.realm()
        ))
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let refresh_token = login["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();
    let refresh = || async {
        reqwest::Client::new()
            .post(issuer.realm())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
                ("service", SERVICE),
                ("client_id", "docker"),
            ])
            .send()
            .await
            .expect("refresh")
            .status()
            .as_u16()
    };
    assert_eq!(refresh().await, 200);

    // A new password, then the old file back from a backup; the token is not used between.
    for (text, step) in [(None, "new password"), (Some(first), "old hash restored")] {
        let before = reloads(&issuer).await;
        match text {
            None => write_users(dir, &[("alice", "another-pw")]),
            Some(t) => replace(&dir.join("users.htpasswd"), &t),
        }
        within(Duration::from_secs(5), step, || async {
            reloads(&issuer).await > before
        })
        .await;
    }
    assert_eq!(refresh().await, 401, "revoked when the hash changed");
    assert_eq!(
        ask(&issuer, ("alice", "alice-pw"), &[]).await.0,
        200,
        "the password works"
    );
}
