//! `[metrics]`, `[audit]` and `[reload]`: what operators see of the running service.

use figment::value::magic::RelativePathBuf;
use serde::Deserialize;

use super::setting;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`. Counting happens either way (atomic adds); this only decides
    /// whether the figures are published.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A separate listener for `/metrics` (e.g. `127.0.0.1:9090`, kept off the public port);
    /// without it, `/metrics` is on the main listener.
    pub listen: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Write one JSON line per token decision.
    #[serde(default)]
    pub enabled: bool,
    /// The file (relative to the config file); without it, standard error.
    pub path: Option<RelativePathBuf>,
    /// Rotate when the file passes this many MiB (`path.1`, `path.2`, ...); 0 leaves rotation
    /// to the platform (logrotate moves the file, then SIGHUP reopens it).
    #[serde(default)]
    pub max_size_mb: u64,
    /// Rotated files kept.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: None,
            max_size_mb: 0,
            keep: default_keep(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the config file, the htpasswd file or a key file changes (SIGHUP always
    /// reloads).
    #[serde(default = "yes")]
    pub watch: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch: true }
    }
}

fn yes() -> bool {
    true
}

fn default_keep() -> usize {
    5
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if let Some(l) = &self.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                anyhow::bail!(
                    "{}: {l:?} is not an address like 127.0.0.1:9090",
                    setting("metrics.listen")
                );
            }
        }
        Ok(())
    }
}

impl AuditConfig {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if !(1..=100).contains(&self.keep) {
            anyhow::bail!("{}: between 1 and 100 files", setting("audit.keep"));
        }
        if self.max_size_mb > 1024 * 1024 {
            anyhow::bail!(
                "{}: at most 1048576 (1 TiB); 0 leaves rotation to the platform",
                setting("audit.max_size_mb")
            );
        }
        Ok(())
    }
}
