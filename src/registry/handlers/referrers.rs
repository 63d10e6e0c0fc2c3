//! `GET /v2/<name>/referrers/<digest>`: the manifests whose subject is the digest, as an index.

use poem::Response;
use serde_json::json;

use super::{base, param};
use crate::registry::errors::RegError;
use crate::registry::manifest::{Manifest, OCI_INDEX};
use crate::registry::storage::Digest;
use crate::registry::Registry;

pub(super) async fn referrers(
    reg: &Registry,
    name: &str,
    digest: &str,
    q: &[(String, String)],
) -> Result<Response, RegError> {
    let subject = Digest::parse(digest)?;
    let filter = param(q, "artifactType");
    let mut manifests = Vec::new();
    for (d, media_type) in reg.storage.manifests(name).await {
        let Some((_, bytes)) = reg.storage.get_manifest(name, &d).await? else {
            continue;
        };
        let Some(m) = Manifest::read(&bytes, &media_type) else {
            continue;
        };
        if m.subject.as_ref() != Some(&subject) {
            continue;
        }
        if filter.is_some_and(|f| f != m.artifact_type) {
            continue;
        }
        let mut desc = json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len(), "artifactType": m.artifact_type});
        if let Some(a) = m.annotations {
            desc["annotations"] = a;
        }
        manifests.push(desc);
    }
    let mut b = base().content_type(OCI_INDEX);
    if filter.is_some() {
        b = b.header("OCI-Filters-Applied", "artifactType");
    }
    Ok(b.body(
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).to_string(),
    ))
}
