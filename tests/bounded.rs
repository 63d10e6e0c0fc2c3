//! A flood of distinct bogus usernames from distinct addresses (IPv6 networks, through a
//! trusted proxy) is remembered within the tables' capacities, not per request: the damping
//! tables' entries stay at their bound, the process's memory does not grow with the flood, and a
//! good user is served throughout. (Generated-secret-shaped passwords cost no bcrypt, so the
//! flood runs at the issuer's full rate; each is still a failed login.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::store_api::{keys, SERVICE};
use common::{write_users, ConfigBuilder, Issuer};

/// How many bogus logins (BOUNDED_FLOOD; `scripts/soak --million-names` asks for 1,000,000).
fn flood() -> usize {
    env_number("BOUNDED_FLOOD", 20_000) as usize
}

/// `damping.table_capacity` and `identity.cache_capacity` (BOUNDED_CAPACITY; small here so the
/// tables fill early in the flood, the deployed 100,000 for the million).
fn capacity() -> u64 {
    env_number("BOUNDED_CAPACITY", 1_000)
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect(name))
}

async fn alice(issuer: &Issuer) -> (u16, Duration) {
    let t = Instant::now();
    let s = reqwest::Client::new()
        .get(issuer.realm())
        .query(&[("service", SERVICE), ("scope", "repository:a/b:pull")])
        .basic_auth("alice", Some("alice-pw"))
        .send()
        .await
        .expect("realm")
        .status()
        .as_u16();
    (s, t.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bogus_names_from_many_networks_stays_within_the_tables() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    let (env, _) = keys(dir);
    let (flood, capacity) = (flood(), capacity());
    let capacity_text = capacity.to_string();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("TOKEN_ISSUER_IDENTITY__CACHE_CAPACITY", &capacity_text));
    let cfg = ConfigBuilder::keys_from_env(SERVICE)
        .section(&format!(
            "[http]\ntrusted_proxies = [\"127.0.0.1/32\"]\n[damping]\ntable_capacity = {capacity}"
        ))
        .allow("alice", "**", &["pull"])
        .build();
    let issuer = Issuer::start(dir, &cfg, &env).await;
    assert_eq!(alice(&issuer).await.0, 200);
    let pid = issuer.proc.child.id();
    let before = common::vm_rss_kib(pid);

    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..32)
        .map(|_| {
            let (realm, next) = (issuer.realm(), next.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= flood {
                        return;
                    }
                    // A /64 of its own each, as a client rotating networks would.
                    let from = format!("2001:db8:{:x}:{:x}::1", i >> 16, i & 0xffff);
                    let n = data_encoding::BASE32_NOPAD.encode(&(i as u64).to_be_bytes());
                    let guess = format!("tis_{:a>32}", n.to_lowercase());
                    let s = c
                        .get(&realm)
                        .query(&[("service", SERVICE)])
                        .header("x-forwarded-for", from)
                        .basic_auth(format!("bogus-{i}"), Some(guess))
                        .send()
                        .await
                        .expect("realm")
                        .status()
                        .as_u16();
                    assert!(s == 401 || s == 429, "a bogus login answered {s}");
                }
            })
        })
        .collect();
    // The good user, during the flood.
    let mut worst = Duration::ZERO;
    while next.load(Ordering::SeqCst) < flood {
        let (s, took) = alice(&issuer).await;
        assert_eq!(s, 200);
        worst = worst.max(took);
    }
    for f in flooders {
        f.await.expect("flooder");
    }
    let after = common::vm_rss_kib(pid);
    let entries = issuer
        .metric("token_issuer_damping_entries")
        .await
        .expect("the damping gauge");
    eprintln!(
        "{flood} bogus logins in {:.0} s: damping entries {entries}, RSS {before} -> {after} KiB, \
         alice's slowest {worst:?}",
        start.elapsed().as_secs_f64()
    );
    // Three tables (pairs, addresses, accounts) of `capacity` each, with moka's slack.
    assert!(
        entries <= 3.3 * capacity as f64,
        "{entries} damping entries"
    );
    // At the small capacity, a flood adds less than 64 MiB; at any, the whole stays < 200 MiB.
    if capacity <= 1_000 {
        assert!(after < before + 64 * 1024, "RSS {before} -> {after} KiB");
    }
    assert!(after < 200 * 1024, "RSS {after} KiB");
    assert!(worst < Duration::from_secs(1), "alice waited {worst:?}");
    assert_eq!(alice(&issuer).await.0, 200);
}
