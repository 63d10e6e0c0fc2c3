//! Filesystem storage, content-addressed:
//!
//! ```text
//! blobs/sha256/<ab>/<hex>                              content (layers, configs, manifests)
//! uploads/<uuid>/{data,repo}                           upload sessions (same filesystem: rename is atomic)
//! repositories/<name>/_layers/sha256/<hex>             which blobs a repository may serve
//! repositories/<name>/_manifests/revisions/sha256/<hex>  a manifest of the repository (holds its media type)
//! repositories/<name>/_manifests/tags/<tag>            the digest a tag points at
//! ```
//!
//! Blobs are hashed while they stream and only linked into place once the digest matches, so a
//! crash or a mismatch never leaves a partial or wrong blob visible. A stored blob is never
//! written again: committing links the upload's file to the blob path and an existing blob wins,
//! so two uploads of the same blob race harmlessly. One request at a time may work on an upload
//! (a PATCH still writing when a PUT commits would otherwise write into the stored blob).
//!
//! One file per concern: [`paths`] (where each thing lives), [`blobs`] (stored content and the
//! links that let a repository serve it), [`uploads`] (sessions, chunks, commit), [`manifests`]
//! (manifests and tags), [`digest`]. Failures are [`StorageError`]s, which the registry's edge
//! maps to the spec's codes; an I/O error is never reported as "not found".

mod blobs;
mod digest;
mod manifests;
mod paths;
mod uploads;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use digest::{hash_file, Digest};
use uploads::UploadHash;

use super::sessions::{Sessions, TooManyUploads};

/// What storage can fail with. Not found is a value (`Option`), not an error.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    InvalidDigest(String),
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("another request is working on this upload")]
    UploadBusy,
    /// A chunk that does not start where the upload ends, or whose body is not the length its
    /// Content-Range declares.
    #[error("{0}")]
    OffsetMismatch(String),
    #[error("the uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// Past `registry.max_uploads` or `registry.max_uploads_per_repository`.
    #[error("{0}")]
    TooManyUploads(String),
    /// The client's body ended early or stalled.
    #[error("the request body was cut short: {0}")]
    BodyCutShort(std::io::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub struct Storage {
    root: PathBuf,
    hashes: Mutex<HashMap<String, UploadHash>>,
    /// Uploads a request is working on.
    busy: Mutex<HashSet<String>>,
    sessions: Sessions,
}

impl From<TooManyUploads> for StorageError {
    fn from(e: TooManyUploads) -> Self {
        Self::TooManyUploads(e.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is in use by a running registry; stop it first", .0.display())]
    InUse(PathBuf),
    #[error("{0}")]
    Io(String),
}

impl Storage {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        use crate::config::{DEFAULT_MAX_UPLOADS, DEFAULT_MAX_UPLOADS_PER_REPOSITORY};
        Self::open_with_limits(
            root,
            DEFAULT_MAX_UPLOADS,
            DEFAULT_MAX_UPLOADS_PER_REPOSITORY,
        )
    }

    pub fn open_with_limits(
        root: &Path,
        max_uploads: usize,
        max_per_repository: usize,
    ) -> std::io::Result<Self> {
        for d in ["blobs/sha256", "uploads", "repositories"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            hashes: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            sessions: Sessions::load(&root.join("uploads"), max_uploads, max_per_repository),
        })
    }

    /// Upload sessions open now.
    pub fn open_uploads(&self) -> usize {
        self.sessions.count()
    }

    /// An exclusive lock on the storage for this process's lifetime: a running registry holds it,
    /// and `gc` refuses to run without it (it would delete what a live push is referencing).
    /// Locks the storage for a running registry (`gc` takes the same lock to refuse to run
    /// beside one).
    pub fn lock(&self) -> Result<std::fs::File, LockError> {
        let path = self.root.join(".lock");
        let file = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LockError::Io(format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(LockError::InUse(self.root.clone())),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(LockError::Io(format!("{}: {e}", path.display())))
            }
        }
    }

    /// [`Storage::lock`], waiting up to `max` for a registry that is shutting down: a
    /// supervisor restarting `dev` or `serve` may start the new process while the old one
    /// still drains its connections (for up to its 10 s grace period).
    pub fn lock_waiting(&self, max: Duration) -> Result<std::fs::File, LockError> {
        let deadline = std::time::Instant::now() + max;
        let mut logged = false;
        loop {
            match self.lock() {
                Err(LockError::InUse(_)) if std::time::Instant::now() < deadline => {
                    if !logged {
                        tracing::info!(
                            "{} is locked by another registry; waiting up to {} s for it to stop",
                            self.root.display(),
                            max.as_secs()
                        );
                        logged = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

async fn list_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let n = e.file_name().to_string_lossy().to_string();
            if !n.starts_with(".tmp") {
                out.push(n);
            }
        }
    }
    out
}

/// Whether `path` exists; other failures are errors, not "no".
async fn exists(path: &Path) -> std::io::Result<bool> {
    match tokio::fs::metadata(path).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

async fn touch(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::write(path, bytes).await
}

/// Write to a temp file beside `path`, then rename: readers see the old or the new, never half.
async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path
        .parent()
        .ok_or_else(|| std::io::Error::other("no parent"))?;
    tokio::fs::create_dir_all(parent).await?;
    let tmp = parent.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[tokio::test]
    async fn chunked_upload_hashes_and_renames() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Storage::open(dir.path()).expect("open");
        let id = s.start_upload("org/app").await.expect("start");
        assert_eq!(
            s.append("org/app", &id, Some((0, None)), &b"hello "[..])
                .await
                .expect("a"),
            6
        );
        assert!(
            s.append("org/app", &id, Some((3, Some(3))), &b"x"[..])
                .await
                .is_err(),
            "wrong offset"
        );
        assert!(
            s.upload_size("other", &id).await.is_err(),
            "another repository's upload"
        );
        assert_eq!(
            s.append("org/app", &id, None, &b"world"[..])
                .await
                .expect("b"),
            11
        );
        let d = Digest::of(b"hello world");
        s.finish("org/app", &id, &d).await.expect("finish");
        assert_eq!(s.blob_size("org/app", &d).await.expect("io"), Some(11));
        assert_eq!(
            s.blob_size("org/other", &d).await.expect("io"),
            None,
            "not linked there"
        );
    }

    #[tokio::test]
    async fn mismatch_keeps_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Storage::open(dir.path()).expect("open");
        let id = s.start_upload("r").await.expect("start");
        s.append("r", &id, None, &b"data"[..])
            .await
            .expect("append");
        assert!(s.finish("r", &id, &Digest::of(b"other")).await.is_err());
        assert!(s.all_blobs().await.is_empty());
        assert!(s.upload_size("r", &id).await.is_err(), "session discarded");
    }

    #[tokio::test]
    async fn finishing_after_a_restart_rehashes_from_disk() {
        let dir = tempfile::tempdir().expect("tmp");
        let id = {
            let s = Storage::open(dir.path()).expect("open");
            let id = s.start_upload("r").await.expect("start");
            s.append("r", &id, None, &b"abc"[..]).await.expect("append");
            id
        };
        let s = Storage::open(dir.path()).expect("reopen");
        s.append("r", &id, Some((3, Some(5))), &b"def"[..])
            .await
            .expect("append");
        s.finish("r", &id, &Digest::of(b"abcdef"))
            .await
            .expect("finish");
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Storage::open(dir.path()).expect("open");
        let old = s.start_upload("r").await.expect("start");
        let fresh = s.start_upload("r").await.expect("start");
        let data = dir.path().join("uploads").join(&old).join("data");
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&data)
            .expect("open")
            .set_modified(two_hours_ago)
            .expect("mtime");
        assert_eq!(s.sweep_uploads(Duration::from_secs(3600)).await, 1);
        assert!(s.upload_size("r", &old).await.is_err());
        assert_eq!(s.upload_size("r", &fresh).await.expect("kept"), 0);
    }

    #[tokio::test]
    async fn one_request_at_a_time_per_upload() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().expect("tmp");
        let s = std::sync::Arc::new(Storage::open(dir.path()).expect("open"));
        let id = s.start_upload("r").await.expect("start");
        s.append("r", &id, None, &b"good"[..])
            .await
            .expect("append");
        // A PATCH still streaming (its body not finished) holds the upload...
        let (mut writer, reader) = tokio::io::duplex(64);
        writer.write_all(b"EVIL").await.expect("write");
        let (s2, id2) = (s.clone(), id.clone());
        let patch = tokio::spawn(async move { s2.append("r", &id2, None, reader).await });
        while !s.busy.lock().expect("lock").contains(&id) {
            tokio::task::yield_now().await;
        }
        // ...so a PUT cannot commit under it, nor a DELETE remove it.
        let err = s
            .finish("r", &id, &Digest::of(b"good"))
            .await
            .expect_err("busy");
        assert!(matches!(err, StorageError::UploadBusy), "{err}");
        assert!(s.cancel("r", &id).await.is_err());
        drop(writer);
        assert_eq!(patch.await.expect("join").expect("patch"), 8);
        let d = Digest::of(b"goodEVIL");
        s.finish("r", &id, &d)
            .await
            .expect("finish after the PATCH");
        // A stored blob is never rewritten by a later commit of the same digest.
        let inode =
            |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).expect("blob"));
        let before = inode(&s.blob_path(&d));
        let again = s.start_upload("r").await.expect("start");
        s.append("r", &again, None, &b"goodEVIL"[..])
            .await
            .expect("append");
        s.finish("r", &again, &d).await.expect("finish");
        assert_eq!(inode(&s.blob_path(&d)), before);
    }

    #[tokio::test]
    async fn the_same_blob_finished_twice_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Storage::open(dir.path()).expect("open");
        let body = vec![7u8; 3 << 20];
        let d = Digest::of(&body);
        let (a, b) = (
            s.start_upload("r1").await.expect("a"),
            s.start_upload("r2").await.expect("b"),
        );
        let (ra, rb) = tokio::join!(
            async {
                s.append("r1", &a, None, &body[..]).await?;
                s.finish("r1", &a, &d).await
            },
            async {
                s.append("r2", &b, None, &body[..]).await?;
                s.finish("r2", &b, &d).await
            },
        );
        assert_eq!(
            (ra.expect("first"), rb.expect("second")),
            (3 << 20, 3 << 20)
        );
        assert_eq!(hash_file(&s.blob_path(&d)).await.expect("hash"), d);
        assert_eq!(s.all_blobs().await, vec![d.clone()]);
        assert!(
            s.blob_size("r1", &d).await.expect("io").is_some()
                && s.blob_size("r2", &d).await.expect("io").is_some()
        );
    }

    #[test]
    fn digests() {
        assert!(Digest::parse("sha256:abc").is_err());
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert_eq!(
            Digest::parse(&Digest::of(b"").to_string()).expect("ok"),
            Digest::of(b"")
        );
    }
}
