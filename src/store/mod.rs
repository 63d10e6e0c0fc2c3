//! The database store: users (bcrypt hashes, admin and disabled flags, expiry), groups and
//! their members, and grants. SQLite (embedded, `sqlite://FILE`) or PostgreSQL (`postgres://`,
//! for replicas) through sqlx's `Any` driver: one code path and one schema for both, applied
//! from migrations embedded in the binary at start-up.
//!
//! Plain data types in and out; what the request path needs is read through caches in
//! `identity` and `policy`, never directly per token request.

mod names;
mod records;
mod refresh;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use names::{fold, shown, valid_name, RULE as NAME_RULE};
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
    /// A change the store's invariants forbid (the last enabled admin), said in full.
    #[error("{0}")]
    Refused(String),
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
    /// PostgreSQL rather than SQLite: where a check and a write need a lock to be one step.
    postgres: bool,
    /// What the log and errors call it: the URL without its password.
    pub shown: String,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates. `base` resolves a relative
    /// SQLite path (the config file's directory).
    pub async fn open(url: &str, base: &Path) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, shown) = resolve(url, base)?;
        let postgres = url.starts_with("postgres");
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
        let store = Self {
            pool,
            postgres,
            shown,
        };
        store.fill_folds("users").await?;
        store.fill_folds("user_groups").await?;
        Ok(store)
    }

    /// Computes `fold` for rows written before it existed (once, at the first start after the
    /// upgrade), a page at a time. Two old names that fold alike both stay; the second keeps
    /// no fold and is named in a warning, so an operator can rename it.
    async fn fill_folds(&self, table: &'static str) -> anyhow::Result<()> {
        let mut after = String::new();
        loop {
            let rows = self
                .timed(
                    sqlx::query(&format!(
                        "SELECT name FROM {table} WHERE fold IS NULL AND name > $1 \
                         ORDER BY name LIMIT 1000"
                    ))
                    .bind(&after)
                    .fetch_all(&self.pool),
                )
                .await?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            let last: String = get(last, 0)?;
            for r in &rows {
                let name: String = get(r, 0)?;
                let set = self
                    .timed(
                        sqlx::query(&format!("UPDATE {table} SET fold = $1 WHERE name = $2"))
                            .bind(fold(&name))
                            .bind(&name)
                            .execute(&self.pool),
                    )
                    .await;
                match set {
                    Ok(_) => {}
                    Err(StoreError::Conflict(_)) => tracing::warn!(
                        table,
                        name = %shown(&name),
                        "this name differs from another only in case or look-alike forms; \
                         rename one of them"
                    ),
                    Err(e) => return Err(e.into()),
                }
            }
            after = last;
        }
    }

    /// After a unique violation on insert: the existing row whose name folds like `name`,
    /// if it is another name (`Alice` for `alice`), as a refusal naming it.
    async fn look_alike(&self, table: &'static str, what: &str, name: &str) -> Result<()> {
        let other = self
            .timed(
                sqlx::query(&format!("SELECT name FROM {table} WHERE fold = $1"))
                    .bind(fold(name))
                    .fetch_optional(&self.pool),
            )
            .await?
            .map(|r| get::<String>(&r, 0))
            .transpose()?;
        match other {
            Some(other) if other != name => Err(StoreError::Refused(format!(
                "{what} {} is too like the existing {what} {}: names may not differ only in \
                 case or look-alike characters",
                shown(name),
                shown(&other)
            ))),
            _ => Ok(()),
        }
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

    /// Adds a user; returns the name as stored (NFC: see `names`).
    pub async fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        admin: bool,
        disabled: bool,
        expires_at: Option<i64>,
    ) -> Result<String> {
        let name = &names::checked("user", name)?;
        let t = now();
        let added = self
            .timed(
            sqlx::query(
                "INSERT INTO users (name, password_hash, admin, disabled, expires_at, created_at, updated_at, fold) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(name)
            .bind(password_hash)
            .bind(i64::from(admin))
            .bind(i64::from(disabled))
            .bind(expires_at)
            .bind(t)
            .bind(t)
            .bind(fold(name))
            .execute(&self.pool),
        )
        .await;
        if let Err(StoreError::Conflict(_)) = &added {
            self.look_alike("users", "user", name).await?;
        }
        added.map_err(|e| conflict(e, &format!("user {}", shown(name))))?;
        Ok(name.clone())
    }

    /// Changes the given fields and no others, in one statement: two concurrent PATCHes of
    /// different fields both land (a read, patch and write-back of the whole row lost one of
    /// them). A change that would leave no enabled admin is refused ([`StoreError::Refused`]);
    /// the check is in the same statement (SQLite runs one writer at a time) or, on
    /// PostgreSQL, under a table lock, so two admins demoting themselves at once cannot both
    /// pass it.
    pub async fn update_user(&self, name: &str, patch: &UserPatch) -> Result<()> {
        let t = now();
        let guard = patch.admin == Some(false)
            || patch.disabled == Some(true)
            || patch
                .expires_at
                .is_some_and(|e| e.is_some_and(|at| at <= t));
        let mut sql = String::from("UPDATE users SET updated_at = $1");
        let mut n = 1;
        let mut set = |column: &str| {
            n += 1;
            sql.push_str(&format!(", {column} = ${n}"));
        };
        if patch.password_hash.is_some() {
            set("password_hash");
        }
        if patch.admin.is_some() {
            set("admin");
        }
        if patch.disabled.is_some() {
            set("disabled");
        }
        if patch.expires_at.is_some() {
            set("expires_at");
        }
        sql.push_str(&format!(" WHERE name = ${}", n + 1));
        if guard {
            sql.push_str(&another_admin(n + 1));
        }
        let mut q = sqlx::query(&sql).bind(t);
        if let Some(h) = &patch.password_hash {
            q = q.bind(h.as_str());
        }
        if let Some(a) = patch.admin {
            q = q.bind(i64::from(a));
        }
        if let Some(d) = patch.disabled {
            q = q.bind(i64::from(d));
        }
        if let Some(e) = patch.expires_at {
            q = q.bind(e);
        }
        q = q.bind(name);
        let done = if guard {
            self.guarded(q).await?
        } else {
            self.timed(q.execute(&self.pool)).await?
        };
        if done.rows_affected() == 0 {
            return Err(self.not_done(name).await);
        }
        Ok(())
    }

    /// Runs a write whose `WHERE` holds [`another_admin`]: on PostgreSQL under a table lock, so
    /// that two such writes at once cannot both see the other admin (SQLite runs one writer at
    /// a time, so the statement alone is enough there).
    async fn guarded<'q>(
        &self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<sqlx::any::AnyQueryResult> {
        if !self.postgres {
            return self.timed(q.execute(&self.pool)).await;
        }
        self.timed(async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await?;
            let done = q.execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(done)
        })
        .await
    }

    /// Why a guarded write of `name` changed nothing: no such user, or the last admin.
    async fn not_done(&self, name: &str) -> StoreError {
        match self.user(name).await {
            Ok(None) => StoreError::NotFound(format!("user {name}")),
            Ok(Some(_)) => StoreError::Refused(format!(
                "{name} is the last enabled admin: make another user an admin first, so that \
                 someone can still manage the store"
            )),
            Err(e) => e,
        }
    }

    /// Deletes a user, unless it is the last enabled admin ([`StoreError::Refused`]).
    pub async fn delete_user(&self, name: &str) -> Result<()> {
        let sql = format!("DELETE FROM users WHERE name = $2{}", another_admin(2));
        let done = self
            .guarded(sqlx::query(&sql).bind(now()).bind(name))
            .await?;
        if done.rows_affected() == 0 {
            return Err(self.not_done(name).await);
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

    /// Adds a group; returns the name as stored (NFC: see `names`).
    pub async fn add_group(&self, name: &str) -> Result<String> {
        let name = &names::checked("group", name)?;
        let added = self
            .timed(
                sqlx::query("INSERT INTO user_groups (name, created_at, fold) VALUES ($1, $2, $3)")
                    .bind(name)
                    .bind(now())
                    .bind(fold(name))
                    .execute(&self.pool),
            )
            .await;
        if let Err(StoreError::Conflict(_)) = &added {
            self.look_alike("user_groups", "group", name).await?;
        }
        added.map_err(|e| conflict(e, &format!("group {}", shown(name))))?;
        Ok(name.clone())
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

/// A `WHERE` clause's tail: the row is not an enabled, unexpired admin, or another one exists.
/// `$1` is now (Unix seconds), `$name` the row's name parameter.
fn another_admin(name: usize) -> String {
    format!(
        " AND (admin = 0 OR disabled = 1 OR (expires_at IS NOT NULL AND expires_at <= $1) \
         OR EXISTS (SELECT 1 FROM users o WHERE o.name <> ${name} AND o.admin = 1 \
         AND o.disabled = 0 AND (o.expires_at IS NULL OR o.expires_at > $1)))"
    )
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
        // A file opened with its own `mode=` is the operator's to create.
        if query.is_empty() {
            create_private(&file)?;
        }
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

/// Creates a missing SQLite file (and its directory) readable by this user alone, whatever the
/// umask: it holds password hashes. SQLite gives its journal files the database file's mode.
/// An existing file keeps the mode it has (the operator may have chosen a group).
fn create_private(file: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if file.exists() {
        return Ok(());
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "store.url: cannot create the directory {}: {e}",
                        dir.display()
                    )
                })?;
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(file)
        .map_err(|e| anyhow::anyhow!("store.url: cannot create {}: {e}", file.display()))?;
    Ok(())
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
