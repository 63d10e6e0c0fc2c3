//! The store's admin API, `/admin/v1/...`: users, groups and their members, grants, refresh
//! tokens, and `explain` for any decision. JSON in and out, errors in the realm's `{"errors":[...]}` shape. Callers
//! authenticate with Basic as a store user whose `admin` flag is set (damped like any login); everyone else gets 403.
//! Every change is logged with who made it, never with a password. Changes made here take
//! effect on this issuer at once, on other issuers of the same database within
//! `store.cache_ttl_seconds`.

mod explain;
pub(crate) mod grants;
pub(crate) mod groups;
mod tokens;
mod trail;
pub(crate) mod users;

use std::sync::Arc;

use poem::error::ResponseError;
use poem::http::{header, StatusCode};
use poem::{delete, get, post, Body, EndpointExt, Request, Response, Route};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::client::client_address;
use super::error::RealmError;
use super::request::basic_credentials;
use super::{errors_response, json_response};
use crate::app::App;
use crate::identity::store::StoreUsers;
use crate::identity::{Identity, Source};
use crate::store::{StoreError, MAX_PAGE};

/// Admin request bodies are small records.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Lines a list returns when the caller names no `limit`.
const DEFAULT_PAGE: i64 = 100;

pub fn routes() -> impl poem::Endpoint {
    Route::new()
        .at("/users", get(users::list).post(users::add))
        .at(
            "/users/:name",
            get(users::show).patch(users::update).delete(users::remove),
        )
        .at("/users/:name/password", post(users::set_password))
        .at("/groups", get(groups::list).post(groups::add))
        .at("/groups/:name", delete(groups::remove))
        .at(
            "/groups/:name/members",
            get(groups::members).post(groups::add_member),
        )
        .at("/groups/:name/members/:user", delete(groups::remove_member))
        .at("/grants", get(grants::list).post(grants::add))
        .at("/grants/:id", delete(grants::remove))
        .at("/tokens", get(tokens::list).delete(tokens::revoke_all))
        .at("/tokens/:id", delete(tokens::revoke))
        .at("/explain", post(explain::explain_route))
        .at("/find-secret", post(users::find_secret))
        .around(trail::audited)
}

/// An admin API failure, as a status and a message. Handlers return it with `?` and poem
/// renders it ([`ResponseError`]): one shape for every route, the realm's `{"errors":[...]}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{}", .0.message())]
    Realm(RealmError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
    /// A body that is not `application/json`.
    #[error("{0}")]
    Unsupported(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Self::NotFound(e.to_string()),
            StoreError::Conflict(_) => Self::Conflict(e.to_string()),
            StoreError::Invalid(m) => Self::Invalid(m),
            StoreError::Unavailable(_) => Self::Unavailable(e.to_string()),
            StoreError::Refused(m) => Self::Conflict(m),
        }
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::Realm(_) => "UNAUTHORIZED",
            Self::Forbidden(_) => "DENIED",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::Invalid(_) => "INVALID_REQUEST",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Unsupported(_) => "UNSUPPORTED",
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Realm(e) => e.status(),
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn as_response(&self) -> Response {
        if let Self::Realm(e) = self {
            // No `WWW-Authenticate: Basic` here: it makes a browser prompt for the admin's
            // password, keep it, and send it along with any other site's form posts.
            let mut r = e.clone().into_response("");
            r.headers_mut().remove(header::WWW_AUTHENTICATE);
            return r;
        }
        errors_response(self.status(), self.code(), &self.to_string())
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// The authenticated store admin making the request, and the store.
async fn admin<'a>(
    req: &Request,
    app: &'a App,
) -> Result<(Arc<Identity>, &'a StoreUsers), ApiError> {
    same_origin(req)?;
    let Some(users) = app.auth.store() else {
        return Err(ApiError::NotFound(
            "no user store is configured here (store.url); the admin API manages the store".into(),
        ));
    };
    let creds = basic_credentials(req)
        .map_err(ApiError::Realm)?
        .ok_or_else(|| {
            ApiError::Realm(RealmError::Unauthorized(
                "the admin API needs the Basic credentials of a store admin".into(),
            ))
        })?;
    let client = client_address(req, &app.trusted_proxies);
    let who = app
        .auth
        .authenticate(&creds, client)
        .await
        .map_err(|e| {
            // As the realm logs its refusals: a guesser at an admin's password leaves a trace.
            tracing::info!(
                user = ?creds.username,
                peer = %client,
                path = %req.original_uri().path(),
                "admin API login refused: {e}"
            );
            ApiError::Realm(e.into())
        })?
        .identity()
        .clone();
    if who.source != Source::Store || !who.admin {
        tracing::info!(user = ?who.name, path = %req.original_uri().path(), "admin API refused: not a store admin");
        return Err(ApiError::Forbidden(format!(
            "{} is not an admin: the admin API is for store users with the admin flag",
            who.name
        )));
    }
    Ok((who, users))
}

/// Refuses what a browser sends on another site's behalf: an `Origin` other than this host,
/// or `Sec-Fetch-Site` other than same-origin (or `none`, typed by the user). API clients and
/// the CLI send neither; a page elsewhere could otherwise post to the admin API with an
/// admin's credentials the browser kept.
fn same_origin(req: &Request) -> Result<(), ApiError> {
    let header = |name| {
        req.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    if let Some(site) = header("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return Err(cross_site(&format!("Sec-Fetch-Site: {site}")));
        }
    }
    if let Some(origin) = header("origin") {
        // HTTP/2 carries the host in the request's authority, not a Host header.
        let host = header("host")
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let origin_host = origin
            .split_once("://")
            .map(|(_, h)| h.trim_end_matches('/'))
            .unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(&host) {
            return Err(cross_site(&format!("Origin: {origin}")));
        }
    }
    Ok(())
}

fn cross_site(what: &str) -> ApiError {
    let what: String = what.chars().take(200).collect();
    tracing::info!(header = ?what, "admin API refused a cross-site request");
    ApiError::Forbidden(format!(
        "cross-site request refused ({what:?}): the admin API takes requests from API clients \
         and the CLI, not from pages in a browser"
    ))
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] into `T` (unknown fields are errors). The
/// body must say it is JSON: a browser sends `text/plain` and form bodies cross-site without
/// asking, but never `application/json`.
async fn json_body<T: DeserializeOwned>(req: &Request, body: Body) -> Result<T, ApiError> {
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = media.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        let shown: String = media.chars().take(100).collect();
        return Err(ApiError::Unsupported(format!(
            "the body must be JSON sent with Content-Type: application/json (got {shown:?})"
        )));
    }
    let bytes = body.into_bytes_limit(MAX_BODY_BYTES).await.map_err(|_| {
        ApiError::Invalid(format!(
            "the body is not readable or over {MAX_BODY_BYTES} bytes"
        ))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::Invalid(format!("the body: {e}")))
}

/// `?after=NAME&limit=N`: the page after `after`, at most `limit` (≤ 1000) lines.
pub(crate) fn page(req: &Request) -> Result<(String, i64), ApiError> {
    let mut after = String::new();
    let mut limit = DEFAULT_PAGE;
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "after" => after = v.into_owned(),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::Invalid(format!("limit: a number from 1 to {MAX_PAGE}"))
                    })?
            }
            _ => {}
        }
    }
    Ok((after, limit))
}

/// A list page: `{"<key>": [...], "next": "<after for the next page>" | null}`, and a
/// `Link: <...>; rel="next"` header as the registry's own lists have.
fn listing(
    req: &Request,
    key: &str,
    items: Vec<Value>,
    last: Option<String>,
    limit: i64,
) -> Response {
    let next = last.filter(|_| items.len() as i64 >= limit);
    let mut r = json_response(StatusCode::OK, &json!({ key: items, "next": next }));
    if let Some(n) = &next {
        // The filters asked for (`user`, `expiring_within`) carry over to the next page.
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
            if k != "after" && k != "limit" {
                query.append_pair(&k, &v);
            }
        }
        query.append_pair("after", n);
        query.append_pair("limit", &limit.to_string());
        let link = format!(
            "<{}?{}>; rel=\"next\"",
            req.original_uri().path(),
            query.finish()
        );
        if let Ok(v) = link.parse() {
            r.headers_mut().insert(header::LINK, v);
        }
    }
    r
}

fn no_content() -> Response {
    Response::builder().status(StatusCode::NO_CONTENT).finish()
}
