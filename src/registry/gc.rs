//! Garbage collection (`token-issuer gc`): mark every blob a kept manifest references, sweep
//! the rest. With `delete_untagged`, a manifest is kept only if a tag reaches it (directly,
//! through a kept index, or as a referrer of a kept manifest). Run it while the registry is
//! stopped, as with distribution's `garbage-collect`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::storage::{Digest, Storage};

#[derive(Debug, Default)]
pub struct Report {
    pub manifests: Vec<(String, Digest)>,
    pub blobs: Vec<Digest>,
}

pub async fn collect(
    storage: &Storage,
    delete_untagged: bool,
    dry_run: bool,
) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut referenced: BTreeSet<Digest> = BTreeSet::new();
    for repo in storage.repositories().await {
        let mut docs = Vec::new();
        for (d, _) in storage.manifests(&repo).await {
            let doc = match storage.get_manifest(&repo, &d).await {
                Some((_, bytes)) => serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
                None => Value::Null,
            };
            docs.push((d, doc));
        }
        let kept: BTreeSet<Digest> = if delete_untagged {
            let mut kept = BTreeSet::new();
            for tag in storage.tags(&repo).await.unwrap_or_default() {
                if let Some(d) = storage.resolve_tag(&repo, &tag).await {
                    kept.insert(d);
                }
            }
            // Children of kept indexes, and referrers of kept manifests, until nothing changes.
            loop {
                let before = kept.len();
                for (d, doc) in &docs {
                    if kept.contains(d) {
                        kept.extend(children(doc));
                    } else if subject(doc).is_some_and(|s| kept.contains(&s)) {
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
        for (d, doc) in &docs {
            if kept.contains(d) {
                referenced.insert(d.clone());
                referenced.extend(blobs_of(doc));
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
                if !referenced.contains(&d) {
                    storage.unlink_blob(&repo, &d).await;
                }
            }
        }
    }
    for d in storage.all_blobs().await {
        if !referenced.contains(&d) {
            if !dry_run {
                tokio::fs::remove_file(storage.blob_path(&d)).await?;
            }
            report.blobs.push(d);
        }
    }
    Ok(report)
}

fn digests(list: Option<&Value>) -> impl Iterator<Item = Digest> + '_ {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|desc| {
            desc.get("digest")?
                .as_str()
                .and_then(|s| Digest::parse(s).ok())
        })
}

fn children(doc: &Value) -> Vec<Digest> {
    digests(doc.get("manifests")).collect()
}

fn subject(doc: &Value) -> Option<Digest> {
    Digest::parse(doc.pointer("/subject/digest")?.as_str()?).ok()
}

fn blobs_of(doc: &Value) -> Vec<Digest> {
    let config = doc
        .pointer("/config/digest")
        .and_then(Value::as_str)
        .and_then(|s| Digest::parse(s).ok());
    config
        .into_iter()
        .chain(digests(doc.get("layers")))
        .collect()
}
