//! `/v2/<name>/manifests/<reference>`: GET and HEAD (with `Accept` negotiation), PUT (checked
//! against the repository's blobs and manifests), DELETE.

use poem::http::{header, StatusCode};
use poem::{Body, Request, Response};
use serde_json::json;

use super::base;
use crate::registry::errors::RegError;
use crate::registry::manifest::{Manifest, Reference, DOCKER_LIST, OCI_INDEX, OCI_MANIFEST};
use crate::registry::storage::Digest;
use crate::registry::Registry;

/// Manifests are small JSON documents; distribution refuses anything over 4 MiB too.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

async fn resolve(reg: &Registry, name: &str, reference: &Reference) -> Result<Digest, RegError> {
    match reference {
        Reference::Digest(d) => Ok(d.clone()),
        Reference::Tag(t) => reg
            .storage
            .resolve_tag(name, t)
            .await
            .ok_or_else(|| RegError::manifest_unknown(t)),
    }
}

/// As distribution's GetManifest: OCI manifests and indexes only for clients that accept them
/// (else MANIFEST_UNKNOWN); a Docker manifest list fetched by tag by a client that does not
/// accept lists gets the linux/amd64 image instead; `If-None-Match` on the digest gives 304.
pub(super) async fn get_manifest(
    reg: &Registry,
    req: &Request,
    name: &str,
    reference: &str,
    head: bool,
) -> Result<Response, RegError> {
    let accepts: Vec<String> = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
        .collect();
    let supports = |t: &str| accepts.iter().any(|a| a == t);
    let parsed = Reference::parse(reference)?;
    let mut d = resolve(reg, name, &parsed).await?;
    let (mut media_type, mut bytes) = reg
        .storage
        .get_manifest(name, &d)
        .await?
        .ok_or_else(|| RegError::manifest_unknown(reference))?;
    if (media_type == OCI_MANIFEST || media_type == OCI_INDEX) && !supports(&media_type) {
        // In the message, not only in `detail`: clients print the message (distribution's words).
        let what = if media_type == OCI_MANIFEST {
            "OCI manifest found, but accept header does not support OCI manifests"
        } else {
            "OCI index found, but accept header does not support OCI indexes"
        };
        let mut e = RegError::manifest_unknown(reference).with_detail(
            json!({"reference": reference, "reason": format!("{media_type} found, but the Accept header does not list it")}),
        );
        e.message = what.to_string();
        return Err(e);
    }
    let by_tag = matches!(parsed, Reference::Tag(_));
    if media_type == DOCKER_LIST && by_tag && !supports(DOCKER_LIST) {
        let list = Manifest::read(&bytes, &media_type)
            .ok_or_else(|| RegError::internal("a stored manifest list does not parse"))?;
        let child = list.platform("linux", "amd64").cloned().ok_or_else(|| {
            RegError::manifest_unknown(reference)
                .with_detail(json!({"reason": "no linux/amd64 manifest in the list"}))
        })?;
        (media_type, bytes) = reg
            .storage
            .get_manifest(name, &child)
            .await?
            .ok_or_else(|| RegError::manifest_unknown(reference))?;
        d = child;
    }
    let etag = format!("\"{d}\"");
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok(base()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .finish());
    }
    let b = base()
        .content_type(media_type)
        .header("Docker-Content-Digest", d.to_string())
        .header(header::ETAG, etag);
    Ok(if head {
        b.header(header::CONTENT_LENGTH, bytes.len())
            .body(Body::empty())
    } else {
        b.body(bytes)
    })
}

pub(super) async fn put_manifest(
    reg: &Registry,
    req: &Request,
    name: &str,
    reference: &str,
    body: Body,
) -> Result<Response, RegError> {
    let bytes = body.into_bytes_limit(MAX_MANIFEST).await.map_err(|_| {
        RegError::manifest_invalid("the manifest is unreadable or larger than 4 MiB")
    })?;
    // Checked and written as one step against a collection (see `gc`).
    let _shared = reg.gc.gate.read().await;
    crate::metrics::get()
        .registry_bytes_in
        .inc_by(bytes.len() as u64);
    let header_type = req
        .content_type()
        .map(|c| c.split(';').next().unwrap_or("").trim().to_string());
    let manifest = Manifest::parse(&bytes, header_type.as_deref())?;
    for d in manifest.blobs() {
        if reg.storage.blob_size(name, d).await?.is_none() {
            return Err(manifest_blob_unknown(d));
        }
    }
    for child in manifest.children() {
        if !reg.storage.has_manifest(name, &child.digest).await {
            return Err(manifest_blob_unknown(&child.digest));
        }
    }
    let tag = match Reference::parse(reference)? {
        Reference::Digest(d) => {
            let computed = Digest::of(&bytes);
            if d != computed {
                return Err(RegError::digest_invalid(format!(
                    "the manifest's digest is {computed}, not {reference}"
                )));
            }
            None
        }
        Reference::Tag(t) => Some(t),
    };
    let media_type = manifest.media_type.as_str();
    let d = reg.storage.put_manifest(name, media_type, &bytes).await?;
    if let Some(t) = tag {
        reg.storage.tag(name, &t, &d).await?;
    }
    let mut b = base()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/manifests/{d}"))
        .header("Docker-Content-Digest", d.to_string());
    if let Some(subject) = &manifest.subject {
        b = b.header("OCI-Subject", subject.to_string());
    }
    Ok(b.finish())
}

fn manifest_blob_unknown(d: &Digest) -> RegError {
    RegError::manifest_blob_unknown(&d.to_string())
}

pub(super) async fn delete_manifest(
    reg: &Registry,
    name: &str,
    reference: &str,
) -> Result<Response, RegError> {
    let removed = match Reference::parse(reference)? {
        Reference::Digest(d) => reg.storage.delete_manifest(name, &d).await?,
        Reference::Tag(t) => reg.storage.untag(name, &t).await,
    };
    if !removed {
        return Err(RegError::manifest_unknown(reference));
    }
    Ok(base().status(StatusCode::ACCEPTED).finish())
}
