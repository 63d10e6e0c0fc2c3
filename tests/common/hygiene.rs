//! The credential-hygiene tests' parts: the same test on SQLite and on a PostgreSQL server of
//! its own ([`Db`], [`on_both!`]), users made with the CLI before any issuer runs, and a login
//! that asks for a refresh token.

use std::path::Path;

use serde_json::Value;

use super::postgres::Postgres;
use super::store_api::*;
use super::{write_users, ConfigBuilder, Issuer};

/// A test's store: a SQLite file in its directory, or a PostgreSQL server of its own.
pub struct Db {
    pub url: String,
    _pg: Option<Postgres>,
}

#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// What [`Db::config`] names in `store.pepper_files`, written by [`Db::new`].
pub const PEPPER: &str = "pepper";

impl Db {
    pub async fn new(kind: Kind, dir: &Path) -> Self {
        std::fs::write(
            dir.join(PEPPER),
            "test-pepper-0123456789abcdefghijklmnopqrstuvwxyz\n",
        )
        .expect("pepper");
        match kind {
            Kind::Sqlite => Self {
                url: "sqlite://store.db".into(),
                _pg: None,
            },
            Kind::Postgres => {
                let pg = Postgres::start(dir).await;
                Self {
                    url: pg.url(),
                    _pg: Some(pg),
                }
            }
        }
    }

    /// Runs `sql` on the store directly (what no API offers: a time in the past).
    pub async fn execute(&self, dir: &Path, sql: &str) {
        let pool = self.pool(dir).await;
        sqlx::query(sql).execute(&pool).await.expect(sql);
        pool.close().await;
    }

    /// The first column of the first row `sql` selects, as text.
    pub async fn text(&self, dir: &Path, sql: &str) -> String {
        let pool = self.pool(dir).await;
        let row = sqlx::query(sql).fetch_one(&pool).await.expect(sql);
        pool.close().await;
        sqlx::Row::try_get::<String, _>(&row, 0).expect("text")
    }

    async fn pool(&self, dir: &Path) -> sqlx::AnyPool {
        let url = match self.url.strip_prefix("sqlite://") {
            Some(file) => format!("sqlite://{}", dir.join(file).display()),
            None => self.url.clone(),
        };
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&url).await.expect("open the store")
    }

    /// The store tests' config on this store, with `extra` lines in `[store]`.
    pub fn config(&self, extra: &str) -> String {
        ConfigBuilder::keys_from_env(SERVICE)
            .section(&format!(
                "[store]\nurl = {:?}\npepper_files = [{PEPPER:?}]\n{extra}",
                self.url
            ))
            .allow("alice", "**", &["pull"])
            .build()
    }
}

/// `on_both!(name)`: the tests `name::sqlite` and `name::postgres`, each running the function
/// `name(Kind, &Path)` in a fresh temporary directory.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                let tmp = tempfile::tempdir().expect("tmp");
                super::$name($crate::hygiene::Kind::Sqlite, tmp.path()).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                let tmp = tempfile::tempdir().expect("tmp");
                super::$name($crate::hygiene::Kind::Postgres, tmp.path()).await;
            }
        }
    };
}

/// Writes the config and makes users with the CLI before any issuer runs: `(name, --expires)`;
/// the admin [`BOSS`] first.
pub fn users_before_start(dir: &Path, cfg: &str, users: &[(&str, Option<&str>)]) {
    std::fs::write(dir.join("issuer.toml"), cfg).expect("config");
    write_users(dir, &[("alice", "alice-pw")]);
    add_boss(&dir.join("issuer.toml"));
    let path = dir.join("issuer.toml");
    let path = path.to_str().expect("utf8");
    for (name, expires) in users {
        let mut args = vec!["users", "add", name, "--config", path];
        if let Some(e) = expires {
            args.extend(["--expires", e]);
        }
        ok(&cli(&args, &format!("{name}-pw\n")));
    }
}

/// `serve` on `cfg` in `dir`, keys from a `gen-token-auth-cert` made at the first start and
/// kept (in DIR/keys.env) for the next.
pub async fn start_on(dir: &Path, cfg: &str) -> Issuer {
    let kept = dir.join("keys.env");
    let env: Vec<(String, String)> = match std::fs::read_to_string(&kept) {
        Ok(text) => serde_json::from_str(&text).expect("keys.env"),
        Err(_) => {
            let (env, _) = keys(dir);
            std::fs::write(&kept, serde_json::to_string(&env).expect("json")).expect("keys.env");
            env
        }
    };
    write_users(dir, &[("alice", "alice-pw")]);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Issuer::start(dir, cfg, &env).await
}

/// `token-issuer ARGS --config DIR/issuer.toml`, which must succeed: its standard output.
pub fn cli_ok(dir: &Path, args: &[&str], stdin: &str) -> String {
    let config = dir.join("issuer.toml");
    let mut all = args.to_vec();
    all.extend(["--config", config.to_str().expect("utf8")]);
    ok(&cli(&all, stdin))
}

/// A token request for `user` with `password` asking for a refresh token (client `ci`): the
/// status and the body.
pub async fn login(issuer: &Issuer, user: &str, password: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(issuer.realm())
        .query(&[
            ("service", SERVICE),
            ("offline_token", "true"),
            ("client_id", "ci"),
        ])
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("realm");
    (r.status().as_u16(), r.json().await.expect("json"))
}

/// A refresh grant (client `ci`): the status.
pub async fn redeem(issuer: &Issuer, refresh: &str) -> u16 {
    reqwest::Client::new()
        .post(issuer.realm())
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("service", SERVICE),
            ("client_id", "ci"),
        ])
        .send()
        .await
        .expect("refresh")
        .status()
        .as_u16()
}

/// The names in an admin API user listing.
pub fn names(listing: &Value) -> Vec<String> {
    listing["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["name"].as_str().expect("name").to_string())
        .collect()
}
