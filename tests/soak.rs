//! The soak: `serve` with htpasswd, a SQLite store, an upstream identity API and an OIDC
//! provider, and `dev` with its built-in registry, under mixed traffic at full rate for
//! SOAK_SECONDS (60 by default; `scripts/soak --minutes N` for longer): warm tokens, cold logins,
//! wrong passwords, refresh grants, OIDC ID tokens, admin changes every second, a SIGHUP every
//! 10 s alternating two rule sets, and pushes and pulls against `dev`.
//!
//! It fails on any 5xx or connection error, on a token that is not exactly what one of the two
//! rule sets grants, on RSS at the end above 1.2× the baseline (taken after the first minute, or
//! a quarter of a shorter run), on open files growing, and on any `ERROR` in either log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_api::FakeApi;
use common::hygiene::*;
use common::idp::{sign_with, Idp};
use common::load::{
    admin_changes, client, push_and_pull, seconds_since_epoch, send, start_dev, timed, Outcome,
    Tally, Timeline,
};
use common::store_api::*;
use common::*;
use serde_json::{json, Value};

/// The two rule sets the SIGHUPs alternate between: (account or group, name, actions).
const RULES: [&[(&str, &str, &[&str])]; 2] = [
    &[
        ("account alice", "team/**", &["pull", "push"]),
        ("account ci", "ci/**", &["pull", "push"]),
        ("group fleet", "fleet/**", &["pull"]),
        ("group my-org", "my-org/*", &["pull", "push"]),
    ],
    &[
        ("account alice", "team/**", &["pull"]),
        ("account ci", "ci/**", &["pull"]),
        ("group fleet", "fleet/**", &["pull", "push"]),
        ("group my-org", "my-org/*", &["pull"]),
    ],
];

/// Each kind of token request's scope: one repository under a rule, one under none.
const ASKS: [(&str, &str); 4] = [
    ("alice", "team/app"),
    ("ci", "ci/app"),
    ("fleet", "fleet/app"),
    ("my-org", "my-org/app"),
];

/// Every kind of request the soak sends: each must be answered (2xx, or 4xx for the fault).
const KINDS: [&str; 10] = [
    "warm htpasswd",
    "warm store",
    "cold upstream",
    "oidc",
    "refresh grant",
    "admin change",
    "dev token",
    "dev push",
    "dev pull",
    "wrong password",
];

fn acl(set: usize) -> String {
    RULES[set]
        .iter()
        .map(|(who, name, actions)| {
            let (key, value) = who.split_once(' ').expect("who");
            format!("[[acl]]\n{key} = {value:?}\nname = {name:?}\nactions = {actions:?}\n")
        })
        .collect()
}

/// What rule set `set` grants `who` asking for push and pull of its repository.
fn grants(set: usize, who: &str) -> Value {
    let (_, name, actions) = RULES[set]
        .iter()
        .find(|(w, _, _)| w.ends_with(who))
        .expect("rule");
    json!([{"type": "repository", "name": name.replace("**", "app").replace('*', "app"), "actions": actions}])
}

/// The caches (`identity.cache_capacity`, above) and the damping tables are made small, so
/// that every one of them is full within the soak's first seconds (new upstream devices and
/// OIDC tokens arrive by the hundred a second): what grows after the baseline is then a leak,
/// not a table filling up to its cap. tests/bounded.rs measures the tables at their caps.
const SMALL_TABLES: &str = "[damping]\ntable_capacity = 5000";

fn config(db: &Db, api: &FakeApi, idp: &Idp, set: usize) -> String {
    ConfigBuilder::keys_from_env(SERVICE)
        .section(&format!(
            "[store]\nurl = {:?}\npepper_files = [{PEPPER:?}]",
            db.url
        ))
        .section(&format!(
            "[upstream]\nurl = {:?}\ncredentials = \"bearer\"\nusername_pointer = \"/data/slug\"\n\
             match_username = true\ngroups_pointer = \"/data/data/groups\"\ntimeout_ms = 2000\n\
             cache_ttl_seconds = 60",
            api.url("/api/v2/whoami")
        ))
        .section(&format!(
            "[[oidc]]\nissuer = {:?}\naudiences = [{SERVICE:?}]\nusername = \"{{repository}}@{{ref}}\"\n\
             groups = [\"{{repository_owner}}\"]\n[oidc.require]\nrepository_owner = \"my-org\"",
            idp.issuer()
        ))
        .section("[audit]\nenabled = true\npath = \"audit.log\"")
        .section(SMALL_TABLES)
        .section(&acl(set))
        .build()
        .replace("[identity]\n", "[identity]\ncache_capacity = 2000\n")
}

/// Tokens that granted what rule set 0 or 1 grants: the reloads alternate them, so both count.
static GRANTED_BY: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// A token answer checked against both rule sets: a 200 must grant exactly what one of them
/// grants `who`.
fn token_outcome(sent: Result<(u16, bytes::Bytes), String>, who: &str) -> Outcome {
    let (status, body) = match sent {
        Ok(a) => a,
        Err(e) => return Outcome::NoAnswer(e),
    };
    if status != 200 {
        return Outcome::Answer(status, None);
    }
    let access = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| Some(jwt_claims(b["token"].as_str()?)["access"].clone()));
    let set = (0..RULES.len()).find(|&set| access.as_ref() == Some(&grants(set, who)));
    let why = match set {
        Some(set) => {
            GRANTED_BY[set].fetch_add(1, Ordering::Relaxed);
            None
        }
        None => Some(format!(
            "{who} was granted {access:?}, which no rule set grants"
        )),
    };
    Outcome::Answer(status, why)
}

/// Token requests in a loop until `stop`, each checked as `who`'s and noted as `kind`.
#[derive(Clone)]
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

impl Load {
    /// Sends `request(n)` for n = 0, 1, ...: only the sending is timed, not the building (an
    /// ID token's signature, a new client).
    fn tokens<F>(
        &self,
        kind: &'static str,
        allowed: &'static [u16],
        who: &'static str,
        mut request: F,
    ) -> tokio::task::JoinHandle<()>
    where
        F: FnMut(u64) -> reqwest::RequestBuilder + Send + 'static,
    {
        let Load { stop, tally } = self.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (took, sent) = timed(send(request(n))).await;
                tally.note(kind, allowed, took, token_outcome(sent, who));
                n += 1;
            }
        })
    }
}

/// A GET token request of `user` for push and pull of `who`'s repository.
fn ask(
    c: &reqwest::Client,
    realm: &str,
    user: &str,
    password: &str,
    who: &str,
) -> reqwest::RequestBuilder {
    let repo = ASKS.iter().find(|(w, _)| *w == who).expect("ask").1;
    c.get(realm)
        .query(&[
            ("service", SERVICE),
            ("scope", &format!("repository:{repo}:pull,push")),
            ("scope", "repository:secret/x:pull"),
        ])
        .basic_auth(user, Some(password))
}

#[tokio::test(flavor = "multi_thread")]
async fn mixed_traffic_with_reloads_loses_nothing_and_leaks_nothing() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = Db::new(Kind::Sqlite, dir).await;
    let api = FakeApi::start().await;
    let idp = Idp::start().await;
    users_before_start(dir, &config(&db, &api, &idp, 0), &[("ci", None)]);
    let issuer = start_on(dir, &config(&db, &api, &idp, 0)).await;
    let (dev, dev_url, registry) = start_dev(dir).await;
    let challenge = reqwest::get(format!("{registry}/v2/")).await.expect("/v2/");
    let challenge = challenge.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    let dev_service = challenge
        .split("service=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("service in the challenge")
        .to_string();
    let (_, first) = login(&issuer, CI.0, CI.1).await;
    let refresh = first["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = Load {
        stop: stop.clone(),
        tally: tally.clone(),
    };
    let realm = issuer.realm();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (r, c) = (realm.clone(), client());
        tasks.push(load.tokens("warm htpasswd", &[200], "alice", move |_| {
            ask(&c, &r, "alice", "alice-pw", "alice")
        }));
    }
    for _ in 0..2 {
        let (r, c) = (realm.clone(), client());
        tasks.push(load.tokens("warm store", &[200], "ci", move |_| {
            ask(&c, &r, CI.0, CI.1, "ci")
        }));
    }
    for w in 0..2 {
        let (r, state) = (realm.clone(), api.state.clone());
        tasks.push(load.tokens("cold upstream", &[200], "fleet", move |n| {
            let (token, slug) = (format!("tok-{w}-{n}"), format!("device-{w}-{n}"));
            state.add(&token, &slug, &["fleet"], &[]);
            // A new device: a new connection too.
            ask(&client(), &r, &slug, &token, "fleet")
        }));
    }
    for w in 0..2 {
        let (r, iss, key, c) = (realm.clone(), idp.issuer(), idp.key("ec-1"), client());
        tasks.push(load.tokens("oidc", &[200], "my-org", move |n| {
            let now = seconds_since_epoch();
            let claims = json!({
                "iss": iss, "aud": SERVICE, "sub": "repo:my-org/app:ref:refs/heads/main",
                "repository": "my-org/app", "repository_owner": "my-org",
                "ref": "refs/heads/main", "iat": now, "exp": now + 300, "jti": format!("{w}-{n}")
            });
            ask(&c, &r, "oidc", &sign_with(&key, "ec-1", &claims), "my-org")
        }));
    }
    {
        let (r, refresh, c) = (realm.clone(), refresh.clone(), client());
        tasks.push(load.tokens("refresh grant", &[200], "ci", move |_| {
            c.post(&r).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", SERVICE),
                ("client_id", "ci"),
                ("scope", "repository:ci/app:pull,push"),
            ])
        }));
    }
    {
        // The fault injected: a wrong password, refused (401) and soon damped (429).
        let (r, c) = (realm.clone(), client());
        // A guesser: another password each time (a repeated one is answered from the
        // failure cache and is not a new guess).
        tasks.push(
            load.tokens("wrong password", &[401, 429], "alice", move |n| {
                ask(&c, &r, "mallory", &format!("guess-{n}"), "alice")
            }),
        );
    }
    {
        let dev = (format!("{dev_url}/v1/registry"), dev_service, registry);
        let (stop, tally) = (stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                push_and_pull(&c, &dev, n, &tally).await;
            }
        }));
    }
    tasks.push(tokio::spawn(admin_changes(
        issuer.url(),
        stop.clone(),
        tally.clone(),
    )));

    // The schedule: a SIGHUP every 10 s alternating the rule sets, a sample of both processes'
    // memory and files every `every` seconds, until the end.
    let every = (seconds / 20).max(5);
    let mut timeline = Timeline::new(&[("serve", issuer.proc.child.id()), ("dev", dev.child.id())]);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let (mut hups, mut next_sample) = (0, start);
    let mut next_hup = start + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        if now >= next_sample {
            timeline.sample();
            next_sample += Duration::from_secs(every);
        }
        if now >= end {
            break;
        }
        if now >= next_hup {
            hups += 1;
            std::fs::write(dir.join("issuer.toml"), config(&db, &api, &idp, hups % 2))
                .expect("config");
            issuer.proc.signal("-HUP");
            next_hup += Duration::from_secs(10);
        }
        let wake = next_sample.min(next_hup).min(end);
        tokio::time::sleep_until(wake.into()).await;
    }
    stop.store(true, Ordering::SeqCst);
    let ran = start.elapsed().as_secs_f64();
    for t in tasks {
        t.await.expect("worker");
    }
    let baseline = timeline.at((seconds as f64 / 4.0).min(60.0));
    let last = timeline.last();
    eprintln!(
        "soak: {ran:.0} s, {} requests, {hups} SIGHUPs; tokens as rule set 0 / 1 grants: {} / {}\n\n{}\n{}",
        tally.total(),
        GRANTED_BY[0].load(Ordering::Relaxed),
        GRANTED_BY[1].load(Ordering::Relaxed),
        tally.table(ran),
        timeline.table()
    );
    // Every SIGHUP reloaded (the file watcher may add a reload of its own for the same
    // rewrite, so at least as many), none failed, and both rule sets were in force in turn.
    let reloads = |result: &'static str| {
        let issuer = &issuer;
        async move {
            let series = format!("token_issuer_reloads_total{{result=\"{result}\"}}");
            issuer.metric(&series).await.unwrap_or(0.0)
        }
    };
    within(Duration::from_secs(30), "every SIGHUP's reload", || async {
        reloads("ok").await >= hups as f64
    })
    .await;
    assert_eq!(reloads("failed").await, 0.0, "a reload failed");
    assert!(
        hups == 0 || GRANTED_BY.iter().all(|n| n.load(Ordering::Relaxed) > 0),
        "both rule sets grant in turn"
    );
    for kind in KINDS {
        let answered = match kind {
            "wrong password" => tally.answered(kind, 400..500),
            _ => tally.answered(kind, 200..300),
        };
        assert!(
            answered > 0,
            "no {kind} request was answered as it should be"
        );
    }
    let (count, problems) = tally.problems();
    assert_eq!(count, 0, "{count} problems, the first: {problems:#?}");
    for (i, name) in timeline.names.iter().enumerate() {
        let ((rss0, fds0), (rss1, fds1)) = (baseline.procs[i], last.procs[i]);
        assert!(
            rss1 as f64 <= 1.2 * rss0 as f64,
            "{name}: RSS {rss1} KiB at the end, {rss0} KiB at {:.0} s",
            baseline.at
        );
        assert!(
            fds1 <= fds0 + 8,
            "{name}: {fds1} open files at the end, {fds0} at {:.0} s",
            baseline.at
        );
    }
    for (name, log) in [("serve", issuer.proc.log_text()), ("dev", dev.log_text())] {
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("ERROR"))
            .take(5)
            .collect();
        assert!(errors.is_empty(), "{name} logged errors: {errors:#?}");
    }
}
