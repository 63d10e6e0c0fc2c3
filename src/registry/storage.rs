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
//! Blobs are hashed while they stream and only renamed into place once the digest matches, so a
//! crash or a mismatch never leaves a partial or wrong blob visible; two uploads of the same blob
//! race harmlessly (each renames identical bytes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest::{self, Context, SHA256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::errors::RegError;

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
}

const CHUNK: usize = 256 * 1024;

impl Storage {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for d in ["blobs/sha256", "uploads", "repositories"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            hashes: Mutex::new(HashMap::new()),
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

    pub async fn link_blob(&self, repo: &str, d: &Digest) -> std::io::Result<()> {
        touch(&self.layer_link(repo, d), b"").await
    }

    pub async fn unlink_blob(&self, repo: &str, d: &Digest) -> bool {
        tokio::fs::remove_file(self.layer_link(repo, d))
            .await
            .is_ok()
    }

    // ---- uploads

    pub async fn start_upload(&self, repo: &str) -> std::io::Result<String> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let dir = self.upload_dir(&uuid);
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(dir.join("repo"), repo).await?;
        tokio::fs::File::create(dir.join("data")).await?;
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

    /// Appends `body` to the upload, hashing as it goes. `start`: the offset the client says the
    /// chunk begins at (Content-Range); it must equal the current size.
    pub async fn append(
        &self,
        repo: &str,
        uuid: &str,
        start: Option<u64>,
        body: impl AsyncRead + Unpin,
    ) -> Result<u64, RegError> {
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
        file.flush().await?;
        let new_size = size + written.as_ref().map_or(0, |n| *n);
        if let Some(mut h) = hash {
            if written.is_ok() {
                h.size = new_size;
                self.put_hash(uuid, h);
            }
        }
        written?;
        Ok(new_size)
    }

    /// Verifies the whole upload against `expected` and moves it into place, linked to `repo`.
    /// On a mismatch the upload is discarded and nothing is stored.
    pub async fn finish(&self, repo: &str, uuid: &str, expected: &Digest) -> Result<u64, RegError> {
        let size = self.upload_size(repo, uuid).await?;
        let data = self.upload_dir(uuid).join("data");
        let actual = match self.take_hash(uuid).filter(|h| h.size == size) {
            Some(h) => Digest::from_context(h.ctx),
            None => hash_file(&data).await?,
        };
        if &actual != expected {
            self.cancel(uuid).await;
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
        tokio::fs::rename(&data, &dest).await?;
        self.cancel(uuid).await;
        self.link_blob(repo, expected).await?;
        Ok(size)
    }

    pub async fn cancel(&self, uuid: &str) {
        let _ = self.take_hash(uuid);
        let _ = tokio::fs::remove_dir_all(self.upload_dir(uuid)).await;
    }

    /// Removes upload sessions untouched for `max_age`; returns how many.
    pub async fn sweep_uploads(&self, max_age: Duration) -> usize {
        let mut removed = 0;
        let Ok(mut entries) = tokio::fs::read_dir(self.root.join("uploads")).await else {
            return 0;
        };
        let now = SystemTime::now();
        while let Ok(Some(e)) = entries.next_entry().await {
            let touched = tokio::fs::metadata(e.path().join("data"))
                .await
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if now.duration_since(touched).unwrap_or_default() > max_age {
                self.cancel(&e.file_name().to_string_lossy()).await;
                removed += 1;
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

async fn copy_hashing(
    mut body: impl AsyncRead + Unpin,
    file: &mut tokio::fs::File,
    mut ctx: Option<&mut Context>,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        if let Some(c) = ctx.as_deref_mut() {
            c.update(&buf[..n]);
        }
        file.write_all(&buf[..n]).await?;
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
            s.append("org/app", &id, Some(0), &b"hello "[..])
                .await
                .expect("a"),
            6
        );
        assert!(
            s.append("org/app", &id, Some(3), &b"x"[..]).await.is_err(),
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
        s.append("r", &id, Some(3), &b"def"[..])
            .await
            .expect("append");
        s.finish("r", &id, &Digest::of(b"abcdef"))
            .await
            .expect("finish");
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
