//! Users: lookups, creation with the name rule, atomic changes, and the last-admin guard.

use super::names;
use super::{
    conflict, fold, get, now, shown, Account, Grant, Result, Store, StoreError, User, UserFilter,
    UserPatch, MAX_PAGE,
};

/// A user (kind 0), their groups (1) and the grants of both (2), in one statement: the
/// columns after the kind are the user's, the group's name, or the grant's, in the order
/// [`Store::account`] reads them, the rest NULL.
pub(super) const ACCOUNT: &str = "\
    SELECT CAST(0 AS BIGINT), name, password_hash, NULL, NULL, NULL, NULL, NULL, \
           admin, disabled, expires_at, created_at, updated_at, last_used_at \
      FROM users WHERE name = $1 \
    UNION ALL \
    SELECT CAST(1 AS BIGINT), group_name, NULL, NULL, NULL, NULL, NULL, NULL, \
           NULL, NULL, NULL, NULL, NULL, NULL \
      FROM members WHERE user_name = $1 \
    UNION ALL \
    SELECT CAST(2 AS BIGINT), id, user_name, group_name, resource_type, name, actions, service, \
           NULL, NULL, NULL, NULL, NULL, NULL \
      FROM grants WHERE user_name = $1 \
        OR group_name IN (SELECT group_name FROM members WHERE user_name = $1) \
    ORDER BY 1, 2";

/// Accounts expiring within a span, and a page of users kept by a condition: both read by
/// `users_expires_at` (migrations/0007), not by a walk over every user.
pub(super) const COUNT_EXPIRING: &str =
    "SELECT COUNT(*) FROM users WHERE expires_at > $1 AND expires_at <= $2";
pub(super) const EXPIRING: &str = " AND expires_at > $3 AND expires_at <= $4";

pub(super) fn page_sql(cond: &str) -> String {
    format!("SELECT {USER_COLUMNS} FROM users WHERE name > $1{cond} ORDER BY name LIMIT $2")
}

/// The columns [`User::from_row`] reads, in its order.
const USER_COLUMNS: &str =
    "name, password_hash, admin, disabled, expires_at, created_at, updated_at, last_used_at";

impl Store {
    pub async fn user(&self, name: &str) -> Result<Option<User>> {
        let row = self
            .timed(
                sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(|r| User::from_row(&r)).transpose()
    }

    /// A user with their groups and grants (what authentication and policy need), or `None`.
    /// One statement, not three, on a connection kept outside the pool (`readers`): a cold
    /// login (a fleet's roll-out is thousands at once) pays one round trip, and on SQLite one
    /// hop to the connection's thread.
    pub async fn account(&self, name: &str) -> Result<Option<Account>> {
        let rows = self.timed(self.readers.fetch_all(ACCOUNT, name)).await?;
        let mut user = None;
        let (mut groups, mut grants) = (Vec::new(), Vec::new());
        for r in &rows {
            match get::<i64>(r, 0)? {
                0 => {
                    user = Some(User {
                        name: get(r, 1)?,
                        password_hash: get(r, 2)?,
                        admin: get::<i64>(r, 8)? != 0,
                        disabled: get::<i64>(r, 9)? != 0,
                        expires_at: get(r, 10)?,
                        created_at: get(r, 11)?,
                        updated_at: get(r, 12)?,
                        last_used_at: get(r, 13)?,
                    })
                }
                1 => groups.push(get(r, 1)?),
                _ => grants.push(Grant::from_columns(r, 1)?),
            }
        }
        Ok(user.map(|u| Account::new(u, groups, grants)))
    }

    /// A page of the users `filter` keeps, by name.
    pub async fn users_where(
        &self,
        after: &str,
        limit: i64,
        filter: UserFilter,
    ) -> Result<Vec<User>> {
        let t = now();
        let (cond, bounds): (&str, &[i64]) = match filter {
            UserFilter::All => ("", &[]),
            UserFilter::Expiring(w) => (EXPIRING, &[t, t.saturating_add(w)]),
            // Never used counts from the account's creation, or from when last use began to be
            // recorded if that is later: a robot made 90 days ago and never used is as idle as
            // one last used then, but one made before the upgrade may have been used since.
            UserFilter::Unused(span) => (
                " AND ((last_used_at IS NOT NULL AND last_used_at <= $3) \
                  OR (last_used_at IS NULL AND created_at <= $3 AND $4 <= $3))",
                &[t.saturating_sub(span), self.last_used_since()],
            ),
        };
        let sql = page_sql(cond);
        let mut q = sqlx::query(&sql).bind(after).bind(limit.clamp(1, MAX_PAGE));
        for b in bounds {
            q = q.bind(*b);
        }
        let rows = self.timed(q.fetch_all(&self.pool)).await?;
        rows.iter().map(User::from_row).collect()
    }

    /// How many accounts expire after now and within `within` seconds.
    pub async fn count_expiring(&self, within: i64) -> Result<i64> {
        let t = now();
        let row = self
            .timed(
                sqlx::query(COUNT_EXPIRING)
                    .bind(t)
                    .bind(t.saturating_add(within))
                    .fetch_one(&self.pool),
            )
            .await?;
        get(&row, 0)
    }

    /// A new password for `name`, its expiry left as it is (see [`Store::update_user`]).
    /// Returns how many refresh tokens were revoked.
    pub async fn set_password(&self, name: &str, password_hash: String) -> Result<u64> {
        let patch = UserPatch {
            password_hash: Some(password_hash),
            ..UserPatch::default()
        };
        self.update_user(name, &patch).await
    }

    /// Sets `store.max_expiry_days` (none: any lifetime).
    pub fn set_max_expiry_days(&self, days: Option<u64>) {
        let secs = days.map_or(0, |d| d.saturating_mul(86_400) as i64);
        self.max_expiry
            .store(secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuses a non-admin account without an expiry, or expiring beyond
    /// `store.max_expiry_days` from now.
    fn check_lifetime(&self, admin: bool, expires_at: Option<i64>) -> Result<()> {
        let max = self.max_expiry.load(std::sync::atomic::Ordering::Relaxed);
        if max == 0 || admin {
            return Ok(());
        }
        let days = max / 86_400;
        match expires_at {
            None => Err(StoreError::Invalid(format!(
                "a non-admin account needs an expiry at most {days} days away (store.max_expiry_days)"
            ))),
            Some(t) if t > now().saturating_add(max) => Err(StoreError::Invalid(format!(
                "expires_at {} is more than {days} days away (store.max_expiry_days)",
                super::rfc3339(t)
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Non-admin accounts with no expiry or one beyond `max_days` (`store.max_expiry_days`;
    /// none: 0): made before the limit, reported at start-up and left as they are.
    pub async fn count_beyond_lifetime(&self, max_days: Option<u64>) -> Result<i64> {
        let Some(days) = max_days else {
            return Ok(0);
        };
        let max = days.saturating_mul(86_400) as i64;
        let row = self
            .timed(
                sqlx::query(
                    "SELECT COUNT(*) FROM users WHERE admin = 0 AND (expires_at IS NULL OR expires_at > $1)",
                )
                .bind(now().saturating_add(max))
                .fetch_one(&self.pool),
            )
            .await?;
        get(&row, 0)
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
        self.check_lifetime(admin, expires_at)?;
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
    /// pass it. Returns how many refresh tokens a new password revoked.
    pub async fn update_user(&self, name: &str, patch: &UserPatch) -> Result<u64> {
        if patch.expires_at.is_some() || patch.admin == Some(false) {
            if let Some(u) = self.user(name).await? {
                let admin = patch.admin.unwrap_or(u.admin);
                self.check_lifetime(admin, patch.expires_at.unwrap_or(u.expires_at))?;
            }
        }
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
        // A new password revokes the user's refresh tokens, whoever changed it (the admin
        // API's PATCH or password route, the CLI): they were bound to the old password and
        // would be refused anyway; gone, `tokens list` says so too.
        match patch.password_hash {
            Some(_) => self.revoke_refresh_tokens_of(name).await,
            None => Ok(0),
        }
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

    /// Computes `fold` for rows written before it existed (once, at the first start after the
    /// upgrade), a page at a time. Two old names that fold alike both stay; the second keeps
    /// no fold and is named in a warning, so an operator can rename it.
    pub(super) async fn fill_folds(&self, table: &'static str) -> anyhow::Result<()> {
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
    pub(super) async fn look_alike(
        &self,
        table: &'static str,
        what: &str,
        name: &str,
    ) -> Result<()> {
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
