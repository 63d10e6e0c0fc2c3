//! How the issuer fetches an OIDC provider's keys and reads a token's dates, against a real
//! provider over https with its own CA (tests/common/idp.rs): a redirect from https down to
//! http is never followed (keys from there would be anyone's), a failed fetch keeps the keys
//! held, requests for an unknown kid share one slow fetch, and NumericDates are numbers,
//! fractions included.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::idp::Idp;
use common::store_api::within;
use common::*;
use serde_json::{json, Value};

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

async fn start(dir: &Path, idp: &Idp) -> Issuer {
    gen_cert(dir, ISSUER);
    write_users(dir, &[("alice", "alice-pw")]);
    let ca = match &idp.ca_pem {
        Some(pem) => {
            std::fs::write(dir.join("idp-ca.pem"), pem).expect("write ca");
            "ca_file = \"idp-ca.pem\"\n"
        }
        None => "",
    };
    let config = ConfigBuilder::new(ISSUER, SERVICE)
        .section(&format!(
            "[[oidc]]\nissuer = \"{}\"\naudiences = [\"{SERVICE}\"]\nusername = \"ci:{{sub}}\"\n\
             jwks_refetch_seconds = 1\n{ca}",
            idp.issuer()
        ))
        .section("[[acl]]\naccount = \"ci:*\"\nname = \"ci/*\"\nactions = [\"pull\"]")
        .build();
    Issuer::start(dir, &config, &[]).await
}

fn claims(idp: &Idp, extra: Value) -> Value {
    let mut c = json!({"iss": idp.issuer(), "aud": SERVICE, "sub": "job-1", "iat": now(), "exp": now() + 300.0});
    for (k, v) in extra.as_object().expect("object") {
        c[k] = v.clone();
    }
    c
}

/// The realm's status and message for an ID token as the Basic password.
async fn ask(issuer: &Issuer, token: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&[("service", SERVICE), ("scope", "repository:ci/app:pull")])
        .basic_auth("oidc", Some(token))
        .send()
        .await
        .expect("realm");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("json");
    (
        status,
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_redirected_from_https_to_http_are_not_fetched_and_held_keys_stay() {
    let tmp = tempfile::tempdir().expect("tmp");
    let idp = Idp::start_tls().await;
    // Someone else's provider, on plain http: its keys must never verify a token.
    let attacker = Idp::start().await;
    let issuer = start(tmp.path(), &idp).await;
    let honest = idp.sign("ec-1", &claims(&idp, json!({})));
    assert_eq!(ask(&issuer, &honest).await.0, 200, "held over https");

    // Now the provider's key set redirects to the attacker's over http; a token naming a kid
    // the issuer does not hold makes it fetch again.
    *idp.state.jwks_redirect.lock().expect("lock") = Some(format!("{}/keys", attacker.issuer()));
    attacker.add_key("evil-1", token_issuer::keys::generate::KeyType::P256, true);
    let forged = attacker.sign("evil-1", &claims(&idp, json!({"sub": "other"})));
    // Within jwks_refetch_seconds of the last fetch the kid is refused without one; asked
    // until the issuer fetches again, every answer is the same refusal.
    let before = idp.fetches();
    within(Duration::from_secs(10), "a refetch", || async {
        let (status, message) = ask(&issuer, &forged).await;
        assert_eq!(status, 401, "{message}");
        assert!(message.contains("kid"), "{message}");
        idp.fetches() > before
    })
    .await;
    assert_eq!(
        attacker.fetches(),
        0,
        "the redirect to http was not followed"
    );
    assert!(
        issuer
            .proc
            .log_text()
            .contains("from https to http://127.0.0.1"),
        "{}",
        issuer.proc.log_text()
    );
    // The failed fetch did not drop the keys already held.
    let again = idp.sign("ec-1", &claims(&idp, json!({"sub": "job-2"})));
    assert_eq!(ask(&issuer, &again).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_provider_is_asked_once_for_many_unknown_kids() {
    let tmp = tempfile::tempdir().expect("tmp");
    let idp = Idp::start().await;
    const SLOW: Duration = Duration::from_millis(2500);
    idp.state
        .jwks_delay_ms
        .store(SLOW.as_millis() as u64, Ordering::SeqCst);
    idp.add_key("late", token_issuer::keys::generate::KeyType::P256, false);
    // The start-up fetch is under way (slow) as the issuer starts answering.
    let issuer = start(tmp.path(), &idp).await;
    let t = Instant::now();
    let tokens: Vec<String> = (0..4)
        .map(|i| idp.sign("late", &claims(&idp, json!({"sub": format!("job-{i}")}))))
        .collect();
    let answers = futures::future::join_all(tokens.iter().map(|tok| ask(&issuer, tok))).await;
    for (status, message) in &answers {
        assert_eq!(*status, 401, "{message}");
    }
    // One fetch at start-up, at most one more that all four share; each waiting for a fetch
    // of its own would be five fetches and four times as long.
    assert!(idp.fetches() <= 2, "{} fetches", idp.fetches());
    assert!(
        t.elapsed() < SLOW * 2 + Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn numeric_dates_are_numbers_with_fractions_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tmp");
    let idp = Idp::start().await;
    let issuer = start(tmp.path(), &idp).await;
    let with = |extra: Value| idp.sign("rsa-1", &claims(&idp, extra));
    // Fractions are valid NumericDates.
    assert_eq!(
        ask(&issuer, &with(json!({"nbf": now() - 5.5}))).await.0,
        200
    );
    for (extra, why) in [
        (json!({"nbf": now() + 3600.25}), "not valid yet"),
        (
            json!({"nbf": format!("{}", now() as u64 + 3600)}),
            "nbf is not a NumericDate",
        ),
        (
            json!({"exp": format!("{}", now() as u64 + 300)}),
            "exp is not a NumericDate",
        ),
        (json!({"exp": now() - 0.5}), "expired"),
        (json!({"iat": "yesterday"}), "iat is not a NumericDate"),
    ] {
        let (status, message) = ask(&issuer, &with(extra.clone())).await;
        assert_eq!(status, 401, "{extra}: {message}");
        assert!(message.contains(why), "{extra}: {message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_of_claims_alone_is_warned_about_at_start() {
    let idp = Idp::start().await;
    let start_with = |username: &str, require: &str| {
        let tmp = tempfile::tempdir().expect("tmp");
        gen_cert(tmp.path(), ISSUER);
        write_users(tmp.path(), &[("alice", "alice-pw")]);
        let config = ConfigBuilder::new(ISSUER, SERVICE)
            .section(&format!(
                "[[oidc]]\nissuer = \"{}\"\naudiences = [\"{SERVICE}\"]\nusername = \"{username}\"\n\
                 groups = [\"{{repository_owner}}\"]\n{require}",
                idp.issuer()
            ))
            .section("[[acl]]\naccount = \"alice\"\nname = \"**\"\nactions = [\"pull\"]")
            .build();
        async move {
            let issuer = Issuer::start(tmp.path(), &config, &[]).await;
            let log = issuer.proc.log_text();
            drop(issuer);
            drop(tmp);
            log
        }
    };
    // A bare {sub}, and a group from a claim no rule pins: both could be anyone's name.
    let log = start_with("{sub}", "").await;
    assert!(
        log.contains("oidc[0].username") && log.contains("ci:{sub}"),
        "{log}"
    );
    assert!(log.contains("oidc[0].groups"), "{log}");
    // A prefix, and the group's claim pinned by require: nothing to warn about.
    let log = start_with(
        "ci:{sub}",
        "[oidc.require]\nrepository_owner = \"my-org\"\n",
    )
    .await;
    assert!(!log.contains("shares its names"), "{log}");
}
