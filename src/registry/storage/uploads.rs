//! Upload sessions: started, appended to chunk by chunk (hashed as they stream), committed
//! under their digest, cancelled, or swept when stale. One request at a time per session.

use std::time::{Duration, SystemTime};

use aws_lc_rs::digest::{Context, SHA256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::{hash_file, Digest, Storage, StorageError};

pub(super) const CHUNK: usize = 256 * 1024;

/// Hash state of an upload, kept between PATCHes so finishing costs no second read.
/// Lost on restart: then the data is hashed from disk when the upload finishes.
pub(super) struct UploadHash {
    ctx: Context,
    size: u64,
}

/// A request's exclusive claim on an upload, released on drop.
pub(super) struct Claim<'a> {
    storage: &'a Storage,
    uuid: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut busy) = self.storage.busy.lock() {
            busy.remove(&self.uuid);
        }
    }
}

impl Storage {
    pub(super) fn claim(&self, uuid: &str) -> Result<Claim<'_>, StorageError> {
        let mut busy = self
            .busy
            .lock()
            .map_err(|_| std::io::Error::other("poisoned lock"))?;
        if !busy.insert(uuid.to_string()) {
            return Err(StorageError::UploadBusy);
        }
        Ok(Claim {
            storage: self,
            uuid: uuid.to_string(),
        })
    }

    pub async fn start_upload(&self, repo: &str) -> Result<String, StorageError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        self.sessions.reserve(&uuid, repo)?;
        let dir = self.upload_dir(&uuid);
        let created = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(dir.join("repo"), repo).await?;
            tokio::fs::File::create(dir.join("data")).await
        }
        .await;
        if let Err(e) = created {
            self.remove_upload(&uuid).await;
            return Err(e.into());
        }
        self.hashes
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .insert(
                uuid.clone(),
                UploadHash {
                    ctx: Context::new(&SHA256),
                    size: 0,
                },
            );
        Ok(uuid)
    }

    /// The current size of an upload of `repo`.
    pub async fn upload_size(&self, repo: &str, uuid: &str) -> Result<u64, StorageError> {
        if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(StorageError::UploadUnknown);
        }
        let dir = self.upload_dir(uuid);
        match tokio::fs::read_to_string(dir.join("repo")).await {
            Ok(owner) if owner == repo => {}
            _ => return Err(StorageError::UploadUnknown),
        }
        Ok(tokio::fs::metadata(dir.join("data"))
            .await
            .map_err(|_| StorageError::UploadUnknown)?
            .len())
    }

    /// Appends `body` to the upload, hashing as it goes. `range`: the offsets the client says
    /// the chunk spans (Content-Range, end inclusive when given); the start must equal the
    /// current size, and the body must be exactly as long as the range. A chunk that fails
    /// (a short or long body, a client gone) is undone: the upload stays as it was.
    pub async fn append(
        &self,
        repo: &str,
        uuid: &str,
        range: Option<(u64, Option<u64>)>,
        body: impl AsyncRead + Unpin,
    ) -> Result<u64, StorageError> {
        let start = range.map(|(s, _)| s);
        let _claim = self.claim(uuid)?;
        let size = self.upload_size(repo, uuid).await?;
        if let Some(start) = start {
            if start != size {
                return Err(StorageError::OffsetMismatch(format!(
                    "chunk starts at {start}, the upload holds {size} bytes"
                )));
            }
        }
        let mut hash = self.take_hash(uuid).filter(|h| h.size == size);
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(self.upload_dir(uuid).join("data"))
            .await?;
        let written = copy_hashing(body, &mut file, hash.as_mut().map(|h| &mut h.ctx)).await;
        let declared = range.and_then(|(s, e)| e.map(|e| e.saturating_sub(s) + 1));
        let outcome = match written {
            Ok(n) if declared.is_some_and(|d| d != n) => {
                Err(StorageError::OffsetMismatch(format!(
                    "Content-Range declares {} bytes, the body had {n}",
                    declared.unwrap_or_default()
                )))
            }
            Ok(n) => Ok(n),
            Err(CopyError::Body(e)) => Err(StorageError::BodyCutShort(e)),
            Err(CopyError::Disk(e)) => Err(e.into()),
        };
        match outcome {
            Ok(n) => {
                file.flush().await?;
                if let Some(mut h) = hash {
                    h.size = size + n;
                    self.put_hash(uuid, h);
                }
                Ok(size + n)
            }
            Err(e) => {
                // Back to the size before this chunk; the hash state is gone with it (the data
                // is hashed from disk if the upload finishes).
                file.set_len(size).await?;
                Err(e)
            }
        }
    }

    /// Verifies the whole upload against `expected` and moves it into place, linked to `repo`.
    /// On a mismatch the upload is discarded and nothing is stored.
    pub async fn finish(
        &self,
        repo: &str,
        uuid: &str,
        expected: &Digest,
    ) -> Result<u64, StorageError> {
        let _claim = self.claim(uuid)?;
        let size = self.upload_size(repo, uuid).await?;
        let data = self.upload_dir(uuid).join("data");
        let actual = match self.take_hash(uuid).filter(|h| h.size == size) {
            Some(h) => Digest::from_context(h.ctx),
            None => hash_file(&data).await?,
        };
        if &actual != expected {
            self.remove_upload(uuid).await;
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.blob_path(expected);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::File::open(&data).await?.sync_all().await?;
        match tokio::fs::hard_link(&data, &dest).await {
            Ok(()) => {}
            // Stored already (verified when it was): the first copy stays, used again now.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                self.touch_blob(expected).await;
            }
            Err(e) => return Err(e.into()),
        }
        self.remove_upload(uuid).await;
        self.link_blob(repo, expected).await?;
        Ok(size)
    }

    /// Cancels an upload of `repo` (DELETE on the session).
    pub async fn cancel(&self, repo: &str, uuid: &str) -> Result<(), StorageError> {
        let _claim = self.claim(uuid)?;
        self.upload_size(repo, uuid).await?;
        self.remove_upload(uuid).await;
        Ok(())
    }

    pub(super) async fn remove_upload(&self, uuid: &str) {
        let _ = self.take_hash(uuid);
        let _ = tokio::fs::remove_dir_all(self.upload_dir(uuid)).await;
        self.sessions.release(uuid);
    }

    /// Removes an upload of `repo` whose request failed (a monolithic POST with a bad digest or
    /// a cut-short body): nothing of it stays behind.
    pub async fn discard(&self, repo: &str, uuid: &str) {
        if let Ok(_claim) = self.claim(uuid) {
            if self.upload_size(repo, uuid).await.is_ok() {
                self.remove_upload(uuid).await;
            }
        }
    }

    /// Removes upload sessions untouched for `max_age`; returns how many.
    pub async fn sweep_uploads(&self, max_age: Duration) -> usize {
        let mut removed = 0;
        let Ok(mut entries) = tokio::fs::read_dir(self.root.join("uploads")).await else {
            return 0;
        };
        let now = SystemTime::now();
        while let Ok(Some(e)) = entries.next_entry().await {
            // A session being created may not have its data file yet: then the directory's time.
            let touched = match tokio::fs::metadata(e.path().join("data")).await {
                Ok(m) => m.modified(),
                Err(_) => tokio::fs::metadata(e.path())
                    .await
                    .and_then(|m| m.modified()),
            }
            .unwrap_or(now);
            let uuid = e.file_name().to_string_lossy().to_string();
            if now.duration_since(touched).unwrap_or_default() > max_age {
                // Skip uploads a request is working on right now.
                if let Ok(_claim) = self.claim(&uuid) {
                    self.remove_upload(&uuid).await;
                    removed += 1;
                }
            }
        }
        removed
    }

    pub(super) fn take_hash(&self, uuid: &str) -> Option<UploadHash> {
        self.hashes.lock().ok()?.remove(uuid)
    }

    pub(super) fn put_hash(&self, uuid: &str, h: UploadHash) {
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(uuid.to_string(), h);
        }
    }
}

/// Where a copy failed: reading the client's body, or writing our disk.
enum CopyError {
    Body(std::io::Error),
    Disk(std::io::Error),
}

async fn copy_hashing(
    mut body: impl AsyncRead + Unpin,
    file: &mut tokio::fs::File,
    mut ctx: Option<&mut Context>,
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).await.map_err(CopyError::Body)?;
        if n == 0 {
            return Ok(total);
        }
        if let Some(c) = ctx.as_deref_mut() {
            c.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).await.map_err(CopyError::Disk)?;
        crate::metrics::get().registry_bytes_in.inc_by(n as u64);
        total += n as u64;
    }
}
