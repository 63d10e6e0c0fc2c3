//! Registry errors, with the codes and statuses of the distribution spec.

use poem::http::StatusCode;
use poem::Response;
use serde_json::json;

#[derive(Debug)]
pub(crate) struct RegError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: serde_json::Value,
    pub retry_after: Option<u64>,
}

impl RegError {
    /// Private: every code has its constructor below, so a code string is written once.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            retry_after: None,
        }
    }
    pub(crate) fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub(crate) fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
    pub(crate) fn pagination_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID", msg)
    }
    /// A 416 for a `Range` outside the blob (the caller adds `Content-Range: bytes */size`).
    pub(crate) fn range_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID", msg)
    }
    /// A 416 for a chunk that does not continue the upload.
    pub(crate) fn upload_range_invalid(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            msg,
        )
    }
    pub(crate) fn manifest_blob_unknown(digest: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            "blob unknown to registry",
        )
        .with_detail(json!({"digest": digest}))
    }
    pub(crate) fn tag_invalid() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "TAG_INVALID", "invalid tag")
    }
    pub(crate) fn too_many_requests(msg: impl Into<String>, retry_after: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", msg)
            .with_retry_after(retry_after)
    }
    pub(crate) fn endpoint_unknown() -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint")
    }
    /// The body of a 401; the challenge header is the caller's (see `auth`).
    pub(crate) fn unauthorized(msg: impl Into<String>, detail: serde_json::Value) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", msg).with_detail(detail)
    }
    pub(crate) fn blob_unknown(digest: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        )
        .with_detail(json!({"digest": digest}))
    }
    pub(crate) fn upload_unknown() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry",
        )
    }
    pub(crate) fn upload_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", msg)
    }
    pub(crate) fn digest_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", msg)
    }
    pub(crate) fn manifest_unknown(reference: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        )
        .with_detail(json!({"reference": reference}))
    }
    pub(crate) fn manifest_invalid(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", msg)
    }
    pub(crate) fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        )
        .with_detail(json!({"name": name}))
    }
    pub(crate) fn name_invalid(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            "invalid repository name",
        )
        .with_detail(json!({"name": name}))
    }
    pub(crate) fn unsupported(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", msg)
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("registry storage error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            "unknown error",
        )
    }

    pub(crate) fn into_response(self) -> Response {
        let mut err = json!({"code": self.code, "message": self.message});
        if !self.detail.is_null() {
            err["detail"] = self.detail;
        }
        let mut r = Response::builder()
            .status(self.status)
            .content_type("application/json")
            .header("Docker-Distribution-API-Version", "registry/2.0");
        if let Some(s) = self.retry_after {
            r = r.header("Retry-After", s.to_string());
        }
        r.body(json!({"errors": [err]}).to_string())
    }
}

impl From<std::io::Error> for RegError {
    fn from(e: std::io::Error) -> Self {
        Self::internal(e)
    }
}

/// A request body that could not be read to its end: the client went away, stalled past
/// `http.body_timeout_seconds`, or sent less than it declared. The client's doing, so a 400
/// logged at debug, never a 500.
pub(crate) fn body_cut_short(e: &std::io::Error) -> RegError {
    tracing::debug!("request body ended early: {e}");
    RegError::new(
        StatusCode::BAD_REQUEST,
        "BLOB_UPLOAD_INVALID",
        "the request body ended before its declared length; send the chunk again",
    )
}

impl From<super::manifest::Invalid> for RegError {
    fn from(e: super::manifest::Invalid) -> Self {
        match e {
            super::manifest::Invalid::Manifest(m) => Self::manifest_invalid(m),
            super::manifest::Invalid::Digest(m) => Self::digest_invalid(m),
        }
    }
}

impl From<super::manifest::BadReference> for RegError {
    fn from(e: super::manifest::BadReference) -> Self {
        match e {
            super::manifest::BadReference::Digest(m) => Self::digest_invalid(m),
            super::manifest::BadReference::Tag => Self::tag_invalid(),
        }
    }
}

/// Storage failures at the edge: each to its code; an I/O error is a 500 whose cause is logged
/// (`internal`), never a "not found".
impl From<super::storage::StorageError> for RegError {
    fn from(e: super::storage::StorageError) -> Self {
        use super::storage::StorageError as E;
        match e {
            E::InvalidDigest(m) => Self::digest_invalid(m),
            E::UploadUnknown => Self::upload_unknown(),
            E::UploadBusy => Self::upload_invalid("another request is working on this upload"),
            E::OffsetMismatch(m) => Self::upload_range_invalid(m),
            E::DigestMismatch { expected, actual } => Self::digest_invalid(format!(
                "the uploaded content has digest {actual}, not {expected}"
            ))
            .with_detail(json!({"expected": expected.to_string(), "actual": actual.to_string()})),
            E::TooManyUploads(m) => {
                Self::too_many_requests(m, super::sessions::RETRY_AFTER_SECONDS)
            }
            E::BodyCutShort(e) => body_cut_short(&e),
            E::Io(e) => Self::internal(e),
        }
    }
}
