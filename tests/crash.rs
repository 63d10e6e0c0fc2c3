//! What survives the process's end: admin writes answered 2xx and refresh tokens handed out,
//! through a kill -9 in the middle of a burst of writes (SQLite's commit is durable before the
//! answer goes out); and every decision answered before a clean shutdown (SIGTERM) in the
//! audit file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::hygiene::*;
use common::store_api::*;
use common::Issuer;
use serde_json::json;

/// Waits until `count` reaches `n` (the process is serving), at most 30 s.
async fn at_least(count: &AtomicUsize, n: usize, what: &str) {
    within(Duration::from_secs(30), what, || async {
        count.load(Ordering::SeqCst) >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn answered_admin_writes_and_refresh_tokens_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = Db::new(Kind::Sqlite, dir).await;
    let cfg = db.config("");
    users_before_start(dir, &cfg, &[("ci", None)]);
    let mut issuer = start_on(dir, &cfg).await;
    let (s, first) = login(&issuer, "ci", "ci-pw").await;
    assert_eq!(s, 200, "{first}");
    let refresh = first["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();

    // 8 writers, each making groups (and every fifth a generated-secret user) until the
    // process is gone; what was answered 201 is written down.
    let acked = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (url, acked, count) = (issuer.url(), acked.clone(), count.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                for n in 0.. {
                    let name = format!("w{w}-{n}");
                    let user = n % 5 == 0;
                    let (path, body) = match user {
                        true => ("users", json!({"name": name, "generate": true})),
                        false => ("groups", json!({"name": name})),
                    };
                    let sent = c
                        .post(format!("{url}/admin/v1/{path}"))
                        .basic_auth(BOSS.0, Some(BOSS.1))
                        .json(&body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().as_u16() == 201 => {
                            acked.lock().expect("acked").push((name, user));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => panic!("{path} {name}: {}", r.status()),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    at_least(&count, 200, "200 answered writes").await;
    issuer.proc.signal("-KILL");
    for w in writers {
        w.await.expect("writer");
    }
    let (status, _) = issuer.proc.wait_exit();
    assert!(!status.success(), "killed");

    let check = db.text(dir, "PRAGMA integrity_check").await;
    assert_eq!(check, "ok");
    let acked = acked.lock().expect("acked").clone();
    let issuer = start_on(dir, &cfg).await;
    for (name, user) in &acked {
        let table = if *user { "users" } else { "user_groups" };
        let found = db
            .text(
                dir,
                &format!("SELECT COUNT(*) || '' FROM {table} WHERE name = '{name}'"),
            )
            .await;
        assert_eq!(found, "1", "{name}, answered 201, is gone");
    }
    eprintln!("{} answered writes, all there after kill -9", acked.len());
    // The refresh token handed out before the kill still works.
    assert_eq!(redeem(&issuer, &refresh).await, 200);
}

/// `n` token requests' worth of load from 4 clients until the issuer stops answering.
fn hammer(
    issuer: &Issuer,
    answered: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|_| {
            let (realm, answered, stop) = (issuer.realm(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                while !stop.load(Ordering::SeqCst) {
                    let r = c
                        .get(&realm)
                        .query(&[("service", SERVICE), ("scope", "repository:a/b:pull")])
                        .basic_auth("alice", Some("alice-pw"))
                        .send()
                        .await;
                    match r {
                        Ok(r) => {
                            assert_eq!(r.status().as_u16(), 200);
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

fn decisions(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("\"kind\":\"admin\""))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_decision_answered_before_sigterm_is_in_the_audit_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let db = Db::new(Kind::Sqlite, dir).await;
    let cfg = format!(
        "{}\n[audit]\nenabled = true\npath = \"audit.log\"",
        db.config("")
    );
    users_before_start(dir, &cfg, &[]);
    let mut issuer = start_on(dir, &cfg).await;
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = hammer(&issuer, answered.clone(), stop.clone());
    at_least(&answered, 2000, "2000 tokens").await;
    issuer.proc.signal("-TERM");
    let (status, log) = issuer.proc.wait_exit();
    assert!(status.success(), "{log}");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    let answered = answered.load(Ordering::SeqCst);
    let lines = decisions(&dir.join("audit.log"));
    assert!(lines >= answered, "{answered} answered, {lines} lines");
    eprintln!("{answered} decisions answered before SIGTERM, {lines} audit lines");
}
