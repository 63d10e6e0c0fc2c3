use super::*;
use std::net::IpAddr;
use std::time::SystemTime;

fn record(audit: &Audit, i: usize) -> impl std::future::Future<Output = ()> + '_ {
    let scopes = vec![crate::scope::Scope::new(
        "repository",
        &format!("r{i}"),
        &["pull"],
    )];
    async move { audit.record(&line(&scopes)).await }
}

fn line(scopes: &[crate::scope::Scope]) -> Record<'_> {
    Record {
        time: SystemTime::now(),
        request_id: "r",
        client_ip: IpAddr::from([127, 0, 0, 1]),
        method: "GET",
        client_id: "",
        user: "alice",
        source: "htpasswd",
        grant: "password",
        service: "",
        requested: scopes,
        granted: &[],
        decided_by: &[crate::policy::DecidedBy::NoRule],
        outcome: "issued",
        reason: "",
        jti: "",
        exp: None,
        refresh_token_issued: false,
    }
}

#[test]
fn request_ids_are_the_prefix_and_the_counter_in_hex() {
    for n in [
        0,
        1,
        9,
        0xa,
        0xf,
        0x10,
        0xff,
        0x1234_abcd,
        u64::MAX >> 4,
        u64::MAX,
    ] {
        assert_eq!(id_text("p", n), format!("p-{n:x}"));
    }
    let (a, b) = (request_id(), request_id());
    assert_ne!(a, b);
    assert_eq!(a.split_once('-').map(|x| x.0.len()), Some(12));
}

#[test]
fn request_numbers_are_unique_across_threads_and_blocks() {
    // Four threads, each past the end of two blocks: no number twice, none zero.
    let per_thread = 2 * ID_BLOCK as usize + 7;
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || (0..per_thread).map(|_| next_number()).collect::<Vec<_>>())
        })
        .collect();
    let mut all = std::collections::HashSet::new();
    for t in threads {
        let numbers = t.join().expect("thread");
        // Within a thread they rise.
        assert!(numbers.windows(2).all(|w| w[0] < w[1]));
        for n in numbers {
            assert!(n > 0);
            assert!(all.insert(n), "{n} handed out twice");
        }
    }
    assert_eq!(all.len(), 4 * per_thread);
}

#[tokio::test]
async fn rotates_by_size_and_keeps_every_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audit.log");
    let cfg: AuditConfig = figment::Figment::new()
        .merge(figment::providers::Serialized::defaults(
            serde_json::json!({
                "enabled": true,
                "path": path,
                "max_size_mb": 1,
                "keep": 3,
            }),
        ))
        .extract()
        .expect("config");
    let audit = Audit::start(&cfg).expect("start").expect("enabled");
    // ~300 bytes a line: 10,000 lines are ~3 MB, so three files are filled and one
    // falls off the end.
    for i in 0..10_000 {
        record(&audit, i).await;
    }
    audit.flush().await;
    let mut seen = Vec::new();
    // Oldest first.
    for name in ["audit.log.3", "audit.log.2", "audit.log.1", "audit.log"] {
        let p = dir.path().join(name);
        assert!(p.exists(), "{name} exists");
        let text = std::fs::read_to_string(&p).expect("read");
        assert!(
            text.len() as u64 <= 1024 * 1024,
            "{name} is within the size"
        );
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            seen.push(v["requested"][0].as_str().expect("scope").to_string());
        }
    }
    assert!(!dir.path().join("audit.log.4").exists(), "keep = 3");
    // The newest lines are all there, in order, ending with the last one.
    assert_eq!(
        seen.last().map(String::as_str),
        Some("repository:r9999:pull")
    );
    let n: Vec<usize> = seen
        .iter()
        .map(|s| s[12..s.len() - 5].parse().expect("number"))
        .collect();
    let mut sorted = n.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), n.len(), "no line twice");
    assert_eq!(*sorted.last().expect("some"), 9_999);
    assert!(n.len() > 5_000, "three files hold most of the lines");
    // Contiguous from the oldest kept line to the end: nothing lost in between.
    assert_eq!(sorted.last().expect("x") - sorted[0] + 1, sorted.len());
}
