//! Grants: what a user or a group may do when no `[[acl]]` rule matches.

use super::{now, Grant, NewGrant, Result, Store, StoreError, MAX_PAGE};

impl Store {
    pub async fn grants(&self, after: &str, limit: i64) -> Result<Vec<Grant>> {
        let rows = self
            .timed(
                sqlx::query(
                    "SELECT id, user_name, group_name, resource_type, name, actions, service FROM grants \
                     WHERE id > $1 ORDER BY id LIMIT $2",
                )
                .bind(after)
                .bind(limit.clamp(1, MAX_PAGE))
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
                    "SELECT id, user_name, group_name, resource_type, name, actions, service FROM grants \
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
                "INSERT INTO grants (id, user_name, group_name, resource_type, name, actions, created_at, service) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(g.user.as_deref())
            .bind(g.group.as_deref())
            .bind(&g.resource_type)
            .bind(&g.name)
            .bind(g.actions.join(","))
            .bind(now())
            .bind(g.service.as_deref())
            .execute(&self.pool),
        )
        .await?;
        Ok(Grant {
            id,
            user: g.user.clone(),
            group: g.group.clone(),
            service: g.service.clone(),
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
