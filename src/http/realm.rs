//! The token endpoint: `GET /v1/registry` (the token spec) and `POST /v1/registry` (its OAuth2
//! form). Request → parse → authenticate → authorize → sign; each failure has its own status.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::client::client_address;
pub use super::error::RealmError;
use super::request::{parse_get, parse_post, TokenRequest};
use super::trail::{self, Asked, Trail};
use crate::app::App;
use crate::identity::Caller;
use crate::metrics::Outcome;

/// docker shows an `UNAUTHORIZED` error whose message is exactly the code's default text
/// ("authentication required") as a bare code, which it does not treat as final: a push
/// without `docker login` then retries for 50 s before printing a bare "unauthorized".
/// Any other text is shown to the user and ends the push at once, so say what to do.
pub const NO_CREDENTIALS: &str =
    "authentication required: no credentials were given; log in first (docker login <registry>)";

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
        if let Ok(v) = header::HeaderValue::try_from(request_id) {
            response.headers_mut().insert(X_REQUEST_ID, v);
        }
    }
    response
}

/// Built once: a name given as text is parsed again on every insert.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

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
        // Boxed, as the identity module's slow paths are: see `Authenticator::identify`.
        Box::pin(app.auth.refresh(rt, tr.client_id.as_deref(), tr.client))
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
        .issue_until(&identity.name, access, now, identity.expires_at)
        .map_err(|_| RealmError::Internal)?;
    // A refresh token only for a password login that asked for one. If the store cannot take
    // it, the login still succeeds without one: the client keeps the password instead.
    let password_login = tr.credentials.is_some() && tr.refresh_token.is_none();
    let refresh_token = match password_login && tr.offline {
        true => Box::pin(app.auth.mint_refresh(&caller, client_id))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(user = ?identity.name, "no refresh token issued: {e}");
                None
            }),
        false => None,
    };
    let response = token_response(TokenBody {
        token: &issued.token,
        expires_in: issued.claims.exp.saturating_sub(issued.claims.iat),
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
