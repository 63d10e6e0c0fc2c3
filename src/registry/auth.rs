//! Bearer-token checks for the built-in registry, as distribution's token access controller
//! does them: signature by a trusted key, `iss`, `aud`, `exp`/`nbf` with 60 s of leeway, and the
//! access the request needs. Failures are 401s with distribution's challenge wording.

use std::time::{Duration, SystemTime};

use poem::http::header;
use poem::{Request, Response};
use serde_json::json;

use super::errors::RegError;
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

    /// The verified claims, or why not (rendered by [`TokenAuth::challenge`]).
    pub fn check(&self, req: &Request, needed: &[Scope]) -> Result<Claims, Challenge> {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let Some(token) = token else {
            return Err(Challenge::TokenRequired);
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
                Challenge::InvalidToken(e.to_string())
            })?;
        if let Some(missing) = needed.iter().find(|s| !grants(&claims, s)) {
            tracing::debug!(sub = %claims.sub, needed = %missing, "insufficient scope");
            return Err(Challenge::InsufficientScope);
        }
        Ok(claims)
    }

    /// The 401 for `challenge`, in distribution's words: the only place a registry challenge
    /// is written. The `scope` names what the request needs, so the client asks for exactly
    /// that; `error` is absent when no token was sent.
    pub fn challenge(&self, challenge: &Challenge, needed: &[Scope]) -> Response {
        let (error, message) = match challenge {
            Challenge::TokenRequired => (None, "authentication required".to_string()),
            Challenge::InvalidToken(why) => {
                (Some("invalid_token"), format!("invalid token: {why}"))
            }
            Challenge::InsufficientScope => {
                (Some("insufficient_scope"), "insufficient scope".into())
            }
        };
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
        let mut resp = RegError::unauthorized(message, json!(detail)).into_response();
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// Why a request's token does not do, as distribution's token access controller tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// No Bearer token was sent.
    TokenRequired,
    /// The token does not verify: signature, issuer, audience or time (the reason).
    InvalidToken(String),
    /// A valid token that lacks an action the request needs.
    InsufficientScope,
}

/// Whether the token's `access` covers every action of `needed` (`*` covers all).
pub fn grants(claims: &Claims, needed: &Scope) -> bool {
    needed.actions.iter().all(|action| {
        claims.access.iter().any(|a| {
            a.resource_type == needed.resource_type && a.name == needed.name && a.allows(action)
        })
    })
}
