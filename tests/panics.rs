//! A handler that panics (the debug build's `/__test/panic`, armed by
//! `TOKEN_ISSUER_TEST_PANIC=1`) is answered 500 with the cause in the log, and its neighbours,
//! on other connections and on the same one, are served as if nothing happened.

use common::store_api::{keys, SERVICE};
use common::{write_users, ConfigBuilder, Issuer};

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_handler_is_a_500_and_hurts_no_neighbour() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    write_users(dir, &[("alice", "alice-pw")]);
    let (env, _) = keys(dir);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("TOKEN_ISSUER_TEST_PANIC", "1"));
    let cfg = ConfigBuilder::keys_from_env(SERVICE)
        .allow("alice", "**", &["pull"])
        .build();
    let issuer = Issuer::start(dir, &cfg, &env).await;
    // One client, one kept-alive connection: the panic's own and the requests after it.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let token = |c: reqwest::Client| {
        let realm = issuer.realm();
        async move {
            c.get(format!(
                "{realm}?service={SERVICE}&scope=repository:a/b:pull"
            ))
            .basic_auth("alice", Some("alice-pw"))
            .send()
            .await
            .expect("realm")
            .status()
            .as_u16()
        }
    };
    assert_eq!(token(client.clone()).await, 200);
    let panics = (0..4).map(|_| {
        let c = client.clone();
        let url = format!("{}/__test/panic", issuer.url());
        async move { c.get(url).send().await.expect("an answer, not a reset") }
    });
    let neighbours = (0..16).map(|_| token(reqwest::Client::new()));
    let (panicked, served) = tokio::join!(
        futures::future::join_all(panics),
        futures::future::join_all(neighbours)
    );
    for r in panicked {
        assert_eq!(r.status(), 500);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
        assert!(
            !body.to_string().contains("as asked"),
            "the cause stays in the log"
        );
    }
    assert!(served.iter().all(|s| *s == 200), "{served:?}");
    assert_eq!(token(client).await, 200, "the same client goes on");
    let log = issuer.proc.log_text();
    assert!(
        log.contains("a request handler panicked; answered 500")
            && log.contains("the test route panicked, as asked"),
        "{log}"
    );
    // Unarmed, there is no such route.
    let plain_dir = dir.join("plain");
    std::fs::create_dir_all(&plain_dir).expect("dir");
    write_users(&plain_dir, &[("alice", "alice-pw")]);
    let plain = Issuer::start(&plain_dir, &cfg, &env[..env.len() - 1]).await;
    let r = reqwest::get(format!("{}/__test/panic", plain.url()))
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
}
