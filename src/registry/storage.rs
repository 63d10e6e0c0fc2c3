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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest::{self, Context, SHA256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::errors::RegError;
use super::sessions::Sessions;

/// A `sha256:<64 lowercase hex>` digest (the only algorithm stored).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, RegError> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            RegError::digest_invalid(format!("unsupported digest {s:?}; use sha256:<hex>"))
        })?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(RegError::digest_invalid(format!("malformed digest {s:?}")));
        }
        Ok(Self { hex: hex.into() })
    }
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_context(Context::new(&SHA256).tap_update(bytes))
    }
    fn from_context(ctx: Context) -> Self {
        Self {
            hex: data_encoding::HEXLOWER.encode(ctx.finish().as_ref()),
        }
    }
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

trait TapUpdate {
    fn tap_update(self, bytes: &[u8]) -> Self;
}
impl TapUpdate for Context {
    fn tap_update(mut self, bytes: &[u8]) -> Self {
        self.update(bytes);
        self
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// Hash state of an upload, kept between PATCHes so finishing costs no second read.
/// Lost on restart: then the data is hashed from disk when the upload finishes.
struct UploadHash {
    ctx: Context,
    size: u64,
}

pub struct Storage {
    root: PathBuf,
    hashes: Mutex<HashMap<String, UploadHash>>,
    /// Uploads a request is working on.
    busy: Mutex<HashSet<String>>,
    sessions: Sessions,
}

/// Defaults of `registry.max_uploads` and `registry.max_uploads_per_repository`.
pub const MAX_UPLOADS: usize = 1000;
pub const MAX_UPLOADS_PER_REPOSITORY: usize = 100;

/// A request's exclusive claim on an upload, released on drop.
struct Claim<'a> {
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

const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is in use by a running registry; stop it first", .0.display())]
    InUse(PathBuf),
    #[error("{0}")]
    Io(String),
}

impl Storage {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        Self::open_with_limits(root, MAX_UPLOADS, MAX_UPLOADS_PER_REPOSITORY)
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

    fn claim(&self, uuid: &str) -> Result<Claim<'_>, RegError> {
        let mut busy = self
            .busy
            .lock()
            .map_err(|_| RegError::internal("poisoned lock"))?;
        if !busy.insert(uuid.to_string()) {
            return Err(RegError::upload_invalid(
                "another request is working on this upload",
            ));
        }
        Ok(Claim {
            storage: self,
            uuid: uuid.to_string(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&d.hex[..2])
            .join(&d.hex)
    }

    fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    fn layer_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_layers/sha256").join(&d.hex)
    }

    fn revision_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions/sha256")
            .join(&d.hex)
    }

    fn tag_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags").join(tag)
    }

    fn upload_dir(&self, uuid: &str) -> PathBuf {
        self.root.join("uploads").join(uuid)
    }

    pub async fn repo_exists(&self, repo: &str) -> bool {
        tokio::fs::metadata(self.repo_dir(repo).join("_manifests"))
            .await
            .is_ok()
            || tokio::fs::metadata(self.repo_dir(repo).join("_layers"))
                .await
                .is_ok()
    }

    /// The size of a blob the repository may serve.
    pub async fn blob_size(&self, repo: &str, d: &Digest) -> Option<u64> {
        tokio::fs::metadata(self.layer_link(repo, d)).await.ok()?;
        tokio::fs::metadata(self.blob_path(d))
            .await
            .ok()
            .map(|m| m.len())
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

    // ---- uploads

    pub async fn start_upload(&self, repo: &str) -> Result<String, RegError> {
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
    pub async fn upload_size(&self, repo: &str, uuid: &str) -> Result<u64, RegError> {
        if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(RegError::upload_unknown());
        }
        let dir = self.upload_dir(uuid);
        match tokio::fs::read_to_string(dir.join("repo")).await {
            Ok(owner) if owner == repo => {}
            _ => return Err(RegError::upload_unknown()),
        }
        Ok(tokio::fs::metadata(dir.join("data"))
            .await
            .map_err(|_| RegError::upload_unknown())?
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
    ) -> Result<u64, RegError> {
        let start = range.map(|(s, _)| s);
        let _claim = self.claim(uuid)?;
        let size = self.upload_size(repo, uuid).await?;
        if let Some(start) = start {
            if start != size {
                return Err(RegError::new(
                    poem::http::StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UPLOAD_INVALID",
                    format!("chunk starts at {start}, the upload holds {size} bytes"),
                ));
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
            Ok(n) if declared.is_some_and(|d| d != n) => Err(RegError::new(
                poem::http::StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UPLOAD_INVALID",
                format!(
                    "Content-Range declares {} bytes, the body had {n}",
                    declared.unwrap_or_default()
                ),
            )),
            Ok(n) => Ok(n),
            Err(CopyError::Body(e)) => Err(super::errors::body_cut_short(&e)),
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
    pub async fn finish(&self, repo: &str, uuid: &str, expected: &Digest) -> Result<u64, RegError> {
        let _claim = self.claim(uuid)?;
        let size = self.upload_size(repo, uuid).await?;
        let data = self.upload_dir(uuid).join("data");
        let actual = match self.take_hash(uuid).filter(|h| h.size == size) {
            Some(h) => Digest::from_context(h.ctx),
            None => hash_file(&data).await?,
        };
        if &actual != expected {
            self.remove_upload(uuid).await;
            return Err(RegError::digest_invalid(format!(
                "the uploaded content has digest {actual}, not {expected}"
            ))
            .with_detail(
                serde_json::json!({"expected": expected.to_string(), "actual": actual.to_string()}),
            ));
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
    pub async fn cancel(&self, repo: &str, uuid: &str) -> Result<(), RegError> {
        let _claim = self.claim(uuid)?;
        self.upload_size(repo, uuid).await?;
        self.remove_upload(uuid).await;
        Ok(())
    }

    async fn remove_upload(&self, uuid: &str) {
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

    fn take_hash(&self, uuid: &str) -> Option<UploadHash> {
        self.hashes.lock().ok()?.remove(uuid)
    }

    fn put_hash(&self, uuid: &str, h: UploadHash) {
        if let Ok(mut m) = self.hashes.lock() {
            m.insert(uuid.to_string(), h);
        }
    }

    // ---- manifests and tags

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
    pub async fn get_manifest(&self, repo: &str, d: &Digest) -> Option<(String, Vec<u8>)> {
        let media_type = tokio::fs::read_to_string(self.revision_link(repo, d))
            .await
            .ok()?;
        let bytes = tokio::fs::read(self.blob_path(d)).await.ok()?;
        Some((media_type, bytes))
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

pub async fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut ctx = digest::Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(Digest::from_context(ctx));
        }
        ctx.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(s.blob_size("org/app", &d).await, Some(11));
        assert_eq!(s.blob_size("org/other", &d).await, None, "not linked there");
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
        assert_eq!(err.code, "BLOB_UPLOAD_INVALID");
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
        assert!(s.blob_size("r1", &d).await.is_some() && s.blob_size("r2", &d).await.is_some());
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
