//! Groups and their members.

use super::names;
use super::{conflict, fold, now, shown, Group, Result, Store, StoreError, MAX_PAGE};
use sqlx::Row;

impl Store {
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
}
