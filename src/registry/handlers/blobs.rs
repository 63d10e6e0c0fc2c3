//! `/v2/<name>/blobs/<digest>`: GET (whole, or one `Range`) and HEAD, DELETE.

use poem::http::{header, StatusCode};
use poem::{Body, Request, Response};

use super::base;
use crate::registry::errors::RegError;
use crate::registry::storage::Digest;
use crate::registry::Registry;

pub(super) async fn get_blob(
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
        .await?
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
        let mut resp =
            RegError::range_invalid(format!("range {range} is not satisfiable")).into_response();
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
pub(crate) fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
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

pub(super) async fn delete_blob(
    reg: &Registry,
    name: &str,
    digest: &str,
) -> Result<Response, RegError> {
    let d = Digest::parse(digest)?;
    if !reg.storage.unlink_blob(name, &d).await {
        return Err(RegError::blob_unknown(digest));
    }
    Ok(base().status(StatusCode::ACCEPTED).finish())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
