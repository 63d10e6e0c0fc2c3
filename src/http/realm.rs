//! The token endpoint: `GET /v1/registry` (the token spec) and `POST /v1/registry` (its OAuth2
//! form). Request → parse → authenticate → authorize → sign; each failure has its own status.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};
use serde_json::json;

use super::client::client_address;
use super::json_response;
use super::trail::{self, Asked, Trail};
use crate::app::App;
use crate::identity::{refresh, AuthError, Caller, Credentials};
use crate::metrics::Outcome;
use crate::policy::PolicyError;
use crate::scope::Scope;

/// Form bodies are a few hundred bytes; anything near this is not a token request.
const MAX_FORM_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub enum RealmError {
    BadRequest {
        code: &'static str,
        message: String,
    },
    /// A 400 too, counted apart: more scopes, checks or bytes than allowed.
    TooLarge {
        code: &'static str,
        message: String,
    },
    Unauthorized(String),
    Unavailable(String),
    TooManyRequests {
        retry_after: u64,
    },
    Internal,
}

impl RealmError {
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn too_large(code: &'static str, message: impl Into<String>) -> Self {
        Self::TooLarge {
            code,
            message: message.into(),
        }
    }

    /// The metrics and audit outcome.
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            Self::BadRequest { .. } => Outcome::BadRequest,
            Self::TooLarge { .. } => Outcome::TooLarge,
            Self::Unauthorized(_) => Outcome::Unauthorized,
            Self::Unavailable(_) => Outcome::Unavailable,
            Self::TooManyRequests { .. } => Outcome::Damped,
            Self::Internal => Outcome::Internal,
        }
    }

    /// What the client is told, for the audit log's `reason`.
    pub(super) fn message(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Self::BadRequest { message, .. }
            | Self::TooLarge { message, .. }
            | Self::Unauthorized(message)
            | Self::Unavailable(message) => message.into(),
            Self::TooManyRequests { retry_after } => {
                format!("too many failed logins from this address; retry after {retry_after} s")
                    .into()
            }
            Self::Internal => "the token could not be issued".into(),
        }
    }

    pub(super) fn into_response(self, basic_realm: &str) -> Response {
        let body =
            |code: &str, message: &str| json!({"errors": [{"code": code, "message": message}]});
        match self {
            Self::BadRequest { code, message } | Self::TooLarge { code, message } => {
                json_response(StatusCode::BAD_REQUEST, &body(code, &message))
            }
            Self::Unauthorized(message) => {
                let mut r =
                    json_response(StatusCode::UNAUTHORIZED, &body("UNAUTHORIZED", &message));
                if let Ok(v) = format!("Basic realm=\"{}\"", basic_realm.replace('"', "")).parse() {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
                r
            }
            Self::Unavailable(message) => {
                let mut r = json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &body("UNAVAILABLE", &message),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
                r
            }
            Self::TooManyRequests { retry_after } => {
                let mut r = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    &body(
                        "TOOMANYREQUESTS",
                        &format!("too many failed logins from this address; wait {retry_after} s and check the credentials"),
                    ),
                );
                if let Ok(v) = retry_after.to_string().parse() {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            Self::Internal => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &body("INTERNAL", "the token could not be issued"),
            ),
        }
    }
}

impl From<PolicyError> for RealmError {
    fn from(e: PolicyError) -> Self {
        match e {
            PolicyError::TooManyChecks(_) => Self::too_large("INVALID_SCOPE", e.to_string()),
            PolicyError::Unavailable(how) => {
                Self::Unavailable(format!("identity service unavailable: {how}"))
            }
        }
    }
}

impl From<AuthError> for RealmError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => Self::Unauthorized(e.to_string()),
            AuthError::Refused(msg) => Self::Unauthorized(msg),
            AuthError::Unavailable(msg) => {
                Self::Unavailable(format!("identity service unavailable: {msg}"))
            }
            AuthError::TooManyAttempts { retry_after } => Self::TooManyRequests { retry_after },
        }
    }
}

/// docker shows an `UNAUTHORIZED` error whose message is exactly the code's default text
/// ("authentication required") as a bare code, which it does not treat as final: a push
/// without `docker login` then retries for 50 s before printing a bare "unauthorized".
/// Any other text is shown to the user and ends the push at once, so say what to do.
pub const NO_CREDENTIALS: &str =
    "authentication required: no credentials were given; log in first (docker login <registry>)";

/// What a token request asks for, whichever form it came in.
#[derive(Debug)]
struct TokenRequest {
    /// For the log: how the request came and from where.
    method: &'static str,
    /// The client's address: the socket's peer, or what a trusted proxy says it forwarded.
    client: IpAddr,
    service: Option<String>,
    scopes: Vec<Scope>,
    account: Option<String>,
    client_id: Option<String>,
    credentials: Option<Credentials>,
    /// `grant_type=refresh_token`'s token, or a GET's Basic password with an empty user.
    refresh_token: Option<String>,
    /// Asked for a refresh token: GET `offline_token=true`, POST `access_type=offline`.
    offline: bool,
}

#[handler]
pub async fn get_token(req: &Request, Data(app): Data<&Arc<App>>) -> Response {
    let started = Instant::now();
    let parsed = parse_get(req, app.max_scopes).map(|tr| tr.from(req, &app.trusted_proxies));
    answer(app, req, parsed, started).await
}

#[handler]
pub async fn post_token(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> Response {
    let started = Instant::now();
    let parsed = parse_post(req, body, app.max_scopes)
        .await
        .map(|tr| tr.from(req, &app.trusted_proxies));
    answer(app, req, parsed, started).await
}

/// Issues (or refuses), then counts the outcome and writes the audit line.
async fn answer(
    app: &App,
    req: &Request,
    parsed: Result<TokenRequest, RealmError>,
    started: Instant,
) -> Response {
    let mut trail = Trail::default();
    let (result, tr) = match parsed {
        Ok(tr) => (issue(app, &tr, &mut trail).await, Some(tr)),
        Err(e) => (Err(e), None),
    };
    let outcome = result
        .as_ref()
        .map_or_else(RealmError::outcome, |_| Outcome::Issued);
    let m = crate::metrics::get();
    m.token_request(outcome, started.elapsed());
    if let Some(tr) = &tr {
        m.scopes_requested.inc_by(tr.scopes.len() as u64);
    }
    if let Some(c) = &trail.claims {
        m.scopes_granted.inc_by(c.access.len() as u64);
    }
    // The reason is kept only for the audit line (no allocation when the audit is off).
    let reason = app
        .audit
        .as_ref()
        .and(result.as_ref().err())
        .map(|e| e.message().into_owned());
    let mut response = result.unwrap_or_else(|e| e.into_response(&app.basic_realm));
    if let Some(audit) = &app.audit {
        let asked = tr
            .as_ref()
            .map(TokenRequest::asked)
            .unwrap_or_else(|| Asked {
                method: if req.method() == poem::http::Method::POST {
                    "POST"
                } else {
                    "GET"
                },
                client: client_address(req, &app.trusted_proxies),
                client_id: "",
                scopes: &[],
                grant: "",
            });
        let request_id = trail::write(
            audit,
            &asked,
            &trail,
            outcome,
            reason.as_deref().unwrap_or(""),
        )
        .await;
        if let Ok(v) = header::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("x-request-id", v);
        }
    }
    response
}

impl TokenRequest {
    fn asked(&self) -> Asked<'_> {
        Asked {
            method: self.method,
            client: self.client,
            client_id: self.client_id.as_deref().unwrap_or(""),
            scopes: &self.scopes,
            grant: if self.refresh_token.is_some() {
                "refresh_token"
            } else if self.credentials.is_some() {
                "password"
            } else {
                "anonymous"
            },
        }
    }
}

impl TokenRequest {
    fn from(mut self, req: &Request, trusted: &[ipnet::IpNet]) -> Self {
        self.method = if req.method() == poem::http::Method::POST {
            "POST"
        } else {
            "GET"
        };
        self.client = client_address(req, trusted);
        self
    }
}

impl TokenRequest {
    fn new() -> Self {
        Self {
            method: "GET",
            client: IpAddr::from([0, 0, 0, 0]),
            service: None,
            scopes: Vec::new(),
            account: None,
            client_id: None,
            credentials: None,
            refresh_token: None,
            offline: false,
        }
    }
}

fn parse_get(req: &Request, max_scopes: usize) -> Result<TokenRequest, RealmError> {
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

async fn parse_post(
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

pub(super) fn basic_credentials(req: &Request) -> Result<Option<Credentials>, RealmError> {
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

/// Client ids are short names (`docker`, `containerd-client`); a refresh token stores one.
const MAX_CLIENT_ID_BYTES: usize = 200;

/// `trail` collects what the audit line and the metrics need, as far as the request got.
async fn issue(app: &App, tr: &TokenRequest, trail: &mut Trail) -> Result<Response, RealmError> {
    if tr
        .client_id
        .as_ref()
        .is_some_and(|c| c.len() > MAX_CLIENT_ID_BYTES)
    {
        return Err(RealmError::too_large(
            "INVALID_REQUEST",
            format!("client_id: at most {MAX_CLIENT_ID_BYTES} bytes"),
        ));
    }
    if let Some(service) = tr.service.as_deref() {
        if service != app.signer.service {
            return Err(RealmError::bad(
                "INVALID_SERVICE",
                format!(
                    "service {service:?} is not served here; expected {:?}",
                    app.signer.service
                ),
            ));
        }
    }
    if let (Some(account), Some(c)) = (tr.account.as_deref(), tr.credentials.as_ref()) {
        if account != c.username {
            return Err(RealmError::bad(
                "INVALID_REQUEST",
                format!(
                    "account {account:?} differs from the user of the credentials, {:?}",
                    c.username
                ),
            ));
        }
    }
    let client_id = tr.client_id.as_deref().unwrap_or("");
    let caller = if let Some(rt) = tr.refresh_token.as_deref() {
        app.auth
            .refresh(rt, tr.client_id.as_deref(), tr.client)
            .await
            .map_err(|e| {
                tracing::info!(
                    method = tr.method,
                    client_id = ?client_id,
                    peer = %tr.client,
                    "refresh refused: {e}"
                );
                RealmError::from(e)
            })?
    } else {
        login(app, tr).await?
    };
    let identity = caller.identity();
    trail.identity = Some(identity.clone());
    let decision = app
        .policy
        .authorize(&caller, &tr.scopes)
        .await
        .map_err(RealmError::from)?;
    trail.decided_by = decision.decided_by;
    let access = decision.granted;
    tracing::debug!(
        user = ?identity.name,
        client_id = ?client_id,
        refresh = tr.refresh_token.is_some(),
        requested = ?tr.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        granted = ?access.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "token issued"
    );
    // OAuth2 answers name the granted scope; only those of the refresh-token flows (the
    // refresh grant, a password grant asking for offline access), so that every other answer
    // stays exactly what clients have always been given.
    let oauth_refresh_flow = tr.refresh_token.is_some() || tr.offline;
    let scope = (tr.method == "POST" && oauth_refresh_flow).then(|| {
        access
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let now = SystemTime::now();
    let issued = app
        .signer
        .issue(&identity.name, access, now)
        .map_err(|_| RealmError::Internal)?;
    // A refresh token only for a password login that asked for one. If the store cannot take
    // it, the login still succeeds without one: the client keeps the password instead.
    let password_login = tr.credentials.is_some() && tr.refresh_token.is_none();
    let refresh_token = match password_login && tr.offline {
        true => app
            .auth
            .mint_refresh(&caller, client_id)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(user = ?identity.name, "no refresh token issued: {e}");
                None
            }),
        false => None,
    };
    let response = token_response(TokenBody {
        token: &issued.token,
        expires_in: app.signer.ttl.as_secs(),
        issued_at: &humantime::format_rfc3339_seconds(now).to_string(),
        refresh_token: refresh_token.as_deref(),
        scope: scope.as_deref(),
    });
    trail.refresh_issued = refresh_token.is_some();
    trail.claims = Some(issued.claims);
    Ok(response)
}

/// A password login (or the anonymous caller, when allowed).
async fn login(app: &App, tr: &TokenRequest) -> Result<Caller, RealmError> {
    match &tr.credentials {
        Some(c) => app.auth.authenticate(c, tr.client).await.map_err(|e| {
            // At info: an operator must see why a client fails without turning on debug.
            // User-controlled strings are logged quoted and escaped (`?`): a name holding a
            // newline or a terminal escape cannot forge or hide a log line.
            tracing::info!(
                user = ?c.username,
                method = tr.method,
                client_id = ?tr.client_id.as_deref().unwrap_or(""),
                peer = %tr.client,
                "login refused: {e}"
            );
            RealmError::from(e)
        }),
        None if app.anonymous => Ok(Caller::anonymous()),
        None => {
            tracing::info!(
                method = tr.method,
                client_id = ?tr.client_id.as_deref().unwrap_or(""),
                peer = %tr.client,
                "anonymous request refused: no credentials given and identity.anonymous is off"
            );
            Err(RealmError::Unauthorized(NO_CREDENTIALS.into()))
        }
    }
}

struct TokenBody<'a> {
    token: &'a str,
    expires_in: u64,
    issued_at: &'a str,
    /// Only when a password login asked for offline access.
    refresh_token: Option<&'a str>,
    /// The granted scopes, space-separated: POST answers of the refresh-token flows only.
    scope: Option<&'a str>,
}

/// The 200 body, written straight into one buffer: the token (twice: `access_token` is what
/// OAuth2 clients read, `token` what the token spec names) and the refresh token are base64url
/// and dots, and the time RFC 3339 digits, so nothing needs escaping, and a token with `x5c` is
/// ~1.5 KB. Scope strings can hold anything the grammar allows, so they are JSON-encoded.
fn token_response(b: TokenBody) -> Response {
    let mut body = String::with_capacity(2 * b.token.len() + 160);
    body.push_str(r#"{"token":""#);
    body.push_str(b.token);
    body.push_str(r#"","access_token":""#);
    body.push_str(b.token);
    body.push_str(r#"","expires_in":"#);
    body.push_str(&b.expires_in.to_string());
    body.push_str(r#","issued_at":""#);
    body.push_str(b.issued_at);
    body.push('"');
    if let Some(rt) = b.refresh_token {
        body.push_str(r#","refresh_token":""#);
        body.push_str(rt);
        body.push('"');
    }
    if let Some(scope) = b.scope {
        body.push_str(r#","scope":"#);
        body.push_str(&serde_json::Value::from(scope).to_string());
    }
    body.push('}');
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .header("Cache-Control", "no-store")
        .body(body)
}
