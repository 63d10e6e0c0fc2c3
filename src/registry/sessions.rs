//! The open upload sessions, counted so that one client cannot open them without end (each is
//! a directory and a file on disk, and a hash state in memory). Past `registry.max_uploads` in
//! all, or `registry.max_uploads_per_repository` in one repository, a new session is refused
//! with 429 `TOOMANYREQUESTS`; sessions end when finished, cancelled or swept as stale.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

pub(crate) struct Sessions {
    /// uuid -> repository.
    open: Mutex<HashMap<String, String>>,
    max_total: usize,
    max_per_repo: usize,
}

/// How long a refused client is asked to wait: sessions end as pushes finish.
pub(crate) const RETRY_AFTER_SECONDS: u64 = 30;

impl Sessions {
    /// The sessions already on disk (left by an earlier run) count too.
    pub(crate) fn load(uploads: &Path, max_total: usize, max_per_repo: usize) -> Self {
        let mut open = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(uploads) {
            for e in entries.flatten() {
                let uuid = e.file_name().to_string_lossy().to_string();
                let repo = std::fs::read_to_string(e.path().join("repo")).unwrap_or_default();
                open.insert(uuid, repo);
            }
        }
        crate::metrics::get()
            .uploads_in_progress
            .set(open.len() as i64);
        Self {
            open: Mutex::new(open),
            max_total,
            max_per_repo,
        }
    }

    pub(crate) fn reserve(&self, uuid: &str, repo: &str) -> Result<(), TooManyUploads> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.max_total {
            return Err(too_many(format!(
                "{} uploads are in progress, the most this registry allows (registry.max_uploads); finish or cancel some, or wait for stale ones to expire",
                open.len()
            )));
        }
        // Linear in the open sessions, which are capped above.
        let in_repo = open.values().filter(|r| r.as_str() == repo).count();
        if in_repo >= self.max_per_repo {
            return Err(too_many(format!(
                "{in_repo} uploads to {repo} are in progress, the most allowed per repository (registry.max_uploads_per_repository); finish or cancel some first"
            )));
        }
        open.insert(uuid.to_string(), repo.to_string());
        crate::metrics::get()
            .uploads_in_progress
            .set(open.len() as i64);
        Ok(())
    }

    pub(crate) fn release(&self, uuid: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(uuid);
        crate::metrics::get()
            .uploads_in_progress
            .set(open.len() as i64);
    }

    pub(crate) fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// A session refused for the limits, with the message that names the setting; storage turns it
/// into its own error (this module knows nothing of storage's).
#[derive(Debug)]
pub struct TooManyUploads(pub String);

fn too_many(message: String) -> TooManyUploads {
    TooManyUploads(message)
}
