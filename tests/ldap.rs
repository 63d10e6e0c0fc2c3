//! LDAP as an identity source, against a real slapd started by each test
//! (tests/common/slapd.rs): groups into rules, refusals that look alike, no bind ever made for
//! an empty password, names that try to be filters, an ambiguous filter, the directory going
//! away and coming back, ldaps:// with a test CA, the place in the chain, and a push and pull
//! through distribution 2.8 as a directory user.

use std::path::Path;
use std::time::{Duration, Instant};

use common::slapd::{person, user_dn, Person, Slapd, Transport};
use common::*;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn people() -> Vec<Person<'static>> {
    vec![
        person("alice", "alice-pw", &["devs", "ops"]),
        person("bob", "bob-pw", &[]),
        person("carol", "carol-pw", &["admins"]),
        // A name rules would read as the repository path `team/app` (`${account}/*`).
        person("team/app", "team-pw", &["devs"]),
        Person {
            ou: Some("staff"),
            ..person("dup", "dup-pw", &[])
        },
        Person {
            ou: Some("contractors"),
            ..person("dup", "dup-pw", &[])
        },
        // In a group named like the admins' one, but outside ou=groups.
        Person {
            member_of: &["cn=admins,ou=selfservice,dc=example,dc=test"],
            ..person("erin", "erin-pw", &["devs"])
        },
    ]
}

/// The issuer's config for `directory`: `[ldap]` with `extra` lines, local users `local` and
/// `carol` (a name the directory has too), and rules by group.
fn config(dir: &Path, directory: &Slapd, extra: &str) -> String {
    gen_cert(dir, ISSUER);
    write_users(dir, &[("local", "local-pw"), ("carol", "local-carol-pw")]);
    ConfigBuilder::new(ISSUER, SERVICE)
        .section(&format!(
            "{}timeout_seconds = 2\n{extra}",
            directory.section(dir)
        ))
        .section(
            "[[acl]]\ngroup = \"devs\"\nname = \"org/*\"\nactions = [\"pull\", \"push\"]\n\
             [[acl]]\ngroup = \"ops\"\nname = \"ops/*\"\nactions = [\"pull\"]\n\
             [[acl]]\ngroup = \"admins\"\nname = \"prod/*\"\nactions = [\"pull\", \"push\"]\n\
             [[acl]]\naccount = \"*\"\nname = \"${account}/*\"\nactions = [\"pull\", \"push\"]",
        )
        .build()
}

struct Answer {
    status: u16,
    body: serde_json::Value,
    challenge: Option<String>,
}

async fn ask(issuer: &Issuer, user: &str, password: &str, scopes: &[&str]) -> Answer {
    let mut q = vec![("service", SERVICE)];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&q)
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("realm");
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_string());
    Answer {
        status,
        body: r.json().await.expect("json"),
        challenge,
    }
}

/// The granted access of a token answer, as (name, actions) pairs.
fn access(a: &Answer) -> Vec<(String, Vec<String>)> {
    let token = a.body["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {} {}", a.status, a.body));
    let mut out: Vec<(String, Vec<String>)> = jwt_claims(token)["access"]
        .as_array()
        .expect("access")
        .iter()
        .map(|e| {
            let actions = e["actions"]
                .as_array()
                .expect("actions")
                .iter()
                .map(|a| a.as_str().expect("str").to_string())
                .collect();
            (e["name"].as_str().expect("name").to_string(), actions)
        })
        .collect();
    out.sort();
    out
}

async fn setup(tmp: &Path, tls: Transport, extra: &str) -> (Slapd, Issuer) {
    let directory = Slapd::start(tmp, &people(), tls).await;
    let issuer = Issuer::start(tmp, &config(tmp, &directory, extra), &[]).await;
    (directory, issuer)
}

#[tokio::test]
async fn a_user_in_two_groups_gets_exactly_their_scopes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    let scopes = [
        "repository:org/app:pull,push",
        "repository:ops/tool:pull,push",
        "repository:prod/site:pull",
        "repository:alice/own:push",
    ];
    // The name as typed matches the directory ignoring case; the token carries the
    // directory's own spelling, which is what rules see.
    for typed in ["alice", "ALICE"] {
        let a = ask(&issuer, typed, "alice-pw", &scopes).await;
        assert_eq!(a.status, 200, "{typed}: {}", a.body);
        let token = a.body["token"].as_str().expect("token");
        assert_eq!(jwt_claims(token)["sub"], "alice");
        let pp = |n: &str, a: &[&str]| (n.to_string(), a.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            access(&a),
            vec![
                pp("alice/own", &["push"]),
                pp("ops/tool", &["pull"]),
                pp("org/app", &["pull", "push"]),
            ]
        );
    }
    // bob is in no group: only his own namespace.
    let b = ask(&issuer, "bob", "bob-pw", &scopes[..1]).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert!(access(&b).is_empty(), "{:?}", access(&b));
}

#[tokio::test]
async fn groups_from_member_of_count_only_under_the_group_base() {
    let tmp = tempfile::tempdir().expect("tmp");
    let directory = Slapd::start(tmp.path(), &people(), Transport::Plain).await;
    let config = config(tmp.path(), &directory, "").replace(
        "group_filter = \"(&(objectClass=groupOfNames)(member={dn}))\"",
        "member_of_attribute = \"memberOf\"",
    );
    assert!(config.contains("member_of_attribute"), "{config}");
    let issuer = Issuer::start(tmp.path(), &config, &[]).await;
    let scopes = ["repository:org/app:push", "repository:prod/site:push"];
    let e = ask(&issuer, "erin", "erin-pw", &scopes).await;
    assert_eq!(access(&e), vec![("org/app".into(), vec!["push".into()])]);
    let c = ask(&issuer, "carol", "carol-pw", &scopes).await;
    assert_eq!(c.status, 401, "the file's carol decides: {}", c.body);
    let a = ask(&issuer, "alice", "alice-pw", &["repository:ops/x:pull"]).await;
    assert_eq!(access(&a), vec![("ops/x".into(), vec!["pull".into()])]);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_look_the_same() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    let wrong = ask(&issuer, "alice", "not-her-password", &[]).await;
    let unknown = ask(&issuer, "mallory", "alice-pw", &[]).await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert_eq!(unknown.status, 401, "{}", unknown.body);
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.challenge, unknown.challenge);
    assert!(wrong.challenge.is_some());
}

#[tokio::test]
async fn an_empty_password_is_refused_with_no_bind_made() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    let alice = user_dn("alice", None);
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 200);
    assert_eq!(directory.binds_as(&alice), 1, "{}", directory.log());
    // slapd here accepts a DN with no password as an anonymous bind: a bind made with it
    // would "succeed".
    let empty = ask(&issuer, "alice", "", &[]).await;
    assert_eq!(empty.status, 401, "{}", empty.body);
    // bob's login comes after: once its bind is in the log, an empty-password bind for alice
    // would be too.
    assert_eq!(ask(&issuer, "bob", "bob-pw", &[]).await.status, 200);
    assert_eq!(directory.binds_as(&user_dn("bob", None)), 1);
    assert_eq!(directory.binds_as(&alice), 1, "{}", directory.log());
}

#[tokio::test]
async fn names_written_as_filters_match_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    // Each of these, put into the filter unescaped, would select alice alone (or everyone).
    for name in [
        "*",
        "ali*",
        "alice)(uid=alice",
        "admin)(uid=*",
        "*)(|(uid=*",
        "alice\\",
    ] {
        let a = ask(&issuer, name, "alice-pw", &["repository:org/app:pull"]).await;
        assert_eq!(a.status, 401, "{name}: {}", a.body);
    }
    assert_eq!(ask(&issuer, "bob", "bob-pw", &[]).await.status, 200);
    assert_eq!(directory.binds_as(&user_dn("bob", None)), 1);
    assert_eq!(directory.binds_as(&user_dn("alice", None)), 0);
}

#[tokio::test]
async fn a_name_matching_two_entries_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    let a = ask(&issuer, "dup", "dup-pw", &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(ask(&issuer, "bob", "bob-pw", &[]).await.status, 200);
    assert_eq!(directory.binds_as(&user_dn("dup", Some("staff"))), 0);
    assert_eq!(directory.binds_as(&user_dn("dup", Some("contractors"))), 0);
    let log = issuer.proc.log_text();
    assert!(
        log.contains("several directory entries match the name") && log.contains("entries=2"),
        "{log}"
    );
    assert!(!log.contains("dup-pw"), "a password in the log:\n{log}");
}

#[tokio::test]
async fn a_directory_name_holding_a_slash_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    let a = ask(
        &issuer,
        "team/app",
        "team-pw",
        &["repository:team/app/x:push"],
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let log = issuer.proc.log_text();
    assert!(log.contains("holds '/'"), "{log}");
    assert_eq!(ask(&issuer, "bob", "bob-pw", &[]).await.status, 200);
}

#[tokio::test]
async fn the_directory_down_is_a_503_and_its_return_needs_no_restart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (mut directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 200);
    directory.stop();

    let t0 = Instant::now();
    let a = ask(&issuer, "bob", "bob-pw", &[]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(a.body["errors"][0]["code"], "UNAVAILABLE");
    let message = a.body["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains(&directory.url), "{message}");
    // A login verified before the outage is still known for identity.cache_ttl_seconds.
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 200);

    directory.start_again().await;
    // The pooled connection that died with the server is replaced, not reused.
    let b = ask(&issuer, "bob", "bob-pw", &[]).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(directory.binds_as(&user_dn("bob", None)), 1);
}

#[tokio::test]
async fn ldaps_and_start_tls_with_a_test_ca() {
    for (tls, extra) in [
        (Transport::Ldaps, ""),
        (Transport::StartTls, "start_tls = true\n"),
    ] {
        let tmp = tempfile::tempdir().expect("tmp");
        let directory = Slapd::start(tmp.path(), &people(), tls).await;
        let ca = directory.ca.clone().expect("a CA");
        let trusting = format!("{extra}ca_file = {:?}", ca.display().to_string());
        let trusted = config(tmp.path(), &directory, &trusting);
        let issuer = Issuer::start(tmp.path(), &trusted, &[]).await;
        let a = ask(&issuer, "alice", "alice-pw", &["repository:org/app:push"]).await;
        assert_eq!(a.status, 200, "{}: {}", directory.url, a.body);
        assert_eq!(access(&a), vec![("org/app".into(), vec!["push".into()])]);
        let log = directory.log();
        assert!(log.contains("TLS established"), "{log}");

        // Without the CA the server's certificate is not trusted: the directory is
        // unavailable, never skipped.
        let other = tmp.path().join("untrusting");
        std::fs::create_dir_all(&other).expect("dir");
        let issuer = Issuer::start(&other, &config(&other, &directory, extra), &[]).await;
        let a = ask(&issuer, "alice", "alice-pw", &[]).await;
        assert_eq!(a.status, 503, "{}: {}", directory.url, a.body);
    }
}

#[tokio::test]
async fn a_directory_that_never_answers_is_a_503_within_the_timeout() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Connections are accepted by the kernel and never read.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let directory = Slapd::start(tmp.path(), &people(), Transport::Plain).await;
    let silent_config = config(tmp.path(), &directory, "")
        .replace(&directory.url, &format!("ldap://127.0.0.1:{port}"));
    let issuer = Issuer::start(tmp.path(), &silent_config, &[]).await;
    let t0 = Instant::now();
    let a = ask(&issuer, "alice", "alice-pw", &[]).await;
    assert_eq!(a.status, 503, "{}", a.body);
    let message = a.body["errors"][0]["message"].as_str().expect("message");
    assert!(message.contains("no answer within 2 s"), "{message}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(ask(&issuer, "local", "local-pw", &[]).await.status, 200);
}

#[tokio::test]
async fn one_name_in_two_sources_is_refused_wherever_the_directory_sits() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_directory, issuer) = setup(tmp.path(), Transport::Plain, "").await;
    // After the htpasswd file (the default): the file's carol decides, with the file's password.
    assert_eq!(
        ask(&issuer, "carol", "local-carol-pw", &[]).await.status,
        200
    );
    assert_eq!(ask(&issuer, "carol", "carol-pw", &[]).await.status, 401);
    assert_eq!(ask(&issuer, "local", "local-pw", &[]).await.status, 200);

    // First in the chain: the directory's carol is refused, not given the file's carol's
    // rules, and the file's users still log in.
    let other = tmp.path().join("first");
    std::fs::create_dir_all(&other).expect("dir");
    let directory = Slapd::start(&other, &people(), Transport::Plain).await;
    let issuer = Issuer::start(
        &other,
        &config(&other, &directory, "position = \"first\""),
        &[],
    )
    .await;
    let a = ask(&issuer, "carol", "carol-pw", &[]).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(ask(&issuer, "local", "local-pw", &[]).await.status, 200);
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 200);
}

#[tokio::test]
async fn push_and_pull_through_distribution_as_a_directory_user() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let (_directory, issuer) = setup(dir, Transport::Plain, "").await;
    let registry = Registry::start(
        dir,
        &issuer.realm(),
        SERVICE,
        ISSUER,
        &dir.join(format!("{ISSUER}.crt")),
    )
    .await;
    let layout = dir.join("image");
    oci_layout(&layout, "latest", b"hello from the directory");
    let dest = format!("docker://{}/org/app:latest", registry.host());
    let out = push(dir, &layout, &dest, "alice:alice-pw");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = dir.join("pulled");
    let out = pull(dir, &dest, &back, "alice:alice-pw");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // bob is in no group: no push to org/.
    let out = push(dir, &layout, &dest, "bob:bob-pw");
    assert!(!out.status.success());
}

#[tokio::test]
async fn a_directory_unreachable_at_start_up_is_a_warning_not_an_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut directory = Slapd::start(tmp.path(), &people(), Transport::Plain).await;
    directory.stop();
    let issuer = Issuer::start(tmp.path(), &config(tmp.path(), &directory, ""), &[]).await;
    let log = issuer.proc.log_text();
    assert!(
        log.contains("WARN") && log.contains("logins of directory users get 503 until it answers"),
        "{log}"
    );
    assert_eq!(ask(&issuer, "local", "local-pw", &[]).await.status, 200);
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 503);
    directory.start_again().await;
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 200);
}

#[tokio::test]
async fn an_upstream_identity_named_like_a_directory_user_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let directory = Slapd::start(dir, &people(), Transport::Plain).await;
    let api = common::fake_api::FakeApi::start().await;
    api.state.add("key-alice", "alice", &[], &[]);
    api.state.add("key-eve", "eve", &[], &[]);
    let config = config(
        dir,
        &directory,
        &format!(
            "[upstream]\nurl = \"{}\"\nusername_pointer = \"/data/slug\"\nmatch_username = false\n",
            api.url("/api/v2/whoami")
        ),
    );
    let issuer = Issuer::start(dir, &config, &[]).await;
    // The API may say whom a key belongs to, but not that it is the directory's alice.
    let a = ask(
        &issuer,
        "device",
        "key-alice",
        &["repository:alice/own:push"],
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let e = ask(&issuer, "device", "key-eve", &["repository:eve/own:push"]).await;
    assert_eq!(e.status, 200, "{}", e.body);
    assert_eq!(access(&e), vec![("eve/own".into(), vec!["push".into()])]);
    assert_eq!(ask(&issuer, "alice", "alice-pw", &[]).await.status, 200);
}

/// Token requests at once from `ip` (a loopback address of its own, so that damping counts
/// them apart from other tests' requests): their statuses, sorted.
async fn at_once(issuer: &Issuer, ip: &str, creds: &[(String, String)]) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let asks = creds.iter().map(|(u, p)| {
        let req = client
            .get(issuer.realm())
            .query(&[("service", SERVICE)])
            .basic_auth(u, Some(p));
        async move { req.send().await.expect("realm").status().as_u16() }
    });
    let mut statuses = futures::future::join_all(asks).await;
    statuses.sort();
    statuses
}

#[tokio::test]
async fn spellings_of_one_account_and_unknown_names_are_damped_like_passwords() {
    let tmp = tempfile::tempdir().expect("tmp");
    let damping =
        "[damping]\nfailures_per_minute = 2\nip_failures_per_minute = 3\nmax_waiting = 1\n";
    let (_directory, issuer) = setup(tmp.path(), Transport::Plain, damping).await;
    let pairs = |names: &[&str]| -> Vec<(String, String)> {
        let at = names.iter().enumerate();
        at.map(|(i, n)| (n.to_string(), format!("guess-{i}")))
            .collect()
    };
    // The directory compares names ignoring case and surrounding spaces, and so does damping:
    // three spellings of alice are three failures of one account from this address.
    let first = pairs(&["alice", "Alice", "ALICE "]);
    for one in first.chunks(1) {
        assert_eq!(at_once(&issuer, "127.0.0.61", one).await, [401]);
    }
    let spellings = pairs(&["aLiCe", "alicE", " ALIce", "aliCE"]);
    let burst = at_once(&issuer, "127.0.0.61", &spellings).await;
    assert!(burst.contains(&429), "{burst:?}");
    // Names the directory does not hold count at the address, as wrong passwords do.
    let unknown = pairs(&["nobody-0", "nobody-1", "nobody-2", "nobody-3"]);
    for one in unknown.chunks(1) {
        assert_eq!(at_once(&issuer, "127.0.0.62", one).await, [401]);
    }
    let more = pairs(&["nobody-4", "nobody-5", "nobody-6", "nobody-7"]);
    let burst = at_once(&issuer, "127.0.0.62", &more).await;
    assert!(burst.contains(&429), "{burst:?}");
    // Another address is not slowed.
    assert_eq!(
        at_once(
            &issuer,
            "127.0.0.63",
            &[("alice".into(), "alice-pw".into())]
        )
        .await,
        [200]
    );
}
