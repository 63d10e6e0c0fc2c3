//! Hostile and broken clients against the real binary: slow and idle connections closed on
//! time, file-descriptor exhaustion without a spin, damping that slows a guesser and spares
//! everyone else, forwarded addresses believed only from trusted proxies, log lines that
//! cannot be forged, bounded upstream use, and the registry's upload bounds.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const SERVICE: &str = "registry.test";
const ISSUER: &str = "issuer.test";

fn config(dir: &Path, extra: &str) -> String {
    gen_cert(dir, ISSUER);
    ConfigBuilder::new(ISSUER, SERVICE)
        .allow("*", "**", &["*"])
        .section(extra)
        .build()
}

/// Reads until the server closes the connection; returns how long that took.
fn time_to_close(s: &mut TcpStream, started: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connect")
}

fn between(what: &str, d: Duration, lo: f64, hi: f64) {
    eprintln!("{what}: closed after {d:?}");
    assert!(
        d.as_secs_f64() >= lo && d.as_secs_f64() < hi,
        "{what}: closed after {d:?}, expected between {lo} and {hi} s"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_stalled_connections_are_closed_on_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_users(tmp.path(), &[("admin", "admin-pw")]);
    let reg_port = free_port();
    let cfg = config(
        tmp.path(),
        &format!(
            "[http]\nheader_timeout_seconds = 1\nidle_timeout_seconds = 2\nbody_timeout_seconds = 1\n\
             [registry]\nlisten = \"127.0.0.1:{reg_port}\"\nstorage = \"storage\"\n"
        ),
    );
    let issuer = Issuer::start(tmp.path(), &cfg, &[("TOKEN_ISSUER_LOG", "debug")]).await;
    let port = issuer.port;

    // A connection that never sends a byte owes its first head within the header timeout.
    let mut s = connect(port);
    between("silent", time_to_close(&mut s, Instant::now()), 0.8, 1.9);

    // Slowloris: a header byte every 100 ms never completes the head; closed all the same.
    let mut s = connect(port);
    let mut w = s.try_clone().expect("clone");
    let started = Instant::now();
    let dribble = std::thread::spawn(move || {
        let _ = w.write_all(b"GET /healthz HTTP/1.1\r\n");
        for _ in 0..40 {
            if w.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    between("slow head", time_to_close(&mut s, started), 0.8, 1.9);
    dribble.join().expect("dribble");

    // Idle after a complete request and response: the idle timeout, longer than the header's.
    let mut s = connect(port);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    between("idle", time_to_close(&mut s, Instant::now()), 1.8, 3.5);

    // A realm POST that declares 1,000 body bytes and sends 10: aborted by the body timeout.
    let mut s = connect(port);
    s.write_all(
        b"POST /v1/registry HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ngrant_type",
    )
    .expect("write");
    between(
        "stalled body",
        time_to_close(&mut s, Instant::now()),
        0.8,
        2.5,
    );

    // The same on the registry: a PATCH that stalls is cut off, its bytes are not kept, and
    // the session works afterwards.
    let registry = format!("http://127.0.0.1:{reg_port}");
    let c = reqwest::Client::new();
    let token = token(&c, &issuer.realm(), "admin", "repository:org/app:pull,push").await;
    let r = c
        .post(format!("{registry}/v2/org/app/blobs/uploads/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("start upload");
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let mut s = connect(reg_port);
    s.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        .as_bytes(),
    )
    .expect("write");
    between(
        "stalled upload",
        time_to_close(&mut s, Instant::now()),
        0.8,
        2.5,
    );
    let r = c
        .get(format!("{registry}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("status");
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-0", "the stalled chunk was kept");
    let r = c
        .patch(format!("{registry}{location}"))
        .bearer_auth(&token)
        .body("hello")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-4");
    let log = issuer.proc.log_text();
    assert!(
        !log.contains("registry storage error") && !log.contains("ERROR"),
        "a client's stall was logged as a server error:\n{log}"
    );
}

async fn token(c: &reqwest::Client, realm: &str, user: &str, scope: &str) -> String {
    let r = c
        .get(realm)
        .query(&[("service", SERVICE), ("scope", scope)])
        .basic_auth(user, Some(format!("{user}-pw")))
        .send()
        .await
        .expect("realm");
    assert_eq!(r.status(), 200);
    r.json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

#[tokio::test(flavor = "multi_thread")]
async fn descriptor_exhaustion_backs_off_and_recovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_users(tmp.path(), &[("admin", "admin-pw")]);
    let cfg = config(tmp.path(), "");
    let path = tmp.path().join("issuer.toml");
    std::fs::write(&path, cfg).expect("config");
    // The 300 connections below must reach this test's issuer (docs/testing.md, "Ports").
    let (proc, port) = on_free_port("token-issuer", async |port| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(r#"ulimit -n 256 && exec "$0" serve --config "$1" --listen "$2""#)
            .arg(bin())
            .arg(&path)
            .arg(format!("127.0.0.1:{port}"))
            .env("TOKEN_ISSUER_LOG", "info");
        let log = tmp.path().join(format!("issuer-{port}.log"));
        let mut proc = Proc::spawn("token-issuer", cmd, log);
        let listening = format!("listening listen=127.0.0.1:{port} ");
        if !proc.wait_listening(&listening, &[&lost(port)]).await {
            return None;
        }
        let health = format!("http://127.0.0.1:{port}/healthz");
        proc.wait_http(&health, 200).await;
        Some((proc, port))
    })
    .await;
    let health = format!("http://127.0.0.1:{port}/healthz");
    let pid = proc.child.id();

    // 300 connections against 256 descriptors: the rest wait in the kernel's queue.
    let held: Vec<TcpStream> = (0..300).map(|_| connect(port)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proc.log_text().contains("cannot accept connections") {
        assert!(
            Instant::now() < deadline,
            "no accept failure logged:\n{}",
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Saturated, the accept loop backs off instead of spinning.
    let before = cpu_ticks(pid);
    let window = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ticks = cpu_ticks(pid) - before;
    let per_second = ticks as f64 / window.elapsed().as_secs_f64();
    eprintln!("CPU while saturated: {per_second:.1} ticks/s (100 = one core)");
    assert!(
        per_second < 15.0,
        "{per_second} ticks/s: the accept loop spins"
    );
    let logged = proc.log_text().matches("cannot accept connections").count();
    assert!(
        logged <= 2,
        "{logged} accept errors logged: not rate-limited"
    );

    drop(held);
    let released = Instant::now();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    loop {
        if let Ok(r) = c.get(&health).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            released.elapsed() < Duration::from_secs(1),
            "/healthz not answering a second after the connections were released"
        );
    }
    eprintln!("/healthz answered {:?} after release", released.elapsed());
}

/// A client whose connections come from `ip` (any 127/8 address is loopback on Linux).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client")
}

async fn login(c: &reqwest::Client, realm: &str, user: &str, pw: &str) -> (u16, Duration) {
    let t = Instant::now();
    let r = c
        .get(realm)
        .query(&[("service", SERVICE), ("scope", "repository:org/app:pull")])
        .basic_auth(user, Some(pw))
        .send()
        .await
        .expect("realm");
    (r.status().as_u16(), t.elapsed())
}

/// 16 warm users, 20 token requests each, all at once; the 99th percentile.
async fn warm_p99(realm: &str) -> Duration {
    let c = client_from("127.0.0.5");
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (c, realm) = (c.clone(), realm.to_string());
            tokio::spawn(async move {
                let mut t = Vec::new();
                for _ in 0..20 {
                    let (status, d) = login(&c, &realm, &format!("warm{i}"), "warm-pw").await;
                    assert_eq!(status, 200);
                    t.push(d);
                }
                t
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("warm client"));
    }
    all.sort();
    all[all.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread")]
async fn damping_slows_a_guesser_and_spares_everyone_else() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Cost 10: a password check costs tens of milliseconds, as in production.
    let mut users = vec![("alice".to_string(), "alice-pw".to_string())];
    users.extend((0..3).map(|i| (format!("cold{i}"), "cold-pw".to_string())));
    users.extend((0..16).map(|i| (format!("warm{i}"), "warm-pw".to_string())));
    let lines: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 10).expect("bcrypt")))
        .collect();
    std::fs::write(tmp.path().join("users.htpasswd"), lines).expect("users");
    let issuer = Issuer::start(tmp.path(), &config(tmp.path(), ""), &[]).await;
    let realm = issuer.realm();
    let good = client_from("127.0.0.3");

    // Idle figures: a cold login (one bcrypt), and the warm clients' p99.
    let (status, cold_idle) = login(&good, &realm, "cold0", "cold-pw").await;
    assert_eq!(status, 200);
    for i in 0..16 {
        assert_eq!(
            login(&good, &realm, &format!("warm{i}"), "warm-pw").await.0,
            200
        );
    }
    let warm_idle = warm_p99(&realm).await;
    // A burst of first logins with the same credentials (`docker compose pull` of many images)
    // is one verification, never damped.
    let burst: Vec<_> = (0..24)
        .map(|_| {
            let (c, realm) = (good.clone(), realm.clone());
            tokio::spawn(async move { login(&c, &realm, "cold2", "cold-pw").await.0 })
        })
        .collect();
    for b in burst {
        assert_eq!(b.await.expect("burst"), 200);
    }

    // The guesser: 32 connections from 127.0.0.2, up to 500 distinct wrong passwords for alice.
    let attacker = client_from("127.0.0.2");
    let sent = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let turned_away = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attack_started = Instant::now();
    let guessers: Vec<_> = (0..32)
        .map(|_| {
            let (c, realm) = (attacker.clone(), realm.clone());
            let (sent, refused, turned_away, stop) = (
                sent.clone(),
                refused.clone(),
                turned_away.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let n = sent.fetch_add(1, Ordering::Relaxed);
                    if n >= 500 {
                        return;
                    }
                    match login(&c, &realm, "alice", &format!("guess-{n}")).await.0 {
                        401 => refused.fetch_add(1, Ordering::Relaxed),
                        429 => turned_away.fetch_add(1, Ordering::Relaxed),
                        s => panic!("a wrong password answered {s}"),
                    };
                }
            })
        })
        .collect();
    // Past the threshold before measuring the others.
    while refused.load(Ordering::Relaxed) < 12 {
        assert!(
            attack_started.elapsed() < Duration::from_secs(20),
            "guesses not answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (status, cold_attacked) = login(&good, &realm, "cold1", "cold-pw").await;
    assert_eq!(status, 200);
    let warm_attacked = warm_p99(&realm).await;
    // alice herself, from her own address, is not slowed by the guesser's failures.
    let (status, alice_elsewhere) =
        login(&client_from("127.0.0.4"), &realm, "alice", "alice-pw").await;
    assert_eq!(status, 200);

    // Let the guesser run 5 s in all, then count what it got.
    let remaining = Duration::from_secs(5).saturating_sub(attack_started.elapsed());
    tokio::time::sleep(remaining).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = attack_started.elapsed();
    let (checked, fast_429) = (
        refused.load(Ordering::Relaxed),
        turned_away.load(Ordering::Relaxed),
    );
    for g in guessers {
        g.abort();
    }
    eprintln!(
        "cold login idle {cold_idle:?}, under attack {cold_attacked:?}; warm p99 idle \
         {warm_idle:?}, under attack {warm_attacked:?}; alice from elsewhere {alice_elsewhere:?}; \
         guesser: {checked} refusals (401) and {fast_429} 429s in {elapsed:?}"
    );
    assert!(
        cold_attacked <= cold_idle * 2 + Duration::from_millis(20),
        "a cold login took {cold_attacked:?} under attack, {cold_idle:?} idle"
    );
    assert!(
        alice_elsewhere <= cold_idle * 2 + Duration::from_millis(20),
        "alice from another address took {alice_elsewhere:?}"
    );
    assert!(
        warm_attacked <= (warm_idle * 2).max(warm_idle + Duration::from_millis(10)),
        "warm p99 {warm_attacked:?} under attack, {warm_idle:?} idle"
    );
    // Undamped, two cores check ~30 passwords a second at this cost: 150 in 5 s. Damped, the
    // threshold's 10 pass, then one at a time after 0.5, 1, 2, 4 s.
    assert!(
        checked <= 20,
        "{checked} guesses answered in {elapsed:?}: not slowed"
    );
    assert!(fast_429 > 0, "32 parallel guesses never hit max_waiting");
    let log = issuer.proc.log_text();
    assert!(
        log.contains("slowing logins of this user from this address"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_addresses_and_escaped_log_lines() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_users(tmp.path(), &[("admin", "admin-pw")]);
    let cfg = config(tmp.path(), "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n");
    let issuer = Issuer::start(tmp.path(), &cfg, &[]).await;
    let forged = "eve\nINFO token_issuer: forged line \u{1b}[31mred";
    // From the trusted proxy: the rightmost untrusted hop is the client.
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .header("X-Forwarded-For", "198.51.100.1, 203.0.113.9, 127.0.0.1")
        .basic_auth(forged, Some("wrong"))
        .send()
        .await
        .expect("realm");
    assert_eq!(r.status(), 401);
    // From an untrusted peer: its header is ignored.
    let r = client_from("127.0.0.2")
        .get(issuer.realm())
        .header("X-Forwarded-For", "203.0.113.10")
        .basic_auth("mallory", Some("wrong"))
        .send()
        .await
        .expect("realm");
    assert_eq!(r.status(), 401);
    let log = issuer.proc.log_text();
    let eve = log
        .lines()
        .find(|l| l.contains("login refused") && l.contains("eve"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(eve.contains("peer=203.0.113.9"), "{eve}");
    assert!(eve.contains(r#"user="eve\nINFO"#), "not escaped: {eve}");
    assert!(
        !log.lines()
            .any(|l| l.starts_with("INFO token_issuer: forged")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw terminal escape in the log");
    let mallory = log
        .lines()
        .find(|l| l.contains("login refused") && l.contains("mallory"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(mallory.contains("peer=127.0.0.2"), "{mallory}");
}

/// An identity API for the bounds below: `Bearer big` answers 100 MiB of JSON-ish bytes
/// (chunked, so only counting stops it); any other key is user `u`. Repository checks take
/// 100 ms and record how many run at once.
#[derive(Default)]
struct Bounds {
    in_flight: AtomicUsize,
    most: AtomicUsize,
    calls: AtomicUsize,
}

#[poem::handler]
fn big_or_small(req: &poem::Request) -> poem::Response {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if bearer == "Bearer big" {
        let chunks =
            (0..100).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 1 << 20])));
        return poem::Response::builder()
            .content_type("application/json")
            .body(poem::Body::from_bytes_stream(futures::stream::iter(chunks)));
    }
    poem::Response::builder()
        .content_type("application/json")
        .body(r#"{"slug":"u"}"#)
}

#[poem::handler]
async fn slow_repository(poem::web::Data(b): poem::web::Data<&Arc<Bounds>>) -> &'static str {
    b.calls.fetch_add(1, Ordering::SeqCst);
    let now = b.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    b.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.in_flight.fetch_sub(1, Ordering::SeqCst);
    "{}"
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_use_is_bounded() {
    use poem::listener::{Acceptor, Listener};
    use poem::EndpointExt;
    let bounds = Arc::new(Bounds::default());
    let app = poem::Route::new()
        .at("/whoami", poem::get(big_or_small))
        .at("/repo/*", poem::get(slow_repository))
        .data(bounds.clone());
    let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind");
    let api = acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("tcp")
        .port();
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });

    let tmp = tempfile::tempdir().expect("tmp");
    gen_cert(tmp.path(), ISSUER);
    let cfg = format!(
        r#"
[token]
issuer = "{ISSUER}"
service = "{SERVICE}"
[keys]
cert_file = "{ISSUER}.crt"
key_file = "{ISSUER}.pem"
[http]
max_scopes = 3000
[upstream]
url = "http://127.0.0.1:{api}/whoami"
username_pointer = "/slug"
match_username = false
max_concurrent = 8
max_repository_checks = 16
[upstream.repository]
url = "http://127.0.0.1:{api}/repo/{{name}}"
"#
    );
    let issuer = Issuer::start(tmp.path(), &cfg, &[]).await;
    let pid = issuer.proc.child.id();
    let c = reqwest::Client::new();
    let ask = |user: &'static str, key: &'static str, scopes: Vec<String>| {
        let (c, realm) = (c.clone(), issuer.realm());
        async move {
            let r = c
                .get(realm)
                .query(&[("service", SERVICE), ("scope", &scopes.join(" "))])
                .basic_auth(user, Some(key))
                .send()
                .await
                .expect("realm");
            let status = r.status().as_u16();
            (status, r.text().await.expect("body"))
        }
    };

    // 100 MiB from the identity API: a 503 that says so, read no further than the limit.
    let warm = ask("u", "small", vec!["repository:warm:pull".into()]).await;
    assert_eq!(warm.0, 200, "{}", warm.1);
    let before = vm_rss_kib(pid);
    let (status, body) = ask("u", "big", vec!["repository:a:pull".into()]).await;
    let grown = vm_rss_kib(pid).saturating_sub(before);
    eprintln!("100 MiB answer: {status}, RSS grew {grown} KiB");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("answered too much"), "{body}");
    assert!(
        grown < 5 * 1024,
        "RSS grew {grown} KiB reading a 100 MiB answer"
    );

    // 2,400 repositories in one request: refused before any repository call.
    let many: Vec<String> = (0..2400).map(|i| format!("repository:r{i}:pull")).collect();
    let (status, body) = ask("u", "k1", many).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("upstream.max_repository_checks"), "{body}");
    assert_eq!(
        bounds.calls.load(Ordering::SeqCst),
        1,
        "only the warm-up's check"
    );

    // Four requests of 16 repositories each at once: never more than 8 calls in flight.
    let parallel: Vec<_> = ["k2", "k3", "k4", "k5"]
        .into_iter()
        .map(|key| {
            let scopes: Vec<String> = (0..16)
                .map(|i| format!("repository:{key}/r{i}:pull"))
                .collect();
            tokio::spawn(ask("u", key, scopes))
        })
        .collect();
    for p in parallel {
        let (status, body) = p.await.expect("request");
        assert_eq!(status, 200, "{body}");
    }
    let most = bounds.most.load(Ordering::SeqCst);
    eprintln!("at most {most} repository calls at once");
    assert!(most <= 8, "{most} upstream calls at once, the cap is 8");
    assert_eq!(bounds.calls.load(Ordering::SeqCst), 1 + 64);
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_upload_bounds() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_users(tmp.path(), &[("admin", "admin-pw")]);
    let reg_port = free_port();
    let cfg = config(
        tmp.path(),
        &format!(
            "[registry]\nlisten = \"127.0.0.1:{reg_port}\"\nstorage = \"storage\"\n\
             max_uploads = 5\nmax_uploads_per_repository = 3\n"
        ),
    );
    let issuer = Issuer::start(tmp.path(), &cfg, &[]).await;
    let registry = format!("http://127.0.0.1:{reg_port}");
    let c = reqwest::Client::new();
    let token = token(
        &c,
        &issuer.realm(),
        "admin",
        "repository:org/a:pull,push repository:org/b:pull,push,delete repository:org/c:pull,push",
    )
    .await;
    let uploads = tmp.path().join("storage/uploads");
    let sessions = || std::fs::read_dir(&uploads).map_or(0, |d| d.count());
    let start = |repo: &str| {
        c.post(format!("{registry}/v2/{repo}/blobs/uploads/"))
            .bearer_auth(&token)
            .send()
    };

    // A PATCH whose Content-Range disagrees with its body: 416, and nothing kept.
    let r = start("org/a").await.expect("start");
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let r = c
        .patch(format!("{registry}{location}"))
        .bearer_auth(&token)
        .header("Content-Range", "0-9")
        .body("12345")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 416);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("declares 10 bytes, the body had 5"));
    let r = c
        .get(format!("{registry}{location}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("status");
    assert_eq!(r.headers()["range"], "0-0");
    let r = c
        .patch(format!("{registry}{location}"))
        .bearer_auth(&token)
        .header("Content-Range", "0-4")
        .body("12345")
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 202);
    // A client that goes away mid-chunk: not a server error, and the chunk is undone.
    let mut s = connect(reg_port);
    s.write_all(
        format!(
            "PATCH {location} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: 100000\r\n\r\n0123456789"
        )
        .as_bytes(),
    )
    .expect("write");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c
            .get(format!("{registry}{location}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("status");
        if r.status() == 204 && r.headers()["range"] == "0-4" {
            break;
        }
        // 204 "0-4" once the cut-short chunk is undone (its request may still be ending).
        assert!(
            Instant::now() < deadline,
            "the cut-short chunk was kept: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sessions(), 1);

    // A monolithic POST with a wrong digest leaves no session behind.
    let r = c
        .post(format!(
            "{registry}/v2/org/b/blobs/uploads/?digest=sha256:{}",
            "0".repeat(64)
        ))
        .bearer_auth(&token)
        .body("not that")
        .send()
        .await
        .expect("monolithic");
    assert_eq!(r.status(), 400);
    assert_eq!(sessions(), 1, "the failed monolithic upload left a session");

    // Caps: 3 per repository, 5 in all; past them 429 TOOMANYREQUESTS with Retry-After.
    for _ in 0..2 {
        assert_eq!(start("org/a").await.expect("start").status(), 202);
    }
    let r = start("org/a").await.expect("start");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body = r.text().await.expect("body");
    assert!(
        body.contains("TOOMANYREQUESTS") && body.contains("registry.max_uploads_per_repository"),
        "{body}"
    );
    let mut in_b = Vec::new();
    for _ in 0..2 {
        let r = start("org/b").await.expect("start");
        assert_eq!(r.status(), 202);
        in_b.push(
            r.headers()["location"]
                .to_str()
                .expect("location")
                .to_string(),
        );
    }
    let r = start("org/c").await.expect("start");
    assert_eq!(r.status(), 429);
    assert!(r
        .text()
        .await
        .expect("body")
        .contains("registry.max_uploads"));
    // Cancelling one makes room.
    let r = c
        .delete(format!("{registry}{}", in_b[0]))
        .bearer_auth(&token)
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 204);
    assert_eq!(start("org/c").await.expect("start").status(), 202);
    let log = issuer.proc.log_text();
    assert!(
        !log.contains("registry storage error") && !log.contains("ERROR"),
        "a client's doing logged as a server error:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_cap_wait_their_turn() {
    let tmp = tempfile::tempdir().expect("tmp");
    write_users(tmp.path(), &[("admin", "admin-pw")]);
    let cfg = config(
        tmp.path(),
        "[http]\nmax_connections = 4\nheader_timeout_seconds = 60\n",
    );
    let issuer = Issuer::start(tmp.path(), &cfg, &[]).await;
    let health = format!("{}/healthz", issuer.url());
    // Four silent connections take every slot (after wait_http's own has closed: retried).
    let mut held: Vec<TcpStream> = (0..4).map(|_| connect(issuer.port)).collect();
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let fifth = c.get(&health).send().await;
    assert!(
        fifth.is_err(),
        "a fifth connection was served past max_connections = 4"
    );
    // One slot freed: the next connection is served.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(r) = c.get(&health).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "no slot after one was freed");
    }
}
