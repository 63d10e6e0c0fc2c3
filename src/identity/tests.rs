use super::htpasswd::Htpasswd;
use super::*;
use checks::Attempt;

fn creds(u: &str, p: &str) -> Credentials {
    Credentials {
        username: u.into(),
        password: p.into(),
    }
}

/// A login from loopback: the identity, or why not.
async fn login(
    auth: &Authenticator,
    user: &str,
    password: &str,
) -> Result<Arc<Identity>, AuthError> {
    auth.authenticate(&creds(user, password), [127, 0, 0, 1].into())
        .await
        .map(|caller| caller.identity().clone())
}

/// An authenticator with only an htpasswd file: `alice` with `password`.
fn alice_in_a_file(password: &str) -> Authenticator {
    let h = bcrypt::hash(password, 4).expect("hash");
    let file = Htpasswd::parse(&format!("alice:{h}\n")).expect("parse");
    let settings = CacheSettings {
        local_ttl: Duration::from_secs(60),
        capacity: 100,
    };
    let sources = Sources {
        htpasswd: Some(file),
        ..Sources::default()
    };
    Authenticator::new(sources, settings, None).expect("auth")
}

#[tokio::test]
async fn local_users_and_cache() {
    let auth = alice_in_a_file("pw");
    let cached = || async { auth.local.as_ref().expect("htpasswd").cached().await };
    let alice = login(&auth, "alice", "pw").await.expect("ok");
    assert_eq!(alice.name, "alice");
    assert_eq!(cached().await, 1);
    assert_eq!(
        login(&auth, "alice", "nope").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(
        login(&auth, "bob", "pw").await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(cached().await, 1, "failures are not cached as identities");
    assert!(auth
        .checks
        .refused_lately(&auth.cache_key(&creds("alice", "nope"))));
    // The key depends on both halves and on where the split falls.
    assert_ne!(
        auth.cache_key(&creds("ab", "c")),
        auth.cache_key(&creds("a", "bc"))
    );
}

/// The sources' order: a name htpasswd knows is decided by htpasswd (its password, its
/// identity), even when the store holds the same name; a name only the store knows is the
/// store's; a name no source knows is refused after a check of the same cost (a dummy
/// hash), counted as a mismatch.
#[tokio::test]
async fn sources_are_asked_in_order_and_a_name_nobody_knows_costs_a_check() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Arc::new(
        crate::store::Store::open("sqlite://s.db", dir.path())
            .await
            .expect("store"),
    );
    let fast = |pw: &str| bcrypt::hash(pw, 4).expect("hash");
    store
        .add_user("alice", &fast("store-pw"), true, false, None)
        .await
        .expect("alice in the store too");
    store
        .add_user("carol", &fast("carol-pw"), false, false, None)
        .await
        .expect("carol");
    let file = Htpasswd::parse(&format!("alice:{}\n", fast("file-pw"))).expect("parse");
    let ttl = Duration::from_secs(60);
    let users =
        StoreUsers::new(store, ttl, ttl, 100, ttl, (None, Default::default())).expect("users");
    let settings = CacheSettings {
        local_ttl: ttl,
        capacity: 100,
    };
    let sources = Sources {
        htpasswd: Some(file),
        store: Some(users),
        ..Sources::default()
    };
    let auth = Authenticator::new(sources, settings, None).expect("auth");
    let alice = login(&auth, "alice", "file-pw")
        .await
        .expect("htpasswd decides alice");
    assert_eq!((alice.source, alice.admin), (Source::Local, false));
    assert_eq!(
        login(&auth, "alice", "store-pw").await,
        Err(AuthError::BadCredentials),
        "the store's alice is never asked"
    );
    let carol = login(&auth, "carol", "carol-pw")
        .await
        .expect("the store decides carol");
    assert_eq!(carol.source, Source::Store);
    let m = crate::metrics::get();
    let before = m.bcrypt_mismatch.get();
    assert_eq!(
        login(&auth, "nobody", "x").await,
        Err(AuthError::BadCredentials)
    );
    assert!(
        m.bcrypt_mismatch.get() > before,
        "an unknown name costs a check"
    );
}

/// A source that builds names, as the upstream API does: `as:NAME` proves NAME, `down` is a
/// 503, anything else is not its credential.
struct Builder;

impl IdentitySource for Builder {
    fn name(&self) -> &'static str {
        "builder"
    }

    fn answer<'a>(&'a self, at: &'a Attempt<'a>) -> futures::future::BoxFuture<'a, Answer> {
        Box::pin(async move {
            match at.creds.password.strip_prefix("as:") {
                Some(name) => Answer::Known(Arc::new(Identity {
                    source: Source::Upstream,
                    ..Identity::local(name)
                })),
                None if at.creds.password == "down" => {
                    Answer::Refused(AuthError::Unavailable("the builder is down".into()))
                }
                None => Answer::NotMine,
            }
        })
    }

    fn builds_names(&self) -> bool {
        true
    }
}

/// The rules between sources: the first that decides answers; a name a later source builds
/// may not be an earlier source's account; a refusal ends the walk; a credential nobody
/// decides is a wrong password.
#[tokio::test]
async fn a_built_name_may_not_be_another_source_s_account() {
    let auth = alice_in_a_file("file-pw").then(Arc::new(Builder));
    let alice = login(&auth, "alice", "file-pw").await.expect("the file's");
    assert_eq!(alice.source, Source::Local);
    assert_eq!(
        login(&auth, "device", "as:alice").await,
        Err(AuthError::BadCredentials),
        "the builder may not name the file's alice"
    );
    let zed = login(&auth, "device", "as:zed").await.expect("built");
    assert_eq!((zed.name.as_str(), zed.source), ("zed", Source::Upstream));
    assert!(matches!(
        login(&auth, "device", "down").await,
        Err(AuthError::Unavailable(_))
    ));
    assert_eq!(
        login(&auth, "device", "neither").await,
        Err(AuthError::BadCredentials)
    );
}

#[test]
fn debug_never_shows_the_password() {
    assert!(!format!("{:?}", creds("u", "hunter2")).contains("hunter2"));
}
