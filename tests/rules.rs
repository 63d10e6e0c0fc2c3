//! Rules that say what teams mean (docs/rules.md): `${account}` as whole path segments for a CI
//! job named after its repository, several services from one issuer, client networks, store
//! grants per service, and `explain` agreeing with the realm on one table of decisions across
//! an htpasswd user, store users (with grants and the admin flag), GitHub-shaped OIDC
//! identities, the anonymous caller, two services and four networks.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use common::idp::Idp;
use common::store_api::{add_boss, api, cli, ok, BOSS};
use common::*;
use serde_json::{json, Value};

const ISSUER: &str = "issuer.test";
const PROD: &str = "registry.test";
const STAGING: &str = "staging.test";

const RULES: &str = r#"
[[acl]]   # 0: the anonymous caller pulls public images, from the build network only
account = ""
ip = ["10.0.0.0/8"]
name = "public/*"
actions = ["pull"]

[[acl]]   # 1: each CI job pushes its own repository and what lies below it
group = "my-org"
name = "${account}/**"
actions = ["pull", "push"]

[[acl]]   # 2: on staging, anyone signed in may pull and push staging/**
account = "*"
service = "staging.test"
name = "staging/**"
actions = ["pull", "push"]

[[acl]]   # 3: the team pushes only from the runners' networks
group = "team"
ip = ["192.0.2.0/24", "2001:db8::/32"]
name = "team/*"
actions = ["pull", "push"]

[[acl]]   # 4
account = "alice"
name = "alice/*"
actions = ["*"]

[[acl]]   # 5: everyone signed in reads public images
account = "*"
name = "public/*"
actions = ["pull"]

[[acl]]   # 6: never applies, rule 5 takes every request it would
account = "alice"
name = "public/app"
actions = ["push"]
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An issuer serving two services: alice in htpasswd; the store's admin `boss`, `ci` in group
/// `team` and a store group `my-org` (named like the OIDC jobs' owner) with grants; GitHub
/// Actions' ID tokens as passwords; the client address from `X-Forwarded-For`.
struct Fixture {
    tmp: tempfile::TempDir,
    idp: Idp,
    issuer: Issuer,
}

impl Fixture {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let idp = Idp::start().await;
        gen_cert(dir, ISSUER);
        write_users(dir, &[("alice", "alice-pw")]);
        let cfg = ConfigBuilder::new(ISSUER, PROD)
            .services(&[PROD, STAGING])
            .section("[http]\ntrusted_proxies = [\"127.0.0.1\"]")
            .section("[store]\nurl = \"sqlite://store.db\"")
            .section(&format!(
                "[[oidc]]\nissuer = {:?}\naudiences = [\"{PROD}\"]\nusername = \"{{repository}}\"\n\
                 groups = [\"{{repository_owner}}\"]\n[oidc.require]\nrepository_owner = \"my-org\"",
                idp.issuer()
            ))
            .section(RULES)
            .build();
        std::fs::write(dir.join("issuer.toml"), &cfg).expect("config");
        add_boss(&dir.join("issuer.toml"));
        // `[identity]` is the builder's (htpasswd); the anonymous caller is let in here.
        let issuer =
            Issuer::start(dir, &cfg, &[("TOKEN_ISSUER_IDENTITY__ANONYMOUS", "true")]).await;
        let f = Self { tmp, idp, issuer };
        for (path, body) in [
            ("/users", json!({"name": "ci", "password": "ci-pw"})),
            ("/groups", json!({"name": "team"})),
            ("/groups/team/members", json!({"user": "ci"})),
            ("/groups", json!({"name": "my-org"})),
            (
                "/grants",
                json!({"group": "team", "name": "team/**", "actions": ["pull"]}),
            ),
            (
                "/grants",
                json!({"user": "ci", "name": "${account}/*", "actions": ["pull", "push"]}),
            ),
            (
                "/grants",
                json!({"user": "ci", "service": STAGING, "name": "releases/*", "actions": ["push"]}),
            ),
            (
                "/grants",
                json!({"group": "my-org", "name": "shared/*", "actions": ["pull"]}),
            ),
        ] {
            let (s, b) = api(&f.issuer, "POST", path, Some(BOSS), Some(body)).await;
            assert_eq!(s, 201, "{path}: {b}");
        }
        f
    }

    /// GitHub Actions' ID token for a workflow of `repository`.
    fn github(&self, repository: &str) -> String {
        let claims = json!({
            "iss": self.idp.issuer(), "aud": PROD, "sub": format!("repo:{repository}:ref:refs/heads/main"),
            "repository": repository, "repository_owner": "my-org", "ref": "refs/heads/main",
            "iat": now(), "nbf": now() - 5, "exp": now() + 300,
        });
        self.idp.sign("rsa-1", &claims)
    }

    /// The realm's answer: the status and the token's claims (or the error body).
    async fn realm(
        &self,
        who: &Who,
        service: Option<&str>,
        ip: &str,
        scopes: &[&str],
    ) -> (u16, Value) {
        let mut q: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", *s)).collect();
        if let Some(s) = service {
            q.push(("service", s));
        }
        let mut req = reqwest::Client::new()
            .get(self.issuer.realm())
            .query(&q)
            .header("X-Forwarded-For", ip);
        let password = match who {
            Who::Anonymous => None,
            Who::User(_, pw) => Some(pw.to_string()),
            Who::Job(repository) => Some(self.github(repository)),
        };
        if let Some(pw) = password {
            req = req.basic_auth(who.name(), Some(pw));
        }
        let r = req.send().await.expect("realm");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        match body["token"].as_str() {
            Some(t) => (status, jwt_claims(t)),
            None => (status, body),
        }
    }

    /// `POST /admin/v1/explain` as boss.
    async fn explain(&self, body: Value) -> (u16, Value) {
        api(&self.issuer, "POST", "/explain", Some(BOSS), Some(body)).await
    }

    fn config(&self) -> String {
        self.tmp.path().join("issuer.toml").display().to_string()
    }
}

enum Who {
    Anonymous,
    /// A user with a password (htpasswd or store).
    User(&'static str, &'static str),
    /// A GitHub Actions job of this repository: OIDC, named after it, in group `my-org`.
    Job(&'static str),
}

impl Who {
    fn name(&self) -> &'static str {
        match self {
            Self::Anonymous => "",
            Self::User(name, _) => name,
            // The Basic user of an ID token is not its name: the token's claims are.
            Self::Job(_) => "oidc",
        }
    }

    /// What `explain` is told: a user to look up, or a job's name and groups as given.
    fn explain_body(&self, service: Option<&str>, ip: &str, scopes: &[&str]) -> Value {
        let mut b = json!({"scopes": scopes, "ip": ip});
        match self {
            Self::Anonymous => {}
            Self::User(name, _) => {
                b["user"] = (*name).into();
                b["resolve"] = true.into();
            }
            Self::Job(repository) => {
                b["user"] = (*repository).into();
                b["groups"] = json!(["my-org"]);
            }
        }
        if let Some(s) = service {
            b["service"] = s.into();
        }
        b
    }
}

const ALICE: Who = Who::User("alice", "alice-pw");
const CI: Who = Who::User("ci", "ci-pw");
const BOSS_USER: Who = Who::User("boss", "boss-pw");
const APP: Who = Who::Job("my-org/app");
const OTHER: Who = Who::Job("my-org/other");

/// Networks: the build network, the runners' (v4 and v6), and outside.
const BUILD: &str = "10.1.2.3";
const RUNNER: &str = "192.0.2.10";
const RUNNER6: &str = "2001:db8::5";
const OUTSIDE: &str = "203.0.113.5";

type Case = (
    Who,
    Option<&'static str>,
    &'static str,
    &'static str,
    &'static [&'static str],
);

/// Who asks, for which service (None: the default), from where, for what, and what the policy
/// above grants.
#[rustfmt::skip]
fn table() -> Vec<Case> {
    let p = Some(PROD);
    let s = Some(STAGING);
    vec![
        (Who::Anonymous, p, BUILD, "repository:public/app:pull", &["pull"]),
        (Who::Anonymous, p, BUILD, "repository:public/app:pull,push", &["pull"]),
        (Who::Anonymous, p, OUTSIDE, "repository:public/app:pull", &[]),
        (Who::Anonymous, p, "fd00::1", "repository:public/app:pull", &[]),
        (Who::Anonymous, p, BUILD, "repository:private/x:pull", &[]),
        (Who::Anonymous, s, BUILD, "repository:staging/x:pull", &[]),
        (ALICE, p, OUTSIDE, "repository:alice/app:pull,push,delete", &["pull", "push", "delete"]),
        (ALICE, p, OUTSIDE, "repository:public/app:pull,push", &["pull"]),
        (ALICE, p, BUILD, "repository:public/app:pull", &["pull"]),
        (ALICE, p, OUTSIDE, "repository:bob/app:pull", &[]),
        (ALICE, s, OUTSIDE, "repository:staging/x:pull,push", &["pull", "push"]),
        (ALICE, p, OUTSIDE, "repository:staging/x:pull", &[]),
        (ALICE, None, OUTSIDE, "repository:staging/x:pull", &[]),
        (ALICE, s, OUTSIDE, "repository:alice/app:push", &["push"]),
        (ALICE, p, RUNNER, "repository:team/app:push", &[]),
        (CI, p, RUNNER, "repository:team/app:pull,push", &["pull", "push"]),
        (CI, p, RUNNER6, "repository:team/app:push", &["push"]),
        (CI, p, OUTSIDE, "repository:team/app:pull,push", &["pull"]),
        (CI, p, OUTSIDE, "repository:team/a/b:pull,push", &["pull"]),
        (CI, p, RUNNER, "repository:team/app:delete", &[]),
        (CI, p, OUTSIDE, "repository:ci/app:pull,push", &["pull", "push"]),
        (CI, p, OUTSIDE, "repository:releases/x:push", &[]),
        (CI, s, OUTSIDE, "repository:releases/x:push", &["push"]),
        (CI, s, OUTSIDE, "repository:staging/y:pull", &["pull"]),
        (CI, p, OUTSIDE, "repository:public/app:pull,push", &["pull"]),
        (CI, p, OUTSIDE, "repository:other/x:pull", &[]),
        (CI, p, OUTSIDE, "registry:catalog:*", &[]),
        (BOSS_USER, p, OUTSIDE, "repository:anything/x:pull,push,delete", &["pull", "push", "delete"]),
        (BOSS_USER, p, OUTSIDE, "repository:public/app:push", &[]),
        (BOSS_USER, s, OUTSIDE, "repository:staging/z:delete", &[]),
        (BOSS_USER, p, OUTSIDE, "registry:catalog:*", &["*"]),
        (APP, p, OUTSIDE, "repository:my-org/app:pull,push", &["pull", "push"]),
        (APP, p, OUTSIDE, "repository:my-org/app/cache:push", &["push"]),
        (APP, p, OUTSIDE, "repository:my-org/other:push", &[]),
        (APP, p, OUTSIDE, "repository:my-org/app2:push", &[]),
        (APP, p, OUTSIDE, "repository:my-org/application:pull", &[]),
        (APP, p, OUTSIDE, "repository:my-org:pull", &[]),
        (APP, s, OUTSIDE, "repository:staging/x:push", &["push"]),
        (APP, p, OUTSIDE, "repository:public/app:pull", &["pull"]),
        (APP, p, OUTSIDE, "repository:shared/lib:pull,push", &["pull"]),
        (APP, p, OUTSIDE, "repository:team/app:pull", &[]),
        (OTHER, p, OUTSIDE, "repository:my-org/other/x:pull,push", &["pull", "push"]),
        (OTHER, p, OUTSIDE, "repository:my-org/app:push", &[]),
    ]
}

/// The actions the token grants on `scope`'s resource.
fn granted(claims: &Value, scope: &str) -> Vec<String> {
    let mut parts = scope.rsplitn(2, ':');
    let _actions = parts.next();
    let (kind, name) = parts.next().and_then(|r| r.split_once(':')).expect("scope");
    claims["access"]
        .as_array()
        .expect("access")
        .iter()
        .find(|a| a["type"] == kind && a["name"] == name)
        .map(|a| serde_json::from_value(a["actions"].clone()).expect("actions"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_realm_and_explain_agree_on_every_case_of_the_table() {
    let f = Fixture::start().await;
    let cases = table();
    assert!(cases.len() >= 40, "{}", cases.len());
    for (who, service, ip, scope, want) in &cases {
        let case = format!("{} at {service:?} from {ip}: {scope}", who.name());
        let (status, claims) = f.realm(who, *service, ip, &[scope]).await;
        assert_eq!(status, 200, "{case}: {claims}");
        assert_eq!(granted(&claims, scope), *want, "realm, {case}");
        let (status, e) = f.explain(who.explain_body(*service, ip, &[scope])).await;
        assert_eq!(status, 200, "{case}: {e}");
        assert_eq!(
            e["scopes"][0]["granted"],
            json!(want),
            "explain, {case}: {e:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_is_the_audience_of_its_tokens() {
    let f = Fixture::start().await;
    let scope = ["repository:alice/app:pull"];
    for (asked, aud) in [(Some(STAGING), STAGING), (Some(PROD), PROD), (None, PROD)] {
        let (status, claims) = f.realm(&ALICE, asked, OUTSIDE, &scope).await;
        assert_eq!(
            (status, claims["aud"].as_str()),
            (200, Some(aud)),
            "{asked:?}"
        );
    }
    let (status, e) = f.realm(&ALICE, Some("other.test"), OUTSIDE, &scope).await;
    assert_eq!(status, 400, "{e}");
    let message = e["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("\"other.test\" is not served here")
            && message.contains(PROD)
            && message.contains(STAGING),
        "{message}"
    );
    let (status, e) = f
        .explain(json!({"user": "alice", "service": "other.test", "scopes": scope}))
        .await;
    assert_eq!(status, 400, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_names_the_deciding_rule_and_why_earlier_ones_passed() {
    let f = Fixture::start().await;
    let body = ALICE.explain_body(Some(PROD), OUTSIDE, &["repository:public/app:pull,push"]);
    let (status, e) = f.explain(body).await;
    assert_eq!(status, 200, "{e}");
    let d = &e["scopes"][0];
    assert_eq!(d["decided_by"], "acl[5]", "{e:#}");
    assert_eq!(
        d["rule"]["text"],
        "{ account = \"*\", name = \"public/*\", actions = [\"pull\"] }"
    );
    let why: Vec<(u64, &str)> = d["passed"]
        .as_array()
        .expect("passed")
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().expect("n"),
                p["condition"].as_str().expect("c"),
            )
        })
        .collect();
    assert_eq!(
        why,
        [
            (0, "account"),
            (1, "group"),
            (2, "name"),
            (3, "group"),
            (4, "name")
        ]
    );
    assert_eq!(
        (e["source"].as_str(), e["user"].as_str()),
        (Some("htpasswd"), Some("alice"))
    );
    // A store grant is named by its id.
    let (_, e) = f
        .explain(CI.explain_body(Some(STAGING), OUTSIDE, &["repository:releases/x:push"]))
        .await;
    let (_, grants) = api(&f.issuer, "GET", "/grants", Some(BOSS), None).await;
    let release = grants["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .find(|g| g["name"] == "releases/*")
        .expect("the releases grant");
    assert_eq!(release["service"], STAGING);
    assert_eq!(e["scopes"][0]["grants"], json!([release["id"]]), "{e:#}");
    assert_eq!(e["groups"], json!(["team"]), "resolved from the store");
    // Only an admin may ask.
    let (status, _) = api(
        &f.issuer,
        "POST",
        "/explain",
        Some(("ci", "ci-pw")),
        Some(json!({"scopes": []})),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_explains_and_lints_without_a_server() {
    let f = Fixture::start().await;
    let config = f.config();
    let out = ok(&cli(
        &[
            "explain",
            "--config",
            &config,
            "--user",
            "my-org/app",
            "--group",
            "my-org",
            "--scope",
            "repository:my-org/app/cache:pull,push",
            "--scope",
            "repository:my-org/app2:push",
        ],
        "",
    ));
    assert!(
        out.starts_with("user \"my-org/app\" (given), groups [my-org], service \"registry.test\""),
        "{out}"
    );
    assert!(
        out.contains("repository:my-org/app/cache:pull,push\n  granted: pull,push\n  decided by: acl[1] { group = \"my-org\", name = \"${account}/**\""),
        "{out}"
    );
    assert!(
        out.contains(
            "repository:my-org/app2:push\n  granted: nothing\n  decided by: no rule; no store grant allows it"
        ),
        "{out}"
    );
    assert!(out.contains("  acl[1] { group = \"my-org\", name = \"${account}/**\", actions = [\"pull\", \"push\"] }: the name does not match"), "{out}");
    let lint = cli(&["explain", "--config", &config, "--lint"], "");
    let text = String::from_utf8_lossy(&lint.stdout);
    assert_eq!(lint.status.code(), Some(1), "{text}");
    assert_eq!(
        text.trim(),
        "warning: rule acl[6] { account = \"alice\", name = \"public/app\", actions = [\"push\"] } never applies: rule acl[5] { account = \"*\", name = \"public/*\", actions = [\"pull\"] } matches every request it would"
    );
    assert!(
        f.issuer.proc.log_text().contains("rule acl[6]"),
        "the warning at start-up too"
    );
    let resolved = ok(&cli(
        &[
            "explain",
            "--config",
            &config,
            "--user",
            "ci",
            "--resolve",
            "--ip",
            RUNNER,
            "--scope",
            "repository:team/app:push",
            "--json",
        ],
        "",
    ));
    let v: Value = serde_json::from_str(&resolved).expect("json");
    assert_eq!(
        (v["source"].as_str(), v["scopes"][0]["granted"].clone()),
        (Some("store"), json!(["push"]))
    );
}

/// Distribution 2.8 in `dir` for `service`, trusting this issuer (its certificate in `certs`).
async fn registry_for(f: &Fixture, dir: &Path, service: &str) -> Registry {
    std::fs::create_dir_all(dir).expect("dir");
    let bundle = f.tmp.path().join(format!("{ISSUER}.crt"));
    Registry::start(dir, &f.issuer.realm(), service, ISSUER, &bundle).await
}

#[tokio::test(flavor = "multi_thread")]
async fn one_issuer_serves_a_production_and_a_staging_registry() {
    let f = Fixture::start().await;
    let dir = f.tmp.path();
    let prod = registry_for(&f, &dir.join("prod"), PROD).await;
    let staging = registry_for(&f, &dir.join("staging"), STAGING).await;
    let layout = dir.join("layout");
    oci_layout(&layout, "latest", b"one issuer, two registries");
    let to = |r: &Registry, name: &str| format!("docker://{}/{name}:v1", r.host());
    ok(&push(
        dir,
        &layout,
        &to(&staging, "staging/app"),
        "alice:alice-pw",
    ));
    ok(&push(
        dir,
        &layout,
        &to(&prod, "alice/app"),
        "alice:alice-pw",
    ));
    let refused = push(dir, &layout, &to(&prod, "staging/app"), "alice:alice-pw");
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        !refused.status.success() && (said.contains("denied") || said.contains("unauthorized")),
        "staging/** is staging's only: {said}"
    );
}
