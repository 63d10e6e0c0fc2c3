//! Garbage collection: mark every blob a kept manifest references, sweep the rest. With
//! `delete_untagged`, a manifest is kept only if a tag reaches it (directly, through a kept
//! index, or as a referrer of a kept manifest).
//!
//! It runs offline (`token-issuer gc`, registry stopped) or inside the serving registry on
//! `registry.gc.interval`. Serving, three rules keep it from racing a push:
//! - **Grace.** Blobs and manifests written or used within `registry.gc.grace_seconds` are kept:
//!   a push uploads its blobs first and names them in a manifest later. A blob is "used" when
//!   a client checks or fetches it (HEAD/GET), mounts it, or uploads it again: that moves its
//!   time forward, so the blob a client was just told exists is still there for its manifest.
//!   A collection re-checks each blob's time just before removing it, so a use during its run
//!   counts too (pulls never wait for a collection).
//! - **Gate.** A manifest PUT checks its blobs and writes itself under a shared lock that a
//!   collection takes exclusively from mark to sweep: a manifest is either seen by the mark, or
//!   checks its blobs after the sweep (and is refused with `MANIFEST_BLOB_UNKNOWN` naming a
//!   swept one, which the client uploads again). Blob uploads and pulls do not wait.
//! - The marks of the offline and the serving collector are the same code.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use super::manifest::Manifest;
use super::storage::{Digest, Storage};
use super::Registry;

/// The serving registry's side of collection: the gate manifest PUTs pass, and the grace.
pub struct Guard {
    pub gate: tokio::sync::RwLock<()>,
    pub grace: Duration,
    /// Whether collection runs while serving (else nothing needs refreshing on use).
    pub scheduled: bool,
}

impl Guard {
    /// Marks `d` used now when its time is older than half the grace (one metadata call
    /// otherwise). Never waits for a running collection (a pull must not stall behind one): its
    /// re-check just before each removal sees the new time.
    pub async fn used(&self, storage: &Storage, d: &Digest) {
        if !self.scheduled {
            return;
        }
        let fresh = tokio::fs::metadata(storage.blob_path(d))
            .await
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < self.grace / 2);
        if !fresh {
            storage.touch_blob(d).await;
        }
    }
}

/// Runs every `every` inside the serving process (the first run one interval after start).
pub fn spawn_schedule(reg: std::sync::Arc<Registry>, every: Duration, delete_untagged: bool) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let started = std::time::Instant::now();
            let result = {
                let _exclusive = reg.gc.gate.write().await;
                collect(&reg.storage, delete_untagged, false, reg.gc.grace).await
            };
            let m = crate::metrics::get();
            match result {
                Ok(r) => {
                    m.gc_runs.inc();
                    m.gc_blobs.inc_by(r.blobs.len() as u64);
                    m.gc_manifests.inc_by(r.manifests.len() as u64);
                    if !r.blobs.is_empty() || !r.manifests.is_empty() {
                        tracing::info!(
                            blobs = r.blobs.len(),
                            manifests = r.manifests.len(),
                            took_ms = started.elapsed().as_millis() as u64,
                            "garbage collected"
                        );
                    }
                }
                Err(e) => {
                    m.gc_failed.inc();
                    tracing::error!("garbage collection failed (it will run again): {e}");
                }
            }
        }
    });
}

/// Whether `path` was written (or used) within `grace` of now.
async fn young(path: &std::path::Path, grace: Duration) -> bool {
    if grace.is_zero() {
        return false;
    }
    tokio::fs::metadata(path)
        .await
        .and_then(|m| m.modified())
        .ok()
        .is_some_and(|t| {
            SystemTime::now()
                .duration_since(t)
                .map_or(true, |age| age < grace)
        })
}

#[derive(Debug, Default)]
pub struct Report {
    pub manifests: Vec<(String, Digest)>,
    pub blobs: Vec<Digest>,
}

/// `grace`: content younger than this is kept (zero offline: nothing is pushing).
pub async fn collect(
    storage: &Storage,
    delete_untagged: bool,
    dry_run: bool,
    grace: Duration,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut referenced: BTreeSet<Digest> = BTreeSet::new();
    for repo in storage.repositories().await {
        // A manifest that does not parse references nothing (it was checked when pushed); one
        // that cannot be read stops the collection: what it needs is unknown.
        let mut docs: Vec<(Digest, Option<Manifest>)> = Vec::new();
        for (d, _) in storage.manifests(&repo).await {
            let m = match storage.get_manifest(&repo, &d).await {
                Ok(found) => {
                    found.and_then(|(media_type, bytes)| Manifest::read(&bytes, &media_type))
                }
                Err(e) => {
                    return Err(std::io::Error::other(format!(
                        "reading manifest {d} of {repo}: {e}"
                    )))
                }
            };
            docs.push((d, m));
        }
        let kept: BTreeSet<Digest> = if delete_untagged {
            let mut kept = BTreeSet::new();
            // A manifest pushed within the grace may be waiting for its tag or its index.
            for (d, _) in &docs {
                if young(&storage.revision_path(&repo, d), grace).await {
                    kept.insert(d.clone());
                }
            }
            for tag in storage.tags(&repo).await.unwrap_or_default() {
                if let Some(d) = storage.resolve_tag(&repo, &tag).await {
                    kept.insert(d);
                }
            }
            // Children of kept indexes, and referrers of kept manifests, until nothing changes.
            loop {
                let before = kept.len();
                for (d, m) in &docs {
                    let Some(m) = m else { continue };
                    if kept.contains(d) {
                        kept.extend(m.children().iter().map(|c| c.digest.clone()));
                    } else if m.subject.as_ref().is_some_and(|s| kept.contains(s)) {
                        kept.insert(d.clone());
                    }
                }
                if kept.len() == before {
                    break;
                }
            }
            kept
        } else {
            docs.iter().map(|(d, _)| d.clone()).collect()
        };
        for (d, m) in &docs {
            if kept.contains(d) {
                referenced.insert(d.clone());
                referenced.extend(m.iter().flat_map(|m| m.blobs().iter().cloned()));
            } else {
                if !dry_run {
                    storage.delete_manifest(&repo, d).await?;
                }
                report.manifests.push((repo.clone(), d.clone()));
            }
        }
    }
    if !dry_run {
        // Links to blobs about to go would only turn into 404s later: drop them too.
        for repo in storage.repositories().await {
            for d in storage.layers(&repo).await {
                if !referenced.contains(&d) && !young(&storage.blob_path(&d), grace).await {
                    storage.unlink_blob(&repo, &d).await;
                }
            }
        }
    }
    // Blobs written or used within the grace (uploads finishing while this runs among them)
    // are a push in progress: kept. Checked just before each removal.
    for d in storage.all_blobs().await {
        if !referenced.contains(&d) && !young(&storage.blob_path(&d), grace).await {
            if !dry_run {
                tokio::fs::remove_file(storage.blob_path(&d)).await?;
            }
            report.blobs.push(d);
        }
    }
    Ok(report)
}
