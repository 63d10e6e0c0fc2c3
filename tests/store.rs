//! The database store with SQLite: users, groups and grants through the admin API and the CLI,
//! tokens through distribution 2.8 with skopeo. PostgreSQL: tests/store_postgres.rs.

use common::store_api::*;
use common::*;
use serde_json::{json, Value};

/// An issuer on a SQLite store (relative to its config), its first admin `boss` made with the
/// CLI against the file the issuer has open, and alice in its htpasswd file.
struct Fixture {
    tmp: tempfile::TempDir,
    issuer: Issuer,
    cert: std::path::PathBuf,
}

const AS_BOSS: Option<(&str, &str)> = Some(BOSS);

impl Fixture {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let (env, cert) = keys(dir);
        let issuer = start(dir, "sqlite://store.db", 5, &env).await;
        add_boss(&dir.join("issuer.toml"));
        Self { tmp, issuer, cert }
    }

    /// The store's `ci` in group `team`, which may pull team/**; ci may also push its own
    /// namespace.
    async fn with_team(self) -> Self {
        let i = &self.issuer;
        let user = json!({"name": "ci", "password": "ci-pw"});
        assert_eq!(api(i, "POST", "/users", AS_BOSS, Some(user)).await.0, 201);
        let team = json!({"name": "team"});
        assert_eq!(api(i, "POST", "/groups", AS_BOSS, Some(team)).await.0, 201);
        let member = json!({"user": "ci"});
        let path = "/groups/team/members";
        assert_eq!(api(i, "POST", path, AS_BOSS, Some(member)).await.0, 201);
        let grant = json!({"group": "team", "name": "team/**", "actions": ["pull"]});
        let (s, g) = api(i, "POST", "/grants", AS_BOSS, Some(grant)).await;
        assert_eq!(s, 201, "{g}");
        assert_eq!(g["type"], "repository", "the default type");
        let own = json!({"user": "ci", "name": "${account}/*", "actions": ["pull", "push"]});
        assert_eq!(api(i, "POST", "/grants", AS_BOSS, Some(own)).await.0, 201);
        self
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        api(&self.issuer, "POST", path, AS_BOSS, Some(body)).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_are_made_once_never_shown_with_their_hash() {
    let f = Fixture::start().await;
    assert!(
        f.tmp.path().join("store.db").is_file(),
        "relative to the config file"
    );
    let (s, user) = f
        .post("/users", json!({"name": "ci", "password": "ci-pw"}))
        .await;
    assert_eq!(s, 201, "{user}");
    assert_eq!(user["name"], "ci");
    assert_eq!(user["admin"], false);
    assert_eq!(user["expires_at"], Value::Null);
    assert!(
        user.get("password").is_none() && !user.to_string().contains("$2"),
        "{user}"
    );
    let (s, e) = f
        .post("/users", json!({"name": "ci", "password": "x"}))
        .await;
    assert_eq!(
        (s, e["errors"][0]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{e}"
    );
    let (s, e) = f
        .post("/users", json!({"name": "alice", "password": "x"}))
        .await;
    assert_eq!(s, 409, "a name of the htpasswd file: {e}");
    assert!(e.to_string().contains("htpasswd"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_are_checked_when_made() {
    let f = Fixture::start().await.with_team().await;
    let (s, e) = f
        .post(
            "/grants",
            json!({"user": "ci", "name": "x", "actions": ["pul"]}),
        )
        .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = f
        .post(
            "/grants",
            json!({"user": "nobody", "name": "x", "actions": ["pull"]}),
        )
        .await;
    assert_eq!(s, 404, "a grant for a user that does not exist: {e}");
    let gone = api(&f.issuer, "DELETE", "/users/nobody", AS_BOSS, None).await;
    assert_eq!(gone.0, 404);
    let (s, listed) = api(&f.issuer, "GET", "/grants", AS_BOSS, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        listed["grants"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn users_are_listed_a_page_at_a_time() {
    let f = Fixture::start().await.with_team().await;
    let (_, page1) = api(&f.issuer, "GET", "/users?limit=1", AS_BOSS, None).await;
    assert_eq!(page1["users"][0]["name"], "boss");
    assert_eq!(page1["next"], "boss");
    let path = "/users?limit=1&after=boss";
    let (_, page2) = api(&f.issuer, "GET", path, AS_BOSS, None).await;
    assert_eq!(page2["users"][0]["name"], "ci");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_carry_exactly_what_the_grants_give() {
    let f = Fixture::start().await.with_team().await;
    // The group's pull, the user's own namespace, nothing else.
    let asks = [
        "repository:team/app:pull,push",
        "repository:ci/tool:pull,push",
        "repository:other:pull",
        "registry:catalog:*",
    ];
    let (s, got) = token(&f.issuer, CI, &asks).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        got,
        access(&[
            ("repository", "team/app", &["pull"]),
            ("repository", "ci/tool", &["pull", "push"])
        ])
    );
    // The admin flag: everything, the catalog included.
    let asks = [
        "repository:any/thing:pull,push,delete",
        "registry:catalog:*",
    ];
    let (_, got) = token(&f.issuer, BOSS, &asks).await;
    assert_eq!(
        got,
        access(&[
            ("repository", "any/thing", &["pull", "push", "delete"]),
            ("registry", "catalog", &["*"])
        ])
    );
    // htpasswd users and [[acl]] rules are as before.
    let alice = ("alice", "alice-pw");
    let (_, got) = token(&f.issuer, alice, &["repository:team/app:pull,push"]).await;
    assert_eq!(got, access(&[("repository", "team/app", &["pull"])]));
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_through_distribution_within_the_grants() {
    let f = Fixture::start().await.with_team().await;
    let dir = f.tmp.path();
    let registry = Registry::start(dir, &f.issuer.realm(), SERVICE, ISSUER, &f.cert).await;
    let layout = dir.join("image");
    let layer = oci_layout(&layout, "latest", b"from the store test");
    let host = registry.host();
    let team_app = format!("docker://{host}/team/app:latest");
    ok(&push(dir, &layout, &team_app, "boss:boss-pw"));
    let pulled = dir.join("pulled");
    ok(&pull(dir, &team_app, &pulled, "ci:ci-pw"));
    assert!(pulled.join("blobs/sha256").join(&layer).is_file());
    let own = format!("docker://{host}/ci/tool:latest");
    ok(&push(dir, &layout, &own, "ci:ci-pw"));
    let other = format!("docker://{host}/team/other:latest");
    let refused = push(dir, &layout, &other, "ci:ci-pw");
    assert!(!refused.status.success(), "ci pushed outside its grants");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_is_for_admins_only() {
    let f = Fixture::start().await.with_team().await;
    let (s, e) = api(&f.issuer, "GET", "/users", Some(CI), None).await;
    assert_eq!(
        (s, e["errors"][0]["code"].as_str()),
        (403, Some("DENIED")),
        "{e}"
    );
    let alice = Some(("alice", "alice-pw"));
    assert_eq!(api(&f.issuer, "GET", "/users", alice, None).await.0, 403);
    assert_eq!(api(&f.issuer, "GET", "/users", None, None).await.0, 401);
    let wrong = Some(("boss", "wrong"));
    assert_eq!(api(&f.issuer, "GET", "/users", wrong, None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_robot_is_refused_saying_why_until_extended() {
    let f = Fixture::start().await;
    let robot =
        json!({"name": "robot", "password": "robot-pw", "expires_at": "2020-01-01T00:00:00Z"});
    assert_eq!(f.post("/users", robot).await.0, 201);
    // Refused after the password check, saying why.
    let creds = ("robot", "robot-pw");
    let (s, msg) = token(&f.issuer, creds, &["repository:team/app:pull"]).await;
    assert_eq!(s, 401);
    assert!(
        msg.as_str()
            .is_some_and(|m| m.contains("expired at 2020-01-01T00:00:00Z")),
        "{msg}"
    );
    let (s, msg) = token(&f.issuer, ("robot", "wrong"), &[]).await;
    assert_eq!(
        (s, msg.as_str()),
        (401, Some("invalid username or password"))
    );
    let extend = json!({"expires_at": null});
    let (s, _) = api(&f.issuer, "PATCH", "/users/robot", AS_BOSS, Some(extend)).await;
    assert_eq!(s, 200);
    assert_eq!(token(&f.issuer, creds, &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn disabling_and_a_new_password_take_effect_at_once() {
    let f = Fixture::start().await.with_team().await;
    let disable = json!({"disabled": true});
    let (s, user) = api(&f.issuer, "PATCH", "/users/ci", AS_BOSS, Some(disable)).await;
    assert_eq!((s, &user["disabled"]), (200, &json!(true)), "{user}");
    let (s, msg) = token(&f.issuer, CI, &["repository:team/app:pull"]).await;
    assert_eq!(s, 401);
    assert!(
        msg.as_str().is_some_and(|m| m.contains("disabled")),
        "{msg}"
    );
    let change = json!({"disabled": false, "password": "ci-pw-2"});
    api(&f.issuer, "PATCH", "/users/ci", AS_BOSS, Some(change)).await;
    assert_eq!(token(&f.issuer, CI, &[]).await.0, 401, "the old password");
    assert_eq!(token(&f.issuer, ("ci", "ci-pw-2"), &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_injection_in_every_name_is_stored_literally() {
    let f = Fixture::start().await.with_team().await;
    let evil_user = "robert'); DROP TABLE users;--";
    let evil_group = "g' OR '1'='1";
    let evil_glob = "x' OR 1=1 --/**";
    let user = json!({"name": evil_user, "password": "pw"});
    assert_eq!(f.post("/users", user).await.0, 201);
    assert_eq!(f.post("/groups", json!({"name": evil_group})).await.0, 201);
    let enc = |s: &str| {
        form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let members = format!("/groups/{}/members", enc(evil_group));
    assert_eq!(f.post(&members, json!({"user": evil_user})).await.0, 201);
    let grant = json!({"group": evil_group, "name": evil_glob, "actions": ["pull"]});
    assert_eq!(f.post("/grants", grant).await.0, 201);
    let path = format!("/users/{}", enc(evil_user));
    let (s, shown) = api(&f.issuer, "GET", &path, AS_BOSS, None).await;
    assert_eq!((s, &shown["name"]), (200, &json!(evil_user)), "{shown}");
    let (_, m) = api(&f.issuer, "GET", &members, AS_BOSS, None).await;
    assert_eq!(m["members"], json!([{"user": evil_user}]));
    let (_, users) = api(&f.issuer, "GET", "/users", AS_BOSS, None).await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["boss", "ci", evil_user],
        "every user is still there"
    );
    let (_, grants) = api(&f.issuer, "GET", "/grants", AS_BOSS, None).await;
    assert!(
        grants["grants"]
            .as_array()
            .expect("grants")
            .iter()
            .any(|g| g["name"] == evil_glob && g["group"] == evil_group),
        "{grants}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_and_unknown_fields_are_400s() {
    let f = Fixture::start().await;
    for bad in ["a:b", "a/b", " a", ""] {
        let (s, e) = f
            .post("/users", json!({"name": bad, "password": "pw"}))
            .await;
        assert_eq!(s, 400, "{bad:?}: {e}");
    }
    let (s, e) = f
        .post(
            "/users",
            json!({"name": "z", "password": "pw", "admn": true}),
        )
        .await;
    assert_eq!(s, 400, "unknown fields are errors: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_group_or_a_user_takes_their_access_away() {
    let f = Fixture::start().await.with_team().await;
    let (_, got) = token(&f.issuer, CI, &["repository:team/app:pull"]).await;
    assert_eq!(got, access(&[("repository", "team/app", &["pull"])]));
    let deleted = api(&f.issuer, "DELETE", "/groups/team", AS_BOSS, None).await;
    assert_eq!(deleted.0, 204);
    let (_, got) = token(&f.issuer, CI, &["repository:team/app:pull"]).await;
    assert_eq!(got, json!([]));
    let deleted = api(&f.issuer, "DELETE", "/users/ci", AS_BOSS, None).await;
    assert_eq!(deleted.0, 204);
    assert_eq!(token(&f.issuer, CI, &[]).await.0, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_is_logged_with_who_made_it_and_no_secret() {
    let f = Fixture::start().await.with_team().await;
    assert_eq!(token(&f.issuer, CI, &[]).await.0, 200);
    assert_eq!(token(&f.issuer, ("ci", "wrong-pw"), &[]).await.0, 401);
    let log = f.issuer.proc.log_text();
    assert!(
        log.contains("admin API: user created by=\"boss\" user=\"ci\""),
        "{log}"
    );
    for secret in ["boss-pw", "ci-pw", "wrong-pw", "alice-pw", "$2b$"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_manages_the_store_and_imports_htpasswd() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (env, _) = keys(dir);
    let cfg = dir.join("issuer.toml");
    let cfg_s = cfg.to_str().expect("utf8");
    std::fs::write(&cfg, config("sqlite://store.db", 5)).expect("config");
    write_users(dir, &[("alice", "alice-pw")]);
    // An htpasswd file to move over, in the $2y$ spelling Apache's htpasswd writes.
    let h = |u: &str, p: &str| htpasswd_line(u, p).replacen("$2b$", "$2y$", 1);
    std::fs::write(
        dir.join("old.htpasswd"),
        h("dave", "dave-pw") + &h("erin", "erin-pw"),
    )
    .expect("old");
    let out = ok(&cli(
        &[
            "users",
            "import",
            dir.join("old.htpasswd").to_str().expect("utf8"),
            "--config",
            cfg_s,
        ],
        "",
    ));
    let _ = out;
    let again = cli(
        &[
            "users",
            "import",
            dir.join("old.htpasswd").to_str().expect("utf8"),
            "--config",
            cfg_s,
        ],
        "",
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("imported 0 user(s)"),
        "{again:?}"
    );
    ok(&cli(
        &[
            "users",
            "add",
            "frank",
            "--expires",
            "1h",
            "--config",
            cfg_s,
        ],
        "frank-pw\n",
    ));
    ok(&cli(
        &["users", "passwd", "frank", "--config", cfg_s],
        "frank-pw-2\n",
    ));
    ok(&cli(&["users", "disable", "erin", "--config", cfg_s], ""));
    let listed = ok(&cli(&["users", "list", "--config", cfg_s], ""));
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 3, "{listed}");
    assert_eq!(lines[0], "dave\tnever used");
    assert_eq!(lines[1], "erin\tdisabled, never used");
    assert!(lines[2].starts_with("frank\texpires 20"), "{listed}");
    ok(&cli(&["groups", "add", "ops", "--config", cfg_s], ""));
    assert_eq!(
        ok(&cli(
            &["groups", "members", "ops", "--add", "frank", "--config", cfg_s],
            ""
        )),
        "frank\n"
    );
    let id = ok(&cli(
        &[
            "grants",
            "add",
            "--group",
            "ops",
            "ops/**",
            "pull,push",
            "--config",
            cfg_s,
        ],
        "",
    ));
    let id = id.trim().to_string();
    let grants = ok(&cli(&["grants", "list", "--config", cfg_s], ""));
    assert_eq!(
        grants,
        format!("{id}\tgroup ops\trepository ops/**\tpull,push\n")
    );

    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let issuer = Issuer::start(dir, &config("sqlite://store.db", 5), &env).await;
    assert_eq!(
        token(&issuer, ("dave", "dave-pw"), &[]).await.0,
        200,
        "an imported $2y$ hash"
    );
    let (s, got) = token(
        &issuer,
        ("frank", "frank-pw-2"),
        &["repository:ops/x:pull,push"],
    )
    .await;
    assert_eq!(
        (s, got),
        (200, access(&[("repository", "ops/x", &["pull", "push"])]))
    );
    assert_eq!(
        token(&issuer, ("frank", "frank-pw"), &[]).await.0,
        401,
        "the old password"
    );
    let (s, msg) = token(&issuer, ("erin", "erin-pw"), &[]).await;
    assert_eq!(s, 401);
    assert!(
        msg.as_str().is_some_and(|m| m.contains("disabled")),
        "{msg}"
    );
    ok(&cli(&["grants", "delete", &id, "--config", cfg_s], ""));
    drop(issuer);

    // Errors name what is wrong.
    let out = cli(&["users", "delete", "nobody", "--config", cfg_s], "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("user nobody not found"),
        "{out:?}"
    );
    let out = cli(&["users", "add", "gina", "--config", cfg_s], "");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no password on standard input"),
        "{out:?}"
    );
    let out = cli(&["users", "add", "alice", "--config", cfg_s], "pw\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("htpasswd file"),
        "{out:?}"
    );
    let out = cli(
        &[
            "users",
            "list",
            "--data-dir",
            dir.join("nowhere").to_str().expect("utf8"),
        ],
        "",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("token-issuer dev --data-dir"),
        "{out:?}"
    );
    // One name in two sources stops start-up, naming it.
    write_users(dir, &[("alice", "alice-pw"), ("dave", "x")]);
    let mut clash = Issuer::spawn(dir, &config("sqlite://store.db", 5), &env);
    let (status, log) = clash.proc.wait_exit();
    assert!(!status.success());
    assert!(
        log.contains("user \"dave\" is both in identity.htpasswd"),
        "{log}"
    );
    assert!(log.contains("and in the store sqlite://"), "{log}");
}
