//! The store's one-statement account read against the facts it gathers.

use super::*;

/// A new SQLite store in a temporary directory, which lives as long as the first value.
async fn open_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = Store::open("sqlite://s.db", tmp.path())
        .await
        .expect("store");
    (tmp, s)
}

#[tokio::test]
async fn an_account_is_its_user_groups_and_the_grants_of_both_in_one_read() {
    let (_tmp, s) = open_store().await;
    s.add_user("ann", "h-ann", false, false, Some(4_000_000_000))
        .await
        .expect("ann");
    s.add_user("bob", "h-bob", true, false, None)
        .await
        .expect("bob");
    for g in ["ops", "dev"] {
        s.add_group(g).await.expect("group");
        s.add_member(g, "ann").await.expect("member");
    }
    let grant = |user: Option<&str>, group: Option<&str>, name: &str| NewGrant {
        user: user.map(str::to_string),
        group: group.map(str::to_string),
        service: None,
        resource_type: "repository".into(),
        name: name.into(),
        actions: vec!["pull".into()],
    };
    let mut ids = Vec::new();
    for g in [
        grant(Some("ann"), None, "ann/*"),
        grant(None, Some("ops"), "ops/*"),
        grant(Some("bob"), None, "bob/*"),
    ] {
        ids.push(s.add_grant(&g).await.expect("grant").id);
    }
    let ann = s.account("ann").await.expect("read").expect("ann");
    assert_eq!(ann.user, s.user("ann").await.expect("user").expect("ann"));
    assert_eq!(ann.groups, ["dev", "ops"]);
    let mut want = ids[..2].to_vec();
    want.sort();
    let got: Vec<String> = ann.rights.iter().map(|r| r.id.clone()).collect();
    assert_eq!(got, want, "ordered by id");
    assert!(ann
        .rights
        .iter()
        .all(|r| r.allows("ann", "svc", "repository", "ops/x", "pull")
            != r.allows("ann", "svc", "repository", "ann/x", "pull")));
    let bob = s.account("bob").await.expect("read").expect("bob");
    assert!(bob.user.admin && bob.groups.is_empty() && bob.rights.len() == 1);
    assert_eq!(s.account("nobody").await.expect("read"), None);
}

#[tokio::test]
async fn account_reads_reuse_a_kept_connection_until_it_idles_a_minute() {
    let (_tmp, s) = open_store().await;
    s.add_user("ann", "h-ann", false, false, None)
        .await
        .expect("ann");
    assert_eq!(s.readers.kept(), 0, "connected on first use");
    for _ in 0..5 {
        assert!(s.account("ann").await.expect("read").is_some());
        assert_eq!(s.readers.kept(), 1);
    }
    // One idle past a minute is closed, not used; the next read opens another.
    assert!(!s.readers.take_after(std::time::Duration::from_secs(61)));
    assert_eq!(s.readers.kept(), 0);
    assert!(s.account("ann").await.expect("read").is_some());
    assert!(s.readers.take_after(std::time::Duration::from_secs(59)));
    assert!(s.account("ann").await.expect("read").is_some());
    // A change made through the pool is seen by the kept connection's next read.
    let patch = UserPatch {
        disabled: Some(true),
        ..Default::default()
    };
    s.update_user("ann", &patch).await.expect("patch");
    assert!(
        s.account("ann")
            .await
            .expect("read")
            .expect("ann")
            .user
            .disabled
    );
}

/// A statement's parameter, for [`plan`].
enum Arg {
    Text(&'static str),
    Int(i64),
}

/// SQLite's plan for `sql` with `args` bound: the detail column of `EXPLAIN QUERY PLAN`, one
/// line a step (`SEARCH users USING INDEX ...`, `SCAN users`).
async fn plan(s: &Store, sql: &str, args: &[Arg]) -> Vec<String> {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for a in args {
        q = match a {
            Arg::Text(t) => q.bind(*t),
            Arg::Int(i) => q.bind(*i),
        };
    }
    q.fetch_all(&s.pool)
        .await
        .expect("plan")
        .iter()
        .map(|r| get::<String>(r, 3).expect("detail"))
        .collect()
}

#[tokio::test]
async fn a_users_groups_are_read_from_the_index_alone() {
    let (_tmp, s) = open_store().await;
    let plan = plan(&s, users::ACCOUNT, &[Arg::Text("ann")]).await;
    let members: Vec<&String> = plan.iter().filter(|d| d.contains(" members ")).collect();
    assert_eq!(members.len(), 2, "{plan:#?}");
    assert!(
        members
            .iter()
            .all(|d| d.contains("COVERING INDEX members_user_group")),
        "{plan:#?}"
    );
}

/// The expiry report's statements, at start-up and every five minutes: each reads the accounts
/// in its span from `users_expires_at`, not every user (1.1 s for the list at a million users).
#[tokio::test]
async fn the_expiry_report_reads_only_the_expiring_accounts() {
    let (_tmp, s) = open_store().await;
    let count = users::COUNT_EXPIRING.to_string();
    let page = users::page_sql(users::EXPIRING);
    let span = [Arg::Int(0), Arg::Int(1)];
    let after_page = [Arg::Text(""), Arg::Int(100), Arg::Int(0), Arg::Int(1)];
    for (sql, args) in [(count, &span[..]), (page, &after_page[..])] {
        let plan = plan(&s, &sql, args).await;
        assert!(
            plan.iter().any(|d| d.contains("INDEX users_expires_at"))
                && !plan.iter().any(|d| d.starts_with("SCAN users")),
            "{sql}\n{plan:#?}"
        );
    }
}

/// Write-ahead logging (`write_ahead` in mod.rs): another connection holding the write lock,
/// mid-transaction, does not stop a login's read, which sees the last committed state. In the
/// rollback-journal mode the read would wait for the lock, past this test's second.
#[tokio::test]
async fn a_login_reads_while_another_connection_holds_the_write_lock() {
    use sqlx::Connection;
    let (tmp, s) = open_store().await;
    s.add_user("ann", "h-ann", false, false, None)
        .await
        .expect("ann");
    let url = format!("sqlite://{}", tmp.path().join("s.db").display());
    let mut other = sqlx::AnyConnection::connect(&url).await.expect("connect");
    for sql in [
        "BEGIN EXCLUSIVE",
        "UPDATE users SET disabled = 1 WHERE name = 'ann'",
    ] {
        sqlx::query(sql).execute(&mut other).await.expect(sql);
    }
    let read = tokio::time::timeout(std::time::Duration::from_secs(1), s.account("ann"))
        .await
        .expect("the read waited for the writer")
        .expect("read")
        .expect("ann");
    assert!(!read.user.disabled, "the uncommitted change is not seen");
    sqlx::query("COMMIT")
        .execute(&mut other)
        .await
        .expect("commit");
    let read = s.account("ann").await.expect("read").expect("ann");
    assert!(read.user.disabled, "the committed change is");
}
