//! The database store on a real PostgreSQL server shared by two issuers (replicas): changes
//! seen within the bound, and the database stopped mid-run.

use std::time::Duration;

use common::postgres::Postgres;
use common::store_api::*;
use common::Issuer;
use serde_json::json;

/// A PostgreSQL server and one issuer on it (a cache lifetime of 1 s, `boss` its admin), with
/// the temporary directory they live in.
async fn pg_issuer() -> (tempfile::TempDir, Postgres, Issuer) {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let pg = Postgres::start(dir).await;
    let (env, _) = keys(dir);
    let issuer = start(&dir.join("a"), &pg.url(), 1, &env).await;
    add_boss(&dir.join("a/issuer.toml"));
    (tmp, pg, issuer)
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_replicas_see_changes_within_the_bound_and_survive_an_outage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut pg = Postgres::start(dir).await;
    let (env, _) = keys(dir);
    const TTL: u64 = 1;
    let bound = Duration::from_secs(TTL) + Duration::from_millis(900);
    let a = start(&dir.join("a"), &pg.url(), TTL, &env).await;
    let b = start(&dir.join("b"), &pg.url(), TTL, &env).await;
    add_boss(&dir.join("a/issuer.toml"));
    let boss = Some(BOSS);
    // The URL's password is never shown.
    assert!(
        a.proc
            .log_text()
            .contains("store=postgres://postgres@127.0.0.1"),
        "{}",
        a.proc.log_text()
    );
    assert!(!a.proc.log_text().contains(common::postgres::PASSWORD));

    // Unknown to B (and remembered as unknown), then created through A.
    assert_eq!(token(&b, ("bob", "bob-pw"), &[]).await.0, 401);
    assert_eq!(
        api(
            &a,
            "POST",
            "/users",
            boss,
            Some(json!({"name": "bob", "password": "bob-pw"}))
        )
        .await
        .0,
        201
    );
    let took = within(bound, "B sees the new user", || async {
        token(&b, ("bob", "bob-pw"), &[]).await.0 == 200
    })
    .await;
    eprintln!("a new user reached the second issuer in {took:?} (bound {TTL} s)");
    // A grant through A.
    assert_eq!(
        api(
            &a,
            "POST",
            "/grants",
            boss,
            Some(json!({"user": "bob", "name": "bob/*", "actions": ["pull"]}))
        )
        .await
        .0,
        201
    );
    let want = access(&[("repository", "bob/app", &["pull"])]);
    let took = within(bound, "B applies the new grant", || async {
        token(&b, ("bob", "bob-pw"), &["repository:bob/app:pull"])
            .await
            .1
            == want
    })
    .await;
    eprintln!("a new grant reached the second issuer in {took:?}");
    // Disabled through A: B refuses within the bound.
    assert_eq!(
        api(
            &a,
            "PATCH",
            "/users/bob",
            boss,
            Some(json!({"disabled": true}))
        )
        .await
        .0,
        200
    );
    let took = within(bound, "B refuses the disabled user", || async {
        token(&b, ("bob", "bob-pw"), &[]).await.0 == 401
    })
    .await;
    eprintln!("a disabled user was refused by the second issuer in {took:?}");
    assert_eq!(
        token(&a, ("bob", "bob-pw"), &[]).await.0,
        401,
        "at once where it was changed"
    );

    // The database goes away.
    assert_eq!(
        api(
            &a,
            "POST",
            "/users",
            boss,
            Some(json!({"name": "carol", "password": "carol-pw"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(token(&b, ("carol", "carol-pw"), &[]).await.0, 200);
    pg.stop();
    let alice = ("alice", "alice-pw");
    let took = within(
        bound + Duration::from_secs(3),
        "B answers 503 for a store user",
        || async {
            let (s, msg) = token(&b, ("carol", "carol-pw"), &[]).await;
            assert!(s == 200 || s == 503, "{s}: {msg}");
            s == 503
        },
    )
    .await;
    eprintln!("503 for a store user {took:?} after the database stopped");
    let (s, msg) = token(&b, ("carol", "carol-pw"), &[]).await;
    assert_eq!(s, 503);
    assert!(
        msg.as_str().is_some_and(|m| m.contains("unavailable")),
        "{msg}"
    );
    assert_eq!(
        token(&b, ("nobody", "x"), &[]).await.0,
        503,
        "an unknown name needs the store too"
    );
    assert_eq!(api(&a, "GET", "/users", boss, None).await.0, 503);
    // htpasswd users do not need it.
    let (s, got) = token(&b, alice, &["repository:x:pull"]).await;
    assert_eq!((s, got), (200, access(&[("repository", "x", &["pull"])])));
    // Back without a restart.
    pg.resume().await;
    let took = within(Duration::from_secs(15), "B recovers", || async {
        token(&b, ("carol", "carol-pw"), &[]).await.0 == 200
    })
    .await;
    eprintln!("recovered {took:?} after the database was back");
    assert_eq!(api(&a, "GET", "/users", boss, None).await.0, 200);
    assert!(!b.proc.log_text().contains("carol-pw"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_patches_of_different_fields_all_land_on_postgres() {
    let (_tmp, _pg, issuer) = pg_issuer().await;
    concurrent_patches_lose_nothing(&issuer).await;
    // Two admins stepping down at once: the table lock lets one through, never both.
    add_deputy(&issuer).await;
    let demote = json!({"admin": false});
    let (a, b) = tokio::join!(
        api(
            &issuer,
            "PATCH",
            "/users/boss",
            Some(BOSS),
            Some(demote.clone())
        ),
        api(
            &issuer,
            "PATCH",
            "/users/deputy",
            Some(("deputy", "deputy-pw")),
            Some(demote)
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
}

/// The cold login's read keeps its connections outside the pool, without a ping before each
/// use (src/store/readers.rs); a restart closes them all, and the first login after it must
/// still get its answer, not a 503.
#[tokio::test(flavor = "multi_thread")]
async fn the_first_logins_after_a_postgres_restart_are_answered() {
    let (_tmp, mut pg, issuer) = pg_issuer().await;
    let names: Vec<String> = (0..6).map(|i| format!("robot-{i}")).collect();
    for n in &names {
        let body = json!({"name": n, "password": format!("{n}-pw")});
        assert_eq!(
            api(&issuer, "POST", "/users", Some(BOSS), Some(body))
                .await
                .0,
            201
        );
    }
    // Several logins at once, so that several connections are kept.
    let first = futures::future::join_all(names[..3].iter().map(|n| {
        let pw = format!("{n}-pw");
        let issuer = &issuer;
        async move { token(issuer, (n, &pw), &[]).await.0 }
    }))
    .await;
    assert_eq!(first, [200; 3]);
    pg.stop();
    pg.resume().await;
    // Users never asked for before: each login reads the store.
    let after = futures::future::join_all(names[3..].iter().map(|n| {
        let pw = format!("{n}-pw");
        let issuer = &issuer;
        async move { token(issuer, (n, &pw), &[]).await }
    }))
    .await;
    for (n, (s, msg)) in names[3..].iter().zip(after) {
        assert_eq!(s, 200, "{n}: {msg}");
    }
    assert_eq!(api(&issuer, "GET", "/users", Some(BOSS), None).await.0, 200);
}
