//! The token endpoint: `GET /v1/registry` (the token spec) and `POST /v1/registry` (its OAuth2
//! form). Parse (`request`) → issue (`crate::issuing`, no HTTP in it) → render; each failure
//! has its own status, and every request its metrics and audit line.

use std::sync::Arc;
use std::time::Instant;

use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{handler, Body, Request, Response};

use super::client::client_address;
pub use super::error::RealmError;
use super::request::{parse_get, parse_post};
use super::trail::{self, Asked, Trail};
use crate::app::App;
use crate::issuing::{self, Attempt, Issued, TokenRequest};
use crate::metrics::Outcome;

/// docker shows an `UNAUTHORIZED` error whose message is exactly the code's default text
/// ("authentication required") as a bare code, which it does not treat as final: a push
/// without `docker login` then retries for 50 s before printing a bare "unauthorized".
/// Any other text is shown to the user and ends the push at once, so say what to do.
pub const NO_CREDENTIALS: &str =
    "authentication required: no credentials were given; log in first (docker login <registry>)";

/// The request's method as the log and the audit line name it: the realm takes only these two.
fn method(req: &Request) -> &'static str {
    if req.method() == poem::http::Method::POST {
        "POST"
    } else {
        "GET"
    }
}

/// The request's method and client address, as the connection shows them.
fn from(mut tr: TokenRequest, req: &Request, trusted: &[ipnet::IpNet]) -> TokenRequest {
    tr.method = method(req);
    tr.client = client_address(req, trusted);
    tr
}

/// `GET` and `POST` on the realm's paths: what `super::Issuer` serves ahead of the router.
pub(crate) async fn token(mut req: Request, app: &App) -> Response {
    if req.method() == poem::http::Method::POST {
        let body = req.take_body();
        post(&req, body, app).await
    } else {
        get(&req, app).await
    }
}

async fn get(req: &Request, app: &App) -> Response {
    let started = Instant::now();
    let parsed = parse_get(req, app.max_scopes).map(|tr| from(tr, req, &app.trusted_proxies));
    answer(app, req, parsed, started).await
}

async fn post(req: &Request, body: Body, app: &App) -> Response {
    let started = Instant::now();
    let parsed = parse_post(req, body, app.max_scopes)
        .await
        .map(|tr| from(tr, req, &app.trusted_proxies));
    answer(app, req, parsed, started).await
}

/// The same through the router, for a `HEAD` (answered as a `GET` without its body) and
/// for the router's own "method not allowed" to every other method.
#[handler]
pub(crate) async fn get_token(req: &Request, Data(app): Data<&Arc<App>>) -> Response {
    get(req, app).await
}

#[handler]
pub(crate) async fn post_token(req: &Request, body: Body, Data(app): Data<&Arc<App>>) -> Response {
    post(req, body, app).await
}

/// Issues (or refuses), then counts the outcome and writes the audit line.
async fn answer(
    app: &App,
    req: &Request,
    parsed: Result<TokenRequest, RealmError>,
    started: Instant,
) -> Response {
    let tr = match parsed {
        Ok(tr) => tr,
        Err(e) => return finish(app, req, None, None, Err(e), started).await,
    };
    let attempt = issuing::issue(app, &tr).await;
    let result = attempt
        .result
        .as_ref()
        .map(render)
        .map_err(RealmError::from);
    finish(app, req, Some(&tr), Some(&attempt), result, started).await
}

/// Counts the outcome, writes the audit line, and answers.
async fn finish(
    app: &App,
    req: &Request,
    tr: Option<&TokenRequest>,
    attempt: Option<&Attempt>,
    result: Result<Response, RealmError>,
    started: Instant,
) -> Response {
    let outcome = result
        .as_ref()
        .map_or_else(RealmError::outcome, |_| Outcome::Issued);
    let issued = attempt.and_then(|a| a.result.as_ref().ok());
    let m = crate::metrics::get();
    m.token_request(outcome, started.elapsed());
    if let Some(tr) = tr {
        m.scopes_requested.inc_by(tr.scopes.len() as u64);
    }
    if let Some(i) = issued {
        m.scopes_granted.inc_by(i.claims.access.len() as u64);
    }
    // The reason is kept only for the audit line (no allocation when the audit is off).
    let reason = app
        .audit
        .as_ref()
        .and(result.as_ref().err())
        .map(|e| e.message().into_owned());
    let mut response = result.unwrap_or_else(|e| e.into_response(&app.basic_realm));
    if let Some(audit) = &app.audit {
        let asked = tr.map(asked).unwrap_or_else(|| Asked {
            method: method(req),
            client: client_address(req, &app.trusted_proxies),
            client_id: "",
            scopes: &[],
            grant: "",
            service: "",
        });
        let trail = Trail {
            identity: attempt.and_then(|a| a.identity.as_deref()),
            decided_by: attempt.map_or(&[], |a| a.decided_by.as_slice()),
            claims: issued.map(|i| &i.claims),
            refresh_issued: issued.is_some_and(|i| i.refresh_token.is_some()),
        };
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

/// What was asked, for the audit line.
fn asked(tr: &TokenRequest) -> Asked<'_> {
    Asked {
        method: tr.method,
        client: tr.client,
        client_id: tr.client_id.as_deref().unwrap_or(""),
        scopes: &tr.scopes,
        grant: tr.grant(),
        service: tr.service.as_deref().unwrap_or(""),
    }
}

/// Built once: a name given as text is parsed again on every insert.
const X_REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The 200 answer for a signed token.
fn render(i: &Issued) -> Response {
    token_response(TokenBody {
        token: &i.token,
        // From the time of issue, not `iat`, which is backdated (`token::NBF_BACKDATE`).
        expires_in: i.claims.exp.saturating_sub(
            i.issued_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        ),
        issued_at: &humantime::format_rfc3339_seconds(i.issued_at).to_string(),
        refresh_token: i.refresh_token.as_deref(),
        scope: i.scope.as_deref(),
    })
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
