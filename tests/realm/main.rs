//! The realm over HTTP, against the real binary: statuses, bodies, headers, claims; and
//! start-up refusals that name the setting (`startup`).

mod startup;

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

/// A started issuer (users alice and bob, the rules of [`config`]), its published keys, and
/// one client: what each realm test below starts from.
struct Realm {
    tmp: tempfile::TempDir,
    issuer: Issuer,
    keys: TrustedKeys,
    client: reqwest::Client,
}

/// A realm answer: status, headers, and the body as JSON (`Null` when it is not JSON).
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: serde_json::Value,
}

impl Realm {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        let issuer = start(tmp.path()).await;
        let keys = trusted(&issuer).await;
        Self {
            tmp,
            issuer,
            keys,
            client: reqwest::Client::new(),
        }
    }

    /// GET the realm with `query`, as `user` (with `password`) when given.
    async fn get(&self, query: &[(&str, &str)], user: Option<(&str, &str)>) -> Reply {
        let mut req = self.client.get(self.issuer.realm()).query(query);
        if let Some((u, p)) = user {
            req = req.basic_auth(u, Some(p));
        }
        Self::reply(req).await
    }

    /// POST the realm's OAuth2 form.
    async fn post(&self, form: &[(&str, &str)]) -> Reply {
        Self::reply(self.client.post(self.issuer.realm()).form(form)).await
    }

    async fn reply(req: reqwest::RequestBuilder) -> Reply {
        let r = req.send().await.expect("send");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        }
    }

    /// The verified claims of a 200's token.
    fn claims(&self, reply: &Reply) -> Claims {
        assert_eq!(reply.status, 200, "{}", reply.body);
        decode(&self.keys, reply.body["token"].as_str().expect("token"))
    }

    fn access(&self, reply: &Reply) -> Vec<String> {
        let claims = self.claims(reply);
        claims.access.iter().map(ToString::to_string).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_credentials_get_a_challenge_and_a_message_that_says_what_to_do() {
    let realm = Realm::start().await;
    let r = realm.get(&[("service", SERVICE)], None).await;
    assert_eq!(r.status, 401);
    let challenge = r.headers["www-authenticate"].to_str().expect("header");
    assert!(challenge.starts_with("Basic realm="), "{challenge}");
    assert_eq!(r.body["errors"][0]["code"], "UNAUTHORIZED");
    // Not the code's bare default text ("authentication required"), which docker turns into a
    // bare code and retries: a message that says what to do.
    let message = r.body["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("no credentials") && message.contains("docker login"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_basic_credentials_are_401s_with_the_challenge() {
    let realm = Realm::start().await;
    for bad in ["Basic !!!", "Basic dXNlcm5vY29sb24=", "Basic /w=="] {
        let req = realm
            .client
            .get(realm.issuer.realm())
            .header("Authorization", bad);
        let r = Realm::reply(req).await;
        assert_eq!(r.status, 401, "{bad}");
        assert!(r.headers.contains_key("www-authenticate"), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_and_an_unknown_user_get_the_same_401() {
    let realm = Realm::start().await;
    for (u, p) in [("alice", "nope"), ("mallory", "alice-pw")] {
        let r = realm.get(&[], Some((u, p))).await;
        assert_eq!(r.status, 401, "{u}");
        assert_eq!(
            r.body["errors"][0]["message"],
            "invalid username or password"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_login_gets_a_token_with_no_access() {
    let realm = Realm::start().await;
    let query = [("service", SERVICE), ("account", "alice")];
    let r = realm.get(&query, Some(("alice", "alice-pw"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.body["token"], r.body["access_token"]);
    assert_eq!(r.body["expires_in"], 900);
    let issued_at = r.body["issued_at"].as_str().expect("issued_at");
    assert!(
        humantime::parse_rfc3339(issued_at).is_ok() && issued_at.ends_with('Z'),
        "{issued_at}"
    );
    let claims = realm.claims(&r);
    assert_eq!(claims.sub, "alice");
    // iat and nbf are backdated by 10 s (zot allows no clock skew on iat); exp is 900 s
    // from the true time of issue, which expires_in counts from.
    assert_eq!((claims.exp - claims.iat, claims.iat), (910, claims.nbf));
    assert!(claims.access.is_empty());
}

/// `GET` and `POST` on the realm's exact paths are served ahead of the router
/// (`http::Issuer`); everything else on or near them is still the router's answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_realm_paths_answer_other_methods_and_near_paths_as_the_router_does() {
    let realm = Realm::start().await;
    let url = realm.issuer.url();
    let alice = |r: reqwest::RequestBuilder| r.basic_auth("alice", Some("alice-pw"));
    for path in ["/v1/registry", "/auth/v1/token"] {
        let get = alice(realm.client.get(format!("{url}{path}?service={SERVICE}")));
        assert_eq!(Realm::reply(get).await.status, 200, "GET {path}");
        let form = [
            ("grant_type", "password"),
            ("service", SERVICE),
            ("client_id", "test"),
            ("username", "alice"),
            ("password", "alice-pw"),
        ];
        let post = realm.client.post(format!("{url}{path}")).form(&form);
        assert_eq!(Realm::reply(post).await.status, 200, "POST {path}");
        // HEAD is the router's GET without the body.
        let head = alice(realm.client.head(format!("{url}{path}?service={SERVICE}")));
        let head = head.send().await.expect("head");
        assert_eq!(head.status(), 200, "HEAD {path}");
        assert_eq!(head.bytes().await.expect("body").len(), 0, "HEAD {path}");
        for method in [reqwest::Method::PUT, reqwest::Method::DELETE] {
            let r = alice(realm.client.request(method.clone(), format!("{url}{path}")));
            assert_eq!(Realm::reply(r).await.status, 405, "{method} {path}");
        }
    }
    for path in [
        "/v1/registry/",
        "/v1/registryx",
        "/V1/registry",
        "/v1/%72egistry",
        "/auth/v1/token/x",
    ] {
        let r = alice(realm.client.get(format!("{url}{path}?service={SERVICE}")));
        assert_eq!(Realm::reply(r).await.status, 404, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_repeated_or_space_joined_are_intersected_and_the_ungranted_left_out() {
    let realm = Realm::start().await;
    let query = [
        ("service", SERVICE),
        (
            "scope",
            "repository:org/team/app:pull,push,delete repository:other/app:pull",
        ),
        ("scope", "repository:alice/tools:delete"),
        ("scope", "registry:catalog:*"),
    ];
    let r = realm.get(&query, Some(("alice", "alice-pw"))).await;
    assert_eq!(
        realm.access(&r),
        vec![
            "repository:org/team/app:pull,push",
            "repository:alice/tools:delete"
        ]
    );
    // Bob: the catalog, and his own namespace only.
    let query = [(
        "scope",
        "registry:catalog:* repository:alice/tools:pull repository:bob/x:pull",
    )];
    let r = realm.get(&query, Some(("bob", "bob-pw"))).await;
    assert_eq!(
        realm.access(&r),
        vec!["registry:catalog:*", "repository:bob/x:pull"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_are_400s_that_say_what_is_wrong() {
    let realm = Realm::start().await;
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
        let r = realm.get(&query, Some(("alice", "alice-pw"))).await;
        assert_eq!(r.status, 400, "{query:?}");
        assert_eq!(r.body["errors"][0]["code"], code, "{query:?}");
        let msg = r.body["errors"][0]["message"].as_str().expect("message");
        assert!(msg.contains(needle), "{msg}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oauth2_form_issues_and_refuses_as_the_get_does() {
    let realm = Realm::start().await;
    let r = realm
        .post(&[
            ("grant_type", "password"),
            ("service", SERVICE),
            ("client_id", "test"),
            ("scope", "repository:org/app:pull"),
            ("username", "alice"),
            ("password", "alice-pw"),
        ])
        .await;
    assert_eq!(realm.access(&r), vec!["repository:org/app:pull"]);
    let r = realm
        .post(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "x"),
        ])
        .await;
    assert_eq!(r.status, 401);
    // No store here, so no refresh tokens: a 401 that says so (containerd then tries GET).
    let r = realm
        .post(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .await;
    assert_eq!(r.status, 401);
    let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("issues no refresh tokens"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_certificate_is_published_and_the_issuer_is_ready() {
    let realm = Realm::start().await;
    let url = realm.issuer.url();
    let pem = reqwest::get(format!("{url}/v1/registry/certs"))
        .await
        .expect("certs")
        .text()
        .await
        .expect("text");
    let crt = realm.tmp.path().join(format!("{ISSUER}.crt"));
    assert_eq!(pem, std::fs::read_to_string(crt).expect("crt"));
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_logged_at_info_and_nothing_secret_is() {
    let realm = Realm::start().await;
    assert_eq!(realm.get(&[], None).await.status, 401);
    assert_eq!(
        realm.get(&[], Some(("mallory", "alice-pw"))).await.status,
        401
    );
    assert_eq!(
        realm.get(&[], Some(("alice", "alice-pw"))).await.status,
        200
    );
    let query = [("scope", "registry:catalog:*")];
    assert_eq!(realm.get(&query, Some(("bob", "bob-pw"))).await.status, 200);
    let log = realm.issuer.proc.log_text();
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
    let kid = realm.tmp.path().join(format!("{ISSUER}.kid"));
    assert!(log.contains(&std::fs::read_to_string(kid).expect("kid")));
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
