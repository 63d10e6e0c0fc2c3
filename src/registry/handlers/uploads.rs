//! `/v2/<name>/blobs/uploads/`: POST (a session, a monolithic upload or a mount), PATCH
//! (a chunk), PUT (the last chunk and the digest), GET (progress), DELETE (cancel).

use poem::http::{header, StatusCode};
use poem::{Body, Request, Response};

use super::{base, param, valid_name};
use crate::registry::errors::RegError;
use crate::registry::storage::Digest;
use crate::registry::Registry;

/// `start-end` (what docker sends; distribution's spec form) or `bytes start-end` /
/// `bytes=start-end`; the end is inclusive and may be left out.
pub(crate) fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let v = v.trim_start_matches("bytes=").trim_start_matches("bytes ");
    let (a, b) = v.split_once('-')?;
    let start = a.trim().parse().ok()?;
    let end = match b.trim().split('/').next()? {
        "" => None,
        e => {
            let e: u64 = e.parse().ok()?;
            if e < start {
                return None;
            }
            Some(e)
        }
    };
    Some((start, end))
}

fn upload_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    base()
        .status(status)
        .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        // distribution's quirk: an empty upload reports 0-0.
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
}

fn blob_created(name: &str, d: &Digest) -> Response {
    base()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{d}"))
        .header("Docker-Content-Digest", d.to_string())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
}

pub(super) async fn start_upload(
    reg: &Registry,
    name: &str,
    q: &[(String, String)],
    body: Body,
) -> Result<Response, RegError> {
    if let (Some(mount), Some(from)) = (param(q, "mount"), param(q, "from")) {
        // A mount the registry cannot do (a bad digest, a blob the source lacks) becomes a plain
        // upload session, as distribution does; pull on the source was checked with the token.
        if let Ok(d) = Digest::parse(mount) {
            if valid_name(from) && reg.storage.blob_size(from, &d).await?.is_some() {
                reg.gc.used(&reg.storage, &d).await;
                reg.storage.link_blob(name, &d).await?;
                return Ok(blob_created(name, &d));
            }
        }
    }
    // A monolithic upload's digest is checked before a session is made for it.
    let digest = param(q, "digest").map(Digest::parse).transpose()?;
    let id = reg.storage.start_upload(name).await?;
    if let Some(d) = digest {
        let stored = async {
            reg.storage
                .append(name, &id, None, body.into_async_read())
                .await?;
            reg.storage.finish(name, &id, &d).await
        }
        .await;
        if let Err(e) = stored {
            // The session existed only for this request: nothing of it may stay behind.
            reg.storage.discard(name, &id).await;
            return Err(e.into());
        }
        return Ok(blob_created(name, &d));
    }
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

pub(super) async fn patch_upload(
    reg: &Registry,
    req: &Request,
    name: &str,
    id: &str,
    body: Body,
) -> Result<Response, RegError> {
    let range = match req
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(v) => Some(
            parse_content_range(v)
                .ok_or_else(|| RegError::upload_invalid("malformed Content-Range"))?,
        ),
    };
    let size = reg
        .storage
        .append(name, id, range, body.into_async_read())
        .await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, id, size))
}

pub(super) async fn put_upload(
    reg: &Registry,
    name: &str,
    id: &str,
    q: &[(String, String)],
    body: Body,
) -> Result<Response, RegError> {
    let d = Digest::parse(
        param(q, "digest")
            .ok_or_else(|| RegError::digest_invalid("the digest parameter is required"))?,
    )?;
    reg.storage
        .append(name, id, None, body.into_async_read())
        .await?;
    reg.storage.finish(name, id, &d).await?;
    Ok(blob_created(name, &d))
}

pub(super) async fn cancel_upload(
    reg: &Registry,
    name: &str,
    id: &str,
) -> Result<Response, RegError> {
    reg.storage.cancel(name, id).await?;
    Ok(base().status(StatusCode::NO_CONTENT).finish())
}

pub(super) async fn upload_status(
    reg: &Registry,
    name: &str,
    id: &str,
) -> Result<Response, RegError> {
    let size = reg.storage.upload_size(name, id).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, id, size))
}
