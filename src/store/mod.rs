//! The database store: users (bcrypt hashes, admin and disabled flags, expiry), groups and
//! their members, and grants. SQLite (embedded, `sqlite://FILE`) or PostgreSQL (`postgres://`,
//! for replicas) through sqlx's `Any` driver: one code path and one schema for both, applied
//! from migrations embedded in the binary at start-up.
//!
//! Plain data types in and out; what the request path needs is read through caches in
//! `identity` and `policy`, never directly per token request.

mod grants;
mod groups;
mod last_used;
mod names;
mod readers;
mod records;
mod refresh;
mod schema;
mod secrets;
#[cfg(test)]
mod tests;
mod users;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use last_used::{spawn_flusher as spawn_last_used_flusher, Flushed};
pub use names::{fold, shown, valid_name, RULE as NAME_RULE};
pub use records::{
    hash_password, parse_time, rfc3339, Account, Grant, Group, NewGrant, Rights, User, UserFilter,
    UserPatch,
};
pub use refresh::{RefreshRecord, MAX_REFRESH_PER_USER};
pub use secrets::{is_keyed, looks_generated, refuse_generated, Keyed, Peppers};

/// How long a store call may take before the request that needs it gets a 503.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a call waits for a connection: sqlx retries a refused connect until then, so this
/// is how soon a database that went away turns into 503s (a cold login's read, outside the
/// pool, bounds its connect the same; see `readers`). Sixteen connections serving indexed
/// lookups are never a second behind unless the database is.
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
    /// The cold login's read, outside the pool (see `readers`).
    readers: readers::Readers,
    /// PostgreSQL rather than SQLite: where a check and a write need a lock to be one step.
    postgres: bool,
    /// What the log and errors call it: the URL without its password.
    pub shown: String,
    /// `store.max_expiry_days` in seconds (0: off). Atomic: a reload sets it on the store
    /// the running issuer keeps.
    max_expiry: std::sync::atomic::AtomicI64,
    /// Uses noted since the last write (see `last_used`).
    used: last_used::Pending,
    /// What generated secrets are hashed under (`store.pepper_files`); set again by a reload.
    peppers: std::sync::RwLock<std::sync::Arc<Peppers>>,
    /// When last use began to be recorded here (see `last_used`).
    last_used_since: std::sync::atomic::AtomicI64,
}

/// A span like `7d`, `36h` or `90m` (at most 10 years) in seconds, for expiry questions.
pub fn parse_within(text: &str) -> std::result::Result<i64, String> {
    humantime::parse_duration(text)
        .ok()
        .map(|d| d.as_secs())
        .filter(|s| (1..=10 * 365 * 86_400).contains(s))
        .map(|s| s as i64)
        .ok_or_else(|| format!("{text:?} is not a span like 7d, 36h or 90m (at most 10 years)"))
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
        if !postgres {
            write_ahead(&pool, &shown).await;
        }
        schema::migrator()
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("store {shown}: cannot apply the schema: {e}"))?;
        let store = Self {
            pool,
            readers: readers::Readers::new(url, postgres),
            postgres,
            shown,
            max_expiry: std::sync::atomic::AtomicI64::new(0),
            used: last_used::Pending::default(),
            peppers: Default::default(),
            last_used_since: Default::default(),
        };
        store.note_tracking_start().await?;
        store.fill_folds("users").await?;
        store.fill_folds("user_groups").await?;
        Ok(store)
    }

    /// Sets the peppers generated secrets are hashed under and checked against.
    pub fn set_peppers(&self, peppers: std::sync::Arc<Peppers>) {
        if let Ok(mut p) = self.peppers.write() {
            *p = peppers;
        }
    }

    pub fn peppers(&self) -> std::sync::Arc<Peppers> {
        self.peppers.read().map(|p| p.clone()).unwrap_or_default()
    }

    /// A fresh generated secret and its stored form, under the first pepper.
    pub fn new_secret(&self) -> Result<(String, String)> {
        let secret = secrets::generate_secret()?;
        let stored = self.peppers().hash(&secret)?;
        Ok((secret, stored))
    }

    /// The user whose generated secret `secret` is (found by its keyed hash under each
    /// pepper), if any: what to disable when a secret leaks.
    pub async fn find_secret(&self, secret: &str) -> Result<Option<String>> {
        let candidates = self.peppers().candidates(secret);
        if candidates.is_empty() {
            return Err(StoreError::Invalid(
                "no store.pepper_files here: generated secrets cannot be looked up".into(),
            ));
        }
        for stored in candidates {
            let row = self
                .timed(
                    sqlx::query("SELECT name FROM users WHERE password_hash = $1")
                        .bind(&stored)
                        .fetch_optional(&self.pool),
                )
                .await?;
            if let Some(r) = row {
                return Ok(Some(get(&r, 0)?));
            }
        }
        Ok(None)
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

/// Puts a SQLite store in write-ahead-log mode (kept in the file, so once is enough): a write
/// (the admin API, the minute's last-use flush, a refresh token) then never stops a login's
/// read, which in the default rollback-journal mode waits out every commit's exclusive lock; and
/// a read no longer rereads the file's header to learn whether it changed, about a sixth of a
/// cold read at a million users (docs/speed.md, "Store size"). The switch needs the file to
/// itself: if another process is mid-write, the store goes on as it is, with a warning, and the
/// switch is tried again at the next start.
async fn write_ahead(pool: &AnyPool, shown: &str) {
    let mode = sqlx::query("PRAGMA journal_mode = WAL")
        .fetch_one(pool)
        .await
        .map(|row| row.try_get::<String, _>(0).unwrap_or_default());
    match mode {
        // "memory": a `?mode=memory` store, which has no file to log beside.
        Ok(m) if m.eq_ignore_ascii_case("wal") || m.eq_ignore_ascii_case("memory") => {}
        Ok(m) => tracing::warn!(
            store = shown,
            mode = m,
            "store: SQLite kept its journal mode instead of write-ahead logging; writes will stall reads"
        ),
        Err(e) => tracing::warn!(
            store = shown,
            error = %e,
            "store: SQLite could not switch to write-ahead logging (tried again at the next start); until then writes stall reads"
        ),
    }
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
