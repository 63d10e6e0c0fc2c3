//! Bearer-token checks for the built-in registry, as distribution's token access controller
//! does them: signature by a trusted key, `iss`, `aud`, `exp`/`nbf` with 60 s of leeway, and the
//! access the request needs. Failures are 401s with distribution's challenge wording.

use std::time::{Duration, SystemTime};

use poem::http::{header, StatusCode};
use poem::{Request, Response};
use serde_json::json;

use crate::scope::Scope;
use crate::token::{Claims, TrustedKeys};

pub const LEEWAY: Duration = Duration::from_secs(60);

pub struct TokenAuth {
    /// Swapped whole by a reload (the issuer's keys changed).
    pub trusted: arc_swap::ArcSwap<TrustedKeys>,
    pub issuer: String,
    pub service: String,
    pub realm: String,
}

impl TokenAuth {
    /// Trusts `keys` from now on (a reload of the issuer's keys).
    pub fn trust(&self, keys: TrustedKeys) {
        self.trusted.store(std::sync::Arc::new(keys));
    }

    /// The verified claims, or the 401 to send (boxed: a response is large, the claims small).
    pub fn check(&self, req: &Request, needed: &[Scope]) -> Result<Claims, Box<Response>> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let Some(token) = token else {
            return Err(Box::new(self.challenge(
                needed,
                None,
                "authentication required",
            )));
        };
        let claims = self
            .trusted
            .load()
            .verify(
                token.trim(),
                &self.issuer,
                &self.service,
                LEEWAY,
                SystemTime::now(),
            )
            .map_err(|e| {
                tracing::debug!("registry refused a token: {e}");
                self.challenge(
                    needed,
                    Some("invalid_token"),
                    &format!("invalid token: {e}"),
                )
            })?;
        if let Some(missing) = needed.iter().find(|s| !grants(&claims, s)) {
            tracing::debug!(sub = %claims.sub, needed = %missing, "insufficient scope");
            return Err(Box::new(self.challenge(
                needed,
                Some("insufficient_scope"),
                "insufficient scope",
            )));
        }
        Ok(claims)
    }

    fn challenge(&self, needed: &[Scope], error: Option<&str>, message: &str) -> Response {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm, self.service
        );
        if !needed.is_empty() {
            let scopes: Vec<String> = needed.iter().map(ToString::to_string).collect();
            value.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
        }
        if let Some(e) = error {
            value.push_str(&format!(",error=\"{e}\""));
        }
        let detail: Vec<_> = needed
            .iter()
            .flat_map(|s| {
                s.actions.iter().map(
                    |a| json!({"Type": s.resource_type, "Class": "", "Name": s.name, "Action": a}),
                )
            })
            .collect();
        let body =
            json!({"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": detail}]});
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .content_type("application/json")
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .header(header::WWW_AUTHENTICATE, value)
            .body(body.to_string())
    }
}

/// Whether the token's `access` covers every action of `needed` (`*` covers all).
pub fn grants(claims: &Claims, needed: &Scope) -> bool {
    needed.actions.iter().all(|action| {
        claims.access.iter().any(|a| {
            a.resource_type == needed.resource_type && a.name == needed.name && a.allows(action)
        })
    })
}
