//! The realm over HTTP, against the real binary: statuses, bodies, headers, claims; and
//! start-up refusals that name the setting.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use token_issuer::keys::jwk::Jwks;
use token_issuer::token::{Claims, TrustedKeys};

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn config(dir: &Path, extra: &str) -> String {
    write_users(dir, &[("alice", "alice-pw"), ("bob", "bob-pw")]);
    ConfigBuilder::new(ISSUER, SERVICE)
        .token("ttl_seconds = 900")
        .keys(&format!("kid_file = \"{ISSUER}.kid\""))
        .allow("alice", "org/**", &["pull", "push"])
        .allow("*", "${account}/*", &["*"])
        .rule("bob", Some("registry"), "catalog", &["*"])
        .section(extra)
        .build()
}

/// At debug level, so the secrecy check below sees every line a request can log.
async fn start(dir: &Path) -> Issuer {
    gen_cert(dir, ISSUER);
    Issuer::start(dir, &config(dir, ""), &[("TOKEN_ISSUER_LOG", "debug")]).await
}

async fn trusted(issuer: &Issuer) -> TrustedKeys {
    let jwks: Jwks = reqwest::get(format!("{}/.well-known/jwks.json", issuer.url()))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    let mut t = TrustedKeys::default();
    for k in &jwks.keys {
        t.add(&k.kid, k.public_key().expect("P-256 JWK"));
    }
    t
}

fn decode(trusted: &TrustedKeys, token: &str) -> Claims {
    trusted
        .verify(
            token,
            ISSUER,
            SERVICE,
            Duration::from_secs(0),
            SystemTime::now(),
        )
        .expect("token verifies against the published JWKS")
}

#[tokio::test(flavor = "multi_thread")]
async fn realm_statuses_bodies_and_claims() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = start(tmp.path()).await;
    let keys = trusted(&issuer).await;
    let c = reqwest::Client::new();
    let realm = issuer.realm();

    // No credentials: 401 with a Basic challenge and the registry error body.
    let r = c
        .get(&realm)
        .query(&[("service", SERVICE)])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .expect("header")
        .to_string();
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    // Not the code's bare default text ("authentication required"), which docker turns into a
    // bare code and retries: a message that says what to do.
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("no credentials") && message.contains("docker login"),
        "{message}"
    );

    // Malformed Basic credentials: a 401 with the challenge, like missing ones.
    for bad in ["Basic !!!", "Basic dXNlcm5vY29sb24=", "Basic /w=="] {
        let r = c
            .get(&realm)
            .header("Authorization", bad)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{bad}");
        assert!(r.headers().contains_key("www-authenticate"), "{bad}");
    }

    // Wrong password and unknown user: both 401, same message.
    for (u, p) in [("alice", "nope"), ("mallory", "alice-pw")] {
        let r = c
            .get(&realm)
            .basic_auth(u, Some(p))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{u}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["errors"][0]["message"], "invalid username or password");
    }

    // docker login: no scope, a token with empty access.
    let r = c
        .get(&realm)
        .query(&[("service", SERVICE), ("account", "alice")])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["token"], body["access_token"]);
    assert_eq!(body["expires_in"], 900);
    let issued_at = body["issued_at"].as_str().expect("issued_at");
    assert!(
        humantime::parse_rfc3339(issued_at).is_ok() && issued_at.ends_with('Z'),
        "{issued_at}"
    );
    let claims = decode(&keys, body["token"].as_str().expect("token"));
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.exp - claims.iat, 900);
    assert!(claims.access.is_empty());

    // Repeated and space-joined scopes; intersection; scopes granted nothing are left out.
    let r = c
        .get(&realm)
        .query(&[
            ("service", SERVICE),
            (
                "scope",
                "repository:org/team/app:pull,push,delete repository:other/app:pull",
            ),
            ("scope", "repository:alice/tools:delete"),
            ("scope", "registry:catalog:*"),
        ])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    let claims = decode(&keys, body["token"].as_str().expect("token"));
    let access: Vec<String> = claims.access.iter().map(ToString::to_string).collect();
    assert_eq!(
        access,
        vec![
            "repository:org/team/app:pull,push",
            "repository:alice/tools:delete"
        ]
    );

    // Bob: the catalog, and his own namespace only.
    let r = c
        .get(&realm)
        .query(&[(
            "scope",
            "registry:catalog:* repository:alice/tools:pull repository:bob/x:pull",
        )])
        .basic_auth("bob", Some("bob-pw"))
        .send()
        .await
        .expect("send");
    let body: serde_json::Value = r.json().await.expect("json");
    let claims = decode(&keys, body["token"].as_str().expect("token"));
    let access: Vec<String> = claims.access.iter().map(ToString::to_string).collect();
    assert_eq!(access, vec!["registry:catalog:*", "repository:bob/x:pull"]);

    // Malformed scope, wrong service, account mismatch: 400s that say what is wrong.
    for (query, code, needle) in [
        (
            vec![("scope", "repository:Bad Name:pull")],
            "INVALID_SCOPE",
            "repository:Bad",
        ),
        (
            vec![("scope", "repository:org/app")],
            "INVALID_SCOPE",
            "repository:org/app",
        ),
        (vec![("service", "elsewhere")], "INVALID_SERVICE", SERVICE),
        (vec![("account", "bob")], "INVALID_REQUEST", "bob"),
    ] {
        let r = c
            .get(&realm)
            .query(&query)
            .basic_auth("alice", Some("alice-pw"))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "{query:?}");
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], code, "{query:?}");
        let msg = body["errors"][0]["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{msg}");
    }

    // The OAuth2 form.
    let r = c
        .post(&realm)
        .form(&[
            ("grant_type", "password"),
            ("service", SERVICE),
            ("client_id", "test"),
            ("scope", "repository:org/app:pull"),
            ("username", "alice"),
            ("password", "alice-pw"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        decode(&keys, body["access_token"].as_str().expect("token")).access[0].to_string(),
        "repository:org/app:pull"
    );
    let r = c
        .post(&realm)
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "x"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = c
        .post(&realm)
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .expect("send");
    // No store here, so no refresh tokens: a 401 that says so (containerd then tries GET).
    assert_eq!(r.status(), 401);
    let body = r.text().await.expect("body");
    assert!(body.contains("issues no refresh tokens"), "{body}");

    // The published key material.
    let pem = reqwest::get(format!("{}/v1/registry/certs", issuer.url()))
        .await
        .expect("certs")
        .text()
        .await
        .expect("text");
    assert_eq!(
        pem,
        std::fs::read_to_string(tmp.path().join(format!("{ISSUER}.crt"))).expect("crt")
    );
    assert_eq!(
        reqwest::get(format!("{}/readyz", issuer.url()))
            .await
            .expect("readyz")
            .status(),
        200
    );

    // Nothing secret reached the log; refusals are logged at info, with who, how and from where.
    let log = issuer.proc.log_text();
    let refused = log
        .lines()
        .find(|l| l.contains("login refused") && l.contains("mallory"))
        .unwrap_or_else(|| panic!("no refused login logged:\n{log}"));
    assert!(
        refused.contains("INFO") && refused.contains("method=\"GET\"") && refused.contains("peer="),
        "{refused}"
    );
    assert!(log
        .lines()
        .any(|l| l.contains("INFO") && l.contains("anonymous request refused")));
    assert!(log.contains(
        &std::fs::read_to_string(tmp.path().join(format!("{ISSUER}.kid"))).expect("kid")
    ));
    assert!(
        !log.contains('\u{1b}'),
        "terminal colour codes in a log file:\n{log}"
    );
    for secret in ["alice-pw", "bob-pw", "PRIVATE KEY"] {
        assert!(!log.contains(secret), "{secret} in log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_get_only_anonymous_rules() {
    let tmp = tempfile::tempdir().expect("tmp");
    gen_cert(tmp.path(), ISSUER);
    let cfg = config(
        tmp.path(),
        "[[acl]]\naccount = \"\"\nname = \"public/*\"\nactions = [\"pull\"]\n",
    )
    .replace(
        "htpasswd = \"users.htpasswd\"",
        "htpasswd = \"users.htpasswd\"\nanonymous = true",
    );
    let issuer = Issuer::start(tmp.path(), &cfg, &[]).await;
    let keys = trusted(&issuer).await;
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&[(
            "scope",
            "repository:public/app:pull,push repository:org/app:pull",
        )])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    let claims = decode(&keys, body["token"].as_str().expect("token"));
    assert_eq!(claims.sub, "");
    let access: Vec<String> = claims.access.iter().map(ToString::to_string).collect();
    assert_eq!(access, vec!["repository:public/app:pull"]);
}

/// Start-up refusals: each exits non-zero with a message naming the setting and the problem.
#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_stops_start_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    gen_cert(dir, ISSUER);
    let good = config(dir, "");
    let kid = std::fs::read_to_string(dir.join(format!("{ISSUER}.kid"))).expect("kid");
    let wrong_kid = "AAAA:BBBB:CCCC:DDDD:EEEE:FFFF:GGGG:HHHH:IIII:JJJJ:KKKK:LLLL";
    std::fs::write(dir.join("wrong.kid"), wrong_kid).expect("kid");
    std::fs::write(
        dir.join("md5.htpasswd"),
        "carol:$apr1$abcdefgh$0123456789abcdefghijkl\n",
    )
    .expect("htpasswd");
    // (config, extra env, what the error must name)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            good.replace("ttl_seconds = 900", "ttl_seconds = 900\nttl_secnds = 1"),
            vec![],
            vec!["ttl_secnds"],
        ),
        (
            good.clone(),
            vec![("TOKEN_ISSUER_LISTN", "x")],
            vec!["listn"],
        ),
        (
            good.replace(&format!("{ISSUER}.kid"), "wrong.kid"),
            vec![],
            vec![wrong_kid, kid.as_str()],
        ),
        (
            good.replace("users.htpasswd", "md5.htpasswd"),
            vec![],
            vec!["carol", "bcrypt"],
        ),
        (
            good.clone(),
            vec![("REGISTRY_TOKEN_AUTH_JWT_ALGO", "RS256")],
            vec![
                "REGISTRY_TOKEN_AUTH_JWT_ALGO",
                "RS256",
                "EC P-256 key, which signs ES256",
            ],
        ),
        (
            good.clone(),
            vec![("REGISTRY_TOKEN_AUTH_JWT_ALGO", "HS256")],
            vec!["REGISTRY_TOKEN_AUTH_JWT_ALGO", "HS256", "is not supported"],
        ),
        (
            good.replace("service = \"registry.test\"", ""),
            vec![],
            vec!["REGISTRY_HOST"],
        ),
        (
            good.replace(&format!("cert_file = \"{ISSUER}.crt\""), ""),
            vec![("REGISTRY_TOKEN_AUTH_CERT", "!!!")],
            vec!["REGISTRY_TOKEN_AUTH_CERT", "not valid base64"],
        ),
        (
            good.clone(),
            vec![("REGISTRY_TOKEN_AUTH_CERT", "AAAA")],
            vec!["REGISTRY_TOKEN_AUTH_CERT", "keys.cert_file", "both set"],
        ),
        (
            good.clone(),
            vec![("TOKEN_ISSUER_ACL", "[]")],
            vec!["TOKEN_ISSUER_ACL", "config file"],
        ),
        (
            good.replace("actions = [\"pull\", \"push\"]", "actions = [\"pul\"]"),
            vec![],
            vec!["acl[0].actions", "pul"],
        ),
        (
            good.replace("type = \"registry\"", "type = \"registri\""),
            vec![],
            vec!["acl[2].type", "registri", "\"repository\""],
        ),
        (
            good.replace("name = \"catalog\"", "name = \"*\""),
            vec![],
            vec!["acl[2].name", "catalog"],
        ),
        (
            good.clone(),
            vec![("REGISTRY_TOKEN_AUTH_REALM", "not a url")],
            vec![
                "REGISTRY_TOKEN_AUTH_REALM",
                "not a url",
                "absolute http(s) URL",
            ],
        ),
        (
            good.clone(),
            vec![("TOKEN_ISSUER_TOKEN__TTL_SECONDS", "abc")],
            vec!["TOKEN_ISSUER_TOKEN__TTL_SECONDS: invalid type"],
        ),
        (
            good.clone(),
            vec![("TOKEN_ISSUER_HTTP__TRUSTED_PROXIES", "[\"10.0.0.0/33\"]")],
            vec!["http.trusted_proxies", "10.0.0.0/33"],
        ),
        (
            good.clone(),
            vec![("TOKEN_ISSUER_HTTP__HEADER_TIMEOUT_SECONDS", "0")],
            vec!["http.header_timeout_seconds", "between 1 and"],
        ),
        (
            good.clone(),
            vec![("TOKEN_ISSUER_DAMPING__MAX_WAITING", "0")],
            vec!["damping.max_waiting"],
        ),
        (
            // The certificate of another key: the error names the key and certificate settings,
            // and the kid only when one was given (here it was not).
            good.replace(&format!("kid_file = \"{ISSUER}.kid\""), "")
                .replace(
                    &format!("key_file = \"{ISSUER}.pem\""),
                    "key_file = \"other.pem\"",
                ),
            vec![],
            vec!["keys.cert", "keys.key"],
        ),
    ];
    gen_cert(&dir.join("other"), "other.test");
    std::fs::copy(dir.join("other/other.test.pem"), dir.join("other.pem")).expect("other key");
    for (cfg, env, needles) in cases {
        let mut issuer = Issuer::spawn(dir, &cfg, &env);
        let (status, log) = issuer.proc.wait_exit();
        assert!(!status.success(), "started with {env:?}:\n{cfg}");
        for n in needles {
            assert!(log.contains(n), "{n:?} not in:\n{log}");
        }
        assert!(!log.contains("PRIVATE KEY"), "{log}");
        if cfg.contains("other.pem") {
            assert!(!log.contains("keys.kid"), "names a kid nobody gave:\n{log}");
        }
    }
    // gen-token-auth-cert --days 0 would write a certificate valid for minutes.
    let out = std::process::Command::new(BIN)
        .args(["gen-token-auth-cert", "x.test", "--days", "0", "--out-dir"])
        .arg(dir.join("days0"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--days") && err.contains("1..=36500"), "{err}");
}

/// Bounded work per request: too many scopes is a 400 naming the limit before any
/// authentication work (so without credentials too); the limit itself works.
#[tokio::test(flavor = "multi_thread")]
async fn scope_count_is_capped_before_authentication() {
    let tmp = tempfile::tempdir().expect("tmp");
    let issuer = start(tmp.path()).await;
    let c = reqwest::Client::new();
    // 3,000 scopes: as many as fit the 64 KiB form (a URI is capped at 64 KiB too).
    let flood = format!(
        "grant_type=password&service={SERVICE}&scope={}",
        "repository:a:pull+".repeat(3_000)
    );
    let t0 = std::time::Instant::now();
    let r = c
        .post(issuer.realm())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(flood)
        .send()
        .await
        .expect("send");
    let elapsed = t0.elapsed();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["errors"][0]["code"], "INVALID_SCOPE");
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains("more than 100 scopes"), "{message}");
    eprintln!("3,000 scopes refused in {elapsed:?}");
    // Linear parsing that stops at the limit: milliseconds, not the 138 ms of CPU a quadratic
    // merge cost (a generous bound: debug build, shared machine).
    assert!(
        elapsed < std::time::Duration::from_millis(250),
        "{elapsed:?}"
    );
    // The same flood in a GET query string (2,000: a URI holds at most 64 KiB), without
    // credentials.
    let scopes = vec!["repository:a:pull"; 2_000].join(" ");
    let t0 = std::time::Instant::now();
    let r = c
        .get(issuer.realm())
        .query(&[("service", SERVICE), ("scope", scopes.as_str())])
        .send()
        .await
        .expect("send");
    let elapsed = t0.elapsed();
    assert_eq!(r.status(), 400);
    assert!(
        elapsed < std::time::Duration::from_millis(250),
        "{elapsed:?}"
    );

    let hundred: Vec<String> = (0..100)
        .map(|i| format!("repository:org/app{i}:pull"))
        .collect();
    let r = c
        .get(issuer.realm())
        .query(&[("service", SERVICE), ("scope", hundred.join(" ").as_str())])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    let claims = decode(
        &trusted(&issuer).await,
        body["token"].as_str().expect("token"),
    );
    assert_eq!(claims.access.len(), 100);
}

/// A value of the file replaced by the environment or a flag is named at start-up (the
/// container image sets TOKEN_ISSUER_LISTEN; a mounted config saying otherwise must not be
/// silently ignored). Values are not logged.
#[tokio::test(flavor = "multi_thread")]
async fn overridden_file_values_are_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    gen_cert(tmp.path(), ISSUER);
    let cfg = format!("listen = \"127.0.0.1:1\"\n{}", config(tmp.path(), ""));
    let issuer = Issuer::start(
        tmp.path(),
        &cfg,
        &[("TOKEN_ISSUER_TOKEN__TTL_SECONDS", "600")],
    )
    .await;
    let log = issuer.proc.log_text();
    assert!(
        log.contains("listen in ") && log.contains("overridden by a command-line flag"),
        "{log}"
    );
    assert!(
        log.contains("token.ttl_seconds in ")
            && log.contains("overridden by TOKEN_ISSUER_TOKEN__TTL_SECONDS"),
        "{log}"
    );
    for line in log.lines().filter(|l| l.contains("overridden")) {
        assert!(
            !line.contains("600") && !line.contains("127.0.0.1:"),
            "a value was logged: {line}"
        );
    }
}
