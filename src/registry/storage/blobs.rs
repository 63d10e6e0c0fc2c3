//! Stored content and the links that let a repository serve it.

use std::path::PathBuf;

use super::{exists, list_names, touch, Digest, Storage};

impl Storage {
    pub async fn repo_exists(&self, repo: &str) -> bool {
        tokio::fs::metadata(self.repo_dir(repo).join("_manifests"))
            .await
            .is_ok()
            || tokio::fs::metadata(self.repo_dir(repo).join("_layers"))
                .await
                .is_ok()
    }

    /// The size of a blob the repository may serve.
    pub async fn blob_size(&self, repo: &str, d: &Digest) -> std::io::Result<Option<u64>> {
        if !exists(&self.layer_link(repo, d)).await? {
            return Ok(None);
        }
        match tokio::fs::metadata(self.blob_path(d)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Moves the blob's time to now: it is in use (see `gc`). Failure only shortens its grace.
    pub async fn touch_blob(&self, d: &Digest) {
        let path = self.blob_path(d);
        let _ = tokio::task::spawn_blocking(move || {
            std::fs::File::options()
                .append(true)
                .open(path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()))
        })
        .await;
    }

    /// The manifest's link in the repository, whose time is when it was pushed.
    pub fn revision_path(&self, repo: &str, d: &Digest) -> PathBuf {
        self.revision_link(repo, d)
    }

    pub async fn link_blob(&self, repo: &str, d: &Digest) -> std::io::Result<()> {
        touch(&self.layer_link(repo, d), b"").await
    }

    pub async fn unlink_blob(&self, repo: &str, d: &Digest) -> bool {
        tokio::fs::remove_file(self.layer_link(repo, d))
            .await
            .is_ok()
    }

    /// Blobs linked into a repository.
    pub async fn layers(&self, repo: &str) -> Vec<Digest> {
        list_names(&self.repo_dir(repo).join("_layers/sha256"))
            .await
            .into_iter()
            .filter_map(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .collect()
    }

    /// Every repository name, sorted.
    pub async fn repositories(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join("repositories"), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
                continue;
            };
            let mut is_repo = false;
            while let Ok(Some(e)) = entries.next_entry().await {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with('_') {
                    is_repo = true;
                } else if e.file_type().await.is_ok_and(|t| t.is_dir()) {
                    let full = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}/{name}")
                    };
                    stack.push((e.path(), full));
                }
            }
            if is_repo {
                out.push(prefix);
            }
        }
        out.sort();
        out
    }

    /// Every stored blob digest.
    pub async fn all_blobs(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        for prefix in list_names(&self.root.join("blobs/sha256")).await {
            for hex in list_names(&self.root.join("blobs/sha256").join(prefix)).await {
                if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
                    out.push(d);
                }
            }
        }
        out.sort();
        out
    }
}
