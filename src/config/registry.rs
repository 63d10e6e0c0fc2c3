//! `[registry]` and `[registry.gc]`: the built-in registry served beside the issuer.

use anyhow::bail;
use figment::value::magic::RelativePathBuf;
use serde::Deserialize;

use super::setting;

/// The built-in registry, served beside the issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default = "default_registry_listen")]
    pub listen: String,
    /// Storage root (relative paths are relative to the config file).
    pub storage: RelativePathBuf,
    /// Upload sessions untouched this long are removed.
    #[serde(default = "default_upload_ttl")]
    pub upload_ttl_seconds: u64,
    /// Upload sessions open at once, in all and per repository; past them, 429.
    #[serde(default = "default_max_uploads")]
    pub max_uploads: usize,
    #[serde(default = "default_max_uploads_per_repository")]
    pub max_uploads_per_repository: usize,
    #[serde(default)]
    pub gc: RegistryGcConfig,
}

/// `[registry.gc]`: garbage collection inside the serving registry, on a schedule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryGcConfig {
    /// How often (`24h`, `30m`, `1s`); `off` runs it only by `token-issuer gc`.
    #[serde(default = "default_gc_interval")]
    pub interval: String,
    /// Also remove manifests no tag reaches (and what only they reference).
    #[serde(default)]
    pub delete_untagged: bool,
    /// Blobs and manifests written or used more recently than this are never collected: a push
    /// uploads its blobs first and names them in a manifest later.
    #[serde(default = "default_gc_grace")]
    pub grace_seconds: u64,
}

impl Default for RegistryGcConfig {
    fn default() -> Self {
        Self {
            interval: default_gc_interval(),
            delete_untagged: false,
            grace_seconds: default_gc_grace(),
        }
    }
}

fn default_gc_interval() -> String {
    "24h".into()
}

fn default_gc_grace() -> u64 {
    3600
}

impl RegistryGcConfig {
    /// The schedule, or `None` when off.
    pub fn every(&self) -> anyhow::Result<Option<std::time::Duration>> {
        if self.interval == "off" {
            return Ok(None);
        }
        let every = humantime::parse_duration(&self.interval).map_err(|e| {
            anyhow::anyhow!(
                "{}: {:?}: {e}; give a duration like \"24h\" or \"30m\", or \"off\"",
                setting("registry.gc.interval"),
                self.interval
            )
        })?;
        if every < std::time::Duration::from_secs(1) {
            bail!("{}: at least 1s", setting("registry.gc.interval"));
        }
        Ok(Some(every))
    }
}

fn default_registry_listen() -> String {
    "127.0.0.1:5000".into()
}

/// Defaults of `registry.max_uploads` and `registry.max_uploads_per_repository`: the config
/// owns the limits, and the registry's storage is opened with them.
pub const DEFAULT_MAX_UPLOADS: usize = 1000;
pub const DEFAULT_MAX_UPLOADS_PER_REPOSITORY: usize = 100;

fn default_max_uploads() -> usize {
    DEFAULT_MAX_UPLOADS
}

fn default_max_uploads_per_repository() -> usize {
    DEFAULT_MAX_UPLOADS_PER_REPOSITORY
}

fn default_upload_ttl() -> u64 {
    3600
}
