//! The admin API's audit lines: every change (any method but GET and HEAD) and every refused
//! request (401, 403), whatever the route, with who asked (the Basic user given), what, on
//! which target, the fields sent with the password left out, and how it ended. One wrapper
//! around the routes, so no handler can forget its line.

use std::sync::Arc;

use poem::http::{Method, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use serde_json::Value;

use super::{ApiError, MAX_BODY_BYTES};
use crate::app::App;
use crate::audit::AdminRecord;
use crate::http::client::client_address;

/// Whether a body field holds a secret: never in a line, only that it was given. By name,
/// whatever its case or spelling (`Password`, `pasword`, `new_secret`: a misspelt field is a
/// 400, but its line is still written), and by value (anything shaped like a generated secret).
fn secret(key: &str, value: &Value) -> bool {
    let key = key.to_ascii_lowercase();
    ["pas", "secret", "token", "key"]
        .iter()
        .any(|k| key.contains(k))
        || value.as_str().is_some_and(crate::store::looks_generated)
}

pub(super) async fn audited<E: Endpoint>(ep: Arc<E>, mut req: Request) -> poem::Result<Response> {
    let app = req.extensions().get::<Arc<App>>().cloned();
    let Some(audit) = app.as_ref().and_then(|a| a.audit.clone()) else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    let change = req.method() != Method::GET && req.method() != Method::HEAD;
    let mut fields = Value::Object(Default::default());
    if change {
        let body = match req.take_body().into_bytes_limit(MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                let e = ApiError::Invalid(format!(
                    "the body is not readable or over {MAX_BODY_BYTES} bytes"
                ));
                return Ok(poem::error::ResponseError::as_response(&e));
            }
        };
        if let Ok(Value::Object(given)) = serde_json::from_slice::<Value>(&body) {
            let shown = given
                .into_iter()
                .map(|(k, v)| match secret(&k, &v) {
                    true => (format!("{k}_given"), Value::Bool(true)),
                    false => (k, v),
                })
                .collect();
            fields = Value::Object(shown);
        }
        req.set_body(body);
    }
    let action = format!("{} {}", req.method(), req.original_uri().path());
    let target = req
        .original_uri()
        .path()
        .strip_prefix("/admin/v1/")
        .unwrap_or("")
        .to_string();
    let by = super::basic_credentials(&req)
        .ok()
        .flatten()
        .map(|c| c.username)
        .unwrap_or_default();
    let client = app
        .as_ref()
        .map(|a| client_address(&req, &a.trusted_proxies));
    let resp = match ep.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
    if change || refused {
        let outcome = match (status.is_success(), refused) {
            (true, _) => "ok",
            (_, true) => "refused",
            _ => "failed",
        };
        let request_id = crate::audit::request_id();
        audit
            .record_admin(&AdminRecord {
                time: std::time::SystemTime::now(),
                request_id: &request_id,
                client_ip: client,
                by: &by,
                action: &action,
                target: &target,
                fields: &fields,
                outcome,
                status: status.as_u16(),
            })
            .await;
    }
    Ok(resp)
}
