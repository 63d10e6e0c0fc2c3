//! `[store]`: the database of users, groups and grants (see `crate::store`).

use std::path::PathBuf;

use serde::Deserialize;

use super::setting;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://FILE` (relative to the config file; created on first use) or
    /// `postgres://USER:PASSWORD@HOST/DB`.
    pub url: String,
    /// How long a user's record, groups and grants are used before the database is asked
    /// again: the bound within which a change (a disabled user, a new grant) made by another
    /// issuer on the same database takes effect here. Changes through this issuer's admin API
    /// take effect here at once.
    #[serde(default = "default_store_ttl")]
    pub cache_ttl_seconds: u64,
    /// The longest a non-admin account may live: creating or extending one without an
    /// expiry, or beyond this many days, is refused. Off when absent.
    pub max_expiry_days: Option<u64>,
    /// Files each holding a pepper: the key generated secrets are stored under (HMAC), kept
    /// out of the database. The first makes new hashes; every one verifies (rotation).
    #[serde(default)]
    pub pepper_files: Vec<figment::value::magic::RelativePathBuf>,
    /// The directory relative SQLite paths are resolved against (the config file's).
    #[serde(skip)]
    pub base: PathBuf,
}

fn default_store_ttl() -> u64 {
    5
}

impl StoreConfig {
    /// `pepper_files` resolved against the file that named them.
    pub fn pepper_paths(&self) -> Vec<PathBuf> {
        self.pepper_files.iter().map(|p| p.relative()).collect()
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if !(1..=300).contains(&self.cache_ttl_seconds) {
            anyhow::bail!(
                "{}: between 1 and 300 (it bounds how long a disabled user keeps working)",
                setting("store.cache_ttl_seconds")
            );
        }
        if self
            .max_expiry_days
            .is_some_and(|d| !(1..=3650).contains(&d))
        {
            anyhow::bail!(
                "{}: between 1 and 3650 days",
                setting("store.max_expiry_days")
            );
        }
        if self.url.is_empty() {
            anyhow::bail!(
                "{}: empty; use sqlite://FILE or postgres://USER:PASSWORD@HOST/DB",
                setting("store.url")
            );
        }
        Ok(())
    }
}
