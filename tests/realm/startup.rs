//! Start-up over the real binary: each bad configuration stops it with a message naming the
//! setting, and settings overridden or without effect are named in the log.

use super::*;

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
    let out = std::process::Command::new(bin())
        .args(["gen-token-auth-cert", "x.test", "--days", "0", "--out-dir"])
        .arg(dir.join("days0"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--days") && err.contains("1..=36500"), "{err}");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_setting_that_does_nothing_is_named_at_start_up() {
    let tmp = tempfile::tempdir().expect("tmp");
    gen_cert(tmp.path(), ISSUER);
    let cfg = config(tmp.path(), "[audit]\npath = \"audit.log\"");
    let issuer = Issuer::start(tmp.path(), &cfg, &[]).await;
    let url = format!("{}?service={SERVICE}", issuer.realm());
    token_at(&url, "alice", "alice-pw").await;
    let log = issuer.proc.log_text();
    assert!(
        log.contains("audit.path is set but audit.enabled is false: no audit is written"),
        "{log}"
    );
    assert!(!tmp.path().join("audit.log").exists(), "and indeed none is");
}
