//! Content digests: `sha256:<64 lowercase hex>`, the only algorithm stored.

use std::path::Path;

use aws_lc_rs::digest::{self, Context, SHA256};
use tokio::io::AsyncReadExt;

use super::StorageError;

/// A `sha256:<64 lowercase hex>` digest (the only algorithm stored).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, StorageError> {
        let hex = s.strip_prefix("sha256:").ok_or_else(|| {
            StorageError::InvalidDigest(format!("unsupported digest {s:?}; use sha256:<hex>"))
        })?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(StorageError::InvalidDigest(format!(
                "malformed digest {s:?}"
            )));
        }
        Ok(Self { hex: hex.into() })
    }
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_context(Context::new(&SHA256).tap_update(bytes))
    }
    pub(super) fn from_context(ctx: Context) -> Self {
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

pub async fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut ctx = digest::Context::new(&SHA256);
    let mut buf = vec![0u8; super::uploads::CHUNK];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(Digest::from_context(ctx));
        }
        ctx.update(&buf[..n]);
    }
}
