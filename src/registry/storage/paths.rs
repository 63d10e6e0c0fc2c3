//! Where each thing lives under the storage root (the layout in the module's documentation).

use std::path::PathBuf;

use super::{Digest, Storage};

impl Storage {
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    pub(super) fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    pub(super) fn layer_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo).join("_layers/sha256").join(d.hex())
    }

    pub(super) fn revision_link(&self, repo: &str, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions/sha256")
            .join(d.hex())
    }

    pub(super) fn tag_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags").join(tag)
    }

    pub(super) fn upload_dir(&self, uuid: &str) -> PathBuf {
        self.root.join("uploads").join(uuid)
    }
}
