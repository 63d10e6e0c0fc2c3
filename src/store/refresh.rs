//! Refresh tokens as the store keeps them: a hash of the token, never the token, and what the
//! token stands for (the user, their identity source, the client it was issued to).

use sqlx::any::AnyRow;

use super::{get, now, rfc3339, Result, Store, StoreError, MAX_PAGE};

/// Refresh tokens one user may hold; the oldest beyond it are revoked when a new one is
/// issued (a user who logs in from more machines than this loses the oldest login), so one
/// account cannot grow the table without bound.
pub const MAX_REFRESH_PER_USER: i64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub id: String,
    /// Hex SHA-256 of the token (see `identity::refresh`).
    pub token_hash: String,
    pub user: String,
    /// `local`, `store` or `upstream`: where the identity is checked again on each use.
    pub source: String,
    /// The OAuth2 `client_id` it was issued to (`docker`, `containerd-client`, or `""`).
    pub client_id: String,
    /// Hex SHA-256 of the password hash it was issued under (`""` for upstream identities).
    pub binding: String,
    /// An upstream identity's credential, sealed under a key derived from the token.
    pub sealed: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// When it was last redeemed, to the minute (see `last_used`); none: never.
    pub last_used_at: Option<i64>,
}

impl RefreshRecord {
    /// What lists show: never the hash, the binding or the sealed credential.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "user": self.user,
            "source": self.source,
            "client_id": self.client_id,
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.expires_at),
            "last_used_at": self.last_used_at.map(rfc3339),
        })
    }

    fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            id: get(r, 0)?,
            token_hash: get(r, 1)?,
            user: get(r, 2)?,
            source: get(r, 3)?,
            client_id: get(r, 4)?,
            binding: get(r, 5)?,
            sealed: get(r, 6)?,
            created_at: get(r, 7)?,
            expires_at: get(r, 8)?,
            last_used_at: get(r, 9)?,
        })
    }
}

/// What a new token is written with; [`SELECTED`] adds what is written later.
const COLUMNS: &str =
    "id, token_hash, user_name, source, client_id, binding, sealed, created_at, expires_at";
/// The columns [`RefreshRecord::from_row`] reads, in its order.
const SELECTED: &str = "id, token_hash, user_name, source, client_id, binding, sealed, \
                        created_at, expires_at, last_used_at";

impl Store {
    /// Stores a new refresh token, then drops the user's expired ones and the oldest beyond
    /// [`MAX_REFRESH_PER_USER`].
    pub async fn add_refresh_token(&self, r: &RefreshRecord) -> Result<()> {
        self.timed(
            sqlx::query(&format!(
                "INSERT INTO refresh_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&r.id)
            .bind(&r.token_hash)
            .bind(&r.user)
            .bind(&r.source)
            .bind(&r.client_id)
            .bind(&r.binding)
            .bind(r.sealed.as_deref())
            .bind(r.created_at)
            .bind(r.expires_at)
            .execute(&self.pool),
        )
        .await?;
        self.timed(
            sqlx::query(
                "DELETE FROM refresh_tokens WHERE user_name = $1 AND (expires_at <= $2 OR id NOT IN \
                 (SELECT id FROM refresh_tokens WHERE user_name = $1 \
                  ORDER BY created_at DESC, id LIMIT $3))",
            )
            .bind(&r.user)
            .bind(now())
            .bind(MAX_REFRESH_PER_USER)
            .execute(&self.pool),
        )
        .await?;
        Ok(())
    }

    /// The token whose hash is `token_hash`, expired or not.
    pub async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshRecord>> {
        let row = self
            .timed(
                sqlx::query(&format!(
                    "SELECT {SELECTED} FROM refresh_tokens WHERE token_hash = $1"
                ))
                .bind(token_hash)
                .fetch_optional(&self.pool),
            )
            .await?;
        row.as_ref().map(RefreshRecord::from_row).transpose()
    }

    /// A user's refresh tokens, newest first (at most [`MAX_REFRESH_PER_USER`] exist).
    pub async fn refresh_tokens_of(&self, user: &str) -> Result<Vec<RefreshRecord>> {
        let rows = self
            .timed(
                sqlx::query(&format!(
                    "SELECT {SELECTED} FROM refresh_tokens WHERE user_name = $1 \
                     ORDER BY created_at DESC, id LIMIT $2"
                ))
                .bind(user)
                .bind(MAX_PAGE)
                .fetch_all(&self.pool),
            )
            .await?;
        rows.iter().map(RefreshRecord::from_row).collect()
    }

    pub async fn revoke_refresh_token(&self, id: &str) -> Result<()> {
        let done = self
            .timed(
                sqlx::query("DELETE FROM refresh_tokens WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool),
            )
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("refresh token {id}")));
        }
        Ok(())
    }

    /// Revokes every refresh token of `user`; how many there were.
    pub async fn revoke_refresh_tokens_of(&self, user: &str) -> Result<u64> {
        let done = self
            .timed(
                sqlx::query("DELETE FROM refresh_tokens WHERE user_name = $1")
                    .bind(user)
                    .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected())
    }

    /// Revokes the refresh tokens of an htpasswd user (source `local`) whose password hash
    /// changed or who was removed, but those bound to `keep` (the new hash's binding).
    /// Binding to the hash alone is not enough, since a hash restored from a backup would
    /// bring the old tokens back.
    pub async fn revoke_local_refresh_tokens(&self, user: &str, keep: Option<&str>) -> Result<u64> {
        let done = self
            .timed(
                sqlx::query(
                    "DELETE FROM refresh_tokens WHERE user_name = $1 AND source = 'local' \
                     AND binding <> $2",
                )
                .bind(user)
                .bind(keep.unwrap_or(""))
                .execute(&self.pool),
            )
            .await?;
        Ok(done.rows_affected())
    }
}
