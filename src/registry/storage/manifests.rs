//! Manifests (stored as blobs, linked into the repository with their media type) and tags.

use super::{list_names, write_atomic, Digest, Storage, StorageError};

impl Storage {
    pub async fn put_manifest(
        &self,
        repo: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> std::io::Result<Digest> {
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if tokio::fs::metadata(&path).await.is_err() {
            write_atomic(&path, bytes).await?;
        } else {
            self.touch_blob(&d).await;
        }
        write_atomic(&self.revision_link(repo, &d), media_type.as_bytes()).await?;
        Ok(d)
    }

    pub async fn tag(&self, repo: &str, tag: &str, d: &Digest) -> std::io::Result<()> {
        write_atomic(&self.tag_path(repo, tag), d.to_string().as_bytes()).await
    }

    pub async fn resolve_tag(&self, repo: &str, tag: &str) -> Option<Digest> {
        let s = tokio::fs::read_to_string(self.tag_path(repo, tag))
            .await
            .ok()?;
        Digest::parse(s.trim()).ok()
    }

    /// (media type, bytes) of a manifest of the repository.
    /// `None` when the repository has no such manifest; an unreadable one is an error.
    pub async fn get_manifest(
        &self,
        repo: &str,
        d: &Digest,
    ) -> Result<Option<(String, Vec<u8>)>, StorageError> {
        let media_type = match tokio::fs::read_to_string(self.revision_link(repo, d)).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bytes = tokio::fs::read(self.blob_path(d)).await?;
        Ok(Some((media_type, bytes)))
    }

    pub async fn has_manifest(&self, repo: &str, d: &Digest) -> bool {
        tokio::fs::metadata(self.revision_link(repo, d))
            .await
            .is_ok()
    }

    /// Removes the manifest from the repository, with every tag pointing at it.
    pub async fn delete_manifest(&self, repo: &str, d: &Digest) -> std::io::Result<bool> {
        if tokio::fs::remove_file(self.revision_link(repo, d))
            .await
            .is_err()
        {
            return Ok(false);
        }
        for tag in self.tags(repo).await.unwrap_or_default() {
            if self.resolve_tag(repo, &tag).await.as_ref() == Some(d) {
                let _ = tokio::fs::remove_file(self.tag_path(repo, &tag)).await;
            }
        }
        Ok(true)
    }

    pub async fn untag(&self, repo: &str, tag: &str) -> bool {
        tokio::fs::remove_file(self.tag_path(repo, tag))
            .await
            .is_ok()
    }

    /// Sorted tags, or `None` when the repository does not exist.
    pub async fn tags(&self, repo: &str) -> Option<Vec<String>> {
        if !self.repo_exists(repo).await {
            return None;
        }
        let mut tags = list_names(&self.repo_dir(repo).join("_manifests/tags")).await;
        tags.sort();
        Some(tags)
    }

    /// Every manifest digest of a repository, with its media type.
    pub async fn manifests(&self, repo: &str) -> Vec<(Digest, String)> {
        let dir = self.repo_dir(repo).join("_manifests/revisions/sha256");
        let mut out = Vec::new();
        for hex in list_names(&dir).await {
            if let Ok(d) = Digest::parse(&format!("sha256:{hex}")) {
                if let Ok(mt) = tokio::fs::read_to_string(dir.join(&hex)).await {
                    out.push((d, mt));
                }
            }
        }
        out
    }
}
