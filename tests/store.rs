//! The database store with SQLite: users, groups and grants through the admin API and the CLI,
//! tokens through distribution 2.8 with skopeo. PostgreSQL: tests/store_postgres.rs.

mod common;

use common::store_api::*;
use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_admin_api_and_skopeo_through_distribution() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (env, cert) = keys(dir);
    let cfg_path = dir.join("issuer.toml");
    let issuer = start(dir, "sqlite://store.db", 5, &env).await;
    // The first admin comes from the CLI, against the same SQLite file the issuer has open.
    add_boss(&cfg_path);
    assert!(
        dir.join("store.db").is_file(),
        "relative to the config file"
    );
    let boss = Some(BOSS);

    // Users, a group, grants.
    let (s, user) = api(
        &issuer,
        "POST",
        "/users",
        boss,
        Some(json!({"name": "ci", "password": "ci-pw"})),
    )
    .await;
    assert_eq!(s, 201, "{user}");
    assert_eq!(user["name"], "ci");
    assert_eq!(user["admin"], false);
    assert_eq!(user["expires_at"], Value::Null);
    assert!(
        user.get("password").is_none() && !user.to_string().contains("$2"),
        "{user}"
    );
    let (s, e) = api(
        &issuer,
        "POST",
        "/users",
        boss,
        Some(json!({"name": "ci", "password": "x"})),
    )
    .await;
    assert_eq!(
        (s, e["errors"][0]["code"].as_str()),
        (409, Some("CONFLICT")),
        "{e}"
    );
    let (s, e) = api(
        &issuer,
        "POST",
        "/users",
        boss,
        Some(json!({"name": "alice", "password": "x"})),
    )
    .await;
    assert_eq!(s, 409, "a name of the htpasswd file: {e}");
    assert!(e.to_string().contains("htpasswd"), "{e}");
    assert_eq!(
        api(
            &issuer,
            "POST",
            "/groups",
            boss,
            Some(json!({"name": "team"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api(
            &issuer,
            "POST",
            "/groups/team/members",
            boss,
            Some(json!({"user": "ci"}))
        )
        .await
        .0,
        201
    );
    let (s, g1) = api(
        &issuer,
        "POST",
        "/grants",
        boss,
        Some(json!({"group": "team", "name": "team/**", "actions": ["pull"]})),
    )
    .await;
    assert_eq!(s, 201, "{g1}");
    assert_eq!(g1["type"], "repository", "the default type");
    let (s, _) = api(
        &issuer,
        "POST",
        "/grants",
        boss,
        Some(json!({"user": "ci", "name": "${account}/*", "actions": ["pull", "push"]})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, e) = api(
        &issuer,
        "POST",
        "/grants",
        boss,
        Some(json!({"user": "ci", "name": "x", "actions": ["pul"]})),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = api(
        &issuer,
        "POST",
        "/grants",
        boss,
        Some(json!({"user": "nobody", "name": "x", "actions": ["pull"]})),
    )
    .await;
    assert_eq!(s, 404, "a grant for a user that does not exist: {e}");
    assert_eq!(
        api(&issuer, "DELETE", "/users/nobody", boss, None).await.0,
        404
    );
    let (s, listed) = api(&issuer, "GET", "/grants", boss, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        listed["grants"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // Pagination: one per page, `next` leads on.
    let (_, page1) = api(&issuer, "GET", "/users?limit=1", boss, None).await;
    assert_eq!(page1["users"][0]["name"], "boss");
    assert_eq!(page1["next"], "boss");
    let (_, page2) = api(&issuer, "GET", "/users?limit=1&after=boss", boss, None).await;
    assert_eq!(page2["users"][0]["name"], "ci");

    // Exactly what the grants give: the group's pull, the user's own namespace, nothing else.
    let (s, got) = token(
        &issuer,
        CI,
        &[
            "repository:team/app:pull,push",
            "repository:ci/tool:pull,push",
            "repository:other:pull",
            "registry:catalog:*",
        ],
    )
    .await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        got,
        access(&[
            ("repository", "team/app", &["pull"]),
            ("repository", "ci/tool", &["pull", "push"])
        ])
    );
    // The admin flag: everything, the catalog included.
    let (_, got) = token(
        &issuer,
        BOSS,
        &[
            "repository:any/thing:pull,push,delete",
            "registry:catalog:*",
        ],
    )
    .await;
    assert_eq!(
        got,
        access(&[
            ("repository", "any/thing", &["pull", "push", "delete"]),
            ("registry", "catalog", &["*"])
        ])
    );
    // htpasswd users and [[acl]] rules are as before.
    let (_, got) = token(
        &issuer,
        ("alice", "alice-pw"),
        &["repository:team/app:pull,push"],
    )
    .await;
    assert_eq!(got, access(&[("repository", "team/app", &["pull"])]));

    // Through a real registry and client.
    let registry = Registry::start(dir, &issuer.realm(), SERVICE, ISSUER, &cert).await;
    let layout = dir.join("image");
    let layer = oci_layout(&layout, "latest", b"from the store test");
    let host = registry.host();
    ok(&push(
        dir,
        &layout,
        &format!("docker://{host}/team/app:latest"),
        "boss:boss-pw",
    ));
    let pulled = dir.join("pulled");
    ok(&pull(
        dir,
        &format!("docker://{host}/team/app:latest"),
        &pulled,
        "ci:ci-pw",
    ));
    assert!(pulled.join("blobs/sha256").join(&layer).is_file());
    ok(&push(
        dir,
        &layout,
        &format!("docker://{host}/ci/tool:latest"),
        "ci:ci-pw",
    ));
    let refused = push(
        dir,
        &layout,
        &format!("docker://{host}/team/other:latest"),
        "ci:ci-pw",
    );
    assert!(!refused.status.success(), "ci pushed outside its grants");

    // The admin API: admins only.
    let (s, e) = api(&issuer, "GET", "/users", Some(CI), None).await;
    assert_eq!(
        (s, e["errors"][0]["code"].as_str()),
        (403, Some("DENIED")),
        "{e}"
    );
    assert_eq!(
        api(&issuer, "GET", "/users", Some(("alice", "alice-pw")), None)
            .await
            .0,
        403
    );
    assert_eq!(api(&issuer, "GET", "/users", None, None).await.0, 401);
    assert_eq!(
        api(&issuer, "GET", "/users", Some(("boss", "wrong")), None)
            .await
            .0,
        401
    );

    // A robot account that has expired: refused after the password check, saying why.
    let (s, _) = api(
        &issuer,
        "POST",
        "/users",
        boss,
        Some(
            json!({"name": "robot", "password": "robot-pw", "expires_at": "2020-01-01T00:00:00Z"}),
        ),
    )
    .await;
    assert_eq!(s, 201);
    let (s, msg) = token(
        &issuer,
        ("robot", "robot-pw"),
        &["repository:team/app:pull"],
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        msg.as_str()
            .is_some_and(|m| m.contains("expired at 2020-01-01T00:00:00Z")),
        "{msg}"
    );
    let (s, msg) = token(&issuer, ("robot", "wrong"), &[]).await;
    assert_eq!(
        (s, msg.as_str()),
        (401, Some("invalid username or password"))
    );
    // Extended: works.
    let (s, _) = api(
        &issuer,
        "PATCH",
        "/users/robot",
        boss,
        Some(json!({"expires_at": null})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(token(&issuer, ("robot", "robot-pw"), &[]).await.0, 200);

    // Disabled through this issuer's API: refused at once.
    let (s, user) = api(
        &issuer,
        "PATCH",
        "/users/ci",
        boss,
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!((s, &user["disabled"]), (200, &json!(true)), "{user}");
    let (s, msg) = token(&issuer, CI, &["repository:team/app:pull"]).await;
    assert_eq!(s, 401);
    assert!(
        msg.as_str().is_some_and(|m| m.contains("disabled")),
        "{msg}"
    );
    // A new password takes over at once too.
    api(
        &issuer,
        "PATCH",
        "/users/ci",
        boss,
        Some(json!({"disabled": false, "password": "ci-pw-2"})),
    )
    .await;
    assert_eq!(token(&issuer, CI, &[]).await.0, 401, "the old password");
    assert_eq!(token(&issuer, ("ci", "ci-pw-2"), &[]).await.0, 200);

    // SQL injection in every name field is stored literally.
    let evil_user = "robert'); DROP TABLE users;--";
    let evil_group = "g' OR '1'='1";
    let evil_glob = "x' OR 1=1 --/**";
    assert_eq!(
        api(
            &issuer,
            "POST",
            "/users",
            boss,
            Some(json!({"name": evil_user, "password": "pw"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api(
            &issuer,
            "POST",
            "/groups",
            boss,
            Some(json!({"name": evil_group}))
        )
        .await
        .0,
        201
    );
    let enc = |s: &str| {
        form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    let members = format!("/groups/{}/members", enc(evil_group));
    assert_eq!(
        api(
            &issuer,
            "POST",
            &members,
            boss,
            Some(json!({"user": evil_user}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        api(
            &issuer,
            "POST",
            "/grants",
            boss,
            Some(json!({"group": evil_group, "name": evil_glob, "actions": ["pull"]}))
        )
        .await
        .0,
        201
    );
    let (s, shown) = api(
        &issuer,
        "GET",
        &format!("/users/{}", enc(evil_user)),
        boss,
        None,
    )
    .await;
    assert_eq!((s, &shown["name"]), (200, &json!(evil_user)), "{shown}");
    let (_, m) = api(&issuer, "GET", &members, boss, None).await;
    assert_eq!(m["members"], json!([{"user": evil_user}]));
    let (_, users) = api(&issuer, "GET", "/users", boss, None).await;
    let names: Vec<&str> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["boss", "ci", evil_user, "robot"],
        "every user is still there"
    );
    let (_, grants) = api(&issuer, "GET", "/grants", boss, None).await;
    assert!(
        grants["grants"]
            .as_array()
            .expect("grants")
            .iter()
            .any(|g| g["name"] == evil_glob && g["group"] == evil_group),
        "{grants}"
    );
    for bad in ["a:b", "a/b", " a", ""] {
        let (s, e) = api(
            &issuer,
            "POST",
            "/users",
            boss,
            Some(json!({"name": bad, "password": "pw"})),
        )
        .await;
        assert_eq!(s, 400, "{bad:?}: {e}");
    }
    let (s, e) = api(
        &issuer,
        "POST",
        "/users",
        boss,
        Some(json!({"name": "z", "password": "pw", "admn": true})),
    )
    .await;
    assert_eq!(s, 400, "unknown fields are errors: {e}");

    // Deleting a group takes its grants away; deleting a user, the user.
    assert_eq!(
        api(&issuer, "DELETE", "/groups/team", boss, None).await.0,
        204
    );
    let (_, got) = token(&issuer, ("ci", "ci-pw-2"), &["repository:team/app:pull"]).await;
    assert_eq!(got, json!([]));
    assert_eq!(api(&issuer, "DELETE", "/users/ci", boss, None).await.0, 204);
    assert_eq!(token(&issuer, ("ci", "ci-pw-2"), &[]).await.0, 401);

    // Every change was logged with who made it; no password or hash ever was.
    let log = issuer.proc.log_text();
    assert!(
        log.contains("admin API: user created by=\"boss\" user=\"ci\""),
        "{log}"
    );
    for secret in ["boss-pw", "ci-pw", "robot-pw", "alice-pw", "$2b$"] {
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
    assert_eq!(lines[0], "dave\t");
    assert_eq!(lines[1], "erin\tdisabled");
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
