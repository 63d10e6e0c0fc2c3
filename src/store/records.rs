//! The store's records, as the admin API and the CLI show them.

use sqlx::any::AnyRow;

use super::{get, Result, StoreError};
use crate::glob::Glob;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// Never shown: hashes do not leave the store.
    pub password_hash: String,
    pub admin: bool,
    pub disabled: bool,
    /// Unix seconds (shown as RFC 3339).
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When it last logged in or refreshed, to the minute (see `last_used`); none: never
    /// since this was recorded.
    pub last_used_at: Option<i64>,
}

/// Which users a list shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserFilter {
    #[default]
    All,
    /// Those whose account expires after now and within this many seconds.
    Expiring(i64),
    /// Those not used for this many seconds (never used: created at least that long ago).
    Unused(i64),
}

impl User {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(Self {
            name: get(r, 0)?,
            password_hash: get(r, 1)?,
            admin: get::<i64>(r, 2)? != 0,
            disabled: get::<i64>(r, 3)? != 0,
            expires_at: get(r, 4)?,
            created_at: get(r, 5)?,
            updated_at: get(r, 6)?,
            last_used_at: get(r, 7)?,
        })
    }

    /// What the admin API answers: everything but the hash.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "admin": self.admin,
            "disabled": self.disabled,
            "expires_at": self.expires_at.map(rfc3339),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "last_used_at": self.last_used_at.map(rfc3339),
        })
    }
}

/// Parses an RFC 3339 UTC time (`2026-12-31T00:00:00Z`) into Unix seconds.
pub fn parse_time(s: &str) -> Result<i64> {
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "expires_at {s:?}: not an RFC 3339 UTC time like 2026-12-31T00:00:00Z"
            ))
        })
}

/// bcrypt (cost 10, as `token-issuer htpasswd`) of a password of 1–72 bytes (bcrypt reads
/// no further than 72, so a longer one would be silently cut). CPU-bound: ~60 ms.
pub fn hash_password(password: &str) -> Result<String> {
    if password.is_empty() || password.len() > 72 {
        return Err(StoreError::Invalid(
            "password: 1 to 72 bytes (bcrypt ignores the rest)".into(),
        ));
    }
    // Checked by the keyed hash alone at login (see `secrets`): as a password it could never
    // log in.
    if super::looks_generated(password) {
        return Err(StoreError::Invalid(
            "password: this has the shape of a generated secret (tis_...); ask for one with \
             \"generate\": true (users add/passwd --generate) instead"
                .into(),
        ));
    }
    bcrypt::hash(password, 10).map_err(|e| StoreError::Invalid(format!("password: {e}")))
}

pub fn rfc3339(t: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64),
    )
    .to_string()
}

/// What PATCH changes; `None` leaves a field as it is (`expires_at: Some(None)` clears it).
#[derive(Debug, Default)]
pub struct UserPatch {
    pub password_hash: Option<String>,
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
    pub expires_at: Option<Option<i64>>,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    pub user: Option<String>,
    pub group: Option<String>,
    /// A glob over the services (`token.services`) the grant applies to; none: all of them.
    pub service: Option<String>,
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Grant {
    /// `{"id", "user" or "group", ["service"], "type", "name", "actions"}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "id": self.id,
            "type": self.resource_type,
            "name": self.name,
            "actions": self.actions,
        });
        match (&self.user, &self.group) {
            (Some(u), _) => v["user"] = u.as_str().into(),
            (_, Some(g)) => v["group"] = g.as_str().into(),
            _ => {}
        }
        if let Some(s) = &self.service {
            v["service"] = s.as_str().into();
        }
        v
    }

    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Self::from_columns(r, 0)
    }

    /// A grant from the row's columns `at`.. (id, user, group, type, name, actions, service).
    pub(super) fn from_columns(r: &AnyRow, at: usize) -> Result<Self> {
        let actions: String = get(r, at + 5)?;
        Ok(Self {
            id: get(r, at)?,
            user: get(r, at + 1)?,
            group: get(r, at + 2)?,
            service: get(r, at + 6)?,
            resource_type: get(r, at + 3)?,
            name: get(r, at + 4)?,
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }
}

/// A grant to add: for a user or a group, of actions on resources whose name matches a glob
/// (the `[[acl]]` grammar: `*`, `**`, `${account}`).
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user: Option<String>,
    pub group: Option<String>,
    pub service: Option<String>,
    pub resource_type: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl NewGrant {
    pub(super) fn check(&self) -> Result<()> {
        if self.user.is_some() == self.group.is_some() {
            return Err(StoreError::Invalid(
                "a grant names exactly one of user and group".into(),
            ));
        }
        match self.resource_type.as_str() {
            "repository" => {}
            "registry" if self.name == "catalog" => {}
            "registry" => {
                return Err(StoreError::Invalid(
                    "a grant of type \"registry\" names \"catalog\"".into(),
                ))
            }
            other => {
                return Err(StoreError::Invalid(format!(
                    "type {other:?}: use \"repository\" or \"registry\""
                )))
            }
        }
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(StoreError::Invalid("name: 1 to 256 bytes".into()));
        }
        super::names::check_grant_name(&self.name)?;
        if let Some(s) = &self.service {
            if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) || s.contains("${")
            {
                return Err(StoreError::Invalid(
                    "service: a glob of 1 to 256 bytes over service names (no ${account})".into(),
                ));
            }
            Glob::compile_flat(s).map_err(|e| StoreError::Invalid(format!("service: {e}")))?;
        }
        Glob::compile(&self.name).map_err(|e| StoreError::Invalid(format!("name: {e}")))?;
        if self.actions.is_empty()
            || self.actions.len() > 4
            || self
                .actions
                .iter()
                .any(|a| !["pull", "push", "delete", "*"].contains(&a.as_str()))
        {
            return Err(StoreError::Invalid(format!(
                "actions {:?}: use pull, push, delete or *",
                self.actions
            )));
        }
        Ok(())
    }
}

/// A grant as the policy applies it: the name compiled once, when the account is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights {
    /// The grant's id, for `explain`.
    pub id: String,
    pub service: Option<Glob>,
    pub resource_type: String,
    pub name: Glob,
    pub actions: Vec<String>,
}

impl Rights {
    /// The grants as the policy matches them. Grants were checked on the way in; one that no
    /// longer compiles grants nothing.
    pub fn of(grants: Vec<Grant>) -> Vec<Self> {
        grants
            .into_iter()
            .filter_map(|g| {
                let service = match &g.service {
                    Some(s) => Some(Glob::compile_flat(s).ok()?),
                    None => None,
                };
                Some(Rights {
                    id: g.id,
                    service,
                    name: Glob::compile(&g.name).ok()?,
                    resource_type: g.resource_type,
                    actions: g.actions,
                })
            })
            .collect()
    }

    /// Whether this grant gives `account` `action` on `resource_type`/`name` at `service`.
    pub fn allows(
        &self,
        account: &str,
        service: &str,
        resource_type: &str,
        name: &str,
        action: &str,
    ) -> bool {
        self.resource_type == resource_type
            && self
                .service
                .as_ref()
                .is_none_or(|g| g.matches(service, account))
            && self.actions.iter().any(|a| a == "*" || a == action)
            && self.name.matches(name, account)
    }
}

/// What the request path needs of a store user, loaded in one go and cached
/// (`store.cache_ttl_seconds`): the record, its groups, and the grants of both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: User,
    pub groups: Vec<String>,
    pub rights: Vec<Rights>,
}

impl Account {
    pub(super) fn new(user: User, groups: Vec<String>, grants: Vec<Grant>) -> Self {
        Self {
            user,
            groups,
            rights: Rights::of(grants),
        }
    }
}
