//! A token request, whichever form it came in: the token spec's `GET` query with Basic
//! credentials, or the OAuth2 `POST` form (`grant_type=password|refresh_token`). Parsing only;
//! `realm` decides what to do with it.

use poem::http::header;
use poem::{Body, Request};

use super::error::RealmError;
use crate::identity::{refresh, Credentials};
use crate::issuing::TokenRequest;
use crate::scope::Scope;

/// Form bodies are a few hundred bytes; anything near this is not a token request.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub(crate) fn parse_get(req: &Request, max_scopes: usize) -> Result<TokenRequest, RealmError> {
    let query = req.uri().query().unwrap_or("");
    let mut tr = TokenRequest::new();
    let mut scope_values = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "service" => tr.service = Some(v.into_owned()),
            "scope" => scope_values.push(v.into_owned()),
            "account" => tr.account = Some(v.into_owned()),
            "client_id" => tr.client_id = Some(v.into_owned()),
            "offline_token" => tr.offline = v == "true",
            _ => {}
        }
    }
    tr.scopes = parse_scopes(&scope_values, max_scopes)?;
    tr.credentials = basic_credentials(req)?;
    // containerd's GET fallback for a refresh: Basic with an empty user and the refresh token.
    if let Some(c) = tr
        .credentials
        .take_if(|c| c.username.is_empty() && refresh::looks_like(&c.password))
    {
        tr.refresh_token = Some(c.password);
    }
    Ok(tr)
}

pub(crate) async fn parse_post(
    req: &Request,
    body: Body,
    max_scopes: usize,
) -> Result<TokenRequest, RealmError> {
    let is_form = req
        .content_type()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(RealmError::bad(
            "INVALID_REQUEST",
            "expected an application/x-www-form-urlencoded body",
        ));
    }
    let bytes = body.into_bytes_limit(MAX_FORM_BYTES).await.map_err(|_| {
        RealmError::too_large(
            "INVALID_REQUEST",
            "the form body is unreadable or too large",
        )
    })?;
    let mut tr = TokenRequest::new();
    let (mut grant_type, mut username, mut password, mut scope_values) =
        (None, None, None, Vec::new());
    for (k, v) in form_urlencoded::parse(&bytes) {
        match k.as_ref() {
            "grant_type" => grant_type = Some(v.into_owned()),
            "service" => tr.service = Some(v.into_owned()),
            "scope" => scope_values.push(v.into_owned()),
            "client_id" => tr.client_id = Some(v.into_owned()),
            "username" => username = Some(v.into_owned()),
            "password" => password = Some(v.into_owned()),
            "refresh_token" => tr.refresh_token = Some(v.into_owned()),
            "access_type" => tr.offline = v == "offline",
            _ => {}
        }
    }
    match grant_type.as_deref() {
        Some("password") => tr.refresh_token = None,
        Some("refresh_token") => {
            if tr.refresh_token.as_deref().is_none_or(str::is_empty) {
                return Err(RealmError::bad(
                    "INVALID_REQUEST",
                    "grant_type=refresh_token needs a refresh_token",
                ));
            }
            // The refresh token is the credential; a new one is never issued for it.
            tr.offline = false;
            tr.scopes = parse_scopes(&scope_values, max_scopes)?;
            return Ok(tr);
        }
        Some(other) => {
            return Err(RealmError::bad(
                "UNSUPPORTED_GRANT_TYPE",
                format!("unknown grant_type {other:?}"),
            ))
        }
        None => return Err(RealmError::bad("INVALID_REQUEST", "grant_type is required")),
    }
    tr.scopes = parse_scopes(&scope_values, max_scopes)?;
    tr.credentials = match (username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        (None, None) => basic_credentials(req)?,
        _ => {
            return Err(RealmError::bad(
                "INVALID_REQUEST",
                "username and password go together",
            ))
        }
    };
    tr.account = tr.credentials.as_ref().map(|c| c.username.clone());
    Ok(tr)
}

fn parse_scopes(values: &[String], max: usize) -> Result<Vec<Scope>, RealmError> {
    Scope::parse_all(values.iter().map(String::as_str), max).map_err(|e| match e {
        crate::scope::ScopesError::TooMany(_) => {
            RealmError::too_large("INVALID_SCOPE", e.to_string())
        }
        _ => RealmError::bad("INVALID_SCOPE", e.to_string()),
    })
}

pub(crate) fn basic_credentials(req: &Request) -> Result<Option<Credentials>, RealmError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| RealmError::Unauthorized("malformed Authorization header".into()))?;
    let Some((scheme, b64)) = value.split_once(' ') else {
        return Err(RealmError::Unauthorized(
            "malformed Authorization header".into(),
        ));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(RealmError::Unauthorized(format!(
            "{scheme} credentials are not accepted here; use Basic"
        )));
    }
    let decoded = data_encoding::BASE64
        .decode(b64.trim().as_bytes())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            RealmError::Unauthorized(
                "the Basic credentials are not base64 of UTF-8 user:password".into(),
            )
        })?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| RealmError::Unauthorized("the Basic credentials lack a ':'".into()))?;
    Ok(Some(Credentials {
        username: username.into(),
        password: password.into(),
    }))
}
