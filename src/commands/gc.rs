//! `gc`: garbage collection with the registry stopped (the serving registry collects by itself
//! on `registry.gc.interval`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use token_issuer::config::Config;
use token_issuer::registry;

pub(crate) async fn run(
    data_dir: &Path,
    config: Option<PathBuf>,
    dry_run: bool,
    delete_untagged: bool,
) -> anyhow::Result<()> {
    let root = match config {
        Some(c) => Config::load(Some(&c), &[])?
            .registry
            .ok_or_else(|| anyhow::anyhow!("{}: no [registry] section", c.display()))?
            .storage
            .relative(),
        None => data_dir.join("registry"),
    };
    if !root.join("blobs").is_dir() {
        anyhow::bail!("{} holds no registry storage", root.display());
    }
    let storage = registry::storage::Storage::open(&root)?;
    let _lock = storage.lock().map_err(|e| anyhow::anyhow!("gc: {e}"))?;
    let report = registry::gc::collect(&storage, delete_untagged, dry_run, Duration::ZERO).await?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for (repo, d) in &report.manifests {
        println!("{verb} manifest {repo}@{d}");
    }
    for d in &report.blobs {
        println!("{verb} blob {d}");
    }
    println!(
        "{verb} {} manifest(s), {} blob(s)",
        report.manifests.len(),
        report.blobs.len()
    );
    Ok(())
}
