//! The OCI distribution API over [`Storage`], behind [`TokenAuth`]. Repository names contain
//! slashes, so one handler takes `/v2/*` and splits the path from the right, as distribution does.

use std::sync::Arc;

use poem::http::{header, Method, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};
use serde_json::{json, Value};

use super::errors::RegError;
use super::manifest::{Manifest, Reference, DOCKER_LIST, OCI_INDEX, OCI_MANIFEST};
use super::storage::Digest;
use super::Registry;
use crate::scope::Scope;

/// Manifests are small JSON documents; distribution refuses anything over 4 MiB too.
const MAX_MANIFEST: usize = 4 * 1024 * 1024;

#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Upload(&'a str, Option<&'a str>),
    Referrers(&'a str, &'a str),
}

/// The `route` label of the registry's metrics: bounded, never a repository name.
pub fn route_label(path: &str) -> &'static str {
    match route(path) {
        Some(Route::Base) => "base",
        Some(Route::Catalog) => "catalog",
        Some(Route::Tags(_)) => "tags",
        Some(Route::Manifest(..)) => "manifests",
        Some(Route::Blob(..)) => "blobs",
        Some(Route::Upload(..)) => "uploads",
        Some(Route::Referrers(..)) => "referrers",
        None => "other",
    }
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    // Uploads only at the end of the path: a name may itself hold "blobs/uploads".
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads")
        .or_else(|| rest.strip_suffix("/blobs/uploads/"))
    {
        return Some(Route::Upload(name, None));
    }
    if let Some((before, id)) = rest.rsplit_once('/') {
        if let Some(name) = before.strip_suffix("/blobs/uploads") {
            return Some(Route::Upload(name, Some(id)));
        }
    }
    let (name, kind, last) = ["/manifests/", "/blobs/", "/referrers/"]
        .iter()
        .filter_map(|k| rest.rfind(k).map(|i| (i, *k)))
        .max()
        .map(|(i, k)| (&rest[..i], k, &rest[i + k.len()..]))?;
    if last.is_empty() || last.contains('/') {
        return None;
    }
    Some(match kind {
        "/manifests/" => Route::Manifest(name, last),
        "/blobs/" => Route::Blob(name, last),
        _ => Route::Referrers(name, last),
    })
}

fn repo_scope(name: &str, actions: &[&str]) -> Scope {
    Scope::new("repository", name, actions)
}

fn query(req: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A repository name as the registry stores it: the scope grammar without a `host:port` prefix.
fn valid_name(name: &str) -> bool {
    crate::scope::is_repository_name(name) && !name.contains(':')
}

fn base() -> poem::ResponseBuilder {
    Response::builder().header("Docker-Distribution-API-Version", "registry/2.0")
}

#[handler]
pub async fn dispatch(req: &Request, body: Body, Data(reg): Data<&Arc<Registry>>) -> Response {
    let path = req.uri().path().to_string();
    let Some(r) = route(&path) else {
        return RegError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
            .into_response();
    };
    let name = match &r {
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => Some(*n),
        _ => None,
    };
    if let Some(n) = name {
        if !valid_name(n) {
            return RegError::name_invalid(n).into_response();
        }
    }
    let method = req.method().clone();
    let q = query(req);
    // The access each request needs (protocol-notes §6).
    // The access each request needs, as distribution's appendAccessRecords (protocol-notes §6):
    // GET/HEAD pull, POST/PUT/PATCH pull+push, DELETE delete, a mount also pull on its source.
    let needed: Vec<Scope> = match (&r, name) {
        (Route::Base, _) => vec![],
        (Route::Catalog, _) => vec![Scope::new("registry", "catalog", &["*"])],
        (_, Some(n)) => {
            let mut needed = vec![match method {
                Method::GET | Method::HEAD => repo_scope(n, &["pull"]),
                Method::DELETE => repo_scope(n, &["delete"]),
                _ => repo_scope(n, &["pull", "push"]),
            }];
            if let (Route::Upload(_, None), true, Some(from)) =
                (&r, method == Method::POST, param(&q, "from"))
            {
                if param(&q, "mount").is_some() && valid_name(from) && from != n {
                    needed.push(repo_scope(from, &["pull"]));
                }
            }
            needed
        }
        (_, None) => vec![],
    };
    if let Err(resp) = reg.auth.check(req, &needed) {
        return *resp;
    }
    let result = match (r, method) {
        (Route::Base, _) => Ok(base().content_type("application/json").body("{}")),
        (Route::Catalog, Method::GET) => catalog(reg, &q).await,
        (Route::Tags(n), Method::GET) => tags(reg, n, &q).await,
        (Route::Manifest(n, reference), m @ (Method::GET | Method::HEAD)) => {
            get_manifest(reg, req, n, reference, m == Method::HEAD).await
        }
        (Route::Manifest(n, reference), Method::PUT) => {
            put_manifest(reg, req, n, reference, body).await
        }
        (Route::Manifest(n, reference), Method::DELETE) => delete_manifest(reg, n, reference).await,
        (Route::Blob(n, d), m @ (Method::GET | Method::HEAD)) => {
            get_blob(reg, req, n, d, m == Method::HEAD).await
        }
        (Route::Blob(n, d), Method::DELETE) => delete_blob(reg, n, d).await,
        (Route::Upload(n, None), Method::POST) => start_upload(reg, n, &q, body).await,
        (Route::Upload(n, Some(id)), Method::PATCH) => patch_upload(reg, req, n, id, body).await,
        (Route::Upload(n, Some(id)), Method::PUT) => put_upload(reg, n, id, &q, body).await,
        (Route::Upload(n, Some(id)), Method::GET) => upload_status(reg, n, id).await,
        (Route::Upload(n, Some(id)), Method::DELETE) => cancel_upload(reg, n, id).await,
        (Route::Referrers(n, d), Method::GET) => referrers(reg, n, d, &q).await,
        _ => Err(RegError::unsupported("the operation is unsupported")),
    };
    result.unwrap_or_else(RegError::into_response)
}

// ---- listings

/// `n`/`last` pagination with a `Link` header to the next page.
fn paginate(
    all: Vec<String>,
    q: &[(String, String)],
    path: &str,
) -> Result<(Vec<String>, Option<String>), RegError> {
    let last = param(q, "last");
    let mut items: Vec<String> = all
        .into_iter()
        .filter(|x| last.is_none_or(|l| x.as_str() > l))
        .collect();
    let Some(n) = param(q, "n") else {
        return Ok((items, None));
    };
    let n: usize = n.parse().map_err(|_| {
        RegError::new(
            StatusCode::BAD_REQUEST,
            "PAGINATION_NUMBER_INVALID",
            "n must be a number",
        )
    })?;
    if items.len() <= n {
        return Ok((items, None));
    }
    items.truncate(n);
    let link = items.last().map(|l| {
        let last: String = form_urlencoded::byte_serialize(l.as_bytes()).collect();
        format!("<{path}?last={last}&n={n}>; rel=\"next\"")
    });
    Ok((items, link))
}

fn json_page(body: Value, link: Option<String>) -> Response {
    let mut b = base().content_type("application/json");
    if let Some(l) = link {
        b = b.header(header::LINK, l);
    }
    b.body(body.to_string())
}

async fn catalog(reg: &Registry, q: &[(String, String)]) -> Result<Response, RegError> {
    let (repos, link) = paginate(reg.storage.repositories().await, q, "/v2/_catalog")?;
    Ok(json_page(json!({"repositories": repos}), link))
}

async fn tags(reg: &Registry, name: &str, q: &[(String, String)]) -> Result<Response, RegError> {
    let all = reg
        .storage
        .tags(name)
        .await
        .ok_or_else(|| RegError::name_unknown(name))?;
    let (tags, link) = paginate(all, q, &format!("/v2/{name}/tags/list"))?;
    Ok(json_page(json!({"name": name, "tags": tags}), link))
}

// ---- manifests

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
async fn get_manifest(
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
        .await
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
            .await
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

async fn put_manifest(
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
        if reg.storage.blob_size(name, d).await.is_none() {
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
    RegError::new(
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
        "blob unknown to registry",
    )
    .with_detail(json!({"digest": d.to_string()}))
}

async fn delete_manifest(
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

async fn referrers(
    reg: &Registry,
    name: &str,
    digest: &str,
    q: &[(String, String)],
) -> Result<Response, RegError> {
    let subject = Digest::parse(digest)?;
    let filter = param(q, "artifactType");
    let mut manifests = Vec::new();
    for (d, media_type) in reg.storage.manifests(name).await {
        let Some((_, bytes)) = reg.storage.get_manifest(name, &d).await else {
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

// ---- blobs

async fn get_blob(
    reg: &Registry,
    req: &Request,
    name: &str,
    digest: &str,
    head: bool,
) -> Result<Response, RegError> {
    let d = Digest::parse(digest)?;
    let size = reg
        .storage
        .blob_size(name, &d)
        .await
        .ok_or_else(|| RegError::blob_unknown(digest))?;
    // A client told the blob exists may name it in a manifest next: not collected before.
    reg.gc.used(&reg.storage, &d).await;
    let b = base()
        .content_type("application/octet-stream")
        .header("Docker-Content-Digest", d.to_string())
        .header(header::ETAG, format!("\"{d}\""))
        .header(header::ACCEPT_RANGES, "bytes");
    if head {
        return Ok(b.header(header::CONTENT_LENGTH, size).body(Body::empty()));
    }
    let path = reg.storage.blob_path(&d);
    let permit = reg
        .downloads
        .clone()
        .acquire_owned()
        .await
        .map_err(RegError::internal)?;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let Some(range) = range else {
        return Ok(b
            .header(header::CONTENT_LENGTH, size)
            .body(stream_file(path, 0, size, permit)));
    };
    let Some((start, end)) = parse_range(range, size) else {
        let mut resp = RegError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!("range {range} is not satisfiable"),
        )
        .into_response();
        if let Ok(v) = format!("bytes */{size}").parse() {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
        return Ok(resp);
    };
    let len = end - start + 1;
    Ok(b.status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
        .header(header::CONTENT_LENGTH, len)
        .body(stream_file(path, start, len, permit)))
}

/// Streams `len` bytes of `path` from `offset`. One blocking thread reads 1 MiB chunks into a
/// small bounded channel: memory stays bounded, and there is no blocking-pool round trip per
/// chunk as with tokio's `File` (which made pulls slower than distribution's).
/// The thread holds a permit of [`Registry::downloads`] until it ends.
fn stream_file(
    path: std::path::PathBuf,
    offset: u64,
    len: u64,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        use std::io::{Read, Seek};
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => return drop(tx.blocking_send(Err(e))),
        };
        if let Err(e) = file.seek(std::io::SeekFrom::Start(offset)) {
            return drop(tx.blocking_send(Err(e)));
        }
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; left.min(1 << 20) as usize];
            let n = match file.read(&mut buf) {
                Ok(0) => {
                    return drop(tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into())))
                }
                Ok(n) => n,
                Err(e) => return drop(tx.blocking_send(Err(e))),
            };
            buf.truncate(n);
            left -= n as u64;
            if tx.blocking_send(Ok(buf.into())).is_err() {
                return; // the client went away
            }
        }
    });
    Body::from_bytes_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n`, inclusive, within `size`.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(size.checked_sub(1)?),
        ),
    };
    (start <= end && end < size).then_some((start, end))
}

async fn delete_blob(reg: &Registry, name: &str, digest: &str) -> Result<Response, RegError> {
    let d = Digest::parse(digest)?;
    if !reg.storage.unlink_blob(name, &d).await {
        return Err(RegError::blob_unknown(digest));
    }
    Ok(base().status(StatusCode::ACCEPTED).finish())
}

// ---- uploads

/// `start-end` (what docker sends; distribution's spec form) or `bytes start-end` /
/// `bytes=start-end`; the end is inclusive and may be left out.
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
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

async fn start_upload(
    reg: &Registry,
    name: &str,
    q: &[(String, String)],
    body: Body,
) -> Result<Response, RegError> {
    if let (Some(mount), Some(from)) = (param(q, "mount"), param(q, "from")) {
        // A mount the registry cannot do (a bad digest, a blob the source lacks) becomes a plain
        // upload session, as distribution does; pull on the source was checked with the token.
        if let Ok(d) = Digest::parse(mount) {
            if valid_name(from) && reg.storage.blob_size(from, &d).await.is_some() {
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
            return Err(e);
        }
        return Ok(blob_created(name, &d));
    }
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

async fn patch_upload(
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

async fn put_upload(
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

async fn cancel_upload(reg: &Registry, name: &str, id: &str) -> Result<Response, RegError> {
    reg.storage.cancel(name, id).await?;
    Ok(base().status(StatusCode::NO_CONTENT).finish())
}

async fn upload_status(reg: &Registry, name: &str, id: &str) -> Result<Response, RegError> {
    let size = reg.storage.upload_size(name, id).await?;
    Ok(upload_response(StatusCode::NO_CONTENT, name, id, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_split_from_the_right() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(route("/v2/a/b/tags/list"), Some(Route::Tags("a/b")));
        assert_eq!(
            route("/v2/a/blobs/b/manifests/latest"),
            Some(Route::Manifest("a/blobs/b", "latest"))
        );
        assert_eq!(
            route("/v2/org/app/blobs/sha256:00"),
            Some(Route::Blob("org/app", "sha256:00"))
        );
        assert_eq!(
            route("/v2/org/app/blobs/uploads/"),
            Some(Route::Upload("org/app", None))
        );
        assert_eq!(
            route("/v2/org/app/blobs/uploads/abc"),
            Some(Route::Upload("org/app", Some("abc")))
        );
        assert_eq!(
            route("/v2/org/app/referrers/sha256:00"),
            Some(Route::Referrers("org/app", "sha256:00"))
        );
        assert_eq!(route("/v2/org/app/manifests/"), None);
        assert_eq!(route("/v3/x"), None);
        // A name may hold "blobs/uploads": only the end of the path decides.
        assert_eq!(
            route("/v2/a/blobs/uploads/manifests/latest"),
            Some(Route::Manifest("a/blobs/uploads", "latest"))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/blobs/uploads/"),
            Some(Route::Upload("a/blobs/uploads", None))
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/tags/list"),
            Some(Route::Tags("a/blobs/uploads"))
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("org/app") && valid_name("a"));
        for bad in ["Org/app", "../x", "localhost:5000/x", "", "a//b", "a/"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
