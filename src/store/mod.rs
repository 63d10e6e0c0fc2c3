//! The database store: users (bcrypt hashes, admin and disabled flags, expiry), groups and
//! their members, and grants. SQLite (embedded, `sqlite://FILE`) or PostgreSQL (`postgres://`,
//! for replicas) through sqlx's `Any` driver: one code path and one schema for both, applied
//! from migrations embedded in the binary at start-up.
//!
//! Plain data types in and out; what the request path needs is read through caches in
//! `identity` and `policy`, never directly per token request.

mod records;
mod refresh;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use records::{
    hash_password, parse_time, rfc3339, Account, Grant, Group, NewGrant, Rights, User, UserPatch,
};
pub use refresh::{RefreshRecord, MAX_REFRESH_PER_USER};

/// How long a store call may take before the request that needs it gets a 503.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call waits for a connection: sqlx retries a refused connect until then, so this
/// is how soon a database that went away turns into 503s. Sixteen connections serving
/// indexed lookups are never a second behind unless the database is.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines a list returns at most (`limit` is capped to this).
pub const MAX_PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            if d.is_unique_violation() {
                return Self::Conflict("it".into());
            }
            if d.is_foreign_key_violation() {
                return Self::NotFound("the user or group named".into());
            }
        }
        // The message names what failed (connection refused, timeout), never a value.
        tracing::warn!("store: {e}");
        Self::Unavailable(match e {
            sqlx::Error::PoolTimedOut => "no connection within the timeout".into(),
            sqlx::Error::Io(_) => "connection failed".into(),
            _ => "query failed".into(),
        })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub struct Store {
    pool: AnyPool,
    /// What the log and errors call it: the URL without its password.
    pub shown: String,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A user or group name: 1–128 bytes, no control characters, no ':' (Basic credentials split
/// there) and no '/' (the admin API's paths), no surrounding spaces. Anything else is stored
/// literally: queries are parameterised, and logs escape what they show.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.trim() == name
        && !name.chars().any(|c| c.is_control() || c == ':' || c == '/')
}

fn name_error(what: &str, name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{what} name {name:?}: 1-128 bytes without ':', '/', control characters or surrounding spaces"
    ))
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates. `base` resolves a relative
    /// SQLite path (the config file's directory).
    pub async fn open(url: &str, base: &Path) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, shown) = resolve(url, base)?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("store {shown}: cannot open: {e}"))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("store {shown}: cannot apply the schema: {e}"))?;
        Ok(Self { pool, shown })
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(QUERY_TIMEOUT, f).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable("no answer within 3 s".into())),
        }
    }

    // ---- users

    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        let row = self
            .timed(
                sqlx::query(
                    "SELECT name, password_hash, admin, disabled, expires_at, created_at, updated_at \
                     FROM users WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.pool),
            )
            .await?;
        row.map(|r| User::from_row(&r)).transpose()
    }

    /// A user with their groups and grants (what authentication and policy need), or `None`.
    pub async fn account(&self, name: &str) -> Result<Option<Account>> {
        let Some(user) = self.user(name).await? else {
            return Ok(None);
        };
        let groups = self.groups_of(name).await?;
        let grants = self.grants_for(name).await?;
        Ok(Some(Account::new(user, groups, grants)))
    }

    pub async fn users(&self, after: &str, limit: i64) -> Result<Vec<User>> {
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT name, password_hash, admin, disabled, expires_at, created_at, updated_at \
                     FROM users WHERE name > $1 ORDER BY name LIMIT $2",
                )
                .bind(after)
                .bind(limit.clamp(1, MAX_PAGE))
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(User::from_row).collect()
    }

    pub async fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
        disabled: bool,
        expires_at: Option<i64>,
    ) -> Result<()> {
        if !valid_name(name) {
            return Err(name_error("user", name));
        }
        let t = now();
        self.timed(
            sqlx::query(
                "INSERT INTO users (name, password_hash, admin, disabled, expires_at, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(name)
            .bind(password_hash)
            .bind(i64::from(admin))
            .bind(i64::from(disabled))
            .bind(expires_at)
            .bind(t)
            .bind(t)
            .execute(&self.pool),
        )
        .await
        .map_err(|e| conflict(e, &format!("user {name}")))?;
        Ok(())
    }

    pub async fn update_user(&self, name: &str, patch: &UserPatch) -> Result<()> {
        let Some(mut user) = self.user(name).await? else {
            return Err(StoreError::NotFound(format!("user {name}")));
        };
        if let Some(h) = &patch.password_hash {
            user.password_hash = h.clone();
        }
        if let Some(a) = patch.admin {
            user.admin = a;
        }
        if let Some(d) = patch.disabled {
            user.disabled = d;
        }
        if let Some(e) = patch.expires_at {
            user.expires_at = e;
        }
        self.timed(
            sqlx::query(
                "UPDATE users SET password_hash = $1, admin = $2, disabled = $3, expires_at = $4, \
                 updated_at = $5 WHERE name = $6",
            )
            .bind(&user.password_hash)
            .bind(i64::from(user.admin))
            .bind(i64::from(user.disabled))
            .bind(user.expires_at)
            .bind(now())
            .bind(name)
            .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let done = self
            .timed(
                sqlx::query("DELETE FROM users WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {name}")));
        }
        // Their refresh tokens could no longer be used (the account is gone); drop the rows.
        self.timed(
            sqlx::query("DELETE FROM refresh_tokens WHERE user_name = $1 AND source = 'store'")
                .bind(name)
                .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    /// The groups `user` is a member of.
    pub async fn groups_of(&self, user: &str) -> Result<Vec<String>> {
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT group_name FROM members WHERE user_name = $1 ORDER BY group_name",
                )
                .bind(user)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    // ---- groups

    pub async fn groups(&self, after: &str, limit: i64) -> Result<Vec<Group>> {
        let rows = self
            .timed(
                sqlx::query("SELECT name FROM user_groups WHERE name > $1 ORDER BY name LIMIT $2")
                    .bind(after)
                    .bind(limit.clamp(1, MAX_PAGE))
                    .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Group {
                    name: r.try_get(0)?,
                })
            })
            .collect()
    }

    pub async fn add_group(&self, name: &str) -> Result<()> {
        if !valid_name(name) {
            return Err(name_error("group", name));
        }
        self.timed(
            sqlx::query("INSERT INTO user_groups (name, created_at) VALUES ($1, $2)")
                .bind(name)
                .bind(now())
                .execute(&self.pool),
        )
        .await
        .map_err(|e| conflict(e, &format!("group {name}")))?;
        Ok(())
    }

    pub async fn delete_group(&self, name: &str) -> Result<()> {
        let done = self
            .timed(
                sqlx::query("DELETE FROM user_groups WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("group {name}")));
        }
        Ok(())
    }

    pub async fn members(&self, group: &str, after: &str, limit: i64) -> Result<Vec<String>> {
        if !self.group_exists(group).await? {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT user_name FROM members WHERE group_name = $1 AND user_name > $2 \
                     ORDER BY user_name LIMIT $3",
                )
                .bind(group)
                .bind(after)
                .bind(limit.clamp(1, MAX_PAGE))
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(StoreError::from))
            .collect()
    }

    async fn group_exists(&self, group: &str) -> Result<bool> {
        Ok(self
            .timed(
                sqlx::query("SELECT name FROM user_groups WHERE name = $1")
                    .bind(group)
                    .fetch_optional(&self.pool),
            )
            .await?
            .is_some())
    }

    pub async fn add_member(&self, group: &str, user: &str) -> Result<()> {
        if !self.group_exists(group).await? {
            return Err(StoreError::NotFound(format!("group {group}")));
        }
        if self.user(user).await?.is_none() {
            return Err(StoreError::NotFound(format!("user {user}")));
        }
        self.timed(
            sqlx::query("INSERT INTO members (group_name, user_name) VALUES ($1, $2)")
                .bind(group)
                .bind(user)
                .execute(&self.pool),
        )
        .await
        .map_err(|e| conflict(e, &format!("member {user} of {group}")))?;
        Ok(())
    }

    pub async fn remove_member(&self, group: &str, user: &str) -> Result<()> {
        let done = self
            .timed(
                sqlx::query("DELETE FROM members WHERE group_name = $1 AND user_name = $2")
                    .bind(group)
                    .bind(user)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("member {user} of {group}")));
        }
        Ok(())
    }

    // ---- grants

    pub async fn grants(&self, after: &str, limit: i64) -> Result<Vec<Grant>> {
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT id, user_name, group_name, resource_type, name, actions FROM grants \
                     WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(limit.clamp(1, MAX_PAGE))
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(Grant::from_row).collect()
    }

    /// The grants of `user` and of every group they are in.
    pub async fn grants_for(&self, user: &str) -> Result<Vec<Grant>> {
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT id, user_name, group_name, resource_type, name, actions FROM grants \
                     WHERE user_name = $1 OR group_name IN \
                     (SELECT group_name FROM members WHERE user_name = $1) ORDER BY id",
                )
                .bind(user)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(Grant::from_row).collect()
    }

    /// The grants of `group` (for identities whose groups come from elsewhere: OIDC claims).
    pub async fn group_grants(&self, group: &str) -> Result<Vec<Grant>> {
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT id, user_name, group_name, resource_type, name, actions FROM grants \
                     WHERE group_name = $1 ORDER BY id",
                )
                .bind(group)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(Grant::from_row).collect()
    }

    pub async fn add_grant(&self, g: &NewGrant) -> Result<Grant> {
        g.check()?;
        let id = uuid::Uuid::new_v4().to_string();
        self.timed(
            sqlx::query(
                "INSERT INTO grants (id, user_name, group_name, resource_type, name, actions, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&id)
            .bind(g.user.as_deref())
            .bind(g.group.as_deref())
            .bind(&g.resource_type)
            .bind(&g.name)
            .bind(g.actions.join(","))
            .bind(now())
            .execute(&self.pool),
        )
        .await?;
        Ok(Grant {
            id,
            user: g.user.clone(),
            group: g.group.clone(),
            resource_type: g.resource_type.clone(),
            name: g.name.clone(),
            actions: g.actions.clone(),
        })
    }

    pub async fn delete_grant(&self, id: &str) -> Result<()> {
        let done = self
            .timed(
                sqlx::query("DELETE FROM grants WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("grant {id}")));
        }
        Ok(())
    }
}

fn conflict(e: StoreError, what: &str) -> StoreError {
    match e {
        StoreError::Conflict(_) => StoreError::Conflict(what.to_string()),
        other => other,
    }
}

/// The URL sqlx opens, and the one shown (without a password). A relative SQLite path is
/// relative to `base`; the file is created if missing.
fn resolve(url: &str, base: &Path) -> anyhow::Result<(String, String)> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        if path.is_empty() {
            anyhow::bail!("store.url: {url:?} names no file (sqlite://data/token-issuer.db)");
        }
        let file = base.join(path);
        let mut opened = format!("sqlite://{}?mode=rwc", file.display());
        if !query.is_empty() {
            opened = format!("sqlite://{}?{query}", file.display());
        }
        return Ok((opened, format!("sqlite://{}", file.display())));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let shown = match reqwest::Url::parse(url) {
            Ok(mut u) => {
                let _ = u.set_password(None);
                u.to_string()
            }
            Err(_) => anyhow::bail!("store.url: not a valid postgres:// URL"),
        };
        return Ok((url.to_string(), shown));
    }
    anyhow::bail!(
        "store.url (TOKEN_ISSUER_STORE__URL): use sqlite://FILE or postgres://USER:PASSWORD@HOST/DB"
    )
}

pub(crate) fn row_err(e: sqlx::Error) -> StoreError {
    StoreError::from(e)
}

pub(crate) fn get<'r, T>(row: &'r AnyRow, i: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(i).map_err(row_err)
}
